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
        self.market = MarketState(long_minutes=(1440,))  # the gate's falling_coin horizon
        self.exchange = ObservedExchange(settings or fast(), "testnet", CANARY_KEY, CANARY_SECRET, self.market,
                                         endpoints=server.endpoints(), on_event=self._on_event)
        self.events: list[dict[str, Any]] = []  # user stream events the exchange applied
        self.updates: list[Order] = []
        self.fills: list[Fill] = []
        self.sequence: list[tuple[str, float]] = []  # ("fill", qty) and ("order", filled), as announced
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
        self.sequence.append(("order", order.filled_quantity))
        self._changed.set()

    def _on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)
        self.sequence.append(("fill", fill.quantity))
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
    try:
        if reconcile:
            await rig.exchange.reconcile()
    except BaseException:
        await rig.exchange.close()
        raise
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


async def test_a_fill_is_announced_before_the_status_that_counts_it(rig: Rig):
    order = await rig.exchange.place(limit_buy(0.003, 99_000.0))
    rig.server.set_price("BTCUSDT", 98_999.0, qty=0.001)
    await rig.until(lambda: len(rig.fills) == 1, "the fill")
    await rig.exchange.cancel(order.client_order_id)
    assert [kind for kind, _ in rig.sequence] == ["order", "fill", "order", "order"]
    assert rig.sequence[2] == ("order", pytest.approx(0.001))


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


@pytest.mark.parametrize("order, reason", [
    (buy(float("nan")), "quantity must be a positive finite number"),
    (Order(symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.001, reduce_only=True),
     "reduce-only BUY would not reduce anything"),
    (buy(symbol="DOGEUSDT"), "DOGEUSDT is not listed on Binance testnet"),
])
async def test_orders_refused_before_sending(rig: Rig, order: Order, reason: str):
    result = await rig.exchange.place(order)
    assert result.status is S.REJECTED and reason in result.reason
    assert rig.posts() == 0


async def test_a_symbol_whose_exchange_info_cannot_be_read_is_left_out(server: FakeBinance):
    server.symbols["SOLUSDT"].step_size = "not a number"
    rig = await started(server)
    try:
        result = await rig.exchange.place(buy(1.0, symbol="SOLUSDT"))
        assert result.status is S.REJECTED and "SOLUSDT is not listed" in result.reason
        assert (await rig.exchange.place(buy())).status is S.FILLED
    finally:
        await rig.exchange.close()


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


