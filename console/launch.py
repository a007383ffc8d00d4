"""Build a session from the command line, run the console on it, and leave by a deadline."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from core.logs import drop_library_records
from core.redact import mask

# from the app's return to the end of the process, whatever a library's thread does; with the app's own
# wait for the session to close (console.app.CLOSE_WAIT_S), a quit ends the process within about 3 s
EXIT_DEADLINE_S = 1.5
log = logging.getLogger("spikeguard.console")


def launch_console(args: Any, loaded: Any, paths: Any, journal: Any) -> int:
    """The console over the composition root's session. The journal is opened before the
    console takes the terminal: one that is locked by another process, cannot be written or
    does not verify is refused with one line."""
    from core.journal import JournalError
    from core.wiring import FeedChoice, WiringError, build_feed, build_session, open_journal, resolve_venue

    settings = loaded.settings
    attach = getattr(args, "attach", None)
    if attach:
        from console.shared import with_redis

        settings = with_redis(settings, attach)
    try:
        venue = resolve_venue(settings, args.feed, args.live)
        built = build_feed(settings, FeedChoice(kind=args.feed, files=args.files, symbol=args.symbol,
                                                scenario=args.scenario, seed=args.seed, speed=args.speed), venue)
    except WiringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not sys.stdout.isatty() and not getattr(args, "headless_ok", False):
        print("error: the console needs a terminal (use `spikeguard replay` or `simulate` headless)",
              file=sys.stderr)
        return 2
    from console.app import SpikeguardApp

    from core.shadow import load_shadows, long_minutes_of

    shadows = load_shadows(settings, [Path(f) for f in getattr(args, "shadow", [])], getattr(args, "shadow_set", []))
    paths.ensure()
    try:
        session = build_session(settings, built.feed, journal, venue=venue,
                                long_minutes=long_minutes_of(s for _, s in shadows))
    except WiringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    session.add_shadows(shadows)
    if attach:
        follow_the_guardian(session, settings)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(open_journal(session, journal))
    except JournalError as exc:
        loop.close()
        print(mask(f"error: {exc}"), file=sys.stderr)
        return 2
    if session.venue is not None and not _start_venue(session, loop):
        return 2
    served = getattr(args, "headless_ok", False)  # under textual-serve: no tty for the watchdog to watch
    app = SpikeguardApp(session, feed_label=built.label, speed_label=built.speed_label,
                        journal_label=_short(journal.path), watch_tty=not served,
                        agents_dir=paths.data_dir / "crewai", freeze_gc=True)
    return run_app(app, paths.log_file, loop)


def follow_the_guardian(session: Any, settings: Any) -> None:
    """An attached console shows the guardian's spikes, not its own scanner's (they would be
    the same, twice); its breaker is the shared one already (the settings say Redis)."""
    from console.shared import spikes_key
    from core.remote_spikes import follow
    from core.wiring import redis_clients

    session.engine.scanner.paused = True
    _, client = redis_clients(settings)
    session.background.append(lambda: follow(client, spikes_key(settings.redis.key_prefix), session.bus))


def _start_venue(session: Any, loop: asyncio.AbstractEventLoop) -> bool:
    """Connect and reconcile the Binance exchange before the console takes the terminal (live:
    the key check and the typed confirmation). A failure is one line; the breaker stays
    TRIGGERED in the journal."""
    from core.venue import VenueError

    venue = session.venue
    print(f"connecting to Binance {venue.environment} at {venue.exchange.endpoints.api_url} ...", file=sys.stderr)
    try:
        report = loop.run_until_complete(session.start_venue(confirm_live=confirm_live_on_terminal))
    except (VenueError, KeyboardInterrupt, EOFError) as exc:
        why = str(exc) if isinstance(exc, VenueError) else "interrupted"
        loop.run_until_complete(session.close(f"start-up failed: {why}"))
        loop.close()
        print(mask(f"error: {why}"), file=sys.stderr)
        return False
    print(f"reconciled: {report.summary()}", file=sys.stderr)
    return True


def confirm_live_on_terminal(account: Any) -> bool:
    """The operator types the account's phrase; anything else (or no terminal) refuses."""
    if not sys.stdin.isatty():
        return False
    print(f"\nLIVE trading on Binance account {account.uid} ({account.api_url}): real money.\n"
          f"Type  {account.phrase}  to go on; anything else stops.", file=sys.stderr)
    try:
        typed = input("> ")
    except (EOFError, KeyboardInterrupt):
        return False
    return typed.strip() == account.phrase


