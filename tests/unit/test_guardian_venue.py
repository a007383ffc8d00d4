"""Venue holds: the exchange's own conditions hold the breaker. An IP ban (WARNING) keeps it at
least WARNING; a persistent clock skew (TRIGGERED) trips it, and the halt recovers only once
the condition is released, then by the usual cool-down."""

from __future__ import annotations

import pytest

from core.detect.guardian import VenueHold
from core.engine import Engine
from core.events import BreakerStatus, Tick
from tests.helpers import SEC, T0, ListFeed, states

BAN = VenueHold("ip_banned", BreakerStatus.WARNING, "Binance banned this IP (418) for 120s")
SKEW = VenueHold("clock_skew", BreakerStatus.TRIGGERED, "clock 2,400 ms off Binance's, twice in a row")


def calm(start_s: int, end_s: int) -> list[Tick]:
    out = []
    for s in range(start_s, end_s):
        out += [Tick("BTCUSDT", 100.0, 1.0, T0 + s * SEC), Tick("ETHUSDT", 50.0, 1.0, T0 + s * SEC)]
    return out


@pytest.fixture
def engine(settings) -> Engine:
    engine = Engine(settings, ListFeed())
    engine.process(calm(0, 60))
    return engine


def test_a_warning_hold_keeps_the_breaker_at_warning_until_released(engine, settings):
    engine.guardian.hold_venue(BAN, T0 + 60 * SEC)
    change = engine.breaker.history[-1]
    assert engine.breaker.status is BreakerStatus.WARNING
    assert change.trigger_type == "ip_banned" and "418" in change.reason
    engine.process(calm(60, 60 + 3600))  # an hour of calm market: the hold is not the market's
    assert states(engine) == ["WARNING"]  # held throughout, never cleared and raised again
    engine.guardian.release_venue("ip_banned", T0 + 3660 * SEC)
    clear_s = int(settings.circuit_breaker.warning_clear.minutes * 60) + 5
    engine.process(calm(3660, 3660 + clear_s))
    assert states(engine)[-1] == "SAFE"


def test_a_trigger_hold_halts_and_recovers_only_once_released(engine, settings):
    engine.guardian.hold_venue(SKEW, T0 + 60 * SEC)
    trip = engine.breaker.history[-1]
    assert trip.status is BreakerStatus.TRIGGERED and trip.trigger_type == "clock_skew"
    engine.process(calm(60, 60 + 3600))
    assert states(engine) == ["TRIGGERED"]  # calm prices do not end an exchange's fault, not even briefly
    assert engine.guardian.assess_recovery()["venue_holds"] == {"clock_skew": {"released": False}}
    engine.guardian.release_venue("clock_skew", T0 + 3660 * SEC)
    assert engine.breaker.status is BreakerStatus.RECOVERING
    cool_s = int(settings.circuit_breaker.recovery.cooldown_minutes * 60) + 5
    engine.process(calm(3660, 3660 + cool_s))
    assert states(engine)[-1] == "SAFE"


def test_a_trigger_hold_while_recovering_triggers_again(engine):
    engine.guardian.hold_venue(SKEW, T0 + 60 * SEC)
    engine.guardian.release_venue("clock_skew", T0 + 61 * SEC)
    assert engine.breaker.status is BreakerStatus.RECOVERING
    engine.guardian.hold_venue(SKEW, T0 + 62 * SEC)
    assert states(engine)[-3:] == ["TRIGGERED", "RECOVERING", "TRIGGERED"]


def test_a_warning_hold_does_not_end_a_halt(engine):
    engine.guardian.hold_venue(SKEW, T0 + 60 * SEC)
    engine.guardian.hold_venue(BAN, T0 + 61 * SEC)
    engine.guardian.release_venue("clock_skew", T0 + 62 * SEC)
    assert engine.breaker.status is BreakerStatus.RECOVERING
    engine.process(calm(62, 62 + 7200))
    assert engine.breaker.status is BreakerStatus.RECOVERING  # the ban's warning holds the cool-down


def test_releasing_what_is_not_held_is_false_and_a_safe_hold_is_refused(engine):
    assert engine.guardian.release_venue("ip_banned", T0 + 60 * SEC) is False
    with pytest.raises(ValueError):
        engine.guardian.hold_venue(VenueHold("x", BreakerStatus.SAFE, "no"), T0 + 60 * SEC)
