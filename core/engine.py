"""The engine: feed -> market state -> guardian and scanner -> breaker and spike queue.

This is the one object the console and the headless commands hold. Its per-tick work is
synchronous and allocation-light; everything slower (journal, agents, UI) hangs off the
event bus and never sits between a crossing tick and the halt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from core.breaker.state import CircuitBreakerState
from core.bus import EventBus
from core.detect.guardian import Guardian, GuardianGroup
from core.detect.scanner import Scanner
from core.events import (
    Actor,
    BreakerChanged,
    BreakerStatus,
    FeedHealth,
    FeedProblem,
    Liquidation,
    MarkPrice,
    SpikeDetected,
    SymbolEnded,
    Tick,
)
from core.latency import LatencyRecorder
from core.market.feed import Feed
from core.market.state import MarketState, TooManySymbols
from core.market.ticks import LATEST_MS, MAX_PRICE, MAX_QTY, MIN_PRICE, implausible
from core.settings import Settings

_NO_MARKS: list[bool] = []  # a live feed's pause never stops a batch: it is never appended to

log = logging.getLogger("spikeguard.engine")


class Engine:
    def __init__(
        self,
        settings: Settings,
        feed: Feed,
        breaker: CircuitBreakerState | None = None,
        bus: EventBus | None = None,
        wall_ms: Callable[[], int] | None = None,
        long_minutes: tuple[int, ...] = (),
    ) -> None:
        """`long_minutes`: horizons the windows keep beyond the breaker's own (shadow breakers')."""
        self.settings = settings
        self.wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self.clock_interval_s = 1.0  # how often a live feed's silence is checked against the wall clock
        self.feed = feed
        self.bus = bus or EventBus()
        self.breaker = breaker or CircuitBreakerState()
        self.market = MarketState(max_symbols=settings.performance.max_symbols,
                                  long_minutes=settings.long_minutes() + long_minutes)
        self.spikes: deque[SpikeDetected] = deque(maxlen=10_000)
        self.problems: deque[FeedProblem] = deque(maxlen=1_000)
        self.guardian = Guardian(settings.circuit_breaker, self.market, self.breaker, feed.cadence_ms,
                                 realtime=feed.realtime)
        self.scanner = Scanner(settings.spike_detection, self.market, self._on_spike)
        # shadow breakers' guardians (core.shadow): the same windows, their own breakers, never acting
        self.shadow_guardians = GuardianGroup(self.market.timeframes_min.index(60))
        self.latency = LatencyRecorder(settings.performance.decision_latency_sample)
        self.ticks = 0
        self.rejected_ticks = 0
        self.rejected_marks = 0  # mark prices and liquidations outside the plausible bounds
        self.feed_health: dict[str, FeedHealth] = {}  # a live feed's latest state per stream
        self.feed_health_listeners: list[Callable[[FeedHealth, FeedHealth | None], None]] = []  # (new, previous)
        self.held: list[Any] | None = None  # the rest of a batch stopped at a pause (see process)
        self.started_wall: float | None = None
        self.finished = False
        self._spike_listeners: list[Callable[[SpikeDetected], None]] = []
        # called for every accepted tick after the detectors (the paper book's fills, take-profit watch)
        self.tick_listeners: list[Callable[[Tick], None]] = []
        # called after the detectors for one symbol's ticks only (a listener that reads the references)
        self.symbol_listeners: dict[str, list[Callable[[Tick], None]]] = {}
        self.breaker.subscribe(self._on_breaker_change)

    # ------------------------------------------------------------------ wiring
    def on_spike(self, fn: Callable[[SpikeDetected], None]) -> None:
        self._spike_listeners.append(fn)

    def _on_spike(self, spike: SpikeDetected) -> None:
        blocked = self.settings.spike_detection.check_circuit_breaker and self.breaker.is_active()
        if blocked:
            spike.details["blocked_by_breaker"] = self.breaker.status.value
        self.spikes.append(spike)
        for fn in self._spike_listeners:
            fn(spike)
        self.bus.publish(spike)

    def _on_breaker_change(self, change: BreakerChanged) -> None:
        self.bus.publish(change)

    def _problem(self, problem: FeedProblem) -> None:
        self.problems.append(problem)
        self.bus.publish(problem)

    # ------------------------------------------------------------------ the hot path
    def process(self, batch: list[Any]) -> None:
        """Run a batch through the pipeline. A pause of a feed that is not live (a desk's hold at
        a spike, the operator's pause) stops the batch right after the event that caused it; the
        rest waits in `held` for run() to resume it, so a crew reads the market as of its spike."""
        marks = self.feed.pause_marks if not self.feed.realtime else _NO_MARKS
        events = iter(batch)
        if marks:
            marks.clear()
            if self.feed.paused:
                self.held = batch
                return
        # locals once a batch: the pure path reads them faster than globals, and the compiled
        # path calls the detectors natively through typed locals (a bound method would not be)
        market = self.market
        windows = market.symbols
        guardian = self.guardian
        scanner = self.scanner
        latency = self.latency
        listeners = self.tick_listeners
        symbol_listeners = self.symbol_listeners
        shadows = self.shadow_guardians
        clock = time.perf_counter_ns
        tick_type = Tick
        # the bounds of core/market/ticks.py
        min_price, max_price, max_qty, latest_ms = MIN_PRICE, MAX_PRICE, MAX_QTY, LATEST_MS
        for ev in events:
            if type(ev) is tick_type:
                t0 = clock()
                price = ev.price
                qty = ev.qty
                t = ev.time_ms
                # NaN fails every comparison
                if not (min_price <= price <= max_price and 0.0 <= qty <= max_qty and t <= latest_ms):
                    self._reject(ev, implausible(price, qty, t))
                    continue
                w = windows.get(ev.symbol)
                if w is None:
                    try:
                        w = market.windows(ev.symbol)
                    except TooManySymbols as exc:
                        self._reject(ev, str(exc))
                        continue
                if t < w.last_time:
                    self._reject(ev, f"tick at {t} is older than the symbol's last tick at {w.last_time}")
                    continue
                w.update(price, qty, t)
                guardian.on_tick(w, t)
                scanner.tick_started_ns = t0
                scanner.on_tick(w, t)
                self.ticks += 1
                latency.record(clock() - t0)
                if shadows:
                    shadows.on_tick(w, t)
                if listeners:
                    for fn in listeners:
                        fn(ev)
                if symbol_listeners:
                    for fn in symbol_listeners.get(ev.symbol, ()):
                        fn(ev)
                if marks:
                    break
            elif type(ev) is MarkPrice:
                if not (MIN_PRICE <= ev.mark_price <= MAX_PRICE and ev.time_ms <= LATEST_MS):
                    self._reject(ev, implausible(ev.mark_price, 0.0, ev.time_ms))
                    continue
                self.scanner.on_mark_price(ev)
                if marks:
                    break
            elif type(ev) is Liquidation:
                if not (MIN_PRICE <= ev.price <= MAX_PRICE and 0.0 <= ev.qty <= MAX_QTY and ev.time_ms <= LATEST_MS):
                    self._reject(ev, implausible(ev.price, ev.qty, ev.time_ms))
                    continue
                self.scanner.on_liquidation(ev)
                if marks:
                    break
            elif type(ev) is SymbolEnded:
                self.market.ended.add(ev.symbol)
                self.guardian.on_symbol_ended(ev.symbol)
                for g in self.shadow_guardians:
                    g.on_symbol_ended(ev.symbol)
            elif type(ev) is FeedHealth:
                previous = self.feed_health.get(ev.stream)
                self.feed_health[ev.stream] = ev
                self.bus.publish(ev)
                for on_health in self.feed_health_listeners:
                    on_health(ev, previous)
        if marks:  # stopped at a pause: the rest of the batch waits for the resume
            marks.clear()
            self.held = list(events)

    def _reject(self, ev: Tick | MarkPrice | Liquidation, why: str) -> None:
        if type(ev) is Tick:
            self.rejected_ticks += 1
        else:
            self.rejected_marks += 1
        self._problem(FeedProblem(f"{self.feed.name}:{ev.symbol}", None, why))

    # ------------------------------------------------------------------ running
    async def run(self, on_batch: Callable[[], None] | None = None) -> None:
        """Consume the feed until it ends (or stop() is called)."""
        self.bus.bind_loop(asyncio.get_running_loop())
        self.started_wall = time.perf_counter()
        clock_task = asyncio.create_task(self._clock_loop()) if self.feed.realtime else None
        seen_problems = 0
        try:
            async for batch in self.feed.batches():
                self.process(batch)
                while self.held is not None:
                    await self.feed.wait_resumed()
                    rest, self.held = self.held, None
                    if self.feed.stopped:
                        break
                    self.process(rest)
                stats = self.feed.stats
                if len(stats.problems) > seen_problems:
                    for problem in stats.problems[seen_problems:]:
                        self._problem(problem)
                    seen_problems = len(stats.problems)
                if on_batch is not None:
                    on_batch()
        finally:
            if clock_task is not None:
                clock_task.cancel()
            self.finished = True

    async def _clock_loop(self) -> None:
        """Wall-clock stale check for live feeds (a silent websocket sends no ticks to check on)."""
        while True:
            await asyncio.sleep(self.clock_interval_s)
            now = self.wall_ms()
            self.guardian.on_clock(now)
            for g in self.shadow_guardians:
                g.on_clock(now)

    def stop(self) -> None:
        self.feed.stop()

    # ------------------------------------------------------------------ commands (operator)
    def force_trigger(self, reason: str, actor: Actor = Actor.OPERATOR) -> bool:
        return self.breaker.trigger(reason, {"requested_by": actor.value}, self.guardian.snapshot(), actor=actor,
                                    time_ms=self.now_ms(), trigger_type=actor.value)

    def clear_needs_override(self, assessment: dict[str, Any] | None = None) -> str | None:
        """Why clearing now needs the operator's override (a deep drop whose recovery
        conditions are unmet), or None."""
        a = assessment if assessment is not None else self.guardian.assess_recovery()
        if a.get("deep") and not a.get("recovery_conditions_met"):
            return (f"the drop reached {a['max_drop_percent']:.1f}% (deep level {a['deep_level_percent']:g}%) "
                    f"and the recovery conditions are not met")
        return None

    def clear_breaker(self, reason: str, override: bool = False, actor: Actor = Actor.OPERATOR) -> tuple[bool, str]:
        """Operator clear. Refused while a deep episode's recovery conditions are unmet,
        unless `override` is given."""
        assessment = self.guardian.assess_recovery()
        why = self.clear_needs_override(assessment)
        if why and not override:
            return False, f"refused: {why}"
        now = self.now_ms()
        done = self.breaker.clear(reason=reason, actor=actor, time_ms=now,
                                  details={"override": override, "recovery": assessment})
        if not done:
            return False, "already SAFE"
        # the rules look at once, so the answer says what the clear led to
        self.guardian.on_clock(now)
        after = self.breaker.snapshot()
        if after.status is BreakerStatus.SAFE:
            return True, "cleared: SAFE"
        return True, f"cleared, then {after.status.value} by the {after.actor.value} at once: {after.reason}"

    def now_ms(self) -> int:
        """The engine's notion of now: event time of the last tick (wall time for live feeds)."""
        if self.feed.realtime or not self.guardian.last_time_ms:
            return self.wall_ms()
        return self.guardian.last_time_ms