async def test_an_entry_that_lands_after_the_halt_is_cancelled_on_the_exchange(server: FakeBinance):
    rig = await started(server, fast(request_timeout_seconds=5.0), listen=False)
    try:
        rig.gate = GateRig(rig)
        server.faults.add("order_timeout_after_accept", 0.5)  # accepted; the answer takes a while
        submitting = asyncio.create_task(rig.gate.gate.submit(limit_buy(0.001)))
        await rig.fake.until(lambda: len(rig.fake.accepted) == 1, "the entry accepted, its answer on the way")
        rig.gate.breaker.trigger("test crash", time_ms=time.time_ns() // 1_000_000)
        result = await submitting
        assert result.status is S.CANCELED
        assert rig.fake.accepted[0].status == "CANCELED" and rig.fake.open_orders() == []
    finally:
        await rig.exchange.close()


async def test_the_halt_from_another_thread_schedules_its_cancels_on_the_loop(gated: Rig):
    entry = await gated.gate.gate.submit(limit_buy(0.001))
    now = time.time_ns() // 1_000_000
    await asyncio.to_thread(gated.gate.breaker.trigger, "agent escalation", time_ms=now)
    report = await asyncio.wrap_future(gated.exchange.last_halt)
    assert report.complete and gated.fake.order(entry.client_order_id).status == "CANCELED"


# ---------------------------------------------------------------------- lost answers
def assert_never_backwards(updates: list[Order]) -> None:
    """An order's announced states never go back (UNKNOWN and INTENT before Binance's word)."""
    rank = {S.INTENT: 0, S.UNKNOWN: 0, S.NEW: 1, S.PARTIALLY_FILLED: 2}
    by_order: dict[str, list[int]] = {}
    for u in updates:
        by_order.setdefault(u.client_order_id, []).append(rank.get(u.status, 3))
    for cid, ranks in by_order.items():
        assert ranks == sorted(ranks), f"{cid} went back: {[u.status for u in updates if u.client_order_id == cid]}"


@pytest.mark.parametrize("fault, arg", [("order_5xx_after_accept", 500), ("order_5xx_after_accept", 503),
                                        ("order_timeout_after_accept", 1.0)])
@pytest.mark.parametrize("stream", ["live", "muted"])
async def test_a_lost_answer_after_the_order_was_accepted_ends_with_that_one_order_and_its_true_status(
        rig: Rig, fault: str, arg: Any, stream: str):
    rig.fake.muted = stream == "muted"  # muted: only the lookups can tell
    rig.server.faults.add(fault, arg)
    result = await rig.exchange.place(buy(0.002))
    assert result.status is S.FILLED and result.filled_quantity == pytest.approx(0.002)
    assert rig.posts() == 1 and len(rig.fake.accepted) == 1
    assert_never_backwards(rig.updates)
    if stream == "muted":
        assert rig.updates[0].status is S.UNKNOWN and "never resent" in rig.updates[0].reason
    assert len(rig.fills) == 1 and rig.portfolio.quantity("BTCUSDT") == pytest.approx(0.002 * 0.999)


async def test_a_lost_answer_for_a_resting_order_finds_it_resting(rig: Rig):
    rig.server.faults.add("order_5xx_after_accept", 502)
    result = await rig.exchange.place(limit_buy())
    assert result.status is S.NEW and result.exchange_order_id == str(rig.fake.accepted[0].order_id)
    assert rig.exchange.open_orders() == [result]


async def test_an_order_that_lands_after_the_first_lookups_is_found_not_given_up(server: FakeBinance):
    # the create hangs 2s before Binance takes it (still inside its 3s recvWindow); the client
    # gave up waiting at 0.3s and its first three lookups find nothing
    rig = await started(server, fast(recv_window_ms=3000))
    try:
        rig.fake.muted = True  # only the lookups can tell
        server.faults.add("order_timeout_before_accept", 2.0)
        result = await rig.exchange.place(buy(0.002))
        assert result.status is S.FILLED
        assert server.requests.count(("GET", "/api/v3/order")) == 4
        assert rig.posts() == 1 and len(rig.fake.accepted) == 1
        assert [u.status for u in rig.updates] == [S.UNKNOWN, S.FILLED]
    finally:
        await rig.exchange.close()


async def test_an_order_that_never_landed_is_rejected_once_not_found_is_confirmed(rig: Rig):
    rig.server.faults.add("order_5xx", 503)
    result = await rig.exchange.place(buy(0.002))
    assert result.status is S.REJECTED and "never landed" in result.reason
    arrivals = [t for t, m, p in rig.fake.arrivals if p == "/api/v3/order"]
    sent, lookups = arrivals[0], arrivals[1:]
    assert len(lookups) >= 3
    # the last "not found" came when Binance could no longer accept the create
    assert lookups[-1] - sent >= rig.exchange.settings.recv_window_ms
    assert rig.fake.accepted == [] and rig.posts() == 1
    assert [u.status for u in rig.updates] == [S.UNKNOWN, S.REJECTED]


async def test_lookups_that_fail_leave_the_order_unknown_and_say_so(rig: Rig):
    rig.fake.muted = True
    rig.server.faults.add("order_5xx_after_accept", 500)
    rig.server.faults.add("query_5xx", 500, times=50)
    result = await rig.exchange.place(limit_buy())
    assert result.status is S.UNKNOWN and rig.exchange.open_orders() == [result]
    assert "stays UNKNOWN" in await rig.alarm(Alarm.ORDER_UNRESOLVED)
    assert rig.posts() == 1
    rig.server.faults.pending.pop("query_5xx")
    rig.fake.muted = False
    report = await rig.exchange.reconcile()
    assert rig.exchange.get_order(result.client_order_id).status is S.NEW
    assert report.changed and report.changed[0][1].status is S.NEW


# ---------------------------------------------------------------------- the clock
async def test_a_timestamp_outside_recv_window_resyncs_the_clock_and_retries_once(rig: Rig):
    rig.server.clock_offset_ms = 5_000  # Binance's clock jumped ahead of ours
    result = await rig.exchange.place(buy())
    assert result.status is S.FILLED and len(rig.fake.accepted) == 1
    calls = [r for r in rig.server.requests if r[1] in ("/api/v3/order", "/api/v3/time")][-3:]
    assert calls == [("POST", "/api/v3/order"), ("GET", "/api/v3/time"), ("POST", "/api/v3/order")]
    assert abs(rig.exchange.client.timestamp_offset - 5_000) < 200
    assert Alarm.CLOCK_SKEW not in rig.kinds()  # one skewed sync is not yet persistent


async def test_a_skew_that_persists_across_syncs_is_reported(rig: Rig):
    rig.server.clock_offset_ms = 5_000
    await rig.exchange.check_clock()
    assert Alarm.CLOCK_SKEW not in rig.kinds()
    await rig.exchange.check_clock()
    assert "+5" in await rig.alarm(Alarm.CLOCK_SKEW)
    rig.server.clock_offset_ms = 0
    await rig.exchange.check_clock()
    await rig.alarm(Alarm.CLOCK_OK)


async def test_a_timestamp_refusal_that_a_resync_does_not_cure_is_reported_and_not_sent_again(rig: Rig):
    rig.server.faults.add("timestamp_1021", times=2)
    result = await rig.exchange.place(buy())
    assert result.status is S.REJECTED and "-1021" in result.reason
    assert rig.posts() == 2 and rig.fake.accepted == []
    assert "right after a clock re-sync" in await rig.alarm(Alarm.CLOCK_SKEW)


# ---------------------------------------------------------------------- rate limits
async def test_a_429_is_obeyed_for_its_retry_after(rig: Rig):
    rig.server.faults.add("http_429", {"retry_after": 1, "path": "/api/v3/order"})
    refused = await rig.exchange.place(buy())
    assert refused.status is S.REJECTED and "429" in refused.reason
    detail = await rig.alarm(Alarm.RATE_LIMITED)
    again = await rig.exchange.place(buy())  # an entry does not wait: it is refused unsent
    assert again.status is S.REJECTED and "backing off" in again.reason
    assert rig.posts() == 1
    backoff_until = rig.exchange.rest.backoff_until
    exit_order = await rig.exchange.place(exit_sell())  # an exit waits the back-off out
    assert exit_order.status is S.FILLED
    sent_at = [t for t, m, p in rig.fake.arrivals if (m, p) == ("POST", "/api/v3/order")][-1]
    assert sent_at - rig.server.clock_offset_ms >= backoff_until - 50, detail
    assert rig.posts() == 2


async def test_a_418_stops_every_call_until_its_retry_after(rig: Rig):
    resting = await rig.exchange.place(limit_buy())
    rig.server.faults.add("http_418", {"retry_after": 1, "path": "/api/v3/order"})
    refused = await rig.exchange.place(buy())
    assert refused.status is S.REJECTED and "418" in refused.reason
    assert "stopped until" in await rig.alarm(Alarm.IP_BANNED)
    during = len(rig.server.requests)
    assert (await rig.exchange.place(exit_sell())).status is S.REJECTED  # exits cannot wait out a ban
    with pytest.raises(ExchangeError, match="418"):
        await rig.exchange.cancel(resting.client_order_id)
    with pytest.raises(ExchangeError, match="418"):
        await rig.exchange.key_permissions()
    await rig.exchange.check_clock()
    assert rig.exchange.cancel_now([resting.client_order_id], "halt") == [resting]
    report = await rig.exchange.last_halt
    assert not report.complete and not report.verified
    assert "could not be verified" in await rig.alarm(Alarm.HALT_INCOMPLETE)
    assert len(rig.server.requests) == during, "a request went out during the ban"
    await rig.alarm(Alarm.IP_BAN_LIFTED)
    assert (await rig.exchange.cancel(resting.client_order_id)).status is S.CANCELED


async def test_the_client_throttles_itself_below_the_weight_budget(server: FakeBinance):
    rig = await started(server, fast(max_clock_skew_ms=60_000))
    try:
        # put Binance's clock 3s before a minute boundary, and tell the client
        now = time.time_ns() // 1_000_000
        server.clock_offset_ms = (57_000 - now % 60_000) % 60_000
        await rig.exchange.check_clock()
        rig.fake.add_weight(5_000)  # other callers on this IP: 5,000 of 6,000 used
        too_big = await rig.exchange.place(buy(5.0))  # refused (-2010); its answer tells the weight too
        assert too_big.status is S.REJECTED and "-2010" in too_big.reason
        assert rig.exchange.rest.used_weight > rig.exchange.rest.weight_budget == 4_800
        before = len(server.requests)
        refused = await rig.exchange.place(buy())
        assert refused.status is S.REJECTED and "request weight" in refused.reason
        assert len(server.requests) == before
        minute = server.now_ms() // 60_000
        exit_order = await rig.exchange.place(exit_sell())  # waits for the next minute's budget
        assert exit_order.status is S.FILLED
        sent_at = [t for t, m, p in rig.fake.arrivals if (m, p) == ("POST", "/api/v3/order")][-1]
        assert sent_at // 60_000 == minute + 1
    finally:
        await rig.exchange.close()


# ---------------------------------------------------------------------- cancels racing fills
async def test_a_fill_that_races_a_cancel_is_still_a_fill_and_the_order_stays_cancelled(rig: Rig):
    order = await rig.exchange.place(limit_buy(0.004))
    rig.server.faults.add("fill_on_cancel", 0.5)
    cancelled = await rig.exchange.cancel(order.client_order_id)
    assert cancelled.status is S.CANCELED and cancelled.filled_quantity == pytest.approx(0.002)
    assert len(rig.fills) == 1 and rig.fills[0].quantity == pytest.approx(0.002 * 0.999)
    # the trade's own report comes after the cancel's; once it is applied, nothing changed
    await rig.until(lambda: rig.reported(order.client_order_id, "TRADE"), "the late trade report")
    assert rig.exchange.get_order(order.client_order_id).status is S.CANCELED
    assert len(rig.fills) == 1 and rig.portfolio.quantity("BTCUSDT") == pytest.approx(net(rig))
    assert_never_backwards(rig.updates)


async def test_a_stale_report_never_takes_an_order_back_nor_counts_a_fill_twice(rig: Rig):
    order = await rig.exchange.place(limit_buy(0.004))
    cid = order.client_order_id
    rig.server.set_price("BTCUSDT", 98_999.0, qty=0.001)
    await rig.until(lambda: len(rig.fills) == 1, "a partial fill")
    reports = [e for e in rig.fake.pushed if e.get("e") == "executionReport" and e["c"] == cid]
    assert [e["x"] for e in reports] == ["NEW", "TRADE"]

    async def again(events: list[dict[str, Any]]) -> None:
        seen = len(rig.events)
        for event in events:
            rig.fake.push(event)
        await rig.until(lambda: len(rig.events) >= seen + len(events), "the stale reports applied")

    await again(reports[:1])  # NEW again, while the order is partly filled
    assert rig.exchange.get_order(cid).status is S.PARTIALLY_FILLED
    await rig.exchange.cancel(cid)
    await rig.until(lambda: rig.reported(cid, "CANCELED"), "the cancel's report")
    await again(reports[::-1])  # both again, out of order, after the cancel
    final = rig.exchange.get_order(cid)
    assert final.status is S.CANCELED and final.filled_quantity == pytest.approx(0.001)
    assert len(rig.fills) == 1
    assert_never_backwards(rig.updates)


async def test_a_cancel_answer_counting_a_trade_no_report_brought_fetches_it(rig: Rig):
    order = await rig.exchange.place(limit_buy(0.004))
    rig.fake.muted = True  # the racing trade's report is lost
    rig.server.faults.add("fill_on_cancel", 0.5)
    cancelled = await rig.exchange.cancel(order.client_order_id)
    assert cancelled.status is S.CANCELED and len(rig.fills) == 1
    assert rig.sequence[-2:] == [("fill", pytest.approx(0.002 * 0.999)), ("order", pytest.approx(0.002))]


async def test_a_report_counting_a_trade_the_stream_missed_fetches_it_first(rig: Rig):
    order = await rig.exchange.place(limit_buy(0.004))
    rig.fake.muted = True
    rig.server.set_price("BTCUSDT", 98_999.0, qty=0.001)  # its TRADE report is lost
    rig.fake.muted = False
    await rig.exchange.client.cancel_order(symbol="BTCUSDT", origClientOrderId=order.client_order_id)
    await rig.until(lambda: rig.exchange.get_order(order.client_order_id).status is S.CANCELED, "the cancel")
    assert len(rig.fills) == 1 and rig.portfolio.quantity("BTCUSDT") == pytest.approx(0.001 * 0.999)
    assert rig.sequence[-2:] == [("fill", pytest.approx(0.001 * 0.999)), ("order", pytest.approx(0.001))]


async def test_a_cancel_that_finds_the_order_filled_reports_the_fill(rig: Rig):
    order = await rig.exchange.place(limit_buy(0.004))
    rig.server.faults.add("fill_on_cancel", 1.0)
    result = await rig.exchange.cancel(order.client_order_id)
    assert result.status is S.FILLED and result.filled_quantity == pytest.approx(0.004)
    assert len(rig.fills) == 1 and rig.portfolio.quantity("BTCUSDT") == pytest.approx(0.004 * 0.999)


async def test_an_order_cancelled_outside_spikeguard_is_learnt_from_the_stream(rig: Rig):
    order = await rig.exchange.place(limit_buy())
    await rig.exchange.client.cancel_order(symbol="BTCUSDT", origClientOrderId=order.client_order_id,
                                           newClientOrderId="cancelled-in-the-binance-app")
    await rig.until(lambda: rig.exchange.get_order(order.client_order_id).status is S.CANCELED, "the cancel")
    assert rig.exchange.get_order(order.client_order_id).reason == "canceled on Binance"
    assert rig.exchange.open_orders() == []


async def test_cancelling_an_order_that_is_final_or_unknown(rig: Rig):
    filled = await rig.exchange.place(buy())
    assert await rig.exchange.cancel(filled.client_order_id) == filled
    with pytest.raises(ExchangeError, match="unknown order nope"):
        await rig.exchange.cancel("nope")


# ---------------------------------------------------------------------- restart
async def test_after_a_restart_reconcile_finds_the_order_the_journal_thought_open_filled(server: FakeBinance):
    first = await started(server)
    try:
        journaled = await first.exchange.place(limit_buy(0.003, 99_000.0))
    finally:
        await first.exchange.close()
    server.set_price("BTCUSDT", 98_900.0, qty=1.0)  # it fills while no one is connected
    second = await started(server, reconcile=False)
    try:
        report = await second.exchange.reconcile([journaled], [])
        now = second.exchange.get_order(journaled.client_order_id)
        assert now.status is S.FILLED and now.filled_quantity == pytest.approx(0.003)
        assert [(b.status, a.status) for b, a in report.changed] == [(S.NEW, S.FILLED)]
        assert [f.client_order_id for f in report.new_fills] == [journaled.client_order_id]
        assert second.fills == report.new_fills and second.updates[-1] == now
        assert second.portfolio.quantity("BTCUSDT") == pytest.approx(0.003 * 0.999)
        assert report.open_orders == [] and not report.clean
        assert float(second.fake.total("BTC")) == pytest.approx(second.exchange.balances()["BTC"]["free"])
    finally:
        await second.exchange.close()


async def test_reconcile_adds_only_the_fills_the_journal_lacks(server: FakeBinance):
    first = await started(server)
    try:
        journaled = await first.exchange.place(limit_buy(0.003, 99_000.0))
        server.set_price("BTCUSDT", 98_999.0, qty=0.001)
        await first.until(lambda: len(first.fills) == 1, "the first partial fill")
        journal_fills = list(first.fills)
        journal_order = first.exchange.get_order(journaled.client_order_id)
    finally:
        await first.exchange.close()
    server.set_price("BTCUSDT", 98_999.0, qty=0.001)
    second = await started(server, reconcile=False)
    try:
        report = await second.exchange.reconcile([journal_order], journal_fills)
        assert len(report.new_fills) == 1 and report.new_fills[0].fill_id not in {f.fill_id for f in journal_fills}
        assert second.exchange.get_order(journaled.client_order_id).filled_quantity == pytest.approx(0.002)
        assert report.open_orders == [second.exchange.get_order(journaled.client_order_id)]
        assert report.missing_fills == []
    finally:
        await second.exchange.close()


async def test_reconcile_brings_back_fills_whose_rows_the_journal_lost(server: FakeBinance):
    first = await started(server)
    try:
        order = await first.exchange.place(limit_buy(0.003, 99_000.0))
        server.set_price("BTCUSDT", 98_999.0, qty=0.001)
        await first.until(lambda: len(first.fills) == 1, "a partial fill")
        journal_order = first.exchange.get_order(order.client_order_id)  # PARTIALLY_FILLED, its fill row lost
    finally:
        await first.exchange.close()
    second = await started(server, reconcile=False)
    try:
        report = await second.exchange.reconcile([journal_order], [])
        assert [f.fill_id for f in report.new_fills] == [f.fill_id for f in first.fills]
        assert second.portfolio.quantity("BTCUSDT") == pytest.approx(0.001 * 0.999)
    finally:
        await second.exchange.close()


async def test_reconcile_settles_intents_the_last_run_never_heard_back_about(server: FakeBinance):
    first = await started(server)
    try:
        landed = await first.exchange.place(buy(0.001))  # filled: the journal never heard back
    finally:
        await first.exchange.close()
    long_ago = time.time_ns() // 1_000_000 - 60_000
    never_sent = limit_buy(0.001, 98_900.0, created_ms=long_ago, status=S.INTENT)
    lost = landed.with_(status=S.UNKNOWN, filled_quantity=0.0, average_price=0.0, created_ms=long_ago)
    # Binance's order history lags: "does not exist" twice for the one that landed
    server.faults.add("query_not_found", lost.client_order_id, times=2)
    second = await started(server, reconcile=False)
    try:
        report = await second.exchange.reconcile([never_sent, lost], [])
        assert second.exchange.get_order(lost.client_order_id).status is S.FILLED
        assert second.exchange.get_order(never_sent.client_order_id).status is S.REJECTED
        assert {a.status for _, a in report.changed} == {S.FILLED, S.REJECTED} and report.unresolved == []
        assert [f.client_order_id for f in report.new_fills] == [lost.client_order_id]
    finally:
        await second.exchange.close()


async def test_a_reconcile_leaves_an_order_still_on_the_wire_to_its_own_lookups(server: FakeBinance):
    # a stream reconnect reconciles while a create hangs; the order was created (by the gate)
    # long before it was sent, so its own creation time says nothing about when it can land
    rig = await started(server, fast(recv_window_ms=3000))
    try:
        rig.fake.muted = True
        server.faults.add("order_timeout_before_accept", 2.0)
        long_ago = time.time_ns() // 1_000_000 - 60_000
        placing = asyncio.create_task(rig.exchange.place(buy(0.002, created_ms=long_ago)))
        await rig.fake.until(lambda: rig.posts() == 1, "the create on the wire")
        await rig.exchange.reconcile()
        result = await placing
        assert result.status is S.FILLED and len(rig.fake.accepted) == 1
        assert S.REJECTED not in [u.status for u in rig.updates]
    finally:
        await rig.exchange.close()


async def test_an_order_the_journal_holds_open_that_binance_never_had_is_held_unknown(rig: Rig):
    ghost = limit_buy(0.001, 99_000.0, status=S.NEW, exchange_order_id="424242")
    report = await rig.exchange.reconcile([ghost], [])
    held = rig.exchange.get_order(ghost.client_order_id)
    assert held.status is S.UNKNOWN and report.unresolved == [held]
    assert rig.exchange.open_orders() == [held]  # the gate keeps its reservation: fail closed


async def test_restore_adopts_what_the_book_lacks_and_returns_what_binance_no_longer_holds(rig: Rig):
    filled = await rig.exchange.place(buy())
    resting = await rig.exchange.place(limit_buy())
    stranger = limit_buy(0.001, 99_100.0, status=S.NEW)
    gone = rig.exchange.restore({"USDT": 1.0}, [filled.with_(status=S.NEW), resting, stranger])
    assert gone == [filled]
    assert rig.exchange.get_order(stranger.client_order_id) == stranger
    binance_usdt = float(rig.fake.free("USDT"))
    await rig.until(lambda: rig.exchange.balances()["USDT"]["free"] == pytest.approx(binance_usdt), "Binance's USDT")


async def test_reconcile_adopts_open_orders_the_journal_does_not_know(server: FakeBinance):
    first = await started(server)
    try:
        stray = await first.exchange.place(limit_buy(0.001, 99_000.0))
    finally:
        await first.exchange.close()
    second = await started(server, reconcile=False)
    try:
        report = await second.exchange.reconcile([], [])
        assert [o.client_order_id for o in report.adopted] == [stray.client_order_id]
        adopted = second.exchange.get_order(stray.client_order_id)
        assert adopted.origin is Origin.RECONCILE and adopted.status is S.NEW and adopted.price == 99_000.0
        assert second.exchange.cancel_now([stray.client_order_id], "halt") == [adopted]
        assert (await second.exchange.last_halt).complete
    finally:
        await second.exchange.close()


async def test_reconcile_reports_journal_fills_binance_does_not_show(server: FakeBinance):
    rig = await started(server)
    try:
        order = await rig.exchange.place(buy())
        invented = Fill(order.client_order_id, "BTCUSDT", Side.BUY, 0.001, BTC_PRICE, 0.1, "taker", 0,
                        fill_id="BTCUSDT-999")
        report = await rig.exchange.reconcile([], [*rig.fills, invented])
        assert report.missing_fills == [invented] and report.new_fills == []
    finally:
        await rig.exchange.close()


# ---------------------------------------------------------------------- the user data stream
async def test_a_dropped_user_stream_is_reconnected_and_what_it_missed_reconciled(rig: Rig):
    order = await rig.exchange.place(limit_buy(0.003, 99_000.0))
    rig.fake.drop_user_streams(expire_keys=True)
    rig.server.set_price("BTCUSDT", 98_900.0, qty=1.0)  # fills while no stream listens
    await rig.alarm(Alarm.USER_STREAM_LOST)
    detail = await rig.alarm(Alarm.USER_STREAM_RESTORED)
    assert "1 orders changed" in detail and "1 fills added" in detail
    assert rig.exchange.get_order(order.client_order_id).status is S.FILLED
    assert rig.portfolio.quantity("BTCUSDT") == pytest.approx(0.003 * 0.999)
    assert rig.fake.user_connections == 2
    rig.server.set_price("BTCUSDT", 100_000.0)
    later = await rig.exchange.place(limit_buy(0.001, 99_500.0))
    rig.server.set_price("BTCUSDT", 99_400.0, qty=1.0)
    await rig.until(lambda: rig.reported(later.client_order_id, "TRADE"), "updates on the new stream")


async def test_a_stream_that_takes_several_reconnects_is_reported_lost_once(rig: Rig):
    rig.server.faults.add("http_error", {"status": 503, "path": "/api/v3/userDataStream"}, times=3)
    rig.fake.drop_user_streams(expire_keys=True)
    await rig.alarm(Alarm.USER_STREAM_RESTORED)
    assert rig.server.faults.happened["http_error"] == 3
    assert rig.kinds().count(Alarm.USER_STREAM_LOST) == 1


async def test_a_deaf_user_stream_is_found_by_the_watchdog(rig: Rig):
    rig.fake.muted = True  # connected, yet it says nothing
    await rig.exchange.place(buy())
    assert "no executionReport" in await rig.alarm(Alarm.USER_STREAM_LOST)
    rig.fake.muted = False
    await rig.alarm(Alarm.USER_STREAM_RESTORED)
    assert rig.fake.user_connections == 2


async def test_an_expired_listen_key_loses_the_stream_and_a_new_one_is_taken(rig: Rig):
    old = set(rig.fake.listen_keys)
    rig.fake.listen_keys.clear()
    rig.fake.push({"e": "listenKeyExpired", "E": rig.server.now_ms(), "listenKey": next(iter(old))})
    assert "expired" in await rig.alarm(Alarm.USER_STREAM_LOST)
    await rig.alarm(Alarm.USER_STREAM_RESTORED)
    assert rig.fake.listen_keys and rig.fake.listen_keys != old


async def test_a_failed_keep_alive_loses_the_stream_and_it_comes_back(rig: Rig):
    rig.server.faults.add("keepalive_fail")
    assert await rig.exchange.user_stream.keepalive() is False
    assert "keep-alive failed" in await rig.alarm(Alarm.USER_STREAM_LOST)
    await rig.alarm(Alarm.USER_STREAM_RESTORED)
    assert await rig.exchange.user_stream.keepalive() is True


async def test_balances_follow_the_account_stream(rig: Rig):
    await rig.exchange.place(buy(0.002))
    expected = float(rig.fake.free("BTC"))
    await rig.until(lambda: rig.exchange.balances()["BTC"]["free"] == pytest.approx(expected), "the BTC balance")
    assert rig.exchange.balances()["USDT"]["free"] == pytest.approx(float(rig.fake.free("USDT")))


# ---------------------------------------------------------------------- the key
async def test_key_permissions_say_what_the_key_may_do(rig: Rig):
    safe = await rig.exchange.key_permissions()
    assert safe.spot_trading and not safe.withdrawals
    assert safe.live_problems() == ["the key is not restricted to trusted IPs"]
    rig.fake.restrictions.update(ipRestrict=True, enableWithdrawals=True, enableInternalTransfer=True)
    risky = await rig.exchange.key_permissions()
    assert risky.ip_restricted and risky.withdrawals and risky.internal_transfer
    assert risky.live_problems() == ["the key can withdraw", "the key can make internal transfers"]


async def test_the_canary_keys_never_leave_the_process(server: FakeBinance, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    known = redact.known()
    texts: list[str] = []
    rig = await started(server)
    try:
        redact.forget_all()  # the exchange registered them: masking must not be what hides them
        server.faults.add("order_5xx_after_accept", 500)
        texts.append(repr(await rig.exchange.place(buy())))
        texts.append(repr(await rig.exchange.place(buy(5.0))))  # -2010
        server.faults.add("timestamp_1021", times=2)
        texts.append(repr(await rig.exchange.place(buy())))
        server.faults.add("http_418", {"retry_after": 1})
        texts.append(repr(await rig.exchange.place(buy())))
        for call in (rig.exchange.key_permissions(), rig.exchange.cancel("nope")):
            with pytest.raises(ExchangeError) as err:
                await call
            texts += [str(err.value), repr(err.value)]
        await rig.alarm(Alarm.IP_BAN_LIFTED)
        texts += [repr(rig.exchange), repr(rig.exchange.user_stream), str(rig.exchange.__dict__)]
    finally:
        await rig.exchange.close()
        redact.register(known)
    texts += [repr(o) for o in rig.updates] + [d for _, d in rig.alarms]
    texts += [r.getMessage() for r in caplog.records]
    texts += [r.exc_text or "" for r in caplog.records]
    for secret in (CANARY_KEY, CANARY_SECRET):
        leaks = [t for t in texts if secret in t]
        assert not leaks, f"{secret} leaked: {leaks[:3]}"


async def test_a_user_stream_refused_at_first_is_tried_again_before_the_start_fails(server: FakeBinance):
    server.faults.add("user_stream_refuse", True, times=2)
    rig = await started(server)  # the third handshake opens it
    try:
        assert rig.exchange.user_stream is not None and server.trading.user_connections == 1
    finally:
        await rig.exchange.close()
    server.faults.add("user_stream_refuse", True, times=3)
    with pytest.raises(ExchangeError, match="the user data stream did not open"):
        await started(server)
