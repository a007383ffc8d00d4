"""The paper exchange: fill prices, fees, depth, reservations, listeners and restore.

The market is driven directly through `market.windows(sym).update(price, qty, t)`, then the
exchange gets the same tick, as the engine does. Default PaperSettings: taker and maker
fee 0.1%, spread 2 bps (half-spread h = 1e-4), slippage 1 bp per 10k USD.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.events import Tick
from core.market.state import MarketState
from core.settings import PaperSettings
from core.trading.exchange import ExchangeError
from core.trading.orders import Fill, Order, OrderStatus, OrderType, Side
from core.trading.paper import PaperExchange
from core.trading.portfolio import Portfolio

T0 = 1_700_000_000_000
SYM = "BTCUSDT"
H = 1e-4  # half of the default 2 bps spread
K = 1.0  # default slippage bps per 10k USD
FEE = 0.001
S = OrderStatus


def run(coro: Any) -> Any:
    """Drive a coroutine that never suspends (the paper exchange answers at once)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the paper exchange suspended")


class Env:
    def __init__(self, price: float = 100.0, qty: float = 1.0, **paper: Any) -> None:
        self.t = T0
        self.market = MarketState()
        self.market.windows(SYM).update(price, qty, self.t)
        self.settings = PaperSettings(**paper)
        self.ex = PaperExchange(self.settings, self.market, lambda: self.t)
        self.events: list[tuple[str, Any]] = []
        self.fills: list[Fill] = []
        self.portfolio = Portfolio(self.settings.starting_balance_usd)
        self.ex.add_listeners(self._on_order, self._on_fill)

    def _on_order(self, order: Order) -> None:
        self.events.append(("order", order))

    def _on_fill(self, fill: Fill) -> None:
        self.events.append(("fill", fill))
        self.fills.append(fill)
        self.portfolio.apply(fill)

    def tick(self, price: float, qty: float = 1.0, dt: int = 1000, symbol: str = SYM) -> None:
        self.t += dt
        self.market.windows(symbol).update(price, qty, self.t)
        if symbol in self.ex.watched_symbols:
            self.ex.on_tick(Tick(symbol, price, qty, self.t))

    def place(self, side: Side, type_: OrderType, qty: float, price: float | None = None,
              stop: float | None = None, symbol: str = SYM, **kw: Any) -> Order:
        return run(self.ex.place(Order(symbol, side, type_, qty, price=price, stop_price=stop, **kw)))

    def buy(self, qty: float, **kw: Any) -> Order:
        return self.place(Side.BUY, OrderType.MARKET, qty, **kw)

    def sell(self, qty: float, **kw: Any) -> Order:
        return self.place(Side.SELL, OrderType.MARKET, qty, **kw)

    def usdt(self) -> dict[str, float]:
        return self.ex.balances()["USDT"]

    def base(self, asset: str = "BTC") -> dict[str, float]:
        return self.ex.balances().get(asset, {"free": 0.0, "locked": 0.0})


def taker_price(last: float, side: Side, notional_used: float, qty: float) -> float:
    """The documented taker formula, written out independently."""
    touch = last * (1 + H) if side is Side.BUY else last * (1 - H)
    slip_bps = K * (2 * notional_used + qty * touch) / 10_000
    return touch * (1 + slip_bps / 10_000) if side is Side.BUY else touch * (1 - slip_bps / 10_000)


# ---------------------------------------------------------------------------- market orders
def test_market_buy_exact_price_and_fee() -> None:
    env = Env(price=50_000.0)
    o = env.buy(0.1)
    assert o.status is S.FILLED and o.filled_quantity == 0.1
    (f,) = env.fills
    ask = 50_000 * 1.0001  # 50,005
    slip_bps = 0.1 * ask / 10_000  # 0.50005 bps on 5,000.5 USD
    assert f.price == pytest.approx(ask * (1 + slip_bps / 10_000), rel=1e-14)
    assert f.price == pytest.approx(50_007.500500025, rel=1e-14)
    assert f.fee == pytest.approx(0.1 * f.price * FEE, rel=1e-14)
    assert f.liquidity == "taker" and f.side is Side.BUY and f.time_ms == env.t
    assert o.average_price == f.price
    assert env.usdt()["free"] == pytest.approx(10_000 - 0.1 * f.price * (1 + FEE), abs=1e-9)
    assert env.usdt()["locked"] == 0.0
    assert env.base() == {"free": 0.1, "locked": 0.0}
    assert env.ex.open_orders() == [] and env.ex.watched_symbols == frozenset()


def test_market_sell_exact_price_and_fee() -> None:
    env = Env(price=50_000.0)
    env.buy(0.1)
    o = env.sell(0.1)
    assert o.status is S.FILLED
    f = env.fills[-1]
    bid = 50_000 * 0.9999
    assert f.price == pytest.approx(bid * (1 - 0.1 * bid / 10_000 / 10_000), rel=1e-14)
    assert f.fee == pytest.approx(0.1 * f.price * FEE, rel=1e-14)
    assert "BTC" not in env.ex.balances()  # nothing held, nothing listed


