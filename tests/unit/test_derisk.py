"""The de-risking policy's decisions: cuts at once, re-entry only after a confirmed recovery,
in steps, never beyond what it cut."""

from __future__ import annotations

import pytest

from core.events import Actor, BreakerChanged, BreakerStatus
from core.settings import ProtectionPolicySettings, ReEntry
from core.trading.derisk import ExposurePolicy, describe, policy_applies
from core.trading.orders import Origin, Side

MIN = 60_000
S, W, T, R = BreakerStatus.SAFE, BreakerStatus.WARNING, BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING


def change(status: BreakerStatus, t: int) -> BreakerChanged:
    return BreakerChanged(epoch=1, previous=S, status=status, reason="test", actor=Actor.RULE, time_ms=t)


class Book:
    def __init__(self, **held: float) -> None:
        self.held = dict(held)
        self.prices = {"BTCUSDT": 100.0, "ETHUSDT": 10.0}

    def fill(self, action) -> None:
        for o in action.orders:
            self.held[o.symbol] = self.held.get(o.symbol, 0.0) + (o.quantity if o.side is Side.BUY else -o.quantity)


def policy(book: Book, **kw) -> ExposurePolicy:
    settings = ProtectionPolicySettings(**{"warning_exposure": 0.5, "recovering_exposure": 0.5,
                                           "reentry": ReEntry(confirm_minutes=30, steps=2), **kw})
    return ExposurePolicy(settings, ("BTCUSDT",), holdings=lambda: dict(book.held),
                          last_price=book.prices.get)


def test_a_warning_cuts_to_its_fraction_and_a_trigger_flattens_reduce_only():
    book = Book(BTCUSDT=2.0, ETHUSDT=10.0)
    p = policy(book)
    cut = p.on_breaker(change(W, 0))
    assert [(o.symbol, o.side, o.quantity, o.reduce_only, o.origin) for o in cut.orders] == [
        ("BTCUSDT", Side.SELL, 1.0, True, Origin.POLICY), ("ETHUSDT", Side.SELL, 5.0, True, Origin.POLICY)]
    book.fill(cut)
    flat = p.on_breaker(change(T, MIN))
    assert [(o.symbol, o.quantity) for o in flat.orders] == [("BTCUSDT", 1.0), ("ETHUSDT", 5.0)]
    assert all(o.reduce_only for o in flat.orders)
    assert p.exposure == 0.0 and p.baseline == {"BTCUSDT": 2.0, "ETHUSDT": 10.0}


def test_a_floor_keeps_part_of_the_position():
    book = Book(BTCUSDT=2.0)
    p = policy(book, triggered_exposure=0.25)
    book.fill(p.on_breaker(change(T, 0)))
    assert book.held["BTCUSDT"] == 0.5


def test_re_entry_waits_for_the_confirmation_and_a_new_low_restarts_it():
    book = Book(BTCUSDT=2.0)
    p = policy(book)
    book.fill(p.on_breaker(change(T, 0)))
    assert p.on_price("BTCUSDT", 80.0, 5 * MIN) is None  # the trough
    p.on_breaker(change(R, 20 * MIN))
    assert p.on_price("BTCUSDT", 85.0, 49 * MIN) is None  # 29 minutes of RECOVERING
    assert p.on_price("BTCUSDT", 79.0, 50 * MIN) is None  # a new low: the wait starts again
    assert p.on_price("BTCUSDT", 85.0, 79 * MIN) is None
    step = p.on_price("BTCUSDT", 85.0, 80 * MIN)
    assert step is not None and step.kind == "reenter"
    assert [(o.side, o.quantity, o.reduce_only) for o in step.orders] == [(Side.BUY, 1.0, False)]
    book.fill(step)
    # RECOVERING allows half: no more until SAFE
    assert p.on_price("BTCUSDT", 90.0, 200 * MIN) is None
    p.on_breaker(change(S, 210 * MIN))
    assert p.on_price("BTCUSDT", 90.0, 210 * MIN) is None  # the wait starts at the first tick in SAFE
    assert p.on_price("BTCUSDT", 90.0, 239 * MIN) is None
    last = p.on_price("BTCUSDT", 90.0, 240 * MIN)
    assert [(o.side, o.quantity) for o in last.orders] == [(Side.BUY, 1.0)]
    book.fill(last)
    assert book.held["BTCUSDT"] == 2.0 and p.baseline == {} and p.exposure == 1.0


