"""Headless runs (replay, simulate): a session over a finite feed, summarised as data.

The JSON object is a contract other tools rely on: keys are only ever added. The run
journals to a temporary database unless a path is given.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.events import BreakerChanged, SpikeDetected, iso_utc
from core.market.feed import Feed
from core.protection import ProtectionStudy
from core.session import Session
from core.shadow import attach_shadows, long_minutes_of
from core.settings import Settings
from core.wiring import JournalChoice, build_session

JOURNAL_DRAIN_S = 10.0  # at the end of a run, how long a failing journal may keep retrying


def breaker_row(change: BreakerChanged) -> dict[str, Any]:
    return {
        "time": iso_utc(change.time_ms), "from": change.previous.value, "to": change.status.value,
        "reason": change.reason, "symbol": change.symbol, "epoch": change.epoch,
        "actor": change.actor.value, "trigger_type": change.trigger_type,
    }


def spike_row(spike: SpikeDetected) -> dict[str, Any]:
    return {
        "time": iso_utc(spike.time_ms), "symbol": spike.symbol, "type": spike.spike_type.value,
        "direction": spike.direction, "magnitude_pct": spike.magnitude_pct,
        "timeframe_minutes": spike.timeframe_minutes, "confidence": spike.confidence,
        "volume_multiple": spike.volume_multiple, "price_from": spike.price_from, "price_to": spike.price_to,
        "zscore": spike.zscore, "detection_latency_ms": spike.detection_latency_ms,
    }


async def run_headless(
    settings: Settings,
    feed: Feed,
    progress: Callable[[Any], None] | None = None,
    db_path: Path | None = None,
    protection: bool = True,
    journal: bool = True,
    agents: bool = False,
    llm: str | None = None,
    journal_key: bytes | None = None,
    journal_force: bool = False,
    provider_errors: Callable[[str], None] | None = None,
    shadows: list[tuple[str, Settings]] | None = None,
) -> tuple[Session, dict[str, Any]]:
    """Run a finite feed through a whole session. With `agents`, the crew answers every
    spike (the feed waits while a crew runs, so each crew reads the market at its spike).

    A journal that could not write everything by the end (a full disk) is reported in
    `stats.journal_error`, and the rows it holds are counted in `stats.journal_unwritten`:
    the run's record is incomplete, and the command says so and fails.

    `shadows` (name, settings) run beside the real breaker in the same pass, never acting
    (core.shadow); the report's `shadows` scores the real one first, then each."""
    from core.journal import JournalError

    tmpdir = Path(tempfile.mkdtemp(prefix="spikeguard-replay-"))
    path = db_path if db_path is not None else (tmpdir / "journal.db" if journal else None)
    key = journal_key if db_path is not None else None  # a throwaway journal needs no signature
    session = build_session(settings, feed, JournalChoice(path, key, journal_force) if path is not None else None,
                            long_minutes=long_minutes_of(s for _, s in shadows or ()))
    session.desk_enabled = agents  # a plain replay measures the engine
    engine = session.engine
    changes: list[BreakerChanged] = []
    engine.breaker.subscribe(changes.append)
    spikes: list[SpikeDetected] = []
    engine.on_spike(spikes.append)
    study = None
    if protection:
        study = ProtectionStudy(settings, engine.market, engine.breaker, feed.symbols, engine.now_ms)
        engine.tick_listeners.append(study.on_tick)
    scores = attach_shadows(engine, list(shadows), feed.symbols, protection) if shadows else None
    desk = None
    counts: dict[str, int] = {}
    journal_error: str | None = None
    unwritten = 0
    started = time.perf_counter()
    try:
        if agents:
            if path is not None and session.journal is None:  # the crew's decisions are journaled from the first spike
                await session.open_journal(path, key=key, force=journal_force)
            desk = await session.start_agent_desk(tmpdir / "crewai", llm=llm, hold_feed=True)
            if provider_errors is not None:
                desk.provider_error_listeners.append(provider_errors)
        await session.run(on_batch=(lambda: progress(engine)) if progress is not None else None)
        await session.settle()
        wall = time.perf_counter() - started
        if session.journal is not None:
            try:
                await session.journal.flush(timeout=JOURNAL_DRAIN_S)
            except JournalError as exc:
                journal_error = str(exc)
                unwritten = session.journal.unwritten
            counts = await session.journal.counts()
        desk_rows = desk.report_rows(session.approvals) if desk is not None else None
        if desk is not None:
            desk_rows["skips"] = list(desk.skips)  # each skip's, abort's and veto's reason
    finally:
        try:
            await session.close()
        except JournalError as exc:
            journal_error = journal_error or str(exc)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    stats = feed.stats
    report: dict[str, Any] = {
        "breaker": [breaker_row(c) for c in changes],
        "spikes": [spike_row(s) for s in spikes],
        "stats": {
            "ticks": engine.ticks,
            "bad_rows": stats.bad_rows + engine.rejected_ticks + engine.rejected_marks,
            "wall_seconds": round(wall, 4),
            "ticks_per_second": round(engine.ticks / wall, 1) if wall > 0 else 0.0,
            "decision_latency_us": engine.latency.summary_us(),
            "bad_row_examples": [  # the first twenty, and the last (it may say why reading stopped)
                {"file": p.source, "line": p.line, "error": p.error}
                for p in (list(engine.problems)[:20] + list(engine.problems)[-1:] if len(engine.problems) > 20
                          else list(engine.problems))
            ],
            "symbols": sorted(engine.market.symbols),
            "sources": feed.describe_sources(),  # per file: symbol, interval, time unit, rows, bad rows
            "final_state": engine.breaker.status.value,
            "journal": str(db_path) if db_path is not None else None,
            "journal_rows": counts,
            "journal_error": journal_error,
            "journal_unwritten": unwritten,
        },
    }
    if study is not None:
        report["protection"] = study.report()
    if scores is not None:
        scores[0].study = study  # the real breaker's books are the report's own
        report["shadows"] = [score.report() for score in scores]
    if desk_rows is not None:
        report.update(desk_rows)
        prices = engine.market.last_prices()
        p = session.portfolio
        report["desk_paper"] = {
            "auto_approved": session.auto_approve, "llm": session.decision_maker.label,
            "equity_end": round(p.equity(prices), 2), "realized_pnl": round(p.realized_pnl, 2),
            "unrealized_pnl": round(p.unrealized_pnl(prices), 2), "fees": round(p.fees_paid, 2),
            "net_pnl": round(p.equity(prices) - p.starting_cash, 2),
            "open_positions": {s: q.quantity for s, q in p.positions().items() if q.quantity > 0},
        }
    return session, report
