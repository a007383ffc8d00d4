"""The one async interface every market feed implements, and the paced base of the feeds
whose events are known in advance (sim, replay).

A feed yields batches of market events in event-time order. Batching amortises the
per-event cost of the async machinery; pacing maps event time onto wall time for a
given speed ("max" means no pacing at all, so a replay at max speed computes exactly
what real time would, only sooner). A live feed (an exchange's streams) yields batches as
messages arrive.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from core.events import FeedProblem, MarketEvent

MAX_SPEED = 0.0  # sentinel: no pacing
# a paced feed skips event-time gaps longer than this (a data outage, or two replayed files
# from different years) instead of sleeping through them
SKIP_GAP_MS = 3_600_000


def parse_speed(text: str | float | int) -> float:
    """'max' -> MAX_SPEED, '30' / '30x' / 0.5 -> factor of real time. Raises ValueError."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        raw = text.strip().lower()
        if raw == "max":
            return MAX_SPEED
        try:
            value = float(raw.removesuffix("x"))
        except ValueError:
            raise ValueError(f"speed must be 'max' or a positive number, got {text!r}") from None
    if not (value > 0) or value == float("inf"):
        raise ValueError(f"speed must be 'max' or a positive number, got {text!r}")
    return value


@dataclass
class FeedStats:
    events: int = 0
    bad_rows: int = 0
    problems: list[FeedProblem] = field(default_factory=list)
    last_event_ms: int | None = None
    max_problems_kept: int = 200

    def record_problem(self, problem: FeedProblem) -> None:
        self.bad_rows += 1
        if len(self.problems) < self.max_problems_kept:
            self.problems.append(problem)


class Feed(abc.ABC):
    """What every feed is: an async source of event batches, with pause, resume and stop.

    Attributes:
        name: short feed name shown in the UI ("sim", "replay", "binance").
        realtime: True when event time is wall time (a live exchange feed).
        symbols: the symbols this feed provides, when known in advance.
        cadence_ms: the feed's natural spacing between a symbol's updates (a replay of
            5-minute candles has a coarse cadence); the guardian's stale rule scales with it.
    """

    name = "feed"
    realtime = False

    def __init__(self, speed: float = MAX_SPEED) -> None:
        self.speed = speed
        self.stats = FeedStats()
        self.symbols: tuple[str, ...] = ()
        self.cadence_ms: int = 1000
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._stopped = False
        # one mark per pause: the engine stops at the event that asked for it (core.engine)
        self.pause_marks: list[bool] = []

    # -- control -------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    def pause(self) -> None:
        self._resumed.clear()
        if not self.realtime:
            self.pause_marks.append(True)

    async def wait_resumed(self) -> None:
        """Until resume() (or stop())."""
        await self._resumed.wait()

    def resume(self) -> None:
        self._resumed.set()

    def stop(self) -> None:
        self._stopped = True
        self._resumed.set()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def describe_sources(self) -> list[dict[str, Any]]:
        """What the feed read from, one dict per input file (none for generated feeds)."""
        return []

    @abc.abstractmethod
    def batches(self) -> AsyncIterator[list[MarketEvent]]:
        """Lists of events in non-decreasing event time, until the feed ends or is stopped."""


class PacedFeed(Feed):
    """A feed of known events (generated or recorded): subclasses implement `_events()`, a
    sync iterator in event-time order; this paces it onto wall time at `speed`."""

    def __init__(self, speed: float = MAX_SPEED, batch_size: int = 512, batch_span_ms: int = 250) -> None:
        super().__init__(speed)
        self.batch_size = batch_size
        self.batch_span_ms = batch_span_ms
        # pacing reads this clock and waits with this sleep: a test can give both a virtual time
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @abc.abstractmethod
    def _events(self) -> Iterator[MarketEvent]:
        """The feed's events, in non-decreasing event time."""

    def set_speed(self, speed: float) -> None:
        """A new pace from the next event on, without a jump. A feed at max speed stays there:
        it computes, nobody watches it."""
        if self.speed == MAX_SPEED or speed == MAX_SPEED or speed <= 0:
            return
        self.speed = float(speed)

    async def batches(self) -> AsyncIterator[list[MarketEvent]]:
        """Yield lists of events. At max speed batches are `batch_size` long; when paced,
        a batch spans at most `batch_span_ms` of event time and is released on time."""
        stats = self.stats
        batch: list[MarketEvent] = []
        batch_start_ms: int | None = None
        anchor_event_ms: int | None = None
        anchor_wall = 0.0
        previous_ms: int | None = None
        speed = self.speed
        paced = speed != MAX_SPEED
        for event in self._events():
            if self._stopped:
                break
            t = event.time_ms
            if paced and self.speed != speed:  # set_speed(): the new pace starts from the last event out
                speed = self.speed
                anchor_event_ms, anchor_wall = (previous_ms if previous_ms is not None else t), self.clock()
            if paced:
                if batch_start_ms is None:
                    batch_start_ms = t
                if t - batch_start_ms >= self.batch_span_ms * speed and batch:
                    yield batch
                    batch = []
                    batch_start_ms = t
                if anchor_event_ms is None or (previous_ms is not None and t - previous_ms > SKIP_GAP_MS):
                    anchor_event_ms, anchor_wall = t, self.clock()
                previous_ms = t
                due = anchor_wall + (t - anchor_event_ms) / 1000.0 / speed
                delay = due - self.clock()
                if delay > 0.002:
                    if batch:
                        yield batch
                        batch = []
                        batch_start_ms = t
                    await self.sleep(delay)
            if not self._resumed.is_set():
                if batch:
                    yield batch
                    batch = []
                paused_at = self.clock()
                await self._resumed.wait()
                anchor_wall += self.clock() - paused_at  # a pause does not make us "late"
            batch.append(event)
            stats.events += 1
            stats.last_event_ms = t
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
                batch_start_ms = None
                if not paced:
                    await asyncio.sleep(0)  # let the loop breathe at max speed
        if batch:
            yield batch