def test_the_wait_runs_on_market_time_whatever_clock_the_change_carries():
    """An operator's clear carries the wall clock; in a replay that is years after the ticks."""
    book = Book(BTCUSDT=2.0)
    p = policy(book)
    book.fill(p.on_breaker(change(T, 0)))
    p.on_breaker(change(S, 10**13))  # far in the future: a wait measured from it would never end
    assert p.on_price("BTCUSDT", 90.0, 10 * MIN) is None
    assert p.on_price("BTCUSDT", 90.0, 39 * MIN) is None
    assert p.on_price("BTCUSDT", 90.0, 40 * MIN) is not None


def test_it_never_buys_beyond_the_baseline_or_back_what_the_operator_sold():
    book = Book(BTCUSDT=2.0)
    p = policy(book, recovering_exposure=1.0, reentry=ReEntry(confirm_minutes=0, steps=1))
    book.fill(p.on_breaker(change(W, 0)))
    book.held["BTCUSDT"] = 1.5  # the operator bought some back by hand
    p.on_breaker(change(S, MIN))
    step = p.on_price("BTCUSDT", 100.0, 2 * MIN)
    assert [(o.side, o.quantity) for o in step.orders] == [(Side.BUY, 0.5)]


def test_a_worse_state_while_waiting_cancels_the_wait():
    book = Book(BTCUSDT=2.0)
    p = policy(book)
    book.fill(p.on_breaker(change(W, 0)))
    p.on_breaker(change(S, MIN))
    p.on_breaker(change(W, 10 * MIN))  # back to WARNING: exposure 0.5 already, nothing to cut
    assert p.on_price("BTCUSDT", 100.0, 60 * MIN) is None
    assert p.better_since is None


def test_live_needs_the_operator_and_the_banner_says_so():
    s = ProtectionPolicySettings()
    assert policy_applies(s, live=False) and not policy_applies(s, live=True)
    assert policy_applies(s.model_copy(update={"live": True}), live=True)
    assert not policy_applies(s.model_copy(update={"enabled": False}), live=False)
    assert describe(s, True).startswith("de-risking: WARNING keep 0%, TRIGGERED flatten")
    assert describe(s, False) == "de-risking off"


@pytest.mark.parametrize("last", [None, {}, {"exposure_to": "x", "baseline": {"BTCUSDT": 1}},
                                  {"exposure_to": 0.0, "baseline": ["BTCUSDT"]},
                                  {"exposure_to": 7.0, "baseline": {"BTCUSDT": 1.0}},
                                  {"exposure_to": 0.0, "baseline": {"BTCUSDT": "nan"}}])
def test_a_resume_from_an_unreadable_action_falls_back_to_the_breaker_state(last):
    book = Book(BTCUSDT=2.0)
    p = policy(book)
    p.resume(last, T)
    assert p.baseline == {"BTCUSDT": 2.0} and p.resume_due == {"BTCUSDT"}
    cut = p.on_price("BTCUSDT", 90.0, MIN)
    assert [(o.side, o.quantity, o.reduce_only) for o in cut.orders] == [(Side.SELL, 2.0, True)]


def test_a_resume_in_safe_with_nothing_journaled_does_nothing():
    book = Book(BTCUSDT=2.0)
    p = policy(book)
    p.resume(None, S)
    assert p.baseline == {} and p.on_price("BTCUSDT", 90.0, MIN) is None


# ---------------------------------------------------------------------- a held coin's own crash
class View:
    """Stands in for the market windows: each symbol's drop from its day's high and volatility."""

    def __init__(self) -> None:
        self.drops: dict[str, float] = {}
        self.sigmas: dict[str, float] = {}
        self.calm = 0.01

    def drop(self, symbol):
        return self.drops.get(symbol)

    def sigma(self, symbol):
        return self.sigmas.get(symbol, self.calm)

    def calm_sigma(self, symbol):
        return self.calm


def held_policy(book: Book, view: View, **kw) -> ExposurePolicy:
    p = policy(book, **kw)
    p.own = view
    return p


