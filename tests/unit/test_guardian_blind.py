"""Blind means closed: a live reference with no data past the stale rule (WARNING) and then
for blind_seconds is TRIGGERED (feed_blind); when its data returns, RECOVERING like any
trigger, then the usual cool-down. A replay's gap is only stale."""

from __future__ import annotations

from core.engine import Engine
from core.events import BreakerStatus, Tick
from tests.helpers import SEC, T0, ListFeed, states


class LiveListFeed(ListFeed):
    realtime = True


def ticks(start_s: float, end_s: float, price: float = 100.0) -> list[Tick]:
    out = []
    for s in range(int(start_s), int(end_s)):
        out += [Tick("BTCUSDT", price, 1.0, T0 + s * SEC), Tick("ETHUSDT", price / 2, 1.0, T0 + s * SEC)]
    return out


def live_engine(settings) -> Engine:
    engine = Engine(settings, LiveListFeed())
    engine.process(ticks(0, 120))
    return engine


def test_the_shipped_blind_rule_is_sixty_seconds(settings):
    assert settings.circuit_breaker.stale_data.blind_seconds == 60


def test_silence_is_stale_then_blind(settings):
    engine = live_engine(settings)
    engine.guardian.on_clock(T0 + (119 + 45) * SEC)  # 45 s of silence: stale
    assert states(engine) == ["WARNING"] and engine.breaker.history[-1].trigger_type == "stale_data"
    engine.guardian.on_clock(T0 + (119 + 59) * SEC)
    assert states(engine) == ["WARNING"]
    engine.guardian.on_clock(T0 + (119 + 61) * SEC)  # past 60 s: blind
    trip = engine.breaker.history[-1]
    assert trip.status is BreakerStatus.TRIGGERED and trip.trigger_type == "feed_blind"
    assert "feed blind: no data for 61s" in trip.reason


def test_data_returning_recovers_and_the_cool_down_resumes(settings):
    engine = live_engine(settings)
    engine.guardian.on_clock(T0 + (119 + 70) * SEC)
    engine.guardian.on_clock(T0 + (119 + 80) * SEC)  # still silent: no recovery
    assert engine.breaker.status is BreakerStatus.TRIGGERED and "RECOVERING" not in states(engine)
    engine.process(ticks(200, 210))  # the feed backfilled the gap and resumed
    assert engine.breaker.status is BreakerStatus.RECOVERING
    assessment = engine.guardian.assess_recovery()
    assert assessment["episode"] == "feed_blind"
    assert assessment["blind"] == {"BTCUSDT": {"data_back": True}, "ETHUSDT": {"data_back": True}}
    cool_down = settings.circuit_breaker.recovery.cooldown_minutes
    engine.process(ticks(210, 210 + int(cool_down * 60) + 5))
    assert states(engine)[-1] == "SAFE"


def test_blind_again_while_recovering_triggers_again(settings):
    engine = live_engine(settings)
    engine.guardian.on_clock(T0 + (119 + 70) * SEC)
    engine.process(ticks(190, 200))
    assert engine.breaker.status is BreakerStatus.RECOVERING
    engine.guardian.on_clock(T0 + (199 + 70) * SEC)
    assert states(engine)[-2:] == ["RECOVERING", "TRIGGERED"]


def test_a_replays_gap_is_stale_not_blind(settings):
    engine = Engine(settings, ListFeed())
    engine.process(ticks(0, 120))
    engine.process(ticks(120 + 10 * 60, 120 + 10 * 60 + 5))  # ten minutes without data, then data
    assert "TRIGGERED" not in states(engine)
    assert engine.breaker.history[0].trigger_type == "stale_data"


