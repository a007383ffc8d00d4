"""The guardian: hard breaker rules over market state, evaluated on every tick.

Rules (all thresholds from config, all times event times):
- TRIGGERED when a reference symbol is down `dump_1h_percent` from its trailing-60-minute
  high, or when at least `breadth_fraction` of at least `min_symbols` symbols are each
  down `market_wide.dump_1h_percent`.
- WARNING at `warning_1h_percent` in 60 minutes or `warning_5m_percent` in 5 minutes, at
  the market-wide warning breadth, or when a reference symbol the feed provides is stale.
- WARNING clears (hysteresis) only after every drop stays below `ratio` x its warning
  level, with no stale data, for `warning_clear.minutes`.
- TRIGGERED -> RECOVERING when every symbol of the episode has made no new low for
  `no_new_low_minutes` and rebounded `rebound_percent` off its trough; a new low while
  RECOVERING re-triggers. RECOVERING -> SAFE after `cooldown_minutes` with no warning
  condition, only with auto_resume on and an episode shallower than `deep_level_percent`.
- After a clear, a condition that is still true does not re-fire until it has reset
  below its clear level (or the market makes a new low): an operator's clear sticks.
- Slow crashes: each reference's drop from its high over each `slow_crash.horizons` entry
  (4 and 24 hours by default) has its own WARNING and TRIGGERED level, and so has breadth
  over `slow_crash.market_wide.horizon`. They follow the same arming and hysteresis.
- RECOVERING -> SAFE also needs the market stable: no new low for `recovery.stable_minutes`,
  one-minute volatility back under `volatility_multiple` x its pre-crash level, breadth
  recovered (assess_recovery reports each).
- A live feed (wall-clock time) whose reference symbol stays silent past the stale rule and
  then for `blind_seconds` is blind: TRIGGERED (trigger_type feed_blind). When its data
  returns (the feed backfills the gap before it resumes), RECOVERING, then the usual
  cool-down. A replay's gap is only stale: its time is not the wall's.
- The exchange's own conditions are venue holds (hold_venue): a WARNING hold (an IP ban)
  keeps the breaker at least WARNING, a TRIGGERED hold (a persistent clock skew) trips it;
  once released, its episode recovers like a blind feed's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from core.breaker.machine import IllegalTransition
from core.breaker.state import CircuitBreakerState
from core.events import Actor, BreakerChanged, BreakerStatus
from core.market.state import MarketState
from core.market.windows import MINUTE_MS, SymbolWindows
from core.settings import CircuitBreakerSettings

log = logging.getLogger("spikeguard.guardian")
_RECHECK_MS: Final = 1_000  # time-based rules (stale data, timers) are re-checked this often on other ticks

SAFE, WARNING, TRIGGERED, RECOVERING = (
    BreakerStatus.SAFE, BreakerStatus.WARNING, BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING,
)


@dataclass
class _SlowRule:
    """A reference's drawdown rule over one long horizon (core.market.windows long_high)."""

    label: str  # "4h"
    minutes: int
    j: int  # the horizon's index in the windows
    warn: float
    trigger: float
    clear: float
    trigger_type: str
    armed: bool = True
    disarmed_low: float = 0.0


@dataclass
class _Fire:
    """A trigger condition: a reference's rule (ref set) or breadth (ref None); `slow` is the
    long-horizon rule or None for the 60-minute ones."""

    reason_of: Callable[[], str]
    ref: "_Reference | None"
    slow: _SlowRule | None = None


@dataclass
class _Reference:
    symbol: str
    trigger: float  # percent
    warn_1h: float
    warn_5m: float
    trigger_type: str
    clear_1h: float
    clear_5m: float
    k5: int
    k60: int
    armed: bool = True  # may fire a trigger (re-armed once its drop resets, or on a new low)
    disarmed_low: float = 0.0  # the low when a clear disarmed it
    stale: bool = False
    blind: bool = False
    ended: bool = False
    gap_ewma_ms: float = 0.0
    prev_t: int | None = None
    slow: list[_SlowRule] = field(default_factory=list)


@dataclass(frozen=True)
class VenueHold:
    """A condition of the exchange itself that holds the breaker (core.exchange_startup maps
    the exchange's alarms to these)."""

    name: str  # also the trigger_type of the warning or trigger it causes
    status: BreakerStatus  # WARNING or TRIGGERED
    reason: str


@dataclass
class _EpisodeLeg:
    trough: float
    trough_time: int
    peak: float  # the high of the rule's window when the leg was opened
    pre_sigma: float = 0.0  # one-minute volatility before the crash (the slow EWMA), for the recovery


