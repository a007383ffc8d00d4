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

from core.market.feed import MAX_SPEED

# from the app's return to the end of the process, whatever a library's thread does; with the app's own
# wait for the session to close (console.app.CLOSE_WAIT_S), a quit ends the process within about 3 s
EXIT_DEADLINE_S = 1.5
log = logging.getLogger("spikeguard.console")


class LaunchError(Exception):
    """A one-line reason the console cannot start (bad feed choice, missing files)."""


def build_feed(args: Any, settings: Any):
    feed_name = args.feed or settings.testing.feed
    sim = settings.testing.sim
    if feed_name == "binance":
        raise LaunchError("--feed binance is not available yet: it arrives with the Binance issue; "
                          "use --feed sim or --feed replay FILE...")
    speed = args.speed if args.speed is not None else None
    if feed_name == "replay":
        from core.market.replay import ReplayFeed, ReplayInputError

        if not args.files:
            raise LaunchError("--feed replay needs CSV files: spikeguard console --feed replay FILE...")
        try:
            feed = ReplayFeed(args.files, speed=speed if speed is not None else 60.0,
                              symbol=getattr(args, "symbol", None))
        except ReplayInputError as exc:
            raise LaunchError(str(exc)) from None
        label = "replay " + " ".join(s.symbol for s in feed.sources)
    else:
        from core.market.sim import SimFeed

        if args.files or getattr(args, "symbol", None):
            raise LaunchError("files and --symbol are only for --feed replay")
        scenario = args.scenario or sim.scenario
        try:
            feed = SimFeed(scenario=scenario, seed=args.seed if args.seed is not None else sim.seed,
                           tick_interval_ms=sim.tick_interval_ms,
                           speed=speed if speed is not None else sim.speed)
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
        label = f"sim {scenario}"
    speed_label = "max" if feed.speed == MAX_SPEED else f"{feed.speed:g}x"
    return feed, label, speed_label


def launch_console(args: Any, loaded: Any, paths: Any) -> int:
    settings = loaded.settings
    try:
        feed, label, speed_label = build_feed(args, settings)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not sys.stdout.isatty() and not getattr(args, "headless_ok", False):
        print("error: the console needs a terminal (use `spikeguard replay` or `simulate` headless)",
              file=sys.stderr)
        return 2
    from console.app import SpikeguardApp
    from core.session import Session

    paths.ensure()
    journal_path = Path(args.db).expanduser() if getattr(args, "db", None) else paths.journal
    session = Session(settings, feed, journal_path=journal_path)
    served = getattr(args, "headless_ok", False)  # under textual-serve: no tty for the watchdog to watch
    app = SpikeguardApp(session, feed_label=label, speed_label=speed_label, journal_label=_short(journal_path),
                        watch_tty=not served, agents_dir=paths.data_dir / "crewai")
    return run_app(app, paths.log_file)


def run_app(app: Any, log_file: Path) -> int:
    """Run the console on a loop of its own, then leave by a deadline. (asyncio.run would join
    the loop's executor threads before returning: CrewAI's import, still running after a quick q.)"""
    loop = asyncio.new_event_loop()
    deadline = time.monotonic()  # if the app itself raised: clean up without waiting
    try:
        result = app.run(loop=loop)
        deadline = time.monotonic() + EXIT_DEADLINE_S
        _restore_job_control_signals()
        closed = _wait_for_close(loop, app, deadline)
    finally:
        _close_loop(loop, deadline)
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
    """Return once only daemon threads are left, waiting for the others until `deadline`. Past
    it, end the process with `code`: interpreter shutdown would join a library's thread for as
    long as it runs (CrewAI's import; once, Textual's input thread spinning on a closed pty)."""
    for thread in _other_threads():
        thread.join(_left(deadline))
    stuck = _other_threads()
    if stuck:
        log.warning("exit deadline: ending the process with threads still running: %s",
                    ", ".join(t.name for t in stuck))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _other_threads() -> list[threading.Thread]:
    me = threading.current_thread()
    return [t for t in threading.enumerate() if t is not me and not t.daemon and t.is_alive()]


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _short(path: Path) -> str:
    home = Path.home()
    try:
        return "~/" + str(path.resolve().relative_to(home))
    except ValueError:
        return str(path)
