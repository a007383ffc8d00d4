"""Headless runs (replay, simulate): the engine over a finite feed, summarised as data.

The JSON object is a contract other tools rely on: keys are only ever added.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from core.breaker.state import CircuitBreakerState
from core.engine import Engine
from core.events import BreakerChanged, SpikeDetected, iso_utc
from core.market.feed import Feed
from core.settings import Settings


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
    progress: Callable[[Engine], None] | None = None,
    breaker: CircuitBreakerState | None = None,
) -> tuple[Engine, dict[str, Any]]:
    engine = Engine(settings, feed, breaker=breaker)
    changes: list[BreakerChanged] = []
    engine.breaker.subscribe(changes.append)
    spikes: list[SpikeDetected] = []
    engine.on_spike(spikes.append)
    started = time.perf_counter()
    await engine.run(on_batch=(lambda: progress(engine)) if progress else None)
    wall = time.perf_counter() - started
    stats = feed.stats
    report: dict[str, Any] = {
        "breaker": [breaker_row(c) for c in changes],
        "spikes": [spike_row(s) for s in spikes],
        "stats": {
            "ticks": engine.ticks,
            "bad_rows": stats.bad_rows + engine.rejected_ticks,
            "wall_seconds": round(wall, 4),
            "ticks_per_second": round(engine.ticks / wall, 1) if wall > 0 else 0.0,
            "decision_latency_us": engine.latency.summary_us(),
            "bad_row_examples": [
                {"file": p.source, "line": p.line, "error": p.error} for p in list(engine.problems)[:20]
            ],
            "symbols": sorted(engine.market.symbols),
            "final_state": engine.breaker.status.value,
        },
    }
    return engine, report