@dataclass
class Episode:
    """One guardian-triggered halt: the symbols that caused it and their troughs."""

    trigger_type: str
    started_ms: int
    legs: dict[str, _EpisodeLeg] = field(default_factory=dict)
    max_drop_pct: float = 0.0
    market_wide: bool = False  # the breadth rule is part of this halt
    blind: set[str] = field(default_factory=set)  # references whose silence is part of this halt
    held: set[str] = field(default_factory=set)  # venue holds that are part of this halt

    def deep(self, level: float) -> bool:
        return self.max_drop_pct >= level


class Guardian:
    def __init__(
        self,
        settings: CircuitBreakerSettings,
        market: MarketState,
        breaker: CircuitBreakerState,
        feed_cadence_ms: int = 1000,
        realtime: bool = False,
    ) -> None:
        self.settings = settings
        self.market = market
        self.realtime = realtime  # event time is wall time: silence can be blindness
        self.breaker = breaker
        self.enabled = settings.enabled
        tf = market.timeframes_min
        if 60 not in tf or 5 not in tf:
            raise ValueError("the guardian needs 5- and 60-minute windows")
        self._k5, self._k60 = tf.index(5), tf.index(60)
        ratio = settings.warning_clear.ratio
        self.refs: dict[str, _Reference] = {
            sym: _Reference(sym, t.dump_1h_percent, t.warning_1h_percent, t.warning_5m_percent, t.trigger_type,
                            t.warning_1h_percent * ratio, t.warning_5m_percent * ratio, self._k5, self._k60)
            for sym, t in settings.references.items()
        }
        slow = settings.slow_crash
        long_minutes = market.long_minutes
        for ref in self.refs.values():
            ref.slow = [self._slow_rule(ref, label, h.minutes, h.warning_percent, h.trigger_percent, long_minutes,
                                        ratio)
                        for label, h in sorted(slow.horizons.items(), key=lambda kv: kv[1].minutes)] \
                if slow.enabled else []
        mw = settings.market_wide
        self._mw_enabled = mw.enabled
        self._mw_trigger = mw.dump_1h_percent
        self._mw_warn = mw.warning_dump_1h_percent
        self._mw_down: dict[str, int] = {}  # symbol -> 0 none, 1 past warning level, 2 past trigger level
        self._mw_count_warn = 0
        self._mw_count_trigger = 0
        self._mw_armed = True
        # breadth over the long horizon: same counting, its own levels
        self._mws: _SlowRule | None = None
        if slow.enabled and mw.enabled and slow.horizons:
            h = slow.horizons[slow.market_wide.horizon]
            self._mws = _SlowRule(slow.market_wide.horizon, h.minutes, self._long_index(h.minutes, long_minutes),
                                  slow.market_wide.warning_percent, slow.market_wide.trigger_percent,
                                  slow.market_wide.warning_percent * ratio, f"market_wide_{slow.market_wide.horizon}")
        self._mws_down: dict[str, int] = {}
        self._mws_count_warn = 0
        self._mws_count_trigger = 0
        self.feed_cadence_ms = feed_cadence_ms
        self._stale_floor_ms = settings.stale_data.seconds * 1000.0
        self._stale_mult = settings.stale_data.cadence_multiple
        self._warn_clear_ms = settings.warning_clear.minutes * MINUTE_MS
        self._calm_since: int | None = None
        self.episode: Episode | None = None
        self._recover_calm_since: int | None = None
        self._recovering_since = 0  # when RECOVERING began: older ticks (a backfill) are no cool-down
        self.last_time_ms = 0
        self._next_check_ms = 0
        # the operator's last clear: (event time, each reference's 60-minute low then)
        self._operator_clear: tuple[int, dict[str, float]] | None = None
        self.venue_holds: dict[str, VenueHold] = {}
        breaker.subscribe(self._on_breaker_change)
        breaker.agent_trigger_guard = self.agent_trigger_refusal

    @staticmethod
    def _long_index(minutes: int, long_minutes: tuple[int, ...]) -> int:
        if minutes not in long_minutes:
            raise ValueError(f"the market keeps no {minutes}-minute horizon (has {list(long_minutes)})")
        return long_minutes.index(minutes)

    def _slow_rule(self, ref: _Reference, label: str, minutes: int, warn: float, trigger: float,
                   long_minutes: tuple[int, ...], ratio: float) -> _SlowRule:
        return _SlowRule(label, minutes, self._long_index(minutes, long_minutes), warn, trigger, warn * ratio,
                         f"{ref.trigger_type}_{label}")

    # ------------------------------------------------------------------ feed hooks
    def on_tick(self, w: SymbolWindows, t: int, d60: float | None = None, dlong: float | None = None) -> None:
        """Call after the symbol's windows took the tick. `d60` and `dlong` (the drops breadth
        reads) may come precomputed when several guardians share the windows (GuardianGroup)."""
        if not self.enabled:
            return
        self.last_time_ms = t
        breadth_moved = self._update_breadth(w, d60, dlong) if self._mw_enabled else False
        ref = self.refs.get(w.symbol)
        if ref is not None:
            self._track_cadence(ref, w)
        elif not breadth_moved and t < self._next_check_ms:
            return  # nothing this tick can change: the references' conditions did not move
        self._next_check_ms = t + _RECHECK_MS
        self._evaluate(t)

    def on_symbol_ended(self, symbol: str) -> None:
        ref = self.refs.get(symbol)
        if ref is not None:
            ref.ended = True
            ref.stale = False

    def on_clock(self, now_ms: int) -> None:
        """Periodic check against a clock (wall time for live feeds) for the stale rule."""
        if self.enabled:
            self._evaluate(now_ms)

    # ------------------------------------------------------------------ conditions
    def _track_cadence(self, ref: _Reference, w: SymbolWindows) -> None:
        # inter-tick gap of this symbol; gaps of 0 (several ticks in one ms) carry no cadence
        prev = ref.prev_t
        if prev is not None and w.last_time > prev:
            gap = w.last_time - prev
            ref.gap_ewma_ms = gap if ref.gap_ewma_ms == 0 else 0.9 * ref.gap_ewma_ms + 0.1 * min(gap, 10 * ref.gap_ewma_ms)
        ref.prev_t = w.last_time

    def stale_after_ms(self, ref: _Reference) -> float:
        cadence = max(self.feed_cadence_ms, ref.gap_ewma_ms)
        return max(self._stale_floor_ms, self._stale_mult * cadence)

    def blind_after_ms(self, ref: _Reference) -> float:
        """Blindness scales with staleness: 60 s against the stale rule's 30 s by default."""
        stale = self.settings.stale_data
        return self.stale_after_ms(ref) * stale.blind_seconds / stale.seconds

    def _update_breadth(self, w: SymbolWindows, d60: float | None, dlong: float | None) -> bool:
        drop = w.drop_pct(self._k60) if d60 is None else d60
        level = 2 if drop >= self._mw_trigger else 1 if drop >= self._mw_warn else 0
        old = self._mw_down.get(w.symbol, -1)
        moved = level != old
        if moved:
            if old >= 1:
                self._mw_count_warn -= 1
            if old == 2:
                self._mw_count_trigger -= 1
            if level >= 1:
                self._mw_count_warn += 1
            if level == 2:
                self._mw_count_trigger += 1
            self._mw_down[w.symbol] = level
        rule = self._mws
        if rule is None:
            return moved
        drop = w.long_drop_pct(rule.j) if dlong is None else dlong
        level = 2 if drop >= rule.trigger else 1 if drop >= rule.warn else 0
        old = self._mws_down.get(w.symbol, -1)
        if level == old:
            return moved
        if old >= 1:
            self._mws_count_warn -= 1
        if old == 2:
            self._mws_count_trigger -= 1
        if level >= 1:
            self._mws_count_warn += 1
        if level == 2:
            self._mws_count_trigger += 1
        self._mws_down[w.symbol] = level
        return True

    def _breadth(self) -> tuple[int, bool, bool]:
        n = len(self._mw_down)
        mw = self.settings.market_wide
        if not self._mw_enabled or n < mw.min_symbols:
            return n, False, False
        return n, self._mw_count_trigger >= mw.breadth_fraction * n, self._mw_count_warn >= mw.breadth_fraction * n

    def _slow_breadth(self) -> tuple[bool, bool]:
        """(trigger, warning) of the long-horizon breadth rule."""
        n = len(self._mws_down)
        mw = self.settings.market_wide
        if self._mws is None or n < mw.min_symbols:
            return False, False
        return self._mws_count_trigger >= mw.breadth_fraction * n, self._mws_count_warn >= mw.breadth_fraction * n

    # ------------------------------------------------------------------ the rules
    def _evaluate(self, t: int) -> None:
        status = self.breaker.status
        market = self.market.symbols
        # reasons are callables: formatting text on every tick would cost more than the rules
        trigger: _Fire | None = None
        warn: tuple[Callable[[], str], str, str | None] | None = None  # reason, trigger_type, symbol
        calm = True
        blind: _Reference | None = None
        stale_enabled = self.settings.stale_data.enabled
        for ref in self.refs.values():
            w = market.get(ref.symbol)
            if w is None or not w.ticks:
                continue
            if stale_enabled and not ref.ended:
                age = t - w.last_time
                ref.stale = age > self.stale_after_ms(ref)
                ref.blind = self.realtime and age > self.blind_after_ms(ref)
                if ref.stale:
                    calm = False
                    if warn is None:
                        warn = (partial(_stale_reason, ref.symbol, age), "stale_data", ref.symbol)
                if ref.blind and blind is None:
                    blind = ref
            d60 = w.drop_pct(ref.k60)
            d5 = w.drop_pct(ref.k5)
            if not ref.armed and (d60 < ref.clear_1h or w.last_price < ref.disarmed_low):
                ref.armed = True
            if d60 >= ref.trigger:
                if ref.armed and trigger is None:
                    trigger = _Fire(partial(self._drop_reason, ref.symbol, w, ref.k60, d60, 60), ref)
            if d60 >= ref.warn_1h and warn is None:
                warn = (partial(self._drop_reason, ref.symbol, w, ref.k60, d60, 60), ref.trigger_type, ref.symbol)
            elif d5 >= ref.warn_5m and warn is None:
                warn = (partial(self._drop_reason, ref.symbol, w, ref.k5, d5, 5), ref.trigger_type, ref.symbol)
            if d60 >= ref.clear_1h or d5 >= ref.clear_5m:
                calm = False
            for rule in ref.slow:
                d = w.long_drop_pct(rule.j)
                if not rule.armed and (d < rule.clear or w.last_price < rule.disarmed_low):
                    rule.armed = True
                if d >= rule.trigger and rule.armed and trigger is None:
                    trigger = _Fire(partial(self._long_drop_reason, ref.symbol, w, rule, d), ref, rule)
                if d >= rule.warn and warn is None:
                    warn = (partial(self._long_drop_reason, ref.symbol, w, rule, d), rule.trigger_type, ref.symbol)
                if d >= rule.clear:
                    calm = False
        n, mw_trigger, mw_warn = self._breadth()
        if mw_trigger:
            if self._mw_armed and trigger is None:
                trigger = _Fire(partial(self._breadth_reason, n, self._mw_count_trigger, self._mw_trigger, 60), None)
        elif not self._mw_armed and not mw_warn:
            self._mw_armed = True
        if mw_warn:
            calm = False
            if warn is None:
                warn = (partial(self._breadth_reason, n, self._mw_count_warn, self._mw_warn, 60), "market_wide", None)
        breadth = self._mws
        if breadth is not None:
            mws_trigger, mws_warn = self._slow_breadth()
            if mws_trigger:
                if breadth.armed and trigger is None:
                    trigger = _Fire(partial(self._breadth_reason, n, self._mws_count_trigger, breadth.trigger,
                                            breadth.minutes), None, breadth)
            elif not breadth.armed and not mws_warn:
                breadth.armed = True
            if mws_warn:
                calm = False
                if warn is None:
                    warn = (partial(self._breadth_reason, n, self._mws_count_warn, breadth.warn, breadth.minutes),
                            breadth.trigger_type, None)
        venue: VenueHold | None = None
        for hold in self.venue_holds.values():
            calm = False
            if hold.status is TRIGGERED:
                venue = venue or hold
            elif warn is None:
                warn = (partial(str, hold.reason), hold.name, None)

        try:
            self._act(t, status, trigger, warn, calm, blind, venue)
        except IllegalTransition as exc:
            # an operator or agent moved the breaker between our read and our move (another
            # thread); the rules look again on the next tick, from the state as it is now
            log.info("guardian deferred a move: %s", exc)

    def _act(self, t: int, status: BreakerStatus, trigger: _Fire | None,
             warn: tuple[Callable[[], str], str, str | None] | None, calm: bool, blind: _Reference | None,
             venue: VenueHold | None = None) -> None:
        if status is SAFE or status is WARNING:
            if trigger is not None:
                self._trigger(t, trigger)
            elif blind is not None:
                self._trigger_blind(t, blind)
            elif venue is not None:
                self._trigger_venue(t, venue)
            elif status is SAFE:
                if warn is not None:
                    self.breaker.set_warning(warn[0](), self._details(warn[2]), time_ms=t, symbol=warn[2],
                                             trigger_type=warn[1], market_snapshot=self.snapshot())
                    self._calm_since = None
            else:  # WARNING: clear with hysteresis
                if calm:
                    if self._calm_since is None:
                        self._calm_since = t
                    if t - self._calm_since >= self._warn_clear_ms:
                        self.breaker.clear(reason="warning conditions cleared", actor=Actor.RULE, time_ms=t)
                        self._calm_since = None
                else:
                    self._calm_since = None
        elif status is TRIGGERED:
            if trigger is not None and self.episode is not None and self._is_fresh(trigger.ref, self.episode):
                self._join_episode(t, trigger)  # a second market falling joins the halt it is in
            if blind is not None and self.episode is not None:
                self.episode.blind.add(blind.symbol)  # the recovery waits for its data too
            if venue is not None and self.episode is not None:
                self.episode.held.update(h.name for h in self.venue_holds.values() if h.status is TRIGGERED)
            self._follow_episode(t)
            ep = self.episode
            if ep is not None and self._recovery_met(t, ep):
                self.breaker.start_recovery(
                    f"no new low for {self.settings.recovery.no_new_low_minutes:g} min and "
                    f"rebound >= {self.settings.recovery.rebound_percent:g}% off the trough",
                    details=self.assess_recovery(t), time_ms=t,
                )
                self._recover_calm_since = None
        elif status is RECOVERING:
            ep = self.episode
            new_low = self._follow_episode(t)
            if new_low is not None:
                self.breaker.trigger(
                    f"{new_low} made a new low while recovering", self._details(new_low), self.snapshot(),
                    time_ms=t, symbol=new_low, trigger_type=ep.trigger_type if ep else "new_low",
                )
            elif trigger is not None and self._is_fresh(trigger.ref, ep):
                self._trigger(t, trigger)  # a fresh condition, not the one being recovered from
            elif blind is not None:
                self._trigger_blind(t, blind)
            elif venue is not None:
                self._trigger_venue(t, venue)
            elif ep is not None and self.settings.auto_resume and not ep.deep(self.settings.deep_level_percent):
                if calm and warn is None and self._stable(t, ep):
                    if self._recover_calm_since is None:
                        self._recover_calm_since = max(t, self._recovering_since)
                    if t - self._recover_calm_since >= self.settings.recovery.cooldown_minutes * MINUTE_MS:
                        self.breaker.clear(reason="recovered: cool-down passed with no trigger or warning condition",
                                           actor=Actor.RULE, time_ms=t, details=self.assess_recovery(t))
                else:
                    self._recover_calm_since = None

    @staticmethod
    def _is_fresh(ref: _Reference | None, ep: Episode | None) -> bool:
        if ep is None:
            return True
        if ref is None:
            return not ep.market_wide
        return ref.symbol not in ep.legs

    def _episode_symbols(self, fire: _Fire) -> list[str]:
        if fire.ref is not None:
            return [fire.ref.symbol]
        down = self._mws_down if fire.slow is not None else self._mw_down
        return [s for s, lvl in down.items() if lvl == 2]

    def _open_legs(self, episode: Episode, t: int, fire: _Fire) -> None:
        for s in self._episode_symbols(fire):
            if s in episode.legs:
                continue
            w = self.market.symbols[s]
            peak = w.long_high(fire.slow.j) if fire.slow is not None else w.high(self._k60)
            episode.legs[s] = _EpisodeLeg(w.last_price, t, peak, w.sigma_1m_slow())
        if fire.ref is None:
            episode.market_wide = True

    def _join_episode(self, t: int, fire: _Fire) -> None:
        assert self.episode is not None
        self._open_legs(self.episode, t, fire)

    def _trigger(self, t: int, fire: _Fire) -> None:
        ref = fire.ref
        if ref is not None:
            trigger_type = fire.slow.trigger_type if fire.slow is not None else ref.trigger_type
            symbol: str | None = ref.symbol
        else:
            trigger_type = fire.slow.trigger_type if fire.slow is not None else "market_wide"
            symbol = None
        episode = self.episode if self.breaker.status is RECOVERING and self.episode else Episode(trigger_type, t)
        self._open_legs(episode, t, fire)
        self.episode = episode
        self._follow_episode(t)
        self.breaker.trigger(fire.reason_of(), self._details(symbol, fire.slow), self.snapshot(), time_ms=t,
                             symbol=symbol, trigger_type=trigger_type)

    def _trigger_blind(self, t: int, ref: _Reference) -> None:
        episode = self.episode if self.breaker.status is RECOVERING and self.episode else Episode("feed_blind", t)
        episode.blind.add(ref.symbol)
        self.episode = episode
        silent_s = (t - self.market.symbols[ref.symbol].last_time) / 1000
        self.breaker.trigger(f"{ref.symbol} feed blind: no data for {silent_s:.0f}s", {
            "symbol": ref.symbol, "silent_seconds": round(silent_s, 1),
            "blind_after_seconds": round(self.blind_after_ms(ref) / 1000, 1)},
            self.snapshot(), time_ms=t, symbol=ref.symbol, trigger_type="feed_blind")

    def _trigger_venue(self, t: int, hold: VenueHold) -> None:
        episode = self.episode if self.breaker.status is RECOVERING and self.episode else Episode(hold.name, t)
        episode.held.add(hold.name)
        self.episode = episode
        self.breaker.trigger(hold.reason, {"venue_hold": hold.name}, self.snapshot(), time_ms=t,
                             trigger_type=hold.name)

    def _follow_episode(self, t: int) -> str | None:
        """Update troughs and the episode's depth; return a symbol that made a new low."""
        ep = self.episode
        if ep is None:
            return None
        new_low = None
        for s, leg in ep.legs.items():
            w = self.market.symbols.get(s)
            if w is None or not w.ticks:
                continue
            p = w.last_price
            if p < leg.trough:
                leg.trough, leg.trough_time = p, w.last_time
                new_low = new_low or s
            depth = (leg.peak - leg.trough) / leg.peak * 100.0
            ep.max_drop_pct = max(ep.max_drop_pct, depth, w.drop_pct(self._k60))
        return new_low

    def _recovery_met(self, t: int, ep: Episode) -> bool:
        rec = self.settings.recovery
        if not ep.legs and not ep.blind and not ep.held:
            return False
        if any(self.refs[s].stale for s in ep.blind):  # its data is not back yet
            return False
        if any(name in self.venue_holds for name in ep.held):  # the exchange's condition persists
            return False
        for s, leg in ep.legs.items():
            w = self.market.symbols[s]
            if t - leg.trough_time < rec.no_new_low_minutes * MINUTE_MS:
                return False
            if (w.last_price / leg.trough - 1.0) * 100.0 < rec.rebound_percent:
                return False
        return True

    def _stable(self, t: int, ep: Episode) -> bool:
        """The market has settled: no new low for stable_minutes, volatility back near its
        pre-crash level (breadth is part of `calm`)."""
        rec = self.settings.recovery
        for s, leg in ep.legs.items():
            if t - leg.trough_time < rec.stable_minutes * MINUTE_MS:
                return False
            if leg.pre_sigma > 0 and self.market.symbols[s].sigma_1m() > rec.volatility_multiple * leg.pre_sigma:
                return False
        return True

    def assess_recovery(self, t: int | None = None) -> dict[str, Any]:
        """The recovery conditions as data (for the journal, the console and the agents)."""
        t = self.last_time_ms if t is None else t
        ep = self.episode
        rec = self.settings.recovery
        if ep is None:
            return {"episode": None, "recovery_conditions_met": False, "deep": False,
                    "note": "no rule-triggered episode: an operator trigger needs an operator clear"}
        legs = {}
        for s, leg in ep.legs.items():
            w = self.market.symbols[s]
            minutes_since_low = (t - leg.trough_time) / MINUTE_MS
            rebound = (w.last_price / leg.trough - 1.0) * 100.0
            sigma = w.sigma_1m()
            volatility_back = leg.pre_sigma <= 0 or sigma <= rec.volatility_multiple * leg.pre_sigma
            legs[s] = {
                "trough": leg.trough, "last_price": w.last_price, "minutes_since_low": round(minutes_since_low, 2),
                "rebound_percent": round(rebound, 3),
                "met": minutes_since_low >= rec.no_new_low_minutes and rebound >= rec.rebound_percent,
                # what RECOVERING -> SAFE needs beyond that
                "stable": minutes_since_low >= rec.stable_minutes and volatility_back,
                "volatility_1m_percent": round(sigma * 100, 4),
                "pre_crash_volatility_1m_percent": round(leg.pre_sigma * 100, 4),
            }
        deep = ep.deep(self.settings.deep_level_percent)
        blind = {s: {"data_back": not self.refs[s].stale} for s in sorted(ep.blind)}
        held = {name: {"released": name not in self.venue_holds} for name in sorted(ep.held)}
        return {
            "episode": ep.trigger_type, "started_ms": ep.started_ms, "max_drop_percent": round(ep.max_drop_pct, 3),
            "deep": deep, "deep_level_percent": self.settings.deep_level_percent,
            "auto_resume": self.settings.auto_resume and not deep,
            "recovery_conditions_met": all(v["met"] for v in legs.values()) and all(
                v["data_back"] for v in blind.values()) and all(v["released"] for v in held.values()),
            "legs": legs, "blind": blind, **({"venue_holds": held} if held else {}),
            "breadth_recovered": not self._breadth()[2] and not self._slow_breadth()[1],
            "stabilisation": {"stable_minutes": rec.stable_minutes, "volatility_multiple": rec.volatility_multiple,
                              "met": all(v["stable"] for v in legs.values())},
        }

    # ------------------------------------------------------------------ start-up on an exchange
    def hold_for_startup(self, t: int, reason: str) -> bool:
        """Start halted while the session reconciles with an exchange: TRIGGERED (trigger_type
        startup), with an episode that recovers by the usual cool-down once released. A halt
        restored from the journal stays as it is (False)."""
        if self.breaker.status in (TRIGGERED, RECOVERING):
            return False
        self.episode = Episode("startup", t)
        return self.breaker.trigger(reason, {"phase": "start-up"}, self.snapshot(), time_ms=t,
                                    trigger_type="startup")

    def release_startup(self, t: int, reason: str, details: dict[str, Any]) -> bool:
        """The exchange is reconciled: RECOVERING (entries at reduced size), SAFE after the
        cool-down. False when the start-up hold is not what holds the breaker."""
        if self.breaker.status is not TRIGGERED:
            return False
        ep = self.episode
        if ep is None and self.breaker.snapshot().trigger_type == "startup":
            # a start that failed left its own hold in the journal: this start takes it over
            ep = self.episode = Episode("startup", t)
        if ep is None or ep.trigger_type != "startup":
            return False
        return self.breaker.start_recovery(reason, details, time_ms=t)

    # ------------------------------------------------------------------ the exchange's conditions
    def hold_venue(self, hold: VenueHold, t: int) -> None:
        """Hold the breaker at least at `hold.status` until release_venue(hold.name); the rules
        act on it at once."""
        if hold.status not in (WARNING, TRIGGERED):
            raise ValueError(f"a venue hold is WARNING or TRIGGERED, not {hold.status.value}")
        self.venue_holds[hold.name] = hold
        self._evaluate(t)

    def release_venue(self, name: str, t: int) -> bool:
        """The condition is over: a WARNING it held clears with the usual hysteresis, a halt it
        caused recovers like any other. False when it was not held."""
        if self.venue_holds.pop(name, None) is None:
            return False
        self._evaluate(t)
        return True

    # ------------------------------------------------------------------ an operator's clear holds
    def agent_trigger_refusal(self, time_ms: int) -> str | None:
        """Why an agent may not TRIGGER now, or None. For `agent_holdoff_minutes` after an
        operator cleared, the episode they cleared is theirs: an agent re-triggering it would
        undo their decision. A new low in a reference symbol is a new episode; the rules are
        never held off."""
        clear = self._operator_clear
        if clear is None:
            return None
        cleared_ms, lows = clear
        left_ms = cleared_ms + self.settings.agent_holdoff_minutes * MINUTE_MS - time_ms
        if left_ms <= 0:
            return None
        for symbol, low in lows.items():
            w = self.market.symbols.get(symbol)
            if w is not None and w.ticks and w.last_price < low:
                return None
        return (f"held off: the operator cleared this episode {(time_ms - cleared_ms) / 1000:.0f}s ago and no "
                f"reference made a new low since; agents may trigger again in {left_ms / 60_000:.1f} min "
                f"(the rules still trip on a new condition)")

    # ------------------------------------------------------------------ breaker changes from anyone
    def _on_breaker_change(self, change: BreakerChanged) -> None:
        if change.status is RECOVERING:
            self._recovering_since = change.time_ms
        if change.status is SAFE and change.actor is Actor.OPERATOR:
            self._operator_clear = (change.time_ms, {
                ref.symbol: w.low(ref.k60) for ref in self.refs.values()
                if (w := self.market.symbols.get(ref.symbol)) is not None and w.ticks})
        if change.status is SAFE:
            self.episode = None
            self._calm_since = None
            self._recover_calm_since = None
            # conditions still true at a clear must reset before they fire again
            for ref in self.refs.values():
                w = self.market.symbols.get(ref.symbol)
                if w is None or not w.ticks:
                    continue
                if w.drop_pct(ref.k60) >= ref.clear_1h:
                    ref.armed = False
                    ref.disarmed_low = w.low(ref.k60)
                for rule in ref.slow:
                    if w.long_drop_pct(rule.j) >= rule.clear:
                        rule.armed = False
                        rule.disarmed_low = w.low(ref.k60)
            if self._breadth()[2]:
                self._mw_armed = False
            if self._mws is not None and self._slow_breadth()[1]:
                self._mws.armed = False
        elif change.status is TRIGGERED and change.actor is not Actor.RULE:
            self.episode = None  # an operator's or agent's halt is cleared by the operator

    # ------------------------------------------------------------------ reporting
    def _drop_reason(self, symbol: str, w: SymbolWindows, k: int, drop: float, minutes: int) -> str:
        return (f"{symbol} down {drop:.2f}% from its {minutes}-minute high "
                f"({_fmt(w.high(k))} -> {_fmt(w.last_price)})")

    def _long_drop_reason(self, symbol: str, w: SymbolWindows, rule: _SlowRule, drop: float) -> str:
        return (f"{symbol} down {drop:.2f}% from its {rule.label} high "
                f"({_fmt(w.long_high(rule.j))} -> {_fmt(w.last_price)})")

    def _breadth_reason(self, n: int, count: int, level: float, minutes: int) -> str:
        span = "60 minutes" if minutes == 60 else f"{minutes / 60:g} hours"
        return f"market-wide: {count} of {n} symbols down >= {level:g}% in {span}"

    def _long_drops(self, w: SymbolWindows) -> dict[str, float]:
        rules = next(iter(self.refs.values())).slow if self.refs else []
        return {f"drop_{r.label}_percent": round(w.long_drop_pct(r.j), 4) for r in rules}

    def _details(self, symbol: str | None, slow: _SlowRule | None = None) -> dict[str, Any]:
        if symbol is None or symbol not in self.market.symbols:
            n, _, _ = self._breadth()
            details: dict[str, Any] = {"symbols_monitored": n, "down_trigger_level": self._mw_count_trigger,
                                       "down_warning_level": self._mw_count_warn}
            if self._mws is not None:
                details.update({f"down_{self._mws.label}_trigger_level": self._mws_count_trigger,
                                f"down_{self._mws.label}_warning_level": self._mws_count_warn})
            if slow is not None:
                details["window_minutes"] = slow.minutes
            return details
        w = self.market.symbols[symbol]
        price_from, minutes = (w.long_high(slow.j), slow.minutes) if slow is not None else (w.high(self._k60), 60)
        details = {
            "symbol": symbol, "price_from": price_from, "price_to": w.last_price,
            "drop_percent": round((price_from - w.last_price) / price_from * 100.0, 4),
            "drop_5m_percent": round(w.drop_pct(self._k5), 4),
            "window_minutes": minutes, **self._long_drops(w),
        }
        if slow is None:
            details["high_time_ms"] = w.high_time(self._k60)
        return details

    def snapshot(self) -> dict[str, Any]:
        refs = {}
        for sym in self.refs:
            w = self.market.symbols.get(sym)
            if w is not None and w.ticks:
                refs[sym] = {"price": w.last_price, "drop_60m_percent": round(w.drop_pct(self._k60), 4),
                             "drop_5m_percent": round(w.drop_pct(self._k5), 4), **self._long_drops(w)}
        n, _, _ = self._breadth()
        return {"references": refs, "symbols_monitored": n, "down_trigger_level": self._mw_count_trigger,
                "down_warning_level": self._mw_count_warn}