def test_round_trip_costs_exactly_fees_spread_and_slippage() -> None:
    env = Env(price=50_000.0)
    q = 0.1
    env.buy(q)
    mid = {SYM: 50_000.0}
    fb = env.fills[0]
    ask, bid = 50_000 * (1 + H), 50_000 * (1 - H)
    # while holding, marked at the mid: down by the buy fee, half the spread and the slippage
    half_spread_cost = q * (ask - 50_000)
    slip_b = q * (fb.price - ask)
    assert env.portfolio.equity(mid) == pytest.approx(10_000 - fb.fee - half_spread_cost - slip_b, abs=1e-9)
    env.sell(q)
    fs = env.fills[1]
    spread_cost = q * (ask - bid)
    slip_cost = q * ask * (K * q * ask / 1e8) + q * bid * (K * q * bid / 1e8)
    fees = q * fb.price * FEE + q * fs.price * FEE
    expected = 10_000 - fees - spread_cost - slip_cost
    assert abs(env.portfolio.equity(mid) - expected) < 1e-9
    assert abs(env.portfolio.cash - expected) < 1e-9
    assert abs(env.usdt()["free"] - expected) < 1e-9


def test_splitting_an_order_within_a_tick_does_not_dodge_slippage() -> None:
    one = Env(price=100.0, starting_balance_usd=100_000)
    one.buy(200)
    split = Env(price=100.0, starting_balance_usd=100_000)
    split.buy(50)
    split.buy(150)
    cost_one = sum(f.notional for f in one.fills)
    cost_split = sum(f.notional for f in split.fills)
    assert cost_split == pytest.approx(cost_one, rel=1e-12)
    # the second order pays the slippage of the liquidity already taken
    assert split.fills[1].price == pytest.approx(taker_price(100.0, Side.BUY, 50 * 100.01, 150), rel=1e-14)
    # and a new tick refreshes the touch
    split.tick(100.0)
    split.buy(50)
    assert split.fills[2].price == pytest.approx(taker_price(100.0, Side.BUY, 0.0, 50), rel=1e-14)


def test_large_market_order_walks_the_book_over_ticks() -> None:
    env = Env(price=100.0, qty=1.0, starting_balance_usd=1_000_000)
    # depth = max(25,000, 5 * 1 * 100) = 25,000 USD at the touch
    assert env.ex.depth_usd(SYM) == 25_000
    o = env.buy(600)
    ask0 = 100 * (1 + H)
    q0 = 25_000 / ask0
    assert o.status is S.PARTIALLY_FILLED
    assert o.filled_quantity == pytest.approx(q0, rel=1e-14)
    assert env.fills[0].price == pytest.approx(taker_price(100, Side.BUY, 0, q0), rel=1e-14)
    assert env.ex.watched_symbols == {SYM}
    # the remainder is reserved
    assert env.usdt()["locked"] > (600 - q0) * ask0
    # another order in the same tick finds the touch exhausted: it waits for the next tick
    o2 = env.buy(1)
    assert o2.status is S.NEW and len(env.fills) == 1
    env.ex.cancel_all_now()
    env2 = Env(price=100.0, qty=1.0, starting_balance_usd=1_000_000)
    o = env2.buy(600)
    # next tick: 101; 1-minute volume 2 -> depth still 25,000
    env2.tick(101.0, qty=1.0)
    q1 = 25_000 / (101 * (1 + H))
    assert env2.fills[1].price == pytest.approx(taker_price(101, Side.BUY, 0, q1), rel=1e-14)
    assert env2.fills[1].quantity == pytest.approx(q1, rel=1e-14)
    # a heavy tick: 1-minute volume 2 + 200 = 202 -> depth 5 * 202 * 102 = 103,020 > the rest
    env2.tick(102.0, qty=200.0)
    assert env2.ex.depth_usd(SYM) == pytest.approx(5 * 202 * 102)
    rest = 600 - q0 - q1
    assert env2.fills[2].quantity == pytest.approx(rest, rel=1e-12)
    assert env2.fills[2].price == pytest.approx(taker_price(102, Side.BUY, 0, rest), rel=1e-12)
    final = env2.ex.get_order(o.client_order_id)
    assert final is not None and final.status is S.FILLED and final.filled_quantity == 600
    vwap = sum(f.notional for f in env2.fills) / 600
    assert final.average_price == pytest.approx(vwap, rel=1e-12)
    assert env2.ex.watched_symbols == frozenset()
    assert env2.usdt()["locked"] == 0.0
    assert env2.base()["free"] == pytest.approx(600, rel=1e-12)
    # updates: NEW, PARTIALLY_FILLED x2, FILLED, each fill before its update
    kinds = [(k, e.status if k == "order" else None) for k, e in env2.events]
    assert kinds == [("order", S.NEW), ("fill", None), ("order", S.PARTIALLY_FILLED), ("fill", None),
                     ("order", S.PARTIALLY_FILLED), ("fill", None), ("order", S.FILLED)]


