"""Commands for the shared breaker on Redis, for scripts, cron and systemd:

- `spikeguard breaker status | trigger --reason R | clear --reason R [--epoch N]`: one line
  (or `--json`), exit 0 when done, 1 when Redis cannot be reached or the move was refused;
- `spikeguard guardian`: the feeds, the guardian and (unless `--no-scanner`) the scanner
  headless, on the shared breaker; it publishes the breaker (its writes) and every spike (a
  Redis stream), logs one JSON line per event on stderr, and ends cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from dataclasses import replace
from typing import Any

from core.events import BreakerChanged, SpikeDetected, iso_utc

log = logging.getLogger("spikeguard.guardian")
EXIT_FAILED = 1
SPIKE_STREAM_MAXLEN = 10_000


def with_redis(settings: Any, url: str | None) -> Any:
    """The settings with Redis on (at `url` when given): these commands need the shared breaker."""
    redis = settings.redis.model_copy(update={"enabled": True, **({"url": url} if url else {})})
    return settings.model_copy(update={"redis": redis})


def spikes_key(prefix: str) -> str:
    return f"{prefix}:spikes"


def _say(args: argparse.Namespace, data: dict[str, Any], line: str) -> None:
    print(json.dumps(data, sort_keys=True) if getattr(args, "json", False) else line)


# ---------------------------------------------------------------------- spikeguard breaker
def breaker_command(args: argparse.Namespace, loaded: Any) -> int:
    from core.breaker.backend import BackendUnavailable, StateMissing
    from core.breaker.machine import BreakerRecord, IllegalTransition
    from core.breaker.redis_backend import RedisBackend
    from core.events import Actor, BreakerStatus
    from core.wiring import WiringError, redis_clients

    settings = with_redis(loaded.settings, args.redis)
    try:
        blocking, _ = redis_clients(settings)
    except WiringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    backend = RedisBackend(blocking, settings.redis.key_prefix)
    where = settings.redis.connection_url().split("@")[-1]  # never the password
    try:
        try:
            stored: BreakerRecord | None = backend.load()
        except StateMissing:
            stored = None
        if args.breaker_action == "status":
            if stored is None:
                _say(args, {"status": None, "missing": True}, f"no breaker state at {where}: every process treats "
                                                                f"it as TRIGGERED until an operator re-arms it "
                                                                f"(spikeguard breaker clear --reason ...)")
                return EXIT_FAILED
            _say(args, stored.to_dict(), f"{stored.status.value} epoch {stored.epoch} by {stored.actor.value} "
                                         f"since {iso_utc(stored.since_ms)}: {stored.reason}")
            return 0
        reason = " ".join(args.reason.split())
        now_ms = time.time_ns() // 1_000_000
        base = stored or BreakerRecord()
        if args.breaker_action == "trigger":
            record = replace(base, status=BreakerStatus.TRIGGERED, reason=reason, actor=Actor.OPERATOR,
                             since_ms=now_ms, trigger_type="operator", symbol=None, details={"via": "cli"},
                             triggered_at_ms=base.triggered_at_ms or now_ms, trigger_reason=reason,
                             trigger_actor=Actor.OPERATOR, triggers=base.triggers + 1, recovery_started_at_ms=None)
            epoch = backend.write(stored.epoch if stored else 0, record)
            if epoch is None:
                now = backend.load()
                _say(args, {"status": now.status.value, "epoch": now.epoch, "written": False},
                     f"already TRIGGERED (epoch {now.epoch}): {now.reason}")
                return 0
            _say(args, {"status": "TRIGGERED", "epoch": epoch, "written": True}, f"TRIGGERED epoch {epoch}")
            return 0
        expected = args.epoch if args.epoch is not None else (stored.epoch if stored else 0)
        if stored is not None and stored.status is BreakerStatus.SAFE:
            _say(args, {"status": "SAFE", "epoch": stored.epoch, "written": False}, f"already SAFE (epoch {stored.epoch})")
            return 0
        record = replace(base, status=BreakerStatus.SAFE, reason=reason, actor=Actor.OPERATOR, since_ms=now_ms,
                         symbol=None, trigger_type=None, details={"via": "cli"}, triggered_at_ms=None,
                         trigger_reason=None, trigger_actor=None, recovery_started_at_ms=None,
                         clears=base.clears + 1, last_cleared_at_ms=now_ms)
        epoch = backend.write(expected, record)
        if epoch is None:
            now = backend.load()
            print(f"error: clear refused: the breaker is at epoch {now.epoch} ({now.status.value}), not {expected}; "
                  f"read its status again", file=sys.stderr)
            return EXIT_FAILED
        _say(args, {"status": "SAFE", "epoch": epoch, "written": True}, f"SAFE epoch {epoch} (re-armed)"
             if stored is None else f"SAFE epoch {epoch}")
        return 0
    except (BackendUnavailable, IllegalTransition) as exc:
        print(f"error: breaker backend unreachable at {where}: {exc}", file=sys.stderr)
        return EXIT_FAILED


# ---------------------------------------------------------------------- spikeguard guardian
class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {"time": iso_utc(int(record.created * 1000)), "level": record.levelname.lower(),
                "logger": record.name, "message": record.getMessage()}
        data.update(getattr(record, "fields", {}))
        return json.dumps(data, sort_keys=True, default=str)


def _event(kind: str, **fields: Any) -> None:
    log.info(kind, extra={"fields": {"event": kind, **fields}})


def guardian_command(args: argparse.Namespace, loaded: Any, journal: Any) -> int:
    from core.wiring import FeedChoice, WiringError, build_feed, build_session

    settings = with_redis(loaded.settings, args.redis)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = True
    try:
        built = build_feed(settings, FeedChoice(kind=args.feed, scenario=args.scenario, seed=args.seed,
                                                speed=args.speed))
        session = build_session(settings, built.feed, journal)
    except WiringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_guard(session, settings, args, built.label, journal))


async def _guard(session: Any, settings: Any, args: argparse.Namespace, label: str, journal: Any) -> int:
    import redis.asyncio

    from core.journal import JournalError
    from core.wiring import open_journal

    try:
        await open_journal(session, journal)  # its own journal: every transition it sees, every spike
    except JournalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    session.desk_enabled = False  # the guardian proposes nothing: it guards and announces
    session.engine.scanner.paused = args.no_scanner
    client = redis.asyncio.Redis.from_url(settings.redis.connection_url(),
                                          socket_timeout=settings.redis.timeout_ms / 1000)
    stream = spikes_key(settings.redis.key_prefix)
    published: set[asyncio.Task] = set()

    def on_change(change: BreakerChanged) -> None:
        _event("breaker", epoch=change.epoch, status=change.status.value, previous=change.previous.value,
               actor=change.actor.value, reason=change.reason, symbol=change.symbol)

    def on_spike(spike: SpikeDetected) -> None:
        _event("spike", symbol=spike.symbol, type=spike.spike_type.value, direction=spike.direction,
               magnitude_pct=round(spike.magnitude_pct, 3), time=iso_utc(spike.time_ms))
        fields = {"symbol": spike.symbol, "type": spike.spike_type.value, "direction": spike.direction,
                  "magnitude_pct": spike.magnitude_pct, "time_ms": spike.time_ms,
                  "timeframe_minutes": spike.timeframe_minutes, "confidence": spike.confidence,
                  "volume_multiple": spike.volume_multiple, "price_from": spike.price_from,
                  "price_to": spike.price_to}
        task = loop.create_task(client.xadd(stream, {"spike": json.dumps(fields)}, maxlen=SPIKE_STREAM_MAXLEN,
                                            approximate=True))
        published.add(task)
        task.add_done_callback(published.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or
                               _event("spike_not_published", error=str(t.exception())))

    def on_problem(problem: str | None) -> None:
        _event("backend", problem=problem)

    session.breaker.subscribe(on_change)
    session.engine.on_spike(on_spike)
    if session.breaker_sync is not None:
        inner = session.breaker_sync.on_problem
        session.breaker_sync.on_problem = lambda p: (inner(p), on_problem(p))
    _event("start", feed=label, scanner=not args.no_scanner, breaker=session.breaker.status.value,
           epoch=session.breaker.epoch, redis=settings.redis.connection_url().split("@")[-1])
    run = loop.create_task(session.run())
    stopped = loop.create_task(stop.wait())
    await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
    reason = "SIGTERM" if stop.is_set() else "the feed ended"
    await session.close(f"guardian stopped: {reason}")
    run.cancel()
    stopped.cancel()
    await asyncio.gather(run, stopped, *published, return_exceptions=True)
    await client.aclose()
    _event("stop", reason=reason)
    return 0


def add_parsers(sub: Any, common: Any, speed: Any) -> None:
    p = sub.add_parser("breaker", parents=[common], help="the shared breaker on Redis: status, trigger, clear")
    p.add_argument("breaker_action", choices=("status", "trigger", "clear"), metavar="ACTION",
                   help="status, trigger or clear")
    p.add_argument("--reason", default=None, help="why (trigger and clear need one)")
    p.add_argument("--epoch", type=int, default=None, help="clear only if the breaker is still at this epoch")
    p.add_argument("--redis", metavar="URL", default=None, help="redis:// or rediss:// URL (default: redis.url)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")

    p = sub.add_parser("guardian", parents=[common], help="feeds, guardian and scanner headless on the shared "
                                                          "breaker (a daemon: SIGTERM ends it)")
    p.add_argument("--redis", metavar="URL", default=None, help="redis:// or rediss:// URL (default: redis.url)")
    p.add_argument("--feed", choices=("sim", "binance"), default=None, help="market feed (default: sim)")
    p.add_argument("--scenario", default=None, help="sim scenario")
    p.add_argument("--seed", type=int, default=None, help="sim seed")
    p.add_argument("--speed", type=speed, default=None, help="sim market time per real time")
    p.add_argument("--no-scanner", action="store_true", help="guard only: no spike detection")
    p.add_argument("--db", metavar="FILE", help="its journal (default: journal.db in the data directory)")


def check_breaker_args(args: argparse.Namespace) -> str | None:
    if getattr(args, "breaker_action", None) in ("trigger", "clear") and not (args.reason or "").strip():
        return f"breaker {args.breaker_action} needs --reason"
    return None


__all__ = ["add_parsers", "breaker_command", "check_breaker_args", "guardian_command", "spikes_key", "with_redis"]