def test_a_coin_that_crashes_alone_is_cut_on_the_crossing_and_comes_back_once_settled():
    book, view = Book(DOGEUSDT=1000.0), View()
    p = held_policy(book, view)
    view.drops["DOGEUSDT"] = 14.9
    assert p.on_price("DOGEUSDT", 0.30, 0) is None
    view.drops["DOGEUSDT"] = 15.1
    cut = p.on_price("DOGEUSDT", 0.29, MIN)
    assert [(o.side, o.quantity, o.reduce_only) for o in cut.orders] == [(Side.SELL, 1000.0, True)]
    assert "DOGEUSDT 15.1% below its 24-hour high" in cut.reason and cut.details()["caps"] == {"DOGEUSDT": 0.0}
    book.fill(cut)
    assert p.status is S and p.exposure == 1.0, "the breaker's tier is untouched: only the coin is capped"
    view.drops["DOGEUSDT"] = 7.0  # back under clear_percent: the wait starts
    assert p.on_price("DOGEUSDT", 0.31, 2 * MIN) is None
    view.sigmas["DOGEUSDT"] = 0.05  # still swinging 5x its calm level: no buying back
    assert p.on_price("DOGEUSDT", 0.31, 40 * MIN) is None
    view.sigmas["DOGEUSDT"] = 0.015
    step = p.on_price("DOGEUSDT", 0.31, 41 * MIN)
    assert [(o.side, o.quantity) for o in step.orders] == [(Side.BUY, 500.0)]
    book.fill(step)
    last = p.on_price("DOGEUSDT", 0.31, 71 * MIN)
    book.fill(last)
    assert book.held["DOGEUSDT"] == 1000.0 and p.caps == {} and p.baseline == {}


def test_a_coin_bought_after_its_fall_is_left_alone():
    book, view = Book(), View()
    p = held_policy(book, view)
    view.drops["DOGEUSDT"] = 20.0
    assert p.on_price("DOGEUSDT", 0.25, 0) is None  # nothing held at the crossing
    book.held["DOGEUSDT"] = 500.0  # the operator buys the dip
    view.drops["DOGEUSDT"] = 25.0
    assert p.on_price("DOGEUSDT", 0.23, MIN) is None, "only a new crossing fires"
    assert book.held["DOGEUSDT"] == 500.0


def test_a_coin_cut_by_its_own_rule_stays_down_through_a_breaker_cycle():
    book, view = Book(DOGEUSDT=1000.0, BTCUSDT=1.0), View()
    p = held_policy(book, view, recovering_exposure=1.0, reentry=ReEntry(confirm_minutes=0, steps=1))
    view.drops["DOGEUSDT"] = 16.0
    book.fill(p.on_price("DOGEUSDT", 0.29, 0))
    book.fill(p.on_breaker(change(T, MIN)))
    assert book.held == {"DOGEUSDT": 0.0, "BTCUSDT": 0.0}
    p.on_breaker(change(S, 2 * MIN))
    back = p.on_price("BTCUSDT", 100.0, 3 * MIN)
    assert [(o.symbol, o.quantity) for o in back.orders] == [("BTCUSDT", 1.0)], "DOGE waits for its own recovery"


def test_a_resume_keeps_a_coins_cap():
    book, view = Book(DOGEUSDT=1000.0), View()
    p = held_policy(book, view)
    view.drops["DOGEUSDT"] = 16.0
    cut = p.on_price("DOGEUSDT", 0.29, 0)  # the process dies before the sell
    restarted = held_policy(book, view)
    restarted.resume(cut.details(), S)
    assert restarted.caps == {"DOGEUSDT": 0.0} and restarted.resume_due == {"DOGEUSDT"}
    again = restarted.on_price("DOGEUSDT", 0.28, MIN)
    assert [(o.side, o.quantity) for o in again.orders] == [(Side.SELL, 1000.0)]


def test_a_resume_keeps_the_coins_pre_crash_volatility_so_it_does_not_buy_back_into_a_pump():
    book, view = Book(DOGEUSDT=1000.0), View()
    p = held_policy(book, view)
    view.drops["DOGEUSDT"] = 16.0
    cut = p.on_price("DOGEUSDT", 0.29, 0)
    book.fill(cut)
    assert cut.details()["calm_sigma"] == {"DOGEUSDT": 0.01}
    restarted = held_policy(book, view)
    restarted.resume(cut.details(), S)
    view.drops["DOGEUSDT"] = 7.0
    assert restarted.on_price("DOGEUSDT", 0.31, MIN) is None  # back under clear: the wait starts
    view.sigmas["DOGEUSDT"] = 0.05  # 5x the level before the crash
    assert restarted.on_price("DOGEUSDT", 0.31, 40 * MIN) is None, "still swinging: no buying back after a restart"
    view.sigmas["DOGEUSDT"] = 0.015
    assert restarted.on_price("DOGEUSDT", 0.31, 41 * MIN).kind == "reenter"