def test_market_sell_walks_the_book_too() -> None:
    env = Env(price=100.0, starting_balance_usd=100_000)
    env.buy(400)
    env.tick(100.0)
    env.tick(100.0)  # finishes the buy (250 + 150 ... depth 25k per tick)
    assert env.base()["free"] == pytest.approx(400, rel=1e-12)
    env.tick(100.0)
    o = env.sell(400)
    bid = 100 * (1 - H)
    assert o.status is S.PARTIALLY_FILLED and o.filled_quantity == pytest.approx(25_000 / bid)
    assert env.base()["locked"] == pytest.approx(400 - 25_000 / bid)
    env.tick(99.0)  # the rest (~150 units, ~14.8k USD) fits in the refreshed depth
    assert env.ex.get_order(o.client_order_id).status is S.FILLED  # type: ignore[union-attr]
    rest = 400 - 25_000 / bid
    assert env.fills[-1].quantity == pytest.approx(rest, rel=1e-12)
    assert env.fills[-1].price == pytest.approx(taker_price(99.0, Side.SELL, 0, rest), rel=1e-12)
    assert "BTC" not in env.ex.balances()


def test_market_buy_that_cannot_afford_the_rest_is_cancelled_not_overdrawn() -> None:
    env = Env(price=100.0, starting_balance_usd=40_000)
    o = env.buy(390)  # ~39,000 USD estimated: accepted, 25k fills now
    assert o.status is S.PARTIALLY_FILLED
    env.tick(130.0)  # the price ran away: the rest costs more than the reservation plus free
    final = env.ex.get_order(o.client_order_id)
    assert final is not None and final.status is S.CANCELED
    assert "insufficient USDT" in (final.reason or "")
    assert env.events[-2][0] == "fill" and env.events[-1][1].status is S.CANCELED
    assert env.ex.balances()["USDT"]["free"] >= 0
    assert env.usdt()["free"] < 1.0  # it spent what it had, no more
    assert env.ex.open_orders() == []


# ---------------------------------------------------------------------------- limit orders
def test_marketable_limit_takes_at_min_of_ask_and_limit() -> None:
    env = Env(price=100.0)
    o = env.place(Side.BUY, OrderType.LIMIT, 10, price=101.0)
    assert o.status is S.FILLED
    assert env.fills[0].price == pytest.approx(taker_price(100, Side.BUY, 0, 10), rel=1e-14)
    assert env.fills[0].liquidity == "taker"
    assert env.fills[0].fee == pytest.approx(10 * env.fills[0].price * FEE)
    # a limit barely through the ask caps the slippage at the limit
    env.tick(100.0)
    o = env.place(Side.BUY, OrderType.LIMIT, 20, price=100.01)
    assert o.status is S.FILLED and env.fills[1].price == 100.01
    # sells: max(bid with slippage, limit)
    env.tick(100.0)
    o = env.place(Side.SELL, OrderType.LIMIT, 10, price=99.0)
    assert env.fills[2].price == pytest.approx(taker_price(100, Side.SELL, 0, 10), rel=1e-14)
    env.tick(100.0)
    o = env.place(Side.SELL, OrderType.LIMIT, 5, price=99.99)
    assert env.fills[3].price == 99.99 and o.status is S.FILLED


def test_marketable_limit_larger_than_depth_rests_the_rest_at_its_limit() -> None:
    env = Env(price=100.0, starting_balance_usd=100_000)
    o = env.place(Side.BUY, OrderType.LIMIT, 400, price=100.5)
    assert o.status is S.PARTIALLY_FILLED
    q0 = 25_000 / (100 * (1 + H))
    assert o.filled_quantity == pytest.approx(q0)
    assert env.ex.open_orders()[0].client_order_id == o.client_order_id
    # the rest rests as a maker order: a trade at 100.2 goes through it
    env.tick(100.2, qty=30)
    f = env.fills[-1]
    assert f.liquidity == "maker" and f.price == 100.5 and f.quantity == 30
    assert f.fee == pytest.approx(30 * 100.5 * FEE)


def test_resting_limit_fills_as_maker_limited_by_tick_quantity() -> None:
    env = Env(price=100.0)
    o = env.place(Side.BUY, OrderType.LIMIT, 5, price=99.0)
    assert o.status is S.NEW and env.fills == []
    locked = 5 * 99 * (1 + FEE)
    assert env.usdt()["locked"] == pytest.approx(locked, rel=1e-8)
    assert env.usdt()["free"] + env.usdt()["locked"] == pytest.approx(10_000, abs=1e-9)
    assert env.ex.watched_symbols == {SYM}
    env.tick(99.5, qty=100)  # above the limit: nothing
    assert env.fills == []
    env.tick(98.9, qty=2)  # trades through: 2 of 5, at the limit, maker fee
    f = env.fills[0]
    assert (f.quantity, f.price, f.liquidity) == (2, 99.0, "maker")
    assert f.fee == pytest.approx(2 * 99 * FEE, rel=1e-14)
    assert env.events[-1][1].status is S.PARTIALLY_FILLED and env.events[-2][0] == "fill"
    assert env.usdt()["locked"] == pytest.approx(3 * 99 * (1 + FEE), rel=1e-8)
    env.tick(99.0, qty=10)  # at the limit counts as through
    assert env.fills[1].quantity == 3
    final = env.ex.get_order(o.client_order_id)
    assert final is not None and final.status is S.FILLED and final.average_price == 99.0
    assert env.usdt() == {"free": pytest.approx(10_000 - 5 * 99 * (1 + FEE), abs=1e-9), "locked": 0.0}
    assert env.base()["free"] == 5


