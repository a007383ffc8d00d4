"""An operator's clear holds: agents may not re-trigger the episode it cleared, for
circuit_breaker.agent_holdoff_minutes (default 15), unless the market makes a new low. The
rules are never held off. Found in the default flash crash: after an OVERRIDE clear an agent
re-TRIGGERed 370 ms later while the toast said "cleared"."""

from __future__ import annotations

import pytest

from core.breaker.machine import IllegalTransition
from core.events import Actor, BreakerStatus, Tick
from tests.helpers import MIN, T0, make_engine, path


def _cleared_after_a_deep_crash(settings):
    """A 25% BTC crash, triggered by the rules, cleared by the operator with the override."""
    engine = make_engine(settings)
    engine.process(path("BTCUSDT", [(0, 100.0), (30, 100.0), (40, 75.0)]))
    assert engine.breaker.status is BreakerStatus.TRIGGERED
    ok, message = engine.clear_breaker("operator knows", override=True)
    assert ok, message
    return engine


def _agent_trigger(engine, minutes_after_clear: float) -> bool:
    return engine.breaker.trigger("agent: it is still crashing", actor=Actor.AGENT,
                                  time_ms=T0 + int((40 + minutes_after_clear) * MIN), trigger_type="agent")


def test_the_shipped_hold_off_is_fifteen_minutes(settings):
    assert settings.circuit_breaker.agent_holdoff_minutes == 15


def test_an_agent_may_not_retrigger_the_episode_an_operator_cleared(settings):
    engine = _cleared_after_a_deep_crash(settings)
    engine.process(path("BTCUSDT", [(40.01, 75.5), (45, 76.0)], start=T0))  # no new low
    before = engine.breaker.status
    with pytest.raises(IllegalTransition, match="held off"):
        _agent_trigger(engine, 5)
    assert engine.breaker.status is before  # WARNING from the rules, not TRIGGERED by the agent


def test_a_new_low_is_a_new_episode_and_agents_may_trigger(settings):
    engine = _cleared_after_a_deep_crash(settings)
    engine.process([Tick("BTCUSDT", 76.0, 1.0, T0 + 41 * MIN)])
    # the rules re-trigger on the new low themselves; take that back to test the agent alone
    engine.process([Tick("BTCUSDT", 74.0, 1.0, T0 + 42 * MIN)])
    assert engine.breaker.status is BreakerStatus.TRIGGERED and engine.breaker.history[-1].actor is Actor.RULE
    assert engine.guardian.agent_trigger_refusal(T0 + 42 * MIN) is None


def test_the_hold_off_ends(settings):
    engine = _cleared_after_a_deep_crash(settings)
    engine.process(path("BTCUSDT", [(40.01, 75.5), (56, 76.0)], start=T0))
    assert _agent_trigger(engine, 16)
    assert engine.breaker.status is BreakerStatus.TRIGGERED


def test_the_rules_are_never_held_off(settings):
    engine = _cleared_after_a_deep_crash(settings)
    engine.process(path("ETHUSDT", [(40, 3_000.0), (70, 3_000.0), (80, 2_500.0)], start=T0))
    assert engine.breaker.status is BreakerStatus.TRIGGERED
    last = engine.breaker.history[-1]
    assert last.actor is Actor.RULE and last.symbol == "ETHUSDT"


def test_an_agent_trip_without_an_operator_clear_is_not_held_off(settings):
    engine = make_engine(settings)
    engine.process(path("BTCUSDT", [(0, 100.0), (30, 100.0)]))
    assert engine.breaker.trigger("agent: context says crash", actor=Actor.AGENT, time_ms=T0 + 30 * MIN)


def test_the_agents_tool_reports_the_refusal(settings):
    from core.agents.tools.breaker import trigger_circuit_breaker

    engine = _cleared_after_a_deep_crash(settings)

    class Ctx:
        breaker = engine.breaker
        guardian = engine.guardian
        market = engine.market

        @staticmethod
        def now_ms():
            return T0 + 41 * MIN

    out = trigger_circuit_breaker(Ctx(), None, "still crashing")
    assert out["status"] == "refused" and "held off" in out["note"]
    assert engine.breaker.status is not BreakerStatus.TRIGGERED
