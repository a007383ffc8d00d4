"""The guardian's rules on synthetic paths: thresholds, windows, staleness, breadth,
hysteresis, recovery and the operator's clear."""

from __future__ import annotations

import pytest

from core.events import Actor, BreakerStatus, Tick
from tests.helpers import MIN, SEC, T0, interleave, make_engine, path, states, without_slow_rules


@pytest.fixture
def settings(settings):
    """These paths test the 60-minute rules; the slow-crash rules (test_slow_crash.py) would
    fire on some of them first."""
    return without_slow_rules(settings)


def test_triggers_at_exactly_fifteen_percent_from_the_trailing_high(settings):
    engine = make_engine(settings)
    engine.process(path("BTCUSDT", [(0, 100.0), (30, 100.0), (50, 85.01)]))
    assert states(engine) == ["WARNING"]
    engine.process([Tick("BTCUSDT", 85.0, 1.0, T0 + 50 * MIN + SEC)])
    assert states(engine) == ["WARNING", "TRIGGERED"]
    change = engine.breaker.history[-1]
    assert change.symbol == "BTCUSDT" and change.trigger_type == "btc_dump" and change.actor is Actor.RULE
    assert change.details["drop_percent"] == 15.0 and change.market_snapshot["references"]["BTCUSDT"]
    assert change.time_ms == T0 + 50 * MIN + SEC  # event time of the crossing tick


def test_a_high_older_than_sixty_minutes_does_not_count(settings):
    engine = make_engine(settings)
    # the 100 high is 61 minutes old when the price reaches 84: the window high is lower
    engine.process([Tick("BTCUSDT", 100.0, 1.0, T0)])
    engine.process(path("BTCUSDT", [(1, 92.0), (61, 92.0), (61.5, 84.0)], start=T0))
    assert "TRIGGERED" not in states(engine)


def test_five_minute_warning(settings):
    engine = make_engine(settings)
    engine.process(path("ETHUSDT", [(0, 100.0), (20, 100.0), (24, 94.9)]))
    assert states(engine) == ["WARNING"]
    assert engine.breaker.history[0].trigger_type == "eth_dump"


def test_warning_has_hysteresis_and_does_not_flap(settings):
    engine = make_engine(settings)
    points = [(0, 100.0), (10, 100.0)]
    m = 10.0
    for _ in range(8):  # oscillate around the 10% level: 89.5 .. 91
        points += [(m + 2, 89.5), (m + 4, 91.0)]
        m += 4
    engine.process(path("BTCUSDT", points))
    assert states(engine) == ["WARNING"]
    # back above the clear level (drop < 7%), but for less than the 10 clear minutes: still WARNING
    engine.process(path("BTCUSDT", [(m + 1, 95.0), (m + 9, 95.0)], start=T0))
    assert states(engine) == ["WARNING"]
    engine.process(path("BTCUSDT", [(m + 9.01, 95.0), (m + 12, 95.0)], start=T0))
    assert states(engine) == ["WARNING", "SAFE"]


def test_stale_reference_raises_warning_and_recovers(settings):
    engine = make_engine(settings)
    btc = path("BTCUSDT", [(0, 100.0), (5, 100.0)])
    eth = path("ETHUSDT", [(0, 50.0), (30, 50.0)])
    engine.process(interleave(btc, eth))
    assert states(engine) == ["WARNING"]
    change = engine.breaker.history[0]
    assert change.trigger_type == "stale_data" and change.symbol == "BTCUSDT"
    assert change.time_ms - (T0 + 5 * MIN) <= 32 * SEC  # within the 30 s rule (+ one tick)
    engine.process(interleave(path("BTCUSDT", [(30.01, 100.0), (45, 100.0)], start=T0),
                              path("ETHUSDT", [(30.01, 50.0), (45, 50.0)], start=T0)))
    assert states(engine) == ["WARNING", "SAFE"]


def test_a_coarse_feed_is_not_stale_between_its_ticks(settings):
    # two symbols of 5-minute candles: 4 ticks a candle, 75 s apart
    engine = make_engine(settings, cadence_ms=75_000)
    btc = path("BTCUSDT", [(0, 100.0), (300, 100.5)], step_ms=75_000)
    eth = path("ETHUSDT", [(0, 50.0), (300, 50.2)], step_ms=75_000, start=T0 + 37_000)
    engine.process(interleave(btc, eth))
    assert states(engine) == []


def test_a_symbol_that_ended_is_not_stale(settings):
    from core.events import SymbolEnded

    engine = make_engine(settings)
    engine.process(path("BTCUSDT", [(0, 100.0), (5, 100.0)]))
    engine.process([SymbolEnded("BTCUSDT", T0 + 5 * MIN)])
    engine.process(path("ETHUSDT", [(5, 50.0), (40, 50.0)], start=T0))
    assert states(engine) == []


