"""The slow-crash rules (drawdowns from the 4- and 24-hour highs) and the stabilisation a
RECOVERING needs before SAFE, on synthetic paths too slow for the 60-minute rules."""

from __future__ import annotations

import random

from core.events import BreakerStatus
from tests.helpers import MIN, SEC, T0, interleave, make_engine, path, states

HOUR = 60  # minutes


def _changes(engine, status: str):
    return [c for c in engine.breaker.history if c.status.value == status]


def test_a_fall_over_three_hours_warns_then_triggers_on_the_four_hour_rule(settings):
    engine = make_engine(settings)
    # 13% in 3 hours: at most ~4.5% in any 60 minutes, never the hour's 10%
    engine.process(path("BTCUSDT", [(0, 100.0), (30, 100.0), (30 + 3 * HOUR, 87.0)], step_ms=10 * SEC))
    assert states(engine) == ["WARNING", "TRIGGERED"]
    warn, trig = engine.breaker.history
    assert warn.trigger_type == "btc_dump_4h" and "4h high" in warn.reason
    assert trig.trigger_type == "btc_dump_4h" and trig.symbol == "BTCUSDT"
    assert trig.details["window_minutes"] == 240 and trig.details["drop_percent"] >= 12.0
    # it fires at the level, not later: 12% below 100 is 88
    assert trig.details["price_to"] >= 88.0 - 0.05


def test_a_fall_over_a_day_triggers_on_the_twenty_four_hour_rule(settings):
    engine = make_engine(settings)
    # 17% over 20 hours: ~3.5% per 4 hours, so only the day's horizon sees it
    engine.process(path("BTCUSDT", [(0, 100.0), (30, 100.0), (30 + 20 * HOUR, 83.0)], step_ms=30 * SEC))
    assert [c.trigger_type for c in engine.breaker.history] == ["btc_dump_24h", "btc_dump_24h"]
    assert states(engine) == ["WARNING", "TRIGGERED"]
    assert engine.breaker.history[1].details["window_minutes"] == 1440


def test_the_slow_rules_off_leave_only_the_hour(settings):
    cb = settings.circuit_breaker
    off = settings.model_copy(update={"circuit_breaker": cb.model_copy(
        update={"slow_crash": cb.slow_crash.model_copy(update={"enabled": False})})})
    engine = make_engine(off)
    engine.process(path("BTCUSDT", [(0, 100.0), (30, 100.0), (30 + 20 * HOUR, 83.0)], step_ms=30 * SEC))
    assert states(engine) == []


def test_an_operator_clear_of_a_slow_trigger_sticks_until_a_new_low(settings):
    engine = make_engine(settings)
    engine.process(path("BTCUSDT", [(0, 100.0), (30, 100.0), (30 + 3 * HOUR, 87.0)], step_ms=10 * SEC))
    assert states(engine)[-1] == "TRIGGERED"
    ok, _ = engine.clear_breaker("operator checked the market", override=True)
    assert ok
    start = 30 + 3 * HOUR
    # flat at 87: still 13% under the 4h high, but the clear holds (a WARNING at most)
    engine.process(path("BTCUSDT", [(start, 87.0), (start + 30, 87.0)], step_ms=10 * SEC, start=T0))
    assert "TRIGGERED" not in states(engine)[-2:]
    # a new low re-arms it
    engine.process(path("BTCUSDT", [(start + 30, 87.0), (start + 40, 86.0)], step_ms=10 * SEC, start=T0))
    assert states(engine)[-1] == "TRIGGERED"


def _alts(n: int, drop: float, hours: float) -> list:
    return interleave(*(path(f"ALT{i}USDT", [(0, 10.0), (30, 10.0), (30 + hours * HOUR, 10.0 * (1 - drop))],
                             step_ms=60 * SEC) for i in range(n)))


def test_a_slow_market_wide_sell_off_triggers_on_breadth_over_the_day(settings):
    engine = make_engine(settings)
    engine.process(_alts(6, 0.26, 20))  # every alt 26% down over 20 hours: ~5% per 4 hours
    trig = _changes(engine, "TRIGGERED")
    assert trig and trig[0].trigger_type == "market_wide_24h" and trig[0].symbol is None
    assert "of 6 symbols down >= 24%" in trig[0].reason and "24 hours" in trig[0].reason


def _halt_and_hold(engine, jitter: float) -> None:
    """Six hours of 0.1% noise, a 60-minute crash to 84, a climb back to 97 (inside every
    clear level), then hours at 97 with `jitter` noise."""
    rng = random.Random(3)
    before = [(m, 100.0 * (1 + rng.uniform(-0.001, 0.001))) for m in range(0, 361)]
    engine.process(path("BTCUSDT", before + [(370, 84.0)], step_ms=10 * SEC))
    assert states(engine)[-1] == "TRIGGERED"
    rng = random.Random(7)
    after = [(400 + m, 97.0 * (1 + rng.uniform(-jitter, jitter))) for m in range(0, 600)]
    engine.process(path("BTCUSDT", [(370, 84.0)] + after, step_ms=10 * SEC, start=T0))


def test_safe_waits_for_volatility_to_settle(settings):
    calm, wild = make_engine(settings), make_engine(settings)
    _halt_and_hold(calm, 0.0005)
    _halt_and_hold(wild, 0.012)  # 2.4% swings every minute: far above the pre-crash volatility
    assert states(calm)[-1] == "SAFE"
    assert states(wild)[-1] == "RECOVERING"
    legs = wild.guardian.assess_recovery()["legs"]["BTCUSDT"]
    assert not legs["stable"] and legs["volatility_1m_percent"] > 2 * legs["pre_crash_volatility_1m_percent"]


def test_safe_waits_for_stable_minutes_without_a_new_low(settings):
    cb = settings.circuit_breaker
    slow = settings.model_copy(update={"circuit_breaker": cb.model_copy(
        update={"recovery": cb.recovery.model_copy(update={"stable_minutes": 180.0})})})
    quick, patient = make_engine(settings), make_engine(slow)
    _halt_and_hold(quick, 0.0005)
    _halt_and_hold(patient, 0.0005)
    trough_time = T0 + 370 * MIN
    assert _changes(quick, "SAFE")[0].time_ms - trough_time < 180 * MIN  # the other conditions are met sooner
    safe = _changes(patient, "SAFE")[0]
    assert safe.time_ms - trough_time >= 180 * MIN
    assert safe.details["stabilisation"]["met"] and safe.details["breadth_recovered"]
    assert patient.breaker.status is BreakerStatus.SAFE
