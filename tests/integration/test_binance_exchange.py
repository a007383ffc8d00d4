"""BinanceExchange against the local fake Binance (tests/fakes/binance): python-binance's
real AsyncClient over loopback, every fault the fake can script, and what must hold
through each: no duplicate order (the fake's accepted list), no order under a TRIGGERED
breaker, positions equal to the sum of fills, halts that land and are verified, a book
that matches the exchange after a restart. Keys are canaries that must never leave.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from core import redact
from core.breaker.state import CircuitBreakerState
from core.config import load_config
from core.events import BreakerStatus
from core.market.state import MarketState
from core.settings import BinanceSettings
from core.trading.binance import BinanceExchange
from core.trading.binance_alarms import Alarm
from core.trading.exchange import ExchangeError
from core.trading.gate import OrderGate
from core.trading.orders import Fill, Order, OrderStatus, OrderType, Origin, Side
from core.trading.portfolio import Portfolio
from tests.fakes.binance import FakeBinance

CANARY_KEY = "canary-key-7f3a"
CANARY_SECRET = "canary-secret-c41d"
SHIPPED = load_config(env={}, dotenv_paths=[]).settings
S = OrderStatus
BTC_PRICE = 100_000.0


def fast(**changes: Any) -> BinanceSettings:
    """Binance settings on loopback time scales (a lost answer, a watchdog, a reconnect)."""
    values = dict(request_timeout_seconds=0.3, recv_window_ms=1000, max_clock_skew_ms=200, watchdog_seconds=0.5,
                  reconnect_min_seconds=0.05, reconnect_max_seconds=0.2)
    values.update(changes)
    return BinanceSettings(**values)


class ObservedExchange(BinanceExchange):
    """The real exchange, signalling each user stream event it has applied."""

    def __init__(self, *args: Any, on_event: Callable[[dict[str, Any]], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._observer = on_event

    def _on_stream_event(self, event: dict[str, Any]) -> None:
        super()._on_stream_event(event)
        self._observer(event)


class Rig:
    """A BinanceExchange on the fake, what it announced, and a portfolio fed by its fills."""

    def __init__(self, server: FakeBinance, settings: BinanceSettings | None = None) -> None:
        self.server = server
        self.fake = server.trading
        self.market = MarketState()
        self.exchange = ObservedExchange(settings or fast(), "testnet", CANARY_KEY, CANARY_SECRET, self.market,
                                         endpoints=server.endpoints(), on_event=self._on_event)
        self.events: list[dict[str, Any]] = []  # user stream events the exchange applied
        self.updates: list[Order] = []
        self.fills: list[Fill] = []
        self.alarms: list[tuple[Alarm, str]] = []
        self.portfolio = Portfolio(100_000.0)
        self._changed = asyncio.Event()
        self.exchange.add_alarm_listener(self._on_alarm)

    def listen(self) -> None:
        """Record updates and fills straight from the exchange (a rig without a gate)."""
        self.exchange.add_listeners(self._on_order, self._on_fill)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._changed.set()

    def reported(self, client_order_id: str, execution: str) -> bool:
        """The exchange has applied an executionReport of this execution type for the order."""
        return any(e.get("e") == "executionReport" and execution == e["x"]
                   and client_order_id in (e["c"], e.get("C")) for e in self.events)

    def _on_fill_seen(self, fill: Fill) -> None:
        """A fill the gate has booked into the portfolio."""
        self.fills.append(fill)
        self._changed.set()

    def _on_order(self, order: Order) -> None:
        self.updates.append(order)
        self._changed.set()

    def _on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)
        self.portfolio.apply(fill)
        self._changed.set()

    def _on_alarm(self, kind: Alarm, detail: str) -> None:
        self.alarms.append((kind, detail))
        self._changed.set()

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Wait until predicate() holds, re-checked at every update, fill and alarm."""
        async def watch() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()
        try:
            await asyncio.wait_for(watch(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"never happened: {what}") from None

    async def alarm(self, kind: Alarm) -> str:
        await self.until(lambda: any(k is kind for k, _ in self.alarms), f"alarm {kind.value}")
        return next(d for k, d in self.alarms if k is kind)

    def kinds(self) -> list[Alarm]:
        return [k for k, _ in self.alarms]

    def tick(self, symbol: str = "BTCUSDT", price: float = BTC_PRICE) -> None:
        self.market.windows(symbol).update(price, 1.0, time.time_ns() // 1_000_000)

    def posts(self) -> int:
        return self.server.requests.count(("POST", "/api/v3/order"))


@pytest.fixture
async def server(fake_binance: FakeBinance):
    try:
        yield fake_binance
    finally:
        accepted = [o.client_order_id for o in fake_binance.trading.accepted]
        assert len(accepted) == len(set(accepted)), f"a duplicate order reached the exchange: {accepted}"


async def started(server: FakeBinance, settings: BinanceSettings | None = None, reconcile: bool = True,
                  listen: bool = True) -> Rig:
    rig = Rig(server, settings)
    if listen:
        rig.listen()
    rig.tick()
    await rig.exchange.start()
    if reconcile:
        await rig.exchange.reconcile()
    return rig


@pytest.fixture
async def rig(server: FakeBinance):
    r = await started(server)
    try:
        yield r
    finally:
        await r.exchange.close()


def buy(qty: float = 0.001, symbol: str = "BTCUSDT", **kw: Any) -> Order:
    return Order(symbol=symbol, side=Side.BUY, type=kw.pop("type", OrderType.MARKET), quantity=qty, **kw)


def limit_buy(qty: float = 0.003, price: float = 99_000.0, **kw: Any) -> Order:
    return buy(qty, type=OrderType.LIMIT, price=price, **kw)


def exit_sell(qty: float = 0.001, **kw: Any) -> Order:
    return Order(symbol="BTCUSDT", side=Side.SELL, type=kw.pop("type", OrderType.MARKET), quantity=qty,
                 reduce_only=True, **kw)


def net(rig: Rig, symbol: str = "BTCUSDT") -> float:
    return sum(f.quantity * f.side.sign for f in rig.fills if f.symbol == symbol)


# ---------------------------------------------------------------------- orders and fills
async def test_a_market_buy_is_one_order_whose_fills_make_the_position(rig: Rig):
    btc_before = rig.fake.total("BTC")
    result = await rig.exchange.place(buy(0.002))
    assert result.status is S.FILLED and result.filled_quantity == pytest.approx(0.002)
    assert result.average_price == pytest.approx(BTC_PRICE)
    assert [o.client_order_id for o in rig.fake.accepted] == [result.client_order_id]
    assert rig.posts() == 1
    # the commission is taken in BTC on a buy: the position is what the account got
    assert rig.portfolio.quantity("BTCUSDT") == pytest.approx(net(rig))
    assert Decimal(str(net(rig))) == rig.fake.total("BTC") - btc_before
    assert sum(f.fee for f in rig.fills) == pytest.approx(0.002 * 0.001 * BTC_PRICE)


async def test_updates_from_the_stream_and_the_answer_are_announced_once(rig: Rig):
    result = await rig.exchange.place(buy(0.002))
    await rig.until(lambda: rig.reported(result.client_order_id, "TRADE"), "the stream's trade report")
    assert len(rig.fills) == 1
    assert [u.status for u in rig.updates] == [S.FILLED]


async def test_a_resting_limit_fills_partly_then_wholly_and_the_average_is_the_quote_over_the_base(rig: Rig):
    order = await rig.exchange.place(limit_buy(0.003, 99_000.0))
    assert order.status is S.NEW
    rig.server.set_price("BTCUSDT", 98_999.0, qty=0.001)
    await rig.until(lambda: rig.exchange.get_order(order.client_order_id).status is S.PARTIALLY_FILLED, "partial")
    assert rig.exchange.get_order(order.client_order_id).filled_quantity == pytest.approx(0.001)
    rig.server.set_price("BTCUSDT", 98_000.0, qty=1.0)
    await rig.until(lambda: rig.exchange.get_order(order.client_order_id).status is S.FILLED, "filled")
    final = rig.exchange.get_order(order.client_order_id)
    assert final.filled_quantity == pytest.approx(0.003) and final.average_price == pytest.approx(99_000.0)
    assert len(rig.fills) == 2 and all(f.liquidity == "maker" for f in rig.fills)
    assert rig.portfolio.quantity("BTCUSDT") == pytest.approx(net(rig))
    assert rig.portfolio.quantity("BTCUSDT") == pytest.approx(0.003 * 0.999)


async def test_a_market_order_that_fills_partly_then_expires_keeps_both_fills(rig: Rig):
    rig.server.faults.add("market_fill_fraction", 0.5)
    result = await rig.exchange.place(buy(0.004))
    assert result.status is S.EXPIRED and result.filled_quantity == pytest.approx(0.002)
    prices = sorted(f.price for f in rig.fills)
    assert prices == [pytest.approx(BTC_PRICE), pytest.approx(BTC_PRICE * 1.001)]
    # cummulativeQuoteQty / executedQty
    assert result.average_price == pytest.approx((0.001 * BTC_PRICE + 0.001 * BTC_PRICE * 1.001) / 0.002)
    assert rig.portfolio.quantity("BTCUSDT") == pytest.approx(net(rig))


async def test_filters_refuse_before_sending_and_round_what_they_allow(rig: Rig):
    refused = await rig.exchange.place(limit_buy(0.00004, 99_000.0))
    assert refused.status is S.REJECTED
    assert refused.reason == ("Binance filters: NOTIONAL: 3.96 USDT (0.00004 x 99000) is below the minimum 5 USDT")
    assert rig.posts() == 0 and rig.updates == [refused]
    sent = await rig.exchange.place(limit_buy(0.0012345, 99_000.129))
    assert rig.fake.order(sent.client_order_id).quantity == Decimal("0.00123")
    assert rig.fake.order(sent.client_order_id).price == Decimal("99000.12")
    assert (sent.quantity, sent.price) == (0.00123, 99_000.12)


async def test_binance_refusals_are_rejections_with_its_message(rig: Rig):
    result = await rig.exchange.place(buy(1.5))  # 150,000 USDT: more than the account holds
    assert result.status is S.REJECTED
    assert result.reason == ("Binance refused it: create order: Account has insufficient balance for requested "
                             "action. (code -2010)")
    assert rig.fake.accepted == []


async def test_no_order_goes_out_before_the_start_up_reconciliation(server: FakeBinance):
    rig = await started(server, reconcile=False)
    try:
        refused = await rig.exchange.place(buy())
        assert refused.status is S.REJECTED and "not reconciled" in refused.reason
        assert rig.posts() == 0
        await rig.exchange.reconcile()
        assert (await rig.exchange.place(buy())).status is S.FILLED
    finally:
        await rig.exchange.close()


async def test_a_client_order_id_is_never_sent_twice(rig: Rig):
    order = limit_buy()
    first = await rig.exchange.place(order)
    again = await rig.exchange.place(order)
    assert first.status is S.NEW and again.status is S.REJECTED and "duplicate" in again.reason
    assert rig.posts() == 1


# ---------------------------------------------------------------------- through the order gate
class GateRig:
    """The real OrderGate over the exchange, fed the way the engine feeds it."""

    def __init__(self, rig: Rig) -> None:
        self.breaker = CircuitBreakerState()
        self.gate = OrderGate(SHIPPED.risk_management, self.breaker, rig.market, rig.exchange, rig.portfolio)
        self.gate.fill_listeners.append(rig._on_fill_seen)
        self.gate.listeners.append(rig._on_order)


@pytest.fixture
async def gated(server: FakeBinance):
    r = await started(server, listen=False)
    r.gate = GateRig(r)
    try:
        yield r
    finally:
        await r.exchange.close()


async def test_an_entry_under_a_triggered_breaker_never_reaches_the_exchange(gated: Rig):
    gated.gate.breaker.trigger("test crash", time_ms=time.time_ns() // 1_000_000)
    result = await gated.gate.gate.submit(buy(0.001))
    assert result.status is S.DENIED and "TRIGGERED" in result.reason
    assert gated.posts() == 0 and gated.fake.accepted == []


async def test_positions_through_the_gate_equal_the_sum_of_fills(gated: Rig):
    gate = gated.gate.gate
    first = await gate.submit(buy(0.002))
    resting = await gate.submit(limit_buy(0.003, 99_500.0))
    assert (first.status, resting.status) == (S.FILLED, S.NEW)
    gated.server.set_price("BTCUSDT", 99_400.0, qty=0.001)
    await gated.until(lambda: gated.exchange.get_order(resting.client_order_id).status is S.PARTIALLY_FILLED,
                      "a partial fill")
    exit_order = await gate.submit(exit_sell(0.001))
    assert exit_order.status is S.FILLED
    held = sum(f.quantity * f.side.sign for f in gated.fills)
    assert gated.portfolio.quantity("BTCUSDT") == pytest.approx(held)
    assert held == pytest.approx((0.002 + 0.001) * 0.999 - 0.001)


async def test_the_halt_cancels_resting_entries_on_the_exchange_and_verifies_them(gated: Rig):
    gate = gated.gate.gate
    entries = [await gate.submit(limit_buy(0.001, p)) for p in (99_000.0, 98_500.0)]
    assert [o.status for o in entries] == [S.NEW, S.NEW]
    gated.gate.breaker.trigger("test crash", time_ms=time.time_ns() // 1_000_000)
    assert gate.cancels_issued == 2
    report = await gated.exchange.last_halt
    assert report.complete and set(report.requested) == {o.client_order_id for o in entries}
    assert [gated.fake.order(o.client_order_id).status for o in entries] == ["CANCELED", "CANCELED"]
    assert ("GET", "/api/v3/openOrders") in gated.server.requests
    for o in entries:
        cancelled = gated.exchange.get_order(o.client_order_id)
        assert cancelled.status is S.CANCELED and cancelled.reason == "breaker TRIGGERED: entries cancelled"
    assert gate.open_orders() == []


async def test_a_halt_cancel_that_does_not_land_is_sent_again(gated: Rig):
    entry = await gated.gate.gate.submit(limit_buy(0.001))
    gated.server.faults.add("cancel_5xx", 503)
    gated.gate.breaker.trigger("test crash", time_ms=time.time_ns() // 1_000_000)
    report = await gated.exchange.last_halt
    assert report.complete
    assert gated.server.requests.count(("DELETE", "/api/v3/order")) == 2
    assert gated.fake.order(entry.client_order_id).status == "CANCELED"
    assert Alarm.HALT_INCOMPLETE not in gated.kinds()


async def test_an_order_still_open_after_the_halt_is_reported(gated: Rig):
    entry = await gated.gate.gate.submit(limit_buy(0.001))
    gated.server.faults.add("cancel_5xx", 503, times=2)
    gated.gate.breaker.trigger("test crash", time_ms=time.time_ns() // 1_000_000)
    report = await gated.exchange.last_halt
    assert not report.complete and report.still_open == (entry.client_order_id,)
    detail = await gated.alarm(Alarm.HALT_INCOMPLETE)
    assert entry.client_order_id in detail and "1 of 1 orders still open" in detail


async def test_the_halt_from_another_thread_schedules_its_cancels_on_the_loop(gated: Rig):
    entry = await gated.gate.gate.submit(limit_buy(0.001))
    now = time.time_ns() // 1_000_000
    await asyncio.to_thread(gated.gate.breaker.trigger, "agent escalation", time_ms=now)
    report = await asyncio.wrap_future(gated.exchange.last_halt)
    assert report.complete and gated.fake.order(entry.client_order_id).status == "CANCELED"