def test_one_tick_shares_its_quantity_in_price_then_time_priority() -> None:
    env = Env(price=100.0)
    a = env.place(Side.BUY, OrderType.LIMIT, 3, price=99.0)
    b = env.place(Side.BUY, OrderType.LIMIT, 3, price=99.5)  # better price
    c = env.place(Side.BUY, OrderType.LIMIT, 3, price=99.0)  # same price as a, later
    env.tick(98.0, qty=5)
    got = {f.client_order_id: f.quantity for f in env.fills}
    assert got == {b.client_order_id: 3, a.client_order_id: 2}
    env.tick(98.0, qty=2)
    assert [(f.client_order_id, f.quantity) for f in env.fills[2:]] == [(a.client_order_id, 1),
                                                                          (c.client_order_id, 1)]


def test_resting_sell_limit_and_base_reservation() -> None:
    env = Env(price=100.0)
    env.buy(10)
    env.tick(100.0)
    o = env.place(Side.SELL, OrderType.LIMIT, 7, price=105.0)
    assert o.status is S.NEW
    assert env.base() == {"free": pytest.approx(3), "locked": pytest.approx(7)}
    over = env.place(Side.SELL, OrderType.LIMIT, 4, price=106.0)
    assert over.status is S.REJECTED and over.reason == "insufficient BTC: need 4, free 3"
    env.tick(104.0, qty=50)
    assert len(env.fills) == 1
    env.tick(105.5, qty=50)
    f = env.fills[-1]
    assert (f.side, f.quantity, f.price, f.liquidity) == (Side.SELL, 7, 105.0, "maker")
    assert env.base() == {"free": pytest.approx(3), "locked": 0.0}


def test_post_only() -> None:
    env = Env(price=100.0)
    r = env.place(Side.BUY, OrderType.POST_ONLY, 1, price=100.01)  # = ask
    assert r.status is S.REJECTED and "post-only order would take liquidity" in (r.reason or "")
    r = env.place(Side.SELL, OrderType.POST_ONLY, 1, price=99.0)
    assert r.status is S.REJECTED and "post-only" in (r.reason or "")
    ok = env.place(Side.BUY, OrderType.POST_ONLY, 1, price=100.0)  # inside the spread: rests
    assert ok.status is S.NEW
    env.tick(99.99, qty=1)
    assert env.fills[0].liquidity == "maker" and env.fills[0].price == 100.0
    assert [e[1].status for e in env.events if e[0] == "order"] == [S.REJECTED, S.REJECTED, S.NEW, S.FILLED]


# ---------------------------------------------------------------------------- stops
def test_sell_stop_triggers_and_executes_like_a_market_order() -> None:
    env = Env(price=100.0)
    env.buy(10)
    env.tick(100.0)
    stop = env.place(Side.SELL, OrderType.STOP, 10, stop=95.0)
    assert stop.status is S.NEW and env.base()["locked"] == 10
    env.tick(96.0, qty=1000)
    assert len(env.fills) == 1
    env.tick(94.0, qty=1)  # crosses: sells at this tick's bid, with slippage, taker fee
    f = env.fills[-1]
    assert f.side is Side.SELL and f.liquidity == "taker"
    assert f.price == pytest.approx(taker_price(94.0, Side.SELL, 0, 10), rel=1e-14)
    assert f.fee == pytest.approx(10 * f.price * FEE)
    assert env.ex.get_order(stop.client_order_id).status is S.FILLED  # type: ignore[union-attr]


def test_buy_stop_and_immediate_trigger_rejection() -> None:
    env = Env(price=100.0)
    r = env.place(Side.SELL, OrderType.STOP, 1, stop=101.0)
    assert r.status is S.REJECTED  # no BTC
    env.buy(1)
    r = env.place(Side.SELL, OrderType.STOP, 1, stop=100.0)
    assert r.status is S.REJECTED and "trigger immediately" in (r.reason or "")
    r = env.place(Side.BUY, OrderType.STOP, 1, stop=99.0)
    assert r.status is S.REJECTED and "trigger immediately" in (r.reason or "")
    b = env.place(Side.BUY, OrderType.STOP, 2, stop=102.0)
    assert b.status is S.NEW and env.usdt()["locked"] > 2 * 102
    env.tick(101.9)
    assert len(env.fills) == 1
    env.tick(102.5)
    f = env.fills[-1]
    assert f.side is Side.BUY and f.quantity == 2
    assert f.price == pytest.approx(taker_price(102.5, Side.BUY, 0, 2), rel=1e-14)
    assert env.usdt()["locked"] == 0


def test_triggered_stop_walks_the_book() -> None:
    env = Env(price=100.0, starting_balance_usd=100_000)
    env.buy(400)
    env.tick(100.0)
    env.tick(100.0)
    stop = env.place(Side.SELL, OrderType.STOP, 400, stop=90.0)
    env.tick(89.0)
    o = env.ex.get_order(stop.client_order_id)
    assert o is not None and o.status is S.PARTIALLY_FILLED
    assert o.filled_quantity == pytest.approx(25_000 / (89 * (1 - H)))
    env.tick(88.0)  # keeps taking although 88 is also below the stop: it is a market order now
    env.tick(91.0)  # and even above the stop
    assert env.ex.get_order(stop.client_order_id).status is S.FILLED  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- validation and funds