def test_a_blind_reference_during_a_price_halt_holds_its_recovery(settings):
    engine = live_engine(settings)
    crash = []
    for s in range(120, 120 + 20 * 60, 5):  # BTC falls 20% over 20 minutes, ETH keeps trading
        p = 100.0 * (1 - 0.2 * (s - 120) / (20 * 60))
        crash += [Tick("BTCUSDT", p, 1.0, T0 + s * SEC), Tick("ETHUSDT", 50.0, 1.0, T0 + s * SEC)]
    engine.process(crash)
    assert engine.breaker.status is BreakerStatus.TRIGGERED
    last = T0 + (120 + 20 * 60) * SEC
    eth_only = [Tick("ETHUSDT", 50.0, 1.0, last + s * SEC) for s in range(1, 90)]
    engine.process(eth_only)  # BTC silent for 90 s while the halt goes on
    assert "BTCUSDT" in engine.guardian.episode.blind
    rebound = [Tick(sym, p, 1.0, last + (90 + s) * SEC) for s in range(0, 20 * 60, 5)
               for sym, p in (("ETHUSDT", 50.0), ("BTCUSDT", 85.0))]
    engine.process(rebound)  # BTC is back, 6% off its trough, no new low for 20 minutes
    assert engine.breaker.status is BreakerStatus.RECOVERING



def test_a_start_on_an_exchange_is_halted_until_reconciled_then_recovers(settings):
    engine = live_engine(settings)
    assert engine.guardian.hold_for_startup(T0 + 120 * SEC, "start-up: reconciling with the exchange")
    engine.process(ticks(120, 300))  # prices flow, the hold stays until the session releases it
    assert engine.breaker.status is BreakerStatus.TRIGGERED and engine.breaker.history[-1].trigger_type == "startup"
    assert engine.guardian.release_startup(T0 + 300 * SEC, "reconciled with the exchange", {"orders": 0})
    assert engine.breaker.status is BreakerStatus.RECOVERING
    cool_down = settings.circuit_breaker.recovery.cooldown_minutes
    engine.process(ticks(300, 300 + int(cool_down * 60) + 5))
    assert states(engine)[-3:] == ["TRIGGERED", "RECOVERING", "SAFE"]


def test_a_restored_halt_is_not_replaced_by_the_start_up_hold(settings):
    engine = live_engine(settings)
    engine.force_trigger("operator before the restart")
    assert not engine.guardian.hold_for_startup(T0 + 120 * SEC, "start-up")
    assert not engine.guardian.release_startup(T0 + 130 * SEC, "reconciled", {})
    assert engine.breaker.history[-1].actor.value == "operator"


def test_a_backfill_older_than_the_start_up_release_does_not_count_as_cool_down(settings):
    """The exchange reconciles before the feed's start-up backfill lands: those candles' ticks
    are older than the release, and an hour of them must not pass for the cool-down."""
    engine = Engine(settings, LiveListFeed())
    released_at = T0 + 3600 * SEC
    engine.guardian.hold_for_startup(released_at - SEC, "start-up")
    engine.guardian.release_startup(released_at, "reconciled", {})
    engine.process(ticks(0, 3601))  # the backfill: an hour of calm, all before the release
    engine.process(ticks(3601, 3603))  # the first live ticks
    assert engine.breaker.status is BreakerStatus.RECOVERING
    cool_down = settings.circuit_breaker.recovery.cooldown_minutes
    engine.process(ticks(3603, 3600 + int(cool_down * 60) + 5))
    assert states(engine)[-1] == "SAFE"


def test_a_start_up_hold_left_by_a_failed_start_is_released_by_the_next(settings):
    from core.breaker.machine import BreakerRecord

    first = live_engine(settings)
    first.guardian.hold_for_startup(T0 + 120 * SEC, "start-up")  # ...and the exchange never answered
    left = first.breaker.snapshot()
    second = live_engine(settings)
    second.breaker.adopt(BreakerRecord.from_dict(left.to_dict()), source="journal")
    assert not second.guardian.hold_for_startup(T0 + 130 * SEC, "start-up")  # already held
    assert second.guardian.release_startup(T0 + 140 * SEC, "reconciled", {})
    assert second.breaker.status is BreakerStatus.RECOVERING