def _stale_reason(symbol: str, age_ms: int) -> str:
    return f"{symbol} data is stale: no tick for {age_ms / 1000:.0f}s"


def _fmt(price: float) -> str:
    if not math.isfinite(price):
        return str(price)
    return f"{price:,.2f}" if price >= 100 else f"{price:.6g}"


class GuardianGroup:
    """Guardians beside the real one over the same windows (shadow breakers), run so that
    a tick costs them little when it cannot change anything.

    Only three things make a guardian act on a tick: a reference symbol's tick, a symbol
    whose breadth level moves, and its recheck timer. A breadth level moves only when the
    symbol's drop crosses one of the members' levels, so the group tracks each symbol's
    band among all of them and calls the members only on a reference, a new
    band or a due recheck. A skipped member's `last_time_ms` lags by less than the recheck.
    """

    def __init__(self, k60: int) -> None:
        self._k60 = k60
        self.members: list[Guardian] = []
        self._active: list[Guardian] = []
        self._refs: frozenset[str] = frozenset()
        self._levels_60: tuple[float, ...] = ()
        self._long: list[tuple[int, tuple[float, ...]]] = []  # breadth's long-horizon index -> its levels
        self._bands: dict[str, int] = {}  # symbol -> its band among every member's levels
        self._next_check_ms = 0

    def append(self, guardian: Guardian) -> None:
        self.members.append(guardian)
        self._active = [g for g in self.members if g.enabled]
        self._refs = frozenset(s for g in self._active for s in g.refs)
        breadth = [g for g in self._active if g._mw_enabled]
        self._levels_60 = tuple(sorted({x for g in breadth for x in (g._mw_warn, g._mw_trigger)}))
        long: dict[int, set[float]] = {}
        for g in breadth:
            if g._mws is not None:
                long.setdefault(g._mws.j, set()).update((g._mws.warn, g._mws.trigger))
        self._long = [(j, tuple(sorted(levels))) for j, levels in sorted(long.items())]
        self._bands.clear()  # every symbol reaches the new member once
        self._next_check_ms = 0

    def __iter__(self):
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def on_tick(self, w: SymbolWindows, t: int) -> None:
        symbol = w.symbol
        d60 = w.drop_pct(self._k60)
        band = _band_of(self._levels_60, d60)
        scale = len(self._levels_60) + 1
        for j, levels in self._long:
            band += scale * _band_of(levels, w.long_drop_pct(j))
            scale *= len(levels) + 1
        if symbol not in self._refs and t < self._next_check_ms and self._bands.get(symbol) == band:
            return
        self._bands[symbol] = band
        next_check = -1
        for g in self._active:
            g.on_tick(w, t, d60, w.long_drop_pct(g._mws.j) if g._mws is not None else None)
            if next_check < 0 or g._next_check_ms < next_check:
                next_check = g._next_check_ms
        self._next_check_ms = t if next_check < 0 else next_check


def _band_of(levels: tuple[float, ...], x: float) -> int:
    """How many of the sorted levels are at or below x: bisect_right over a handful of levels,
    as a loop the compiled path runs natively (a call to bisect is a generic one)."""
    band = 0
    for level in levels:
        if x < level:
            break
        band += 1
    return band
