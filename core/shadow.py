"""Shadow breakers: alternative breaker configs run beside the real one on the same ticks,
in the same pass, and never acting.

Each shadow has its own guardian over the engine's market windows (so a shadow may
change only circuit_breaker and protection_policy: core.config.shadow_variant), its own
in-memory breaker that no gate, desk or journal sees, and, when asked, the protection
books that depend on a breaker. The real breaker is measured the same way, so the rows
compare.

Per config it reports the transitions, the time spent in each state, false trips
(TRIGGERED while every reference is less than FALSE_TRIP_PERCENT below its high over the
longest horizon the market keeps) and missed crashes (a reference CRASH_PERCENT below its
60-minute high, the seed's crash, while the breaker was neither TRIGGERED nor RECOVERING,
and no TRIGGERED within CRASH_GRACE_MINUTES).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.breaker.state import CircuitBreakerState
from core.detect.guardian import Guardian
from core.engine import Engine
from core.events import BreakerChanged, BreakerStatus, Tick, iso_utc
from core.market.windows import MINUTE_MS
from core.protection import BREAKER_BOOKS, ProtectionStudy
from core.settings import Settings

FALSE_TRIP_PERCENT = 10.0
CRASH_PERCENT = 15.0
CRASH_RESET_PERCENT = 10.0  # a crash ends once its reference is back within this of the 60-minute high
CRASH_GRACE_MINUTES = 60


def long_minutes_of(variants: Iterable[Settings]) -> tuple[int, ...]:
    """Every long horizon any of the configs needs: the market keeps them all."""
    return tuple(sorted({m for v in variants for m in v.long_minutes()}))


@dataclass
class _Crash:
    started_ms: int
    caught: bool = False  # TRIGGERED when it began or within the grace
    ended: bool = False


@dataclass
class BreakerScore:
    """Follows one breaker (real or shadow) and scores it as the ticks pass."""

    name: str
    settings: Settings
    breaker: CircuitBreakerState
    engine: Engine
    changes: list[BreakerChanged] = field(default_factory=list)
    study: ProtectionStudy | None = None
    false_trips: list[str] = field(default_factory=list)
    crashes: dict[str, list[_Crash]] = field(default_factory=dict)
    _state_since: int | None = None
    _time_in: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in BreakerStatus})
    ticks: "_ScoreTicks | None" = None  # the listener that feeds this score (attach_shadows)

    def __post_init__(self) -> None:
        self.breaker.subscribe(self._on_change)

    # ------------------------------------------------------------------ following (ScoreTicks calls)
    def _since(self, fallback: int) -> int:
        """When the current state began: the last change, or the first tick before any."""
        if self._state_since is None:
            first = self.ticks.first_ms() if self.ticks is not None else None
            self._state_since = fallback if first is None else first
        return self._state_since

    def on_reference_tick(self, tick: Tick, drop: float) -> None:
        """`drop`: the reference's percent below its 60-minute high."""
        t = tick.time_ms
        if tick.symbol not in self.settings.circuit_breaker.references:
            return
        crashes = self.crashes.setdefault(tick.symbol, [])
        current = crashes[-1] if crashes and not crashes[-1].ended else None
        if current is None and drop >= CRASH_PERCENT:
            # a breaker already halted, or recovering from the halt, is on it
            crashes.append(_Crash(t, caught=self.breaker.status in (BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING)))
        elif current is not None and drop < CRASH_RESET_PERCENT:
            current.ended = True

    def _on_change(self, change: BreakerChanged) -> None:
        self.changes.append(change)
        self._time_in[change.previous.value] += change.time_ms - self._since(change.time_ms)
        self._state_since = change.time_ms
        if change.status is BreakerStatus.TRIGGERED:
            worst = self._worst_reference_drop()
            if worst is not None and worst < FALSE_TRIP_PERCENT:
                self.false_trips.append(iso_utc(change.time_ms))
            for crashes in self.crashes.values():
                for crash in crashes:
                    if not crash.caught and change.time_ms - crash.started_ms <= CRASH_GRACE_MINUTES * MINUTE_MS:
                        crash.caught = True

    def _worst_reference_drop(self) -> float | None:
        market = self.engine.market
        drops = []
        for symbol in self.settings.circuit_breaker.references:
            w = market.symbols.get(symbol)
            if w is None or not w.ticks:
                continue
            drops.append(w.long_drop_pct(len(market.long_minutes) - 1) if market.long_minutes
                         else w.drop_pct(market.timeframes_min.index(60)))
        return max(drops) if drops else None

    # ------------------------------------------------------------------ the figures
    def report(self) -> dict[str, Any]:
        last = self.ticks.last_ms() if self.ticks is not None else None
        time_in = dict(self._time_in)
        if last is not None:
            time_in[self.breaker.status.value] += last - self._since(last)
        crashes = [c for cs in self.crashes.values() for c in cs]
        out: dict[str, Any] = {
            "name": self.name,
            "transitions": [{"time": iso_utc(c.time_ms), "from": c.previous.value, "to": c.status.value,
                             "trigger_type": c.trigger_type, "reason": c.reason} for c in self.changes],
            "minutes_in_state": {k: round(v / MINUTE_MS, 1) for k, v in time_in.items()},
            "triggers": sum(1 for c in self.changes if c.status is BreakerStatus.TRIGGERED),
            "false_trips": self.false_trips,
            "crashes": len(crashes),
            "missed_crashes": [iso_utc(c.started_ms) for c in crashes if not c.caught],
            "final_state": self.breaker.status.value,
        }
        if self.study is not None:
            out["protection"] = self.study.report()["books"]
        return out