@pytest.mark.parametrize(
    "kw, reason",
    [
        ({"symbol": "ETHUSDT"}, "unknown symbol ETHUSDT: no market data yet"),
        ({"symbol": "ETHBTC"}, "USDT-quoted"),
        ({"quantity": 0.0}, "quantity must be a positive finite number"),
        ({"quantity": -1.0}, "quantity must be a positive finite number"),
        ({"quantity": math.nan}, "quantity must be a positive finite number"),
        ({"quantity": math.inf}, "quantity must be a positive finite number"),
        ({"type": OrderType.LIMIT}, "a LIMIT order needs a price"),
        ({"type": OrderType.POST_ONLY}, "a POST_ONLY order needs a price"),
        ({"type": OrderType.STOP}, "a STOP order needs a stop_price"),
        ({"type": OrderType.LIMIT, "price": math.nan}, "price must be a positive finite number"),
        ({"type": OrderType.LIMIT, "price": -5.0}, "price must be a positive finite number"),
        ({"type": OrderType.STOP, "stop_price": math.inf}, "stop_price must be a positive finite number"),
        ({"reduce_only": True}, "reduce-only BUY"),
    ],
)
def test_invalid_orders_are_rejected_with_a_reason(kw: dict[str, Any], reason: str) -> None:
    env = Env(price=100.0)
    fields: dict[str, Any] = {"symbol": SYM, "side": Side.BUY, "type": OrderType.MARKET, "quantity": 1.0, **kw}
    o = run(env.ex.place(Order(**fields)))
    assert o.status is S.REJECTED and reason in (o.reason or "")
    assert env.events == [("order", o)] and env.fills == []
    assert env.usdt() == {"free": 10_000, "locked": 0.0}
    assert run(env.ex.cancel(o.client_order_id)) == o  # final: unchanged


def test_insufficient_balance() -> None:
    env = Env(price=100.0)
    r = env.place(Side.BUY, OrderType.LIMIT, 200, price=99.0)
    assert r.status is S.REJECTED
    assert r.reason == f"insufficient USDT: need {200 * 99 * 1.001 * (1 + 1e-9):,.2f}, free 10,000.00"
    assert r.reason.startswith("insufficient USDT: need 19,819.80")
    r = env.buy(100)  # 10,001 USD at the ask: more than 10,000
    assert r.status is S.REJECTED and "insufficient USDT" in (r.reason or "")
    r = env.sell(0.5)
    assert r.status is S.REJECTED and r.reason == "insufficient BTC: need 0.5, free 0"
    # reservations count: two resting buys cannot both use the same cash
    a = env.place(Side.BUY, OrderType.LIMIT, 60, price=99.0)
    assert a.status is S.NEW
    b = env.place(Side.BUY, OrderType.LIMIT, 60, price=99.0)
    assert b.status is S.REJECTED and "free 4,054." in (b.reason or "")
    assert env.fills == []


def test_cancel_and_cancel_all_release_reservations() -> None:
    env = Env(price=100.0)
    env.market.windows("ETHUSDT").update(10.0, 1.0, env.t)
    env.buy(10)
    free0 = env.usdt()["free"]
    a = env.place(Side.BUY, OrderType.LIMIT, 20, price=95.0)
    b = env.place(Side.SELL, OrderType.LIMIT, 4, price=110.0)
    c = env.place(Side.BUY, OrderType.LIMIT, 50, price=9.0, symbol="ETHUSDT")
    d = env.place(Side.SELL, OrderType.STOP, 5, stop=90.0)
    assert env.ex.watched_symbols == {SYM, "ETHUSDT"}
    assert env.base()["locked"] == 9
    assert env.usdt()["locked"] == pytest.approx(20 * 95 * 1.001 + 50 * 9 * 1.001, rel=1e-8)
    done = run(env.ex.cancel(a.client_order_id))
    assert done.status is S.CANCELED and env.events[-1] == ("order", done)
    assert run(env.ex.cancel(a.client_order_id)) == done  # again: unchanged
    with pytest.raises(ExchangeError):
        run(env.ex.cancel("nope"))
    cancelled = env.ex.cancel_all_now(SYM)
    assert [o.client_order_id for o in cancelled] == [b.client_order_id, d.client_order_id]
    assert all(o.status is S.CANCELED for o in cancelled)
    assert [e[1] for e in env.events[-2:]] == cancelled
    assert env.base() == {"free": 10, "locked": 0.0}
    assert env.ex.watched_symbols == {"ETHUSDT"}
    assert [o.client_order_id for o in env.ex.cancel_all_now()] == [c.client_order_id]
    assert env.usdt() == {"free": free0, "locked": 0.0}
    assert env.ex.open_orders() == [] and env.ex.watched_symbols == frozenset()
    assert env.ex.cancel_all_now() == []


def test_cancel_partially_filled_market_order() -> None:
    env = Env(price=100.0, starting_balance_usd=100_000)
    o = env.buy(600)
    assert o.status is S.PARTIALLY_FILLED and env.usdt()["locked"] > 0
    (c,) = env.ex.cancel_all_now()
    assert c.status is S.CANCELED and c.filled_quantity == o.filled_quantity
    assert env.usdt()["locked"] == 0
    env.tick(100.0)
    assert len(env.fills) == 1


