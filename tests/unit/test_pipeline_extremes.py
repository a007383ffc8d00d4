"""The whole hot path (windows -> guardian -> scanner, through Engine.process) on extreme values.

Two properties:
- with the engine's real bounds (core/market/ticks.py), a tick outside them is rejected and
  counted, nothing raises, and only plausible ticks reach market state;
- with the bounds opened to every finite positive float, the math itself never raises:
  windows, guardian and scanner take 5e-324 and 1.8e308 alike, and the breaker only ever
  makes legal moves. The bounds are defence in depth, not what keeps the math alive.
"""

from __future__ import annotations

import logging
import math
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core.engine as engine_mod
from core.breaker.machine import LEGAL_TRANSITIONS
from core.config import load_config
from core.engine import Engine
from core.events import BreakerStatus, Liquidation, MarkPrice, SymbolEnded, Tick
from core.market.ticks import MAX_PRICE, MAX_QTY, MIN_PRICE
from tests.helpers import MIN, T0, ListFeed

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT", "XRPUSDT", "ADAUSDT")
TINY = 5e-324  # the smallest positive float (subnormal)
HUGE = sys.float_info.max  # 1.7976931348623157e308
EXTREME_PRICES = (TINY, 1e-308, sys.float_info.min, 1e-8, 1e9, 1e308, HUGE)

prices = st.one_of(
    st.floats(90.0, 110.0),  # a normal market, so windows hold ordinary history too
    st.sampled_from(EXTREME_PRICES),
    st.floats(min_value=TINY, max_value=HUGE, allow_nan=False, allow_infinity=False),
)
quantities = st.one_of(
    st.floats(0.0, 10.0),
    st.sampled_from((0.0, TINY, 1e16, 1e308, HUGE)),
    st.floats(min_value=0.0, max_value=1e308, allow_nan=False, allow_infinity=False),
)
# 0 (several events in one ms), seconds, minutes (closes the one-minute samples), an hour (empties windows)
steps = st.one_of(st.just(0), st.integers(1, 5_000), st.integers(5_000, 3 * MIN), st.integers(55 * MIN, 65 * MIN))
symbols = st.sampled_from(SYMBOLS)


@st.composite
def event_sequences(draw):
    t = T0
    out = []
    for _ in range(draw(st.integers(1, 120))):
        t += draw(steps)
        kind = draw(st.sampled_from(("tick", "tick", "tick", "tick", "mark", "liquidation", "ended")))
        sym = draw(symbols)
        if kind == "tick":
            out.append(Tick(sym, draw(prices), draw(quantities), t))
        elif kind == "mark":
            out.append(MarkPrice(sym, draw(prices), t))
        elif kind == "liquidation":
            out.append(Liquidation(sym, draw(st.sampled_from(("SELL", "BUY"))), draw(prices), draw(quantities), t))
        else:
            out.append(SymbolEnded(sym, t))
    return out


# the default rules, with the warm-ups shortened so z-score, volume and liquidation math runs
EAGER = load_config(env={}, dotenv_paths=[], overrides=[
    "spike_detection.zscore_warmup_minutes=2",
    "spike_detection.spike_types.volume_explosion.warmup_minutes=2",
    "spike_detection.spike_types.liquidation_cascade.min_count=2",
    "spike_detection.spike_types.liquidation_cascade.min_notional_usd=1",
]).settings