class _ScoreTicks:
    """One listener of the references' ticks for every score (a listener per score would cost a
    call a tick each): it reads a reference's 60-minute drop once and hands it to all of them."""

    def __init__(self, engine: Engine, scores: list[BreakerScore]) -> None:
        self.market = engine.market
        self.scores = scores
        self.references = sorted({s for score in scores for s in score.settings.circuit_breaker.references})
        self.k60 = engine.market.timeframes_min.index(60)
        for score in scores:
            score.ticks = self
        for symbol in self.references:
            engine.symbol_listeners.setdefault(symbol, []).append(self)

    def first_ms(self) -> int | None:
        """The first tick's time, of any symbol (the scores count time in state from it)."""
        return min((w.first_time for w in self.market.symbols.values() if w.ticks), default=None)

    def last_ms(self) -> int | None:
        return max((w.last_time for w in self.market.symbols.values() if w.ticks), default=None)

    def __call__(self, tick: Tick) -> None:
        drop = self.market.symbols[tick.symbol].drop_pct(self.k60)
        for score in self.scores:
            score.on_reference_tick(tick, drop)


def attach_shadows(engine: Engine, variants: list[tuple[str, Settings]], symbols: tuple[str, ...],
                   protection: bool = True) -> list[BreakerScore]:
    """Score the real breaker and one shadow per variant on the engine's ticks. The engine's
    market must keep every variant's horizons (long_minutes_of)."""
    scores = [BreakerScore("real", engine.settings, engine.breaker, engine)]
    for name, settings in variants:
        breaker = CircuitBreakerState()
        guardian = Guardian(settings.circuit_breaker, engine.market, breaker, engine.feed.cadence_ms,
                            realtime=engine.feed.realtime)
        engine.shadow_guardians.append(guardian)
        study = None
        if protection:
            study = ProtectionStudy(settings, engine.market, breaker, symbols, engine.now_ms, books=BREAKER_BOOKS)
            engine.tick_listeners.append(study.on_tick)
        scores.append(BreakerScore(name, settings, breaker, engine, study=study))
    _ScoreTicks(engine, scores)
    return scores


def load_shadows(settings: Settings, files: list[Path], sets: list[str]) -> list[tuple[str, Settings]]:
    """The shadows a command asks for: each --shadow FILE is one config layer (named after
    the file) or, under a top-level `shadows:` mapping, several named ones; the --shadow-set
    KEY=VALUE items together make one more, named "set". ConfigError names the bad key."""
    from core.config import ConfigError, read_yaml_file, shadow_variant

    out: list[tuple[str, Settings]] = []
    for path in files:
        data = read_yaml_file(path)
        named = data.get("shadows") if set(data) == {"shadows"} else {path.stem: data}
        if not isinstance(named, dict) or not named:
            raise ConfigError(f"{path}: shadows: expected a mapping of names to config layers")
        for name, layer in named.items():
            if not isinstance(layer, dict):
                raise ConfigError(f"{path}: shadows.{name}: expected a mapping of config sections")
            out.append((str(name), shadow_variant(settings, layer, label=f"{path} (shadow {name})")))
    if sets:
        out.append(("set", shadow_variant(settings, overrides=sets)))
    names = [n for n, _ in out]
    if len(set(names)) != len(names) or "real" in names:
        raise ConfigError(f"shadow names must be unique and not 'real': {', '.join(names)}")
    return out