def test_wall_clock_stale_check_for_live_feeds(settings):
    engine = make_engine(settings)
    engine.process(path("BTCUSDT", [(0, 100.0), (1, 100.0)]))
    engine.guardian.on_clock(T0 + MIN + 10 * SEC)
    assert states(engine) == []
    engine.guardian.on_clock(T0 + MIN + 31 * SEC)
    assert states(engine) == ["WARNING"]


def _alts(n: int, drops: list[float], minutes: float = 30) -> list[Tick]:
    streams = []
    for i in range(n):
        drop = drops[i] if i < len(drops) else 0.0
        streams.append(path(f"ALT{i}USDT", [(0, 10.0), (10, 10.0), (10 + minutes, 10.0 * (1 - drop))], step_ms=5 * SEC))
    return interleave(*streams)


def test_market_wide_sell_off_triggers(settings):
    engine = make_engine(settings)
    engine.process(_alts(6, [0.09, 0.09, 0.09, 0.09]))  # 4 of 6 down 9%: 67% >= 60%
    assert "TRIGGERED" in states(engine)
    trig = [c for c in engine.breaker.history if c.status is BreakerStatus.TRIGGERED][0]
    assert trig.trigger_type == "market_wide" and trig.symbol is None
    assert "4 of 6" in trig.reason or "of 6 symbols" in trig.reason


def test_market_wide_needs_enough_symbols_and_breadth(settings):
    engine = make_engine(settings)
    engine.process(_alts(4, [0.2, 0.2, 0.2, 0.2]))  # fewer than 5 symbols
    assert "TRIGGERED" not in states(engine)
    engine = make_engine(settings)
    engine.process(_alts(10, [0.09] * 5))  # 50% < 60%
    assert "TRIGGERED" not in states(engine)


def _crash(engine, depth: float, rebound: float, start_min: float = 0.0):
    """100 -> 100*(1-depth) over 20 min, then flat at the trough for 1 min, then rebound."""
    trough = 100 * (1 - depth)
    engine.process(path("BTCUSDT", [(start_min, 100.0), (start_min + 15, 100.0), (start_min + 35, trough),
                                    (start_min + 36, trough), (start_min + 40, trough * (1 + rebound))]))
    return trough


def test_recovery_then_auto_resume_when_not_deep(settings):
    engine = make_engine(settings)
    trough = _crash(engine, 0.16, 0.05)
    assert states(engine)[-1] == "TRIGGERED"
    # hold the rebound: 15 minutes without a new low -> RECOVERING
    engine.process(path("BTCUSDT", [(40, trough * 1.05), (60, trough * 1.05)], start=T0))
    assert states(engine)[-1] == "RECOVERING"
    rec = [c for c in engine.breaker.history if c.status is BreakerStatus.RECOVERING][0]
    assert (rec.time_ms - (T0 + 35 * MIN)) >= 15 * MIN
    # climb back; the old high leaves the 60-minute window; 30 calm minutes later -> SAFE
    engine.process(path("BTCUSDT", [(60, trough * 1.05), (70, 97.0), (160, 97.0)], start=T0))
    assert states(engine) == ["WARNING", "TRIGGERED", "RECOVERING", "SAFE"]
    assert engine.breaker.history[-1].actor is Actor.RULE


def test_deep_drop_waits_for_the_operator(settings):
    engine = make_engine(settings)
    trough = _crash(engine, 0.25, 0.05)
    engine.process(path("BTCUSDT", [(40, trough * 1.05), (60, trough * 1.05), (70, 97.0), (300, 97.0)], start=T0))
    assert states(engine)[-1] == "RECOVERING"
    assessment = engine.guardian.assess_recovery()
    assert assessment["deep"] and assessment["max_drop_percent"] >= 25.0 - 1e-9
    ok, why = engine.clear_breaker("operator checked the market")
    assert ok and states(engine)[-1] == "SAFE"


def test_operator_clear_of_a_deep_trigger_is_refused_without_override_and_then_sticks(settings):
    engine = make_engine(settings)
    _crash(engine, 0.25, 0.0)
    assert states(engine)[-1] == "TRIGGERED"
    ok, why = engine.clear_breaker("too early")
    assert not ok and "refused" in why
    ok, why = engine.clear_breaker("I know better", override=True)
    # the drop is still 25%: the cleared trigger must reset before it fires again, while
    # the warning it still is shows at once (entries at reduced size), and the answer says so
    assert ok and why.startswith("cleared, then WARNING by the rule at once: BTCUSDT down 25.00%"), why
    clear, warning = list(engine.breaker.history)[-2:]
    assert clear.actor is Actor.OPERATOR and clear.status.value == "SAFE" and clear.details["override"] is True
    assert warning.actor is Actor.RULE and warning.status.value == "WARNING"
    cleared_at = len(engine.breaker.history)
    engine.process(path("BTCUSDT", [(40.01, 75.0), (50, 75.5)], start=T0))
    assert states(engine)[cleared_at:] == []
    # ...but a new, lower low is a new crash
    engine.process([Tick("BTCUSDT", 74.0, 1.0, T0 + 51 * MIN)])
    assert states(engine)[-1] == "TRIGGERED"