class _Errors(logging.Handler):
    """Errors the breaker swallows from its subscribers (the guardian among them) still count."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def run(settings, events) -> Engine:
    engine = Engine(settings, ListFeed(cadence_ms=1000))
    moves = []
    engine.breaker.subscribe(moves.append)
    errors = _Errors()
    logger = logging.getLogger("spikeguard")
    logger.addHandler(errors)
    try:
        for i in range(0, len(events), 7):  # several batches, as a feed delivers them
            engine.process(events[i:i + 7])
    finally:
        logger.removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]
    status, epoch = BreakerStatus.SAFE, 0
    for m in moves:
        assert m.previous is status and m.epoch == epoch + 1
        assert m.actor in LEGAL_TRANSITIONS[(m.previous, m.status)], m
        status, epoch = m.status, m.epoch
    assert engine.breaker.current() == (status, epoch)
    for s in engine.spikes:  # figures may saturate to inf, never turn to NaN
        assert s.magnitude_pct >= 0.0 and 0.0 <= s.confidence <= 1.0, s
        assert not any(isinstance(v, float) and math.isnan(v) for v in s.details.values()), s
    return engine


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_sequences())
def test_real_bounds_reject_implausible_ticks_and_nothing_raises(events):
    engine = run(EAGER, events)
    ticks = [e for e in events if type(e) is Tick]
    implausible = [e for e in ticks if not (MIN_PRICE <= e.price <= MAX_PRICE and 0.0 <= e.qty <= MAX_QTY)]
    assert engine.ticks + engine.rejected_ticks == len(ticks)
    assert engine.rejected_ticks >= len(implausible)
    others = [e for e in events if type(e) in (MarkPrice, Liquidation)]
    bad_others = [e for e in others if not MIN_PRICE <= (e.mark_price if type(e) is MarkPrice else e.price) <= MAX_PRICE
                  or (type(e) is Liquidation and not 0.0 <= e.qty <= MAX_QTY)]
    assert engine.rejected_marks == len(bad_others)
    for w in engine.market.symbols.values():
        if w.ticks:
            assert MIN_PRICE <= w.low(w.n - 1) <= w.last_price <= w.high(w.n - 1) <= MAX_PRICE


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_sequences())
def test_open_bounds_every_finite_positive_value_reaches_the_math_and_nothing_raises(events):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine_mod, "MIN_PRICE", TINY)
        mp.setattr(engine_mod, "MAX_PRICE", HUGE)
        mp.setattr(engine_mod, "MAX_QTY", HUGE)
        engine = run(EAGER, events)
    assert engine.rejected_ticks == 0  # times only move forward, so every tick is taken
    for w in engine.market.symbols.values():
        if w.ticks:
            assert w.low(w.n - 1) <= w.last_price <= w.high(w.n - 1)
            assert math.isfinite(w.sigma_1m())  # log returns of finite prices are finite


@pytest.mark.parametrize("bad", [1e308, HUGE, 1e10, 1e-308, TINY, 1e-9])
def test_one_absurd_price_among_real_ones_is_rejected_and_does_not_trip(settings, bad):
    """The finding: one kline high of 1e308 read as BTC "down 100.00%"."""
    engine = Engine(settings, ListFeed())
    history = [Tick("BTCUSDT", 40_000.0, 1.0, T0 + i * 15_000) for i in range(240)]
    engine.process(history[:120] + [Tick("BTCUSDT", bad, 1.0, T0 + 120 * 15_000 - 1)] + history[120:])
    assert engine.rejected_ticks == 1 and engine.ticks == 240
    assert engine.breaker.status is BreakerStatus.SAFE
    assert "plausible" in engine.problems[-1].error


def test_the_bounds_admit_every_real_value_at_their_edges(settings):
    engine = Engine(settings, ListFeed())
    engine.process([Tick("DOGEUSDT", MIN_PRICE, 0.0, T0), Tick("DOGEUSDT", MAX_PRICE, MAX_QTY, T0 + 1)])
    assert engine.ticks == 2 and engine.rejected_ticks == 0


def test_a_tick_time_beyond_2100_is_rejected_not_an_overflow(settings):
    """Times are kept in int64 arrays and printed as dates: 2**63 ms fits neither."""
    engine = Engine(settings, ListFeed())
    engine.process([Tick("BTCUSDT", 100.0, 1.0, T0), Tick("BTCUSDT", 100.0, 1.0, 2**63),
                    Tick("BTCUSDT", 100.0, 1.0, T0 + 1)])
    assert (engine.ticks, engine.rejected_ticks) == (2, 1)
    assert "time" in engine.problems[-1].error


def test_an_absurd_liquidation_or_mark_price_is_rejected(settings):
    """A liquidation at 1e308 made a cascade spike of infinite notional."""
    engine = Engine(settings, ListFeed())
    engine.process([Tick("BTCUSDT", 40_000.0, 1.0, T0), Liquidation("BTCUSDT", "SELL", 1e308, 1e9, T0 + 1),
                    MarkPrice("BTCUSDT", 1e-300, T0 + 2), Liquidation("BTCUSDT", "SELL", 40_000.0, 1e20, T0 + 3)])
    assert engine.rejected_marks == 3 and not engine.spikes
    assert all("plausible" in p.error for p in list(engine.problems)[-3:])