def run_app(app: Any, log_file: Path, loop: asyncio.AbstractEventLoop | None = None) -> int:
    """Run the console on a loop of its own, then leave by a deadline. (asyncio.run would join
    the loop's executor threads before returning: CrewAI's import, still running after a quick q.)"""
    loop = loop or asyncio.new_event_loop()
    deadline = time.monotonic()  # if the app itself raised: clean up without waiting
    try:
        result = app.run(loop=loop)
        deadline = time.monotonic() + EXIT_DEADLINE_S
        _restore_job_control_signals()
        closed = _wait_for_close(loop, app, deadline)
    finally:
        _close_loop(loop, deadline)
        _mute_abandoned_threads()
    code = app.return_code or int(result or 0)
    if app.crash:
        print(f"error: the console stopped on an unexpected error: {app.crash} (traceback in {log_file})",
              file=sys.stderr)
    elif not closed:
        print(f"error: the session did not close cleanly; its journal may miss the last rows (see {log_file})",
              file=sys.stderr)
        code = code or 1
    leave_by(deadline, code)
    return code


def _mute_abandoned_threads() -> None:
    """The session is closed and the loop gone: a crew still running in a thread fails against
    the interpreter's shutdown (no loop, no executor) and CrewAI logs each failure with a
    traceback. Those are the exit's, not the run's: the log says so once instead."""
    busy = [t.name for t in threading.enumerate() if t is not threading.current_thread() and t.is_alive()]
    if busy:
        log.info("exit: %d threads still running are abandoned (%s); their errors from here on are not logged",
                 len(busy), ", ".join(busy[:8]))
    drop_library_records(("crewai", "LiteLLM", "litellm", "httpx", "opentelemetry"))


def _restore_job_control_signals() -> None:
    """Textual's driver leaves its SIGTSTP and SIGCONT handlers installed after the app. A SIGCONT
    then (the terminal closing sends one) restarted its input thread on the closed terminal, where
    it span, non-daemon, at 73% of a core; with no loop running, the handler raises instead."""
    for sig in (signal.SIGTSTP, signal.SIGCONT):
        signal.signal(sig, signal.SIG_DFL)


def _wait_for_close(loop: asyncio.AbstractEventLoop, app: Any, deadline: float) -> bool:
    """A bounded wait for the session's close (the journal's last rows and its flush), which the
    app started on its way out; True when it completed."""
    closing = app.closing or loop.create_task(app.session.close("console closed"))
    loop.run_until_complete(asyncio.wait({closing}, timeout=_left(deadline)))
    if not closing.done():
        log.error("the session did not close within %.1fs of the app's exit", EXIT_DEADLINE_S)
        return False
    if closing.cancelled() or closing.exception() is not None:
        log.error("closing the session failed", exc_info=None if closing.cancelled() else closing.exception())
        return False
    return True


def _close_loop(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """Cancel what is left on the loop and close it; the executor is shut down without waiting."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=_left(deadline)))
    loop.run_until_complete(asyncio.wait({loop.create_task(loop.shutdown_asyncgens())}, timeout=_left(deadline)))
    loop.close()


def leave_by(deadline: float, code: int) -> None:
    """Return once no other thread is left, waiting for the non-daemon ones until `deadline`.
    Otherwise end the process with `code` without the interpreter's shutdown:
    - past the deadline, shutdown would join a library's thread for as long as it runs
      (CrewAI's import; once, Textual's input thread spinning on a closed pty);
    - a daemon thread still running (CrewAI importing its native libraries) is ended by
      shutdown with pthread_exit, which aborts the process inside C++ code ("FATAL: exception
      not rethrown", exit 134)."""
    for thread in _other_threads():
        thread.join(_left(deadline))
    stuck = _other_threads()
    running = [t for t in threading.enumerate() if t is not threading.current_thread() and t.is_alive()]
    if stuck or running:
        if stuck:
            log.warning("exit deadline: ending the process with threads still running: %s",
                        ", ".join(t.name for t in stuck))
        else:
            log.info("exit: ending the process past %d daemon threads (%s)", len(running),
                     ", ".join(t.name for t in running[:8]))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _other_threads() -> list[threading.Thread]:
    """The threads interpreter shutdown would wait for: non-daemon ones, and every executor
    worker, daemon or not (concurrent.futures joins its workers at exit; a worker started
    from a daemon thread, as CrewAI's HTTP calls are, is a daemon that still holds the exit)."""
    me = threading.current_thread()
    workers = _executor_workers()
    return [t for t in threading.enumerate() if t is not me and t.is_alive() and (not t.daemon or t in workers)]


def _executor_workers() -> set[threading.Thread]:
    import concurrent.futures.thread as cft

    registry = getattr(cft, "_threads_queues", None)  # the workers its atexit hook joins
    try:
        return set(registry.keys()) if registry is not None else set()
    except RuntimeError:  # changed size while read: a worker starting right now
        return set(list(registry.keys()))


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _short(path: Path) -> str:
    home = Path.home()
    try:
        return "~/" + str(path.resolve().relative_to(home))
    except ValueError:
        return str(path)