def test_new_low_while_recovering_triggers_again(settings):
    engine = make_engine(settings)
    trough = _crash(engine, 0.16, 0.05)
    engine.process(path("BTCUSDT", [(40, trough * 1.05), (60, trough * 1.05)], start=T0))
    assert states(engine)[-1] == "RECOVERING"
    engine.process(path("BTCUSDT", [(60, trough * 1.05), (63, trough * 0.99)], start=T0))
    assert states(engine)[-2:] == ["RECOVERING", "TRIGGERED"]


def test_auto_resume_off_keeps_recovering(settings):
    s = settings.model_copy(update={"circuit_breaker": settings.circuit_breaker.model_copy(update={"auto_resume": False})})
    engine = make_engine(s)
    trough = _crash(engine, 0.16, 0.05)
    engine.process(path("BTCUSDT", [(40, trough * 1.05), (70, 97.0), (200, 97.0)], start=T0))
    assert states(engine)[-1] == "RECOVERING"


def test_operator_trigger_is_not_auto_recovered(settings):
    engine = make_engine(settings)
    engine.process(path("BTCUSDT", [(0, 100.0), (5, 100.0)]))
    assert engine.force_trigger("operator test")
    engine.process(path("BTCUSDT", [(5, 100.0), (120, 100.0)], start=T0))
    assert states(engine) == ["TRIGGERED"]
    assert engine.breaker.history[0].actor is Actor.OPERATOR


def test_breaker_disabled_does_nothing(settings):
    s = settings.model_copy(update={"circuit_breaker": settings.circuit_breaker.model_copy(update={"enabled": False})})
    engine = make_engine(s)
    _crash(engine, 0.3, 0.0)
    assert states(engine) == []


def test_a_move_raced_by_another_actor_is_deferred_not_fatal(settings):
    """An agent trips the breaker from its thread between the guardian's read and its clear:
    the clear is refused by the state machine, the engine keeps running."""
    engine = make_engine(settings)
    engine.process(path("BTCUSDT", [(0, 100.0), (10, 100.0), (20, 89.0)]))
    assert states(engine) == ["WARNING"]
    real_clear = engine.breaker.clear

    def racing_clear(*args, **kwargs):
        engine.breaker.trigger("agent saw it first", actor=Actor.AGENT, time_ms=T0 + 40 * MIN)
        return real_clear(*args, **kwargs)

    engine.breaker.clear = racing_clear
    engine.process(path("BTCUSDT", [(20.01, 97.0), (45, 97.0)], start=T0))
    assert states(engine) == ["WARNING", "TRIGGERED"]
    assert engine.ticks > 0 and engine.breaker.status.value == "TRIGGERED"


def test_recovery_needs_the_rebound_not_only_time_without_a_new_low(settings):
    engine = make_engine(settings)
    trough = _crash(engine, 0.16, 0.01)  # a 1% bounce: below the 3% rebound_percent
    engine.process(path("BTCUSDT", [(40, trough * 1.01), (80, trough * 1.01)], start=T0))
    assert states(engine)[-1] == "TRIGGERED"
    engine.process(path("BTCUSDT", [(80, trough * 1.04), (81, trough * 1.04)], start=T0))
    assert states(engine)[-1] == "RECOVERING"


def test_market_wide_triggers_at_exactly_the_breadth_fraction(settings):
    engine = make_engine(settings)
    engine.process(_alts(5, [0.09, 0.09, 0.09]))  # 3 of 5 = 60% = breadth_fraction
    assert "TRIGGERED" in states(engine)


def test_an_operator_trip_during_a_rule_episode_is_never_auto_recovered(settings):
    engine = make_engine(settings)
    trough = _crash(engine, 0.16, 0.05)
    engine.process(path("BTCUSDT", [(40, trough * 1.05), (60, trough * 1.05)], start=T0))
    assert states(engine)[-1] == "RECOVERING"
    assert engine.force_trigger("operator: I do not trust this bounce")
    engine.process(path("BTCUSDT", [(60, trough * 1.05), (70, 97.0), (300, 97.0)], start=T0))
    assert states(engine)[-1] == "TRIGGERED" and engine.breaker.history[-1].actor is Actor.OPERATOR