def test_duplicate_client_order_id_never_touches_the_original() -> None:
    env = Env(price=100.0)
    a = env.place(Side.BUY, OrderType.LIMIT, 1, price=90.0)
    dup = run(env.ex.place(Order(SYM, Side.BUY, OrderType.MARKET, 1, client_order_id=a.client_order_id)))
    assert dup.status is S.REJECTED and "duplicate" in (dup.reason or "")
    assert env.ex.open_orders() == [a] and len(env.events) == 1
    # the id of a rejected order may be sent again
    r = env.place(Side.BUY, OrderType.LIMIT, 1_000, price=90.0, client_order_id="again")
    assert r.status is S.REJECTED
    ok = env.place(Side.BUY, OrderType.LIMIT, 1, price=90.0, client_order_id="again")
    assert ok.status is S.NEW and env.ex.get_order("again") == ok


def test_a_listener_cancelling_on_new_stops_the_fill() -> None:
    env = Env(price=100.0)

    def on_order(o: Order) -> None:
        if o.status is S.NEW:
            env.ex.cancel_all_now()

    env.ex.add_listeners(on_order, lambda f: None)
    o = env.buy(1)
    assert o.status is S.CANCELED and env.fills == [] and env.usdt()["locked"] == 0


async def test_place_and_cancel_are_awaitable() -> None:
    env = Env(price=100.0)
    o = await env.ex.place(Order(SYM, Side.BUY, OrderType.LIMIT, 1, price=99.0))
    assert o.status is S.NEW and o.exchange_order_id and o.created_ms == env.t
    c = await env.ex.cancel(o.client_order_id)
    assert c.status is S.CANCELED


def test_ticks_of_other_markets_or_bad_ticks_are_ignored() -> None:
    env = Env(price=100.0)
    env.place(Side.BUY, OrderType.LIMIT, 1, price=99.0)
    env.ex.on_tick(Tick(SYM, 98.0, 5.0, env.t, "futures"))
    env.ex.on_tick(Tick(SYM, math.nan, 5.0, env.t))
    env.ex.on_tick(Tick(SYM, 98.0, math.inf, env.t))
    env.ex.on_tick(Tick("ETHUSDT", 1.0, 5.0, env.t))
    assert env.fills == []


# ---------------------------------------------------------------------------- listeners
def test_listener_order_fill_before_update_and_several_listeners() -> None:
    env = Env(price=100.0)
    second: list[str] = []
    env.ex.add_listeners(lambda o: second.append(f"order:{o.status.value}"), lambda f: second.append("fill"))
    env.buy(1)
    assert second == ["order:NEW", "fill", "order:FILLED"]
    # the update that follows a fill already reflects it
    kind, fill = env.events[1]
    kind2, order = env.events[2]
    assert kind == "fill" and kind2 == "order" and order.filled_quantity == fill.quantity


def test_a_failing_listener_does_not_break_the_book() -> None:
    env = Env(price=100.0)

    def boom(_: Any) -> None:
        raise RuntimeError("listener bug")

    env.ex.add_listeners(boom, boom)
    o = env.buy(1)
    assert o.status is S.FILLED and len(env.fills) == 1
    assert env.base()["free"] == 1


def test_a_listener_may_cancel_during_a_tick() -> None:
    env = Env(price=100.0)
    a = env.place(Side.BUY, OrderType.LIMIT, 1, price=99.0)
    b = env.place(Side.BUY, OrderType.LIMIT, 1, price=99.0)
    env.ex.add_listeners(lambda o: None, lambda f: env.ex.cancel_all_now())
    env.tick(98.0, qty=10)
    assert [f.client_order_id for f in env.fills] == [a.client_order_id]
    assert env.ex.get_order(b.client_order_id).status is S.CANCELED  # type: ignore[union-attr]
    assert env.usdt()["locked"] == 0


# ---------------------------------------------------------------------------- restore
def test_restore_rebuilds_the_book_and_reservations() -> None:
    env = Env(price=100.0, starting_balance_usd=100_000)
    env.buy(10)
    env.tick(100.0)
    lim = env.place(Side.BUY, OrderType.LIMIT, 5, price=98.0)
    env.tick(97.0, qty=2)  # partially filled
    sell = env.place(Side.SELL, OrderType.LIMIT, 6, price=105.0)
    stop = env.place(Side.SELL, OrderType.STOP, 4, stop=90.0)
    big = env.buy(600)  # a market order still walking
    before = env.ex.balances()
    orders = env.ex.open_orders()
    assert [o.client_order_id for o in orders] == [lim.client_order_id, sell.client_order_id,
                                                   stop.client_order_id, big.client_order_id]

    fresh = PaperExchange(env.settings, env.market, lambda: env.t)
    seen: list[Order] = []
    fresh.add_listeners(seen.append, lambda f: None)
    dropped = fresh.restore(before, orders)
    assert dropped == [] and seen == []
    assert fresh.open_orders() == orders
    after = fresh.balances()
    assert after["BTC"] == before["BTC"]
    assert after["USDT"]["free"] + after["USDT"]["locked"] == pytest.approx(
        before["USDT"]["free"] + before["USDT"]["locked"], abs=1e-9)
    assert after["USDT"]["locked"] > 0
    assert fresh.watched_symbols == {SYM}
    # the restored book keeps working: the market order continues, the limit fills as maker
    fresh.on_tick(Tick(SYM, 97.5, 3.0, env.t + 1))
    env.market.windows(SYM).update(97.5, 3.0, env.t + 1)
    assert fresh.get_order(lim.client_order_id).status is S.FILLED  # type: ignore[union-attr]
    assert fresh.get_order(big.client_order_id).filled_quantity > big.filled_quantity  # type: ignore[union-attr]


