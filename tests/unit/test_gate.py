"""The order gate. The oracle (after nautilus_trader's risk-engine tests): a denied order
never reaches the exchange, and every denial is journaled with its reason."""

from __future__ import annotations

import asyncio
import math

import pytest

from core.breaker.state import CircuitBreakerState
from core.events import Actor, Tick
from core.market.state import MarketState
from core.settings import PaperSettings, RiskSettings
from core.trading.gate import OrderGate
from core.trading.orders import Order, OrderStatus, OrderType, Origin, Side
from core.trading.paper import PaperExchange
from core.trading.portfolio import Portfolio

T0 = 1_700_000_000_000


class SpyExchange(PaperExchange):
    """The real paper exchange, recording what reached it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.placed: list[Order] = []

    async def place(self, order: Order) -> Order:
        self.placed.append(order)
        return await super().place(order)


class RecordingJournal:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None]] = []
        self.on_record = None

    async def record_order(self, order: Order, event_time_ms: int | None = None) -> int:
        self.events.append(("durable", order.status.value, order.reason))
        if self.on_record:
            self.on_record(order)
        await asyncio.sleep(0)
        return len(self.events)

    def enqueue_order(self, order: Order, event_time_ms: int | None = None):
        self.events.append(("queued", order.status.value, order.reason))

    def enqueue_fill(self, fill):
        self.events.append(("fill", fill.client_order_id, None))


class Rig:
    def __init__(self, **risk) -> None:
        self.now = T0
        self.market = MarketState()
        self.breaker = CircuitBreakerState()
        self.portfolio = Portfolio(10_000.0)
        self.exchange = SpyExchange(PaperSettings(), self.market, lambda: self.now)
        self.journal = RecordingJournal()
        defaults = dict(max_order_notional_usd=1_000.0, max_position_notional_usd=2_500.0,
                        max_order_quantity={"BTCUSDT": 0.05}, max_orders_per_minute=5)
        defaults.update(risk)
        self.gate = OrderGate(RiskSettings(**defaults), self.breaker, self.market, self.exchange, self.portfolio,
                              self.journal, clock=lambda: self.now)
        self.tick("BTCUSDT", 10_000.0)
        self.tick("ETHUSDT", 1_000.0)

    def tick(self, symbol: str, price: float, qty: float = 5.0) -> None:
        self.now += 1000
        t = Tick(symbol, price, qty, self.now)
        self.market.windows(symbol).update(price, qty, self.now)
        if symbol in self.exchange.watched_symbols:
            self.exchange.on_tick(t)

    def submit(self, order: Order, epoch_read=None) -> Order:
        return asyncio.run(self.gate.submit(order, epoch_read))


def buy(qty=0.01, symbol="BTCUSDT", **kw) -> Order:
    return Order(symbol=symbol, side=Side.BUY, type=kw.pop("type", OrderType.MARKET), quantity=qty, **kw)


def assert_denied(rig: Rig, order: Order, fragment: str, epoch_read=None) -> Order:
    placed_before = len(rig.exchange.placed)
    result = rig.submit(order, epoch_read)
    assert result.status is OrderStatus.DENIED, result
    assert fragment in result.reason
    assert len(rig.exchange.placed) == placed_before, "a denied order reached the exchange"
    assert rig.journal.events[-1] == ("durable", "DENIED", result.reason)
    return result


@pytest.mark.parametrize("order, fragment", [
    (buy(qty=float("nan")), "quantity must be a positive finite number"),
    (buy(qty=float("inf")), "quantity must be a positive finite number"),
    (buy(qty=0.0), "quantity must be a positive finite number"),
    (buy(qty=-1.0), "quantity must be a positive finite number"),
    (buy(type=OrderType.LIMIT, price=float("nan")), "price must be a positive finite number"),
    (buy(type=OrderType.LIMIT, price=-5.0), "price must be a positive finite number"),
    (buy(type=OrderType.LIMIT), "needs a price"),
    (buy(type=OrderType.STOP), "needs a stop_price"),
    (buy(qty=0.06), "exceeds the BTCUSDT cap"),
    (buy(qty=2.0, symbol="ETHUSDT"), "per-order cap"),
    (buy(type=OrderType.LIMIT, price=10_500.0), "collar"),
    (buy(symbol="SOLUSDT"), "no reference price"),
    (Order(symbol="BTCUSDT", side=Side.SELL, type=OrderType.MARKET, quantity=0.01, reduce_only=True),
     "would not reduce"),
])
def test_bad_orders_never_reach_the_exchange(order, fragment):
    assert_denied(Rig(), order, fragment)


def test_an_allowed_order_writes_its_intent_before_it_is_sent():
    rig = Rig()
    result = rig.submit(buy())
    assert result.status is OrderStatus.FILLED
    assert rig.exchange.placed and rig.journal.events[0] == ("durable", "INTENT", "allowed")
    assert rig.portfolio.quantity("BTCUSDT") == pytest.approx(0.01)


def test_triggered_denies_entries_allows_confirmed_exits_and_cancels():
    rig = Rig()
    rig.submit(buy(0.02))
    resting = rig.submit(buy(0.01, type=OrderType.LIMIT, price=9_900.0))
    assert resting.status is OrderStatus.NEW and len(rig.exchange.open_orders()) == 1
    assert rig.breaker.trigger("test crash", time_ms=rig.now)
    # the halt cancelled the resting order synchronously, inside trigger()
    assert rig.exchange.open_orders() == [] and rig.gate.cancels_issued == 1
    assert_denied(rig, buy(0.01), "TRIGGERED")
    exit_unconfirmed = Order(symbol="BTCUSDT", side=Side.SELL, type=OrderType.MARKET, quantity=0.02,
                             reduce_only=True)
    assert_denied(rig, exit_unconfirmed, "TRIGGERED")
    confirmed = exit_unconfirmed.with_(operator_confirmed=True, client_order_id="exit-1")
    assert rig.submit(confirmed).status is OrderStatus.FILLED


def test_warning_and_recovering_reduce_entry_size():
    rig = Rig()
    rig.breaker.set_warning("wobbly", time_ms=rig.now)
    result = rig.submit(buy(0.02))
    assert result.quantity == pytest.approx(0.01)  # warning_size_factor 0.5
    rig.breaker.trigger("crash", time_ms=rig.now)
    rig.breaker.start_recovery(time_ms=rig.now)
    result = rig.submit(buy(0.02, client_order_id="b2"))
    assert result.quantity == pytest.approx(0.005)  # recovering_size_factor 0.25
    exit_order = Order(symbol="BTCUSDT", side=Side.SELL, type=OrderType.MARKET, quantity=0.005, reduce_only=True)
    assert rig.submit(exit_order).status is OrderStatus.FILLED  # reduce-only passes while RECOVERING


def test_stale_epoch_is_a_fencing_violation():
    rig = Rig()
    epoch = rig.breaker.epoch
    rig.breaker.set_warning("moved", time_ms=rig.now)
    assert_denied(rig, buy(), "stale breaker epoch", epoch_read=epoch)


def test_breaker_moving_while_the_intent_is_written_stops_the_order():
    rig = Rig()
    rig.journal.on_record = lambda order: (order.status is OrderStatus.INTENT and
                                           rig.breaker.trigger("mid-flight", time_ms=rig.now))
    placed = len(rig.exchange.placed)
    result = rig.submit(buy())
    assert result.status is OrderStatus.DENIED and "before sending" in result.reason
    assert len(rig.exchange.placed) == placed


def test_rate_limit():
    rig = Rig(max_orders_per_minute=3)
    for i in range(3):
        assert rig.submit(buy(0.001, client_order_id=f"r{i}")).status is OrderStatus.FILLED
    assert_denied(rig, buy(0.001, client_order_id="r4"), "rate limit")
    rig.now += 61_000
    rig.tick("BTCUSDT", 10_000.0)
    assert rig.submit(buy(0.001, client_order_id="r5")).status is OrderStatus.FILLED


def test_position_and_open_position_caps():
    rig = Rig(max_position_notional_usd=1_500.0, max_open_positions=1)
    assert rig.submit(buy(0.05)).status is OrderStatus.FILLED  # 500 USD
    assert rig.submit(buy(0.05, client_order_id="b2")).status is OrderStatus.FILLED  # 1,000 USD
    assert_denied(rig, buy(0.05, client_order_id="b3"), "position would be")
    assert_denied(rig, buy(0.5, symbol="ETHUSDT", client_order_id="e1"), "open positions")


def test_daily_loss_limit_blocks_entries_but_not_exits():
    rig = Rig(daily_loss_limit_usd=50.0, max_order_quantity={"BTCUSDT": 1.0}, max_order_notional_usd=20_000.0,
              max_position_notional_usd=50_000.0)
    assert rig.submit(buy(0.5)).status is OrderStatus.FILLED
    rig.tick("BTCUSDT", 9_850.0)  # unrealized about -75
    assert_denied(rig, buy(0.01, client_order_id="b2"), "daily loss limit")
    exit_order = Order(symbol="BTCUSDT", side=Side.SELL, type=OrderType.MARKET, quantity=0.5, reduce_only=True)
    assert rig.submit(exit_order).status is OrderStatus.FILLED


def test_stale_reference_price_denies():
    rig = Rig()
    rig.now += 120_000
    assert_denied(rig, buy(), "stale")


def test_cancels_are_always_allowed():
    rig = Rig()
    resting = rig.submit(buy(0.01, type=OrderType.LIMIT, price=9_900.0))
    rig.breaker.set_warning("x", time_ms=rig.now)
    done = asyncio.run(rig.gate.cancel(resting.client_order_id))
    assert done.status is OrderStatus.CANCELED


def test_agents_cannot_loosen_but_the_gate_does_not_care_who_proposed():
    rig = Rig()
    rig.breaker.trigger("agent saw a crash", actor=Actor.AGENT, time_ms=rig.now)
    assert_denied(rig, buy(origin=Origin.AGENT), "TRIGGERED")
    assert rig.exchange.placed == []
    assert not math.isnan(rig.portfolio.cash)
