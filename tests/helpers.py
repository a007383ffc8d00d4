"""Small builders for engine tests: a list-backed feed and synthetic price paths."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator

from core.engine import Engine
from core.events import MarketEvent, Tick
from core.market.feed import PacedFeed

T0 = 1_700_000_000_000
SEC = 1000
MIN = 60_000


class ListFeed(PacedFeed):
    name = "test"

    def __init__(self, events: Iterable[MarketEvent] = (), cadence_ms: int = 1000) -> None:
        super().__init__()
        self._list = list(events)
        self.cadence_ms = cadence_ms

    def _events(self) -> Iterator[MarketEvent]:
        return iter(self._list)


def without_slow_rules(settings):
    cb = settings.circuit_breaker
    return settings.model_copy(update={"circuit_breaker": cb.model_copy(
        update={"slow_crash": cb.slow_crash.model_copy(update={"enabled": False})})})


def make_engine(settings, cadence_ms: int = 1000) -> Engine:
    return Engine(settings, ListFeed(cadence_ms=cadence_ms))


def path(symbol: str, points: list[tuple[float, float]], step_ms: int = SEC, start: int = T0) -> list[Tick]:
    """Linear price path through (minute, price) points, one tick every step_ms."""
    ticks = []
    for (m0, p0), (m1, p1) in zip(points, points[1:]):
        t0, t1 = start + int(m0 * MIN), start + int(m1 * MIN)
        n = max(1, (t1 - t0) // step_ms)
        for i in range(n):
            ticks.append(Tick(symbol, p0 + (p1 - p0) * i / n, 1.0, t0 + i * step_ms))
    m, p = points[-1]
    ticks.append(Tick(symbol, p, 1.0, start + int(m * MIN)))
    return ticks


def interleave(*streams: list[Tick]) -> list[Tick]:
    return sorted((t for s in streams for t in s), key=lambda t: t.time_ms)


def states(engine: Engine) -> list[str]:
    return [c.status.value for c in engine.breaker.history]


class TurnJournal:
    """An order journal that keeps nothing and takes one turn of the loop to write an intent,
    as a real commit does: concurrent submitters run in between."""

    failing = False

    async def record_order(self, order, event_time_ms: int | None = None) -> int:
        await asyncio.sleep(0)
        return 0

    def enqueue_order(self, order, event_time_ms: int | None = None) -> None:
        pass

    def enqueue_fill(self, fill) -> None:
        pass