def test_restore_cancels_what_cannot_be_funded() -> None:
    env = Env(price=100.0)
    ok = Order(SYM, Side.BUY, OrderType.LIMIT, 1, price=99.0, status=S.NEW)
    too_big = Order(SYM, Side.BUY, OrderType.LIMIT, 1000, price=99.0, status=S.NEW)
    no_btc = Order(SYM, Side.SELL, OrderType.LIMIT, 1, price=120.0, status=S.NEW)
    done = Order(SYM, Side.BUY, OrderType.LIMIT, 1, price=99.0, status=S.FILLED, filled_quantity=1.0)
    dropped = env.ex.restore({"USDT": 500.0}, [ok, too_big, no_btc, done])
    assert [d.client_order_id for d in dropped] == [too_big.client_order_id, no_btc.client_order_id]
    assert all(d.status is S.CANCELED and d.reason and d.reason.startswith("restore: insufficient") for d in dropped)
    assert [e[1] for e in env.events] == dropped
    assert env.ex.open_orders() == [ok]
    assert run(env.ex.cancel(done.client_order_id)) == done
    assert env.usdt()["locked"] == pytest.approx(99 * 1.001, rel=1e-8)
    with pytest.raises(ValueError):
        env.ex.restore({"USDT": -1.0}, [])


# ---------------------------------------------------------------------------- property
ACTION = st.one_of(
    st.tuples(st.just("tick"), st.floats(-0.08, 0.08), st.floats(0.0, 400.0)),
    st.tuples(st.just("mbuy"), st.floats(0.01, 1.3)),
    st.tuples(st.just("msell"), st.floats(0.01, 1.3)),
    st.tuples(st.just("lbuy"), st.floats(0.01, 1.3), st.floats(-0.03, 0.01)),
    st.tuples(st.just("lsell"), st.floats(0.01, 1.3), st.floats(-0.01, 0.03)),
    st.tuples(st.just("stop"), st.floats(0.01, 1.0), st.floats(0.001, 0.05)),
    st.tuples(st.just("cancel"), st.integers(0, 5)),
    st.tuples(st.just("cancel_all")),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTION, min_size=1, max_size=30))
def test_random_trading_never_overspends_and_the_fills_rebuild_the_balances(actions: list[tuple]) -> None:
    env = Env(price=100.0, qty=1.0, starting_balance_usd=50_000)
    price = 100.0
    for action in actions:
        kind = action[0]
        bal = env.ex.balances()
        free_q = bal["USDT"]["free"]
        free_b = bal.get("BTC", {"free": 0.0})["free"]
        if kind == "tick":
            price = min(1_000.0, max(10.0, price * (1 + action[1])))
            env.tick(price, qty=action[2])
        elif kind == "mbuy":
            q = action[1] * free_q / (price * 1.0001)
            if q > 0:
                env.buy(q)
        elif kind == "msell":
            q = action[1] * free_b
            if q > 0:
                env.sell(q)
        elif kind == "lbuy":
            px = price * (1 + action[2])
            q = action[1] * free_q / px
            if q > 0:
                env.place(Side.BUY, OrderType.LIMIT, q, price=px)
        elif kind == "lsell":
            q = action[1] * free_b
            if q > 0:
                env.place(Side.SELL, OrderType.LIMIT, q, price=price * (1 + action[2]))
        elif kind == "stop":
            q = action[1] * free_b
            if q > 0:
                env.place(Side.SELL, OrderType.STOP, q, stop=price * (1 - action[2]))
        elif kind == "cancel":
            opened = env.ex.open_orders()
            if opened:
                run(env.ex.cancel(opened[action[1] % len(opened)].client_order_id))
        else:
            env.ex.cancel_all_now()

        bal = env.ex.balances()
        usdt, btc = bal["USDT"], bal.get("BTC", {"free": 0.0, "locked": 0.0})
        assert usdt["free"] + usdt["locked"] >= 0.0  # cash never below zero
        assert usdt["free"] >= -1e-9 and usdt["locked"] >= 0.0  # never over-committed
        assert btc["free"] + btc["locked"] >= 0.0 and btc["free"] >= -1e-12
        for f in env.fills:
            assert math.isfinite(f.price) and f.price > 0 and math.isfinite(f.fee) and f.fee >= 0
        # the live portfolio, fed by the listener, agrees
        assert abs(env.portfolio.cash - (usdt["free"] + usdt["locked"])) <= 1e-9
        assert abs(env.portfolio.quantity(SYM) - (btc["free"] + btc["locked"])) <= 1e-9

    rebuilt = Portfolio.from_fills(50_000, env.fills)
    bal = env.ex.balances()
    usdt, btc = bal["USDT"], bal.get("BTC", {"free": 0.0, "locked": 0.0})
    assert abs(rebuilt.cash - (usdt["free"] + usdt["locked"])) <= 1e-9
    assert abs(rebuilt.quantity(SYM) - (btc["free"] + btc["locked"])) <= 1e-9
    assert rebuilt.cash >= 0 and rebuilt.quantity(SYM) >= 0
    # every order the exchange reports is consistent with its fills
    by_order: dict[str, float] = {}
    for f in env.fills:
        by_order[f.client_order_id] = by_order.get(f.client_order_id, 0.0) + f.quantity
    for cid, q in by_order.items():
        o = env.ex.get_order(cid)
        assert o is not None and o.filled_quantity == pytest.approx(q, rel=1e-9)
        assert o.filled_quantity <= o.quantity * (1 + 1e-12)


def test_a_rising_price_shrinks_a_walking_buy_reservation_instead_of_overdrawing() -> None:
    env = Env(price=100.0, starting_balance_usd=100_000)
    o = env.buy(990)  # ~99.2k reserved of 100k, 25k fills now
    assert o.status is S.PARTIALLY_FILLED
    env.tick(100.5)  # a little dearer than the estimate: paid from the free balance
    assert env.ex.get_order(o.client_order_id).status is S.PARTIALLY_FILLED  # type: ignore[union-attr]
    assert env.usdt()["free"] > 0
    env.tick(103.0)  # dearer than estimate + free: the rest keeps only what is left
    o2 = env.ex.get_order(o.client_order_id)
    assert o2 is not None and o2.status is S.PARTIALLY_FILLED
    assert -1e-9 <= env.usdt()["free"] < 1e-6
    assert env.portfolio.cash >= 0
    env.tick(103.0)  # now the rest cannot be paid in full: fill what can be, cancel the rest
    o3 = env.ex.get_order(o.client_order_id)
    assert o3 is not None and o3.status is S.CANCELED and "insufficient USDT" in (o3.reason or "")
    assert o3.filled_quantity > o2.filled_quantity
    assert 0 <= env.usdt()["free"] < 1.0 and env.usdt()["locked"] == 0
    assert env.portfolio.cash == pytest.approx(env.usdt()["free"], abs=1e-9)


def test_restore_validates_orders_and_prices_market_orders_without_data() -> None:
    env = Env(price=100.0)
    bad = [
        Order("ETHBTC", Side.BUY, OrderType.LIMIT, 1, price=1.0, status=S.NEW),
        Order(SYM, Side.BUY, OrderType.LIMIT, math.nan, price=1.0, status=S.NEW),
        Order(SYM, Side.BUY, OrderType.LIMIT, 1, price=1.0, status=S.PARTIALLY_FILLED, filled_quantity=2.0),
        Order(SYM, Side.BUY, OrderType.LIMIT, 1, price=math.inf, status=S.NEW),
        Order(SYM, Side.BUY, OrderType.LIMIT, 1, status=S.NEW),
        Order(SYM, Side.SELL, OrderType.STOP, 1, status=S.NEW),
        Order("XRPUSDT", Side.BUY, OrderType.MARKET, 1, status=S.NEW),  # no data, no price known
    ]
    walking = Order("ADAUSDT", Side.BUY, OrderType.MARKET, 10, status=S.PARTIALLY_FILLED, filled_quantity=4.0,
                    average_price=2.0)
    dropped = env.ex.restore({"USDT": {"free": 1_000.0, "locked": 0.0}, "BTC": {"free": 1.0, "locked": 0.0}},
                             [*bad, walking])
    assert [d.client_order_id for d in dropped] == [o.client_order_id for o in bad]
    assert all(d.status is S.CANCELED for d in dropped)
    (kept,) = env.ex.open_orders()
    assert kept.client_order_id == walking.client_order_id and kept.status is S.PARTIALLY_FILLED
    assert env.usdt()["locked"] == pytest.approx(6 * 2.0 * (1 + H) * (1 + FEE), rel=1e-4)
    assert env.base() == {"free": 1.0, "locked": 0.0}


def test_quotes_and_depth_reads() -> None:
    env = Env(price=100.0, qty=3.0)
    assert env.ex.quotes(SYM) == (pytest.approx(99.99), pytest.approx(100.01))
    assert env.ex.quotes("ETHUSDT") is None
    assert env.ex.depth_usd("ETHUSDT") == 25_000
    env.tick(100.0, qty=100.0)  # 1-minute volume 103 -> 5 * 103 * 100
    assert env.ex.depth_usd(SYM) == pytest.approx(51_500)
    env.tick(100.0, qty=1.0, dt=61_000)  # the minute rolled: only this tick's volume
    assert env.ex.depth_usd(SYM) == 25_000


def test_zero_spread_and_slippage_settings() -> None:
    env = Env(price=100.0, spread_bps=0.0, slippage_bps_per_10k_usd=0.0, taker_fee=0.0, maker_fee=0.0)
    env.buy(10)
    env.sell(10)
    assert [f.price for f in env.fills] == [100.0, 100.0]
    assert env.usdt() == {"free": 10_000.0, "locked": 0.0}
    assert env.place(Side.BUY, OrderType.POST_ONLY, 1, price=100.0).status is S.REJECTED  # at the ask
