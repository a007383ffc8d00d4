"""The order gate. The oracle (after nautilus_trader's risk-engine tests): a denied order
never reaches the exchange, and every denial is journaled with its reason.

The rig runs on the shipped config/default.yaml (its caps, size factors and limits), so a
change to a shipped safety value is caught here too."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from core.breaker.state import CircuitBreakerState
from core.config import load_config
from core.events import Actor, BreakerStatus, Tick
from core.market.state import MarketState
from core.trading.gate import OrderGate
from core.trading.orders import Order, OrderStatus, OrderType, Origin, Side
from core.trading.paper import PaperExchange
from core.trading.portfolio import Portfolio

T0 = 1_700_000_000_000
SHIPPED = load_config(env={}, dotenv_paths=[]).settings


class SpyExchange(PaperExchange):
    """The real paper exchange, recording what reached it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.placed: list[Order] = []

    def place_now(self, order: Order) -> Order:
        self.placed.append(order)
        return super().place_now(order)


class RecordingJournal:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None]] = []
        self.on_record = None
        self.failing = False
        self.hang = False  # record_order never returns (a journal stuck retrying)

    async def record_order(self, order: Order, event_time_ms: int | None = None) -> int:
        self.events.append(("durable", order.status.value, order.reason))
        if self.on_record:
            self.on_record(order)
        if self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        return len(self.events)

    def enqueue_order(self, order: Order, event_time_ms: int | None = None):
        self.events.append(("queued", order.status.value, order.reason))

    def enqueue_fill(self, fill):
        self.events.append(("fill", fill.client_order_id, None))


class Rig:
    def __init__(self, **risk) -> None:
        self.now = T0
        self.market = MarketState(long_minutes=(1440,))  # the gate's falling_coin horizon
        self.breaker = CircuitBreakerState()
        self.portfolio = Portfolio(SHIPPED.execution.paper.starting_balance_usd)
        self.exchange = SpyExchange(SHIPPED.execution.paper, self.market, lambda: self.now)
        self.journal = RecordingJournal()
        self.risk = SHIPPED.risk_management.model_copy(update=risk)
        self.gate = OrderGate(self.risk, self.breaker, self.market, self.exchange, self.portfolio,
                              self.journal, clock=lambda: self.now)
        self.tick("BTCUSDT", 10_000.0)
        self.tick("ETHUSDT", 1_000.0)

    def tick(self, symbol: str, price: float, qty: float = 5.0) -> None:
        self.now += 1000
        self.market.windows(symbol).update(price, qty, self.now)
        self.gate.on_market_tick(Tick(symbol, price, qty, self.now))

    def submit(self, order: Order, epoch_read=None) -> Order:
        return asyncio.run(self.gate.submit(order, epoch_read))


def unjournaled(exchange_class=None, breaker=None, symbol="BTCUSDT", price=10_000.0):
    """A gate on the shipped caps over its own exchange (`exchange_class`, a SpyExchange by
    default) with no journal, one tick of `symbol` at T0: (gate, exchange, breaker)."""
    market = MarketState(long_minutes=(1440,))  # the gate's falling_coin horizon
    breaker = breaker or CircuitBreakerState()
    exchange = (exchange_class or SpyExchange)(SHIPPED.execution.paper, market, lambda: T0)
    gate = OrderGate(SHIPPED.risk_management, breaker, market, exchange, Portfolio(10_000.0), clock=lambda: T0)
    market.windows(symbol).update(price, 50.0, T0)
    return gate, exchange, breaker


def buy(qty=0.01, symbol="BTCUSDT", **kw) -> Order:
    return Order(symbol=symbol, side=Side.BUY, type=kw.pop("type", OrderType.MARKET), quantity=qty, **kw)


def sell_exit(qty, symbol="BTCUSDT", **kw) -> Order:
    return Order(symbol=symbol, side=Side.SELL, type=kw.pop("type", OrderType.MARKET), quantity=qty,
                 reduce_only=True, **kw)


def assert_denied(rig: Rig, order: Order, fragment: str, epoch_read=None) -> Order:
    placed_before = len(rig.exchange.placed)
    result = rig.submit(order, epoch_read)
    assert result.status is OrderStatus.DENIED, result
    assert fragment in result.reason
    assert len(rig.exchange.placed) == placed_before, "a denied order reached the exchange"
    assert rig.journal.events[-1] == ("queued", "DENIED", result.reason)
    return result


def test_the_rig_runs_on_the_shipped_safety_values():
    r = SHIPPED.risk_management
    assert (r.max_order_notional_usd, r.max_position_notional_usd, r.max_open_positions) == (1_000, 2_500, 3)
    assert (r.max_orders_per_minute, r.daily_loss_limit_usd, r.weekly_loss_limit_usd) == (10, 200, 500)
    assert (r.warning_size_factor, r.recovering_size_factor) == (0.5, 0.25)
    assert r.max_order_quantity == {"BTCUSDT": 0.05, "ETHUSDT": 1.0} and r.price_collar_percent == 2.0
    assert SHIPPED.execution.mode == "auto" and SHIPPED.execution.auto_approve_paper is False


@pytest.mark.parametrize("order, fragment", [
    (buy(qty=float("nan")), "quantity must be a positive finite number"),
    (buy(qty=float("inf")), "quantity must be a positive finite number"),
    (buy(qty=0.0), "quantity must be a positive finite number"),
    (buy(qty=-1.0), "quantity must be a positive finite number"),
    (buy(qty=10 ** 400), "quantity must be a positive finite number"),
    (buy(qty=5e-324), "is outside"),
    (buy(qty=1e13), "is outside"),
    (buy(type=OrderType.LIMIT, price=float("nan")), "price must be a positive finite number"),
    (buy(type=OrderType.LIMIT, price=-5.0), "price must be a positive finite number"),
    (buy(type=OrderType.LIMIT), "needs a price"),
    (buy(type=OrderType.STOP), "needs a stop_price"),
    (buy(qty=0.06), "exceeds the BTCUSDT cap"),
    (buy(qty=2.0, symbol="ETHUSDT"), "exceeds the ETHUSDT cap"),
    (buy(type=OrderType.LIMIT, price=10_500.0), "collar"),
    (buy(symbol="SOLUSDT"), "no reference price"),
    (buy(qty=0.0001), "below the minimum"),
    (sell_exit(0.01), "would not reduce"),
])
def test_bad_orders_never_reach_the_exchange(order, fragment):
    assert_denied(Rig(), order, fragment)


def test_a_market_order_is_counted_at_the_reference_price_not_its_own_price_field():
    rig = Rig(max_order_quantity={})
    # 0.2 BTC is 2,000 USD at the reference; a price field of 1e-6 must not make it look tiny
    assert_denied(rig, buy(0.2, price=1e-6), "notional 2,000.00 USD exceeds the per-order cap")


def test_an_entry_exactly_at_the_per_order_cap_is_allowed_and_a_cent_more_is_not():
    rig = Rig(max_order_quantity={})
    assert rig.submit(buy(0.1)).status is OrderStatus.FILLED  # 0.1 x 10,000 = 1,000.00: at the cap
    assert_denied(rig, buy(0.100001), "per-order cap")


def test_an_allowed_order_writes_its_intent_before_it_is_sent():
    rig = Rig()
    result = rig.submit(buy())
    assert result.status is OrderStatus.FILLED
    assert rig.exchange.placed and rig.journal.events[0] == ("durable", "INTENT", "allowed")
    assert rig.portfolio.quantity("BTCUSDT") == pytest.approx(0.01)


def test_triggered_denies_every_entry_and_allows_exits_and_cancels():
    rig = Rig()
    rig.submit(buy(0.02))
    resting = rig.submit(buy(0.01, type=OrderType.LIMIT, price=9_900.0, client_order_id="bid"))
    assert resting.status is OrderStatus.NEW
    assert rig.breaker.trigger("test crash", time_ms=rig.now)
    # the halt cancelled the resting entry synchronously, inside trigger()
    assert rig.exchange.open_orders() == [] and rig.gate.cancels_issued == 1
    assert_denied(rig, buy(0.01), "TRIGGERED")
    # an operator's confirmation does not make a buy an exit
    assert_denied(rig, buy(0.01, origin=Origin.OPERATOR, operator_confirmed=True), "TRIGGERED")
    # an exit takes risk off: allowed, confirmed or not
    assert rig.submit(sell_exit(0.01)).status is OrderStatus.FILLED
    assert rig.submit(sell_exit(0.01, operator_confirmed=True)).status is OrderStatus.FILLED


def test_a_trip_cancels_entries_and_keeps_the_stops_that_protect_positions():
    rig = Rig()
    assert rig.submit(buy(0.03)).status is OrderStatus.FILLED
    stop = rig.submit(sell_exit(0.03, type=OrderType.STOP, stop_price=9_800.0))
    bid = rig.submit(buy(0.01, type=OrderType.LIMIT, price=9_950.0))
    assert stop.status is OrderStatus.NEW and bid.status is OrderStatus.NEW
    rig.breaker.trigger("crash", time_ms=rig.now)
    assert [o.client_order_id for o in rig.exchange.open_orders()] == [stop.client_order_id]
    assert rig.exchange.get_order(bid.client_order_id).status is OrderStatus.CANCELED
    rig.tick("BTCUSDT", 9_700.0)  # the price falls through the stop: it fires
    assert rig.exchange.get_order(stop.client_order_id).status is OrderStatus.FILLED
    assert rig.portfolio.quantity("BTCUSDT") == 0


def test_the_halt_runs_before_any_subscriber_whatever_the_order_of_construction():
    breaker = CircuitBreakerState()
    seen = []
    # a subscriber that exists before the gate does
    breaker.subscribe(lambda change: seen.append([o.client_order_id for o in exchange.open_orders()]))
    gate, exchange, _ = unjournaled(breaker=breaker)
    resting = gate.submit_now(buy(0.01, type=OrderType.LIMIT, price=9_900.0))
    assert resting.status is OrderStatus.NEW
    breaker.trigger("crash", time_ms=T0)
    assert seen == [[]], "a subscriber saw a resting entry after the breaker tripped"


def test_warning_and_recovering_reduce_entry_size_by_the_shipped_factors():
    rig = Rig()
    rig.breaker.set_warning("wobbly", time_ms=rig.now)
    result = rig.submit(buy(0.02))
    assert result.quantity == pytest.approx(0.01)  # warning_size_factor 0.5 in config/default.yaml
    rig.breaker.trigger("crash", time_ms=rig.now)
    rig.breaker.start_recovery(time_ms=rig.now)
    result = rig.submit(buy(0.04, client_order_id="b2"))
    assert result.quantity == pytest.approx(0.01)  # recovering_size_factor 0.25
    assert rig.submit(sell_exit(0.005)).status is OrderStatus.FILLED  # exits pass while RECOVERING


def test_a_trip_while_recovering_halts_again():
    rig = Rig()
    rig.breaker.trigger("crash", time_ms=rig.now)
    rig.breaker.start_recovery(time_ms=rig.now)
    bid = rig.submit(buy(0.04, type=OrderType.LIMIT, price=9_950.0))
    assert bid.status is OrderStatus.NEW
    assert rig.breaker.trigger("new low", time_ms=rig.now)
    assert rig.exchange.open_orders() == []
    assert_denied(rig, buy(0.01), "TRIGGERED")


def test_stale_epoch_is_a_fencing_violation():
    rig = Rig()
    epoch = rig.breaker.epoch
    rig.breaker.set_warning("moved", time_ms=rig.now)
    assert_denied(rig, buy(), "stale breaker epoch", epoch_read=epoch)


def test_a_move_to_warning_while_the_intent_is_written_stops_the_full_size_order():
    rig = Rig()
    rig.journal.on_record = lambda order: (order.status is OrderStatus.INTENT and
                                           rig.breaker.set_warning("mid-flight", time_ms=rig.now))
    result = rig.submit(buy(0.02))
    assert result.status is OrderStatus.DENIED and "before sending" in result.reason
    assert rig.exchange.placed == []


def test_a_move_and_back_while_the_intent_is_written_still_stops_the_order():
    # SAFE -> WARNING -> SAFE: the status is the same again, but the check read a state that is gone
    rig = Rig()

    def wobble(order):
        if order.status is OrderStatus.INTENT:
            rig.breaker.set_warning("wobble", time_ms=rig.now)
            rig.breaker.clear(reason="calm", actor=Actor.RULE, time_ms=rig.now)

    rig.journal.on_record = wobble
    result = rig.submit(buy())
    assert result.status is OrderStatus.DENIED and "epoch 0 -> 2" in result.reason
    assert rig.exchange.placed == []


def test_rate_limit():
    rig = Rig(max_orders_per_minute=3)
    for i in range(3):
        assert rig.submit(buy(0.001, client_order_id=f"r{i}")).status is OrderStatus.FILLED
    assert_denied(rig, buy(0.001, client_order_id="r4"), "rate limit")
    rig.now += 61_000
    rig.tick("BTCUSDT", 10_000.0)
    assert rig.submit(buy(0.001, client_order_id="r5")).status is OrderStatus.FILLED


def test_a_denial_after_the_check_gives_its_rate_slot_back():
    rig = Rig(max_orders_per_minute=1)
    rig.journal.on_record = lambda order: (order.status is OrderStatus.INTENT and rig.breaker.epoch == 0 and
                                           rig.breaker.set_warning("mid-flight", time_ms=rig.now))
    assert rig.submit(buy(0.001)).status is OrderStatus.DENIED
    rig.journal.on_record = None
    assert rig.submit(buy(0.001, client_order_id="again")).status is OrderStatus.FILLED


def test_position_and_open_position_caps():
    rig = Rig(max_position_notional_usd=1_500.0, max_open_positions=1)
    assert rig.submit(buy(0.05)).status is OrderStatus.FILLED  # 500 USD
    assert rig.submit(buy(0.05, client_order_id="b2")).status is OrderStatus.FILLED  # 1,000 USD
    assert rig.submit(buy(0.05, client_order_id="b3")).status is OrderStatus.FILLED  # 1,500 USD: at the cap
    assert_denied(rig, buy(0.001, client_order_id="b4"), "position would be")
    assert_denied(rig, buy(0.5, symbol="ETHUSDT", client_order_id="e1"), "open positions")


def test_resting_entries_count_against_the_position_and_open_position_caps():
    rig = Rig(max_open_positions=1)
    for i in range(5):  # 5 x 0.05 BTC resting at 10,000 reference = 2,500 USD: the cap
        assert rig.submit(buy(0.05, type=OrderType.LIMIT, price=9_950.0, client_order_id=f"b{i}")).status \
            is OrderStatus.NEW
    assert rig.portfolio.quantity("BTCUSDT") == 0
    assert_denied(rig, buy(0.05, type=OrderType.LIMIT, price=9_950.0, client_order_id="b5"), "already in entry orders")
    assert_denied(rig, buy(0.5, symbol="ETHUSDT"), "open positions")
    # cancelling releases what they held
    asyncio.run(rig.gate.cancel("b0"))
    assert rig.submit(buy(0.05, type=OrderType.LIMIT, price=9_950.0, client_order_id="b6")).status is OrderStatus.NEW


def test_daily_loss_limit_blocks_entries_but_not_exits():
    rig = Rig(daily_loss_limit_usd=50.0, max_order_quantity={"BTCUSDT": 1.0}, max_order_notional_usd=20_000.0,
              max_position_notional_usd=50_000.0, stop_loss_percent=0.5)
    assert rig.submit(buy(0.5)).status is OrderStatus.FILLED  # 5,000 USD, 25 at its stop
    rig.tick("BTCUSDT", 9_850.0)  # unrealized about -75
    assert_denied(rig, buy(0.01, client_order_id="b2"), "daily loss limit")
    assert rig.submit(sell_exit(0.5)).status is OrderStatus.FILLED


def test_weekly_loss_limit_blocks_entries():
    rig = Rig(daily_loss_limit_usd=10_000.0, weekly_loss_limit_usd=50.0, max_order_quantity={"BTCUSDT": 1.0},
              max_order_notional_usd=20_000.0, max_position_notional_usd=50_000.0, stop_loss_percent=0.5)
    assert rig.submit(buy(0.5)).status is OrderStatus.FILLED
    rig.tick("BTCUSDT", 9_850.0)
    assert_denied(rig, buy(0.01, client_order_id="b2"), "weekly loss limit")


@pytest.mark.parametrize("budget", ["daily", "weekly"])
def test_the_loss_budgets_start_again_at_utc_midnight_and_on_monday(budget):
    limits = {"daily_loss_limit_usd": 45.0, "weekly_loss_limit_usd": 1_000.0} if budget == "daily" else \
        {"daily_loss_limit_usd": 1_000.0, "weekly_loss_limit_usd": 45.0}
    rig = Rig(stop_loss_percent=0.5, **limits)
    sunday_2300 = 1_700_434_800_000  # 2023-11-19 23:00 UTC, a Sunday
    rig.now = sunday_2300 - 2_000
    rig.tick("BTCUSDT", 10_000.0)
    assert rig.submit(buy(0.05)).status is OrderStatus.FILLED
    rig.tick("BTCUSDT", 9_000.0)
    assert rig.submit(sell_exit(0.05)).status is OrderStatus.FILLED  # about 50 USD lost, on Sunday
    rig.now = sunday_2300 + 30 * 60_000  # Sunday 23:30: the same day and week
    rig.tick("BTCUSDT", 9_000.0)
    assert_denied(rig, buy(0.001, client_order_id="sun"), f"{budget} loss limit")
    rig.now = sunday_2300 + 90 * 60_000  # Monday 00:30: a new day and a new week
    rig.tick("BTCUSDT", 9_000.0)
    assert rig.submit(buy(0.001, client_order_id="mon")).status is OrderStatus.FILLED


def test_an_entry_whose_risk_does_not_fit_the_loss_budget_left_is_denied():
    rig = Rig(daily_loss_limit_usd=30.0)  # stop_loss_percent 2: a 995 USD entry risks 19.90
    bid = buy(1.0, symbol="ETHUSDT", type=OrderType.LIMIT, price=995.0)
    assert rig.submit(bid).status is OrderStatus.NEW
    assert_denied(rig, bid.with_(client_order_id="b2"), "daily loss budget")


def test_a_reduce_only_exit_larger_than_the_position_is_denied():
    rig = Rig()
    assert rig.submit(buy(0.02)).status is OrderStatus.FILLED
    assert_denied(rig, sell_exit(0.03), "exceeds the position")
    stop = rig.submit(sell_exit(0.02, type=OrderType.STOP, stop_price=9_800.0))
    assert stop.status is OrderStatus.NEW
    assert_denied(rig, sell_exit(0.01), "already in exit orders")  # the stop holds the whole position


def test_stale_reference_price_denies_entries_not_exits():
    rig = Rig()
    assert rig.submit(buy(0.02)).status is OrderStatus.FILLED
    rig.now += 120_000
    assert_denied(rig, buy(client_order_id="late"), "stale")
    assert rig.submit(sell_exit(0.02)).status is OrderStatus.FILLED


def test_cancels_are_always_allowed():
    rig = Rig()
    resting = rig.submit(buy(0.01, type=OrderType.LIMIT, price=9_900.0))
    rig.breaker.trigger("x", time_ms=rig.now)
    assert rig.exchange.get_order(resting.client_order_id).status is OrderStatus.CANCELED
    stop_rig = Rig()
    stop_rig.submit(buy(0.02))
    stop = stop_rig.submit(sell_exit(0.02, type=OrderType.STOP, stop_price=9_800.0))
    stop_rig.breaker.trigger("x", time_ms=stop_rig.now)
    done = asyncio.run(stop_rig.gate.cancel(stop.client_order_id))
    assert done.status is OrderStatus.CANCELED


def test_agents_cannot_loosen_but_the_gate_does_not_care_who_proposed():
    rig = Rig()
    rig.breaker.trigger("agent saw a crash", actor=Actor.AGENT, time_ms=rig.now)
    assert_denied(rig, buy(origin=Origin.AGENT), "TRIGGERED")
    assert rig.exchange.placed == []
    assert not math.isnan(rig.portfolio.cash)


def test_a_failing_journal_blocks_entries_and_lets_exits_out():
    rig = Rig()
    assert rig.submit(buy(0.02)).status is OrderStatus.FILLED
    rig.journal.failing = True
    assert_denied(rig, buy(0.01, client_order_id="b2"), "journal failing")
    assert rig.submit(sell_exit(0.02)).status is OrderStatus.FILLED
    assert ("queued", "INTENT", "allowed (exit)") in rig.journal.events  # its intent waits in memory


def test_an_entry_whose_intent_never_reaches_the_disk_is_not_sent(monkeypatch):
    monkeypatch.setattr("core.trading.gate.INTENT_DEADLINE_S", 0.05)
    rig = Rig()
    rig.journal.hang = True
    result = rig.submit(buy(0.01))
    assert result.status is OrderStatus.DENIED and "intent could not be recorded" in result.reason
    assert rig.exchange.placed == []


def test_submit_now_honours_the_gates_decision():
    gate, exchange, breaker = unjournaled()
    breaker.trigger("crash", time_ms=T0)
    assert gate.submit_now(buy(0.01)).status is OrderStatus.DENIED
    assert gate.submit_now(buy(0.06)).status is OrderStatus.DENIED
    assert exchange.placed == []


# ---------------------------------------------------------------------- concurrency
async def _gather_submits(gate: OrderGate, orders: list[Order]) -> list[Order]:
    return await asyncio.gather(*(gate.submit(o) for o in orders))


def test_fifty_concurrent_buys_stay_inside_the_shipped_caps():
    rig = Rig()
    results = asyncio.run(_gather_submits(rig.gate, [buy(0.02, client_order_id=f"c{i}") for i in range(50)]))
    sent = [r for r in results if r.status is not OrderStatus.DENIED]
    assert len(rig.exchange.placed) == len(sent) == 10  # max_orders_per_minute
    assert rig.portfolio.quantity("BTCUSDT") * 10_000.0 <= rig.risk.max_position_notional_usd


def test_twelve_concurrent_900_usd_buys_stop_at_the_position_cap():
    rig = Rig()
    results = asyncio.run(_gather_submits(rig.gate, [buy(0.9, symbol="ETHUSDT", client_order_id=f"e{i}")
                                                     for i in range(12)]))
    assert sum(r.status is OrderStatus.FILLED for r in results) == 2
    assert rig.portfolio.quantity("ETHUSDT") * 1_000.0 <= rig.risk.max_position_notional_usd
    assert all("position would be" in r.reason for r in results if r.status is OrderStatus.DENIED)


def test_a_trip_from_another_thread_leaves_no_entry_resting():
    for round_ in range(30):
        rig = Rig(max_orders_per_minute=1_000, max_position_notional_usd=1e6, max_open_positions=100)

        async def submitters():
            orders = [buy(0.05, type=OrderType.LIMIT, price=9_950.0 - i, client_order_id=f"r{round_}-{i}")
                      for i in range(40)]
            tripper = threading.Thread(target=rig.breaker.trigger, args=("other thread",),
                                       kwargs={"time_ms": rig.now})
            tasks = [asyncio.ensure_future(rig.gate.submit(o)) for o in orders]
            await asyncio.sleep(0)
            tripper.start()
            await asyncio.gather(*tasks)
            await asyncio.to_thread(tripper.join)

        asyncio.run(submitters())
        assert rig.breaker.status is BreakerStatus.TRIGGERED
        resting = [o for o in rig.exchange.open_orders() if not o.reduce_only]
        assert resting == [], f"round {round_}: entries resting after TRIGGERED: {resting}"


class StoringSignalsBackend:
    """A memory backend that says when a transition has been stored (before its halt runs)."""

    def __init__(self) -> None:
        from core.breaker.backend import MemoryBackend

        self._inner = MemoryBackend()
        self.name = "memory"
        self.stored = threading.Event()

    def load(self):
        return self._inner.load()

    def compare_and_set(self, expected_epoch, record) -> bool:
        done = self._inner.compare_and_set(expected_epoch, record)
        self.stored.set()
        return done


class TripWhilePlacing(SpyExchange):
    """place_now waits, mid-send, until another thread's trip has been stored."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.placing = threading.Event()
        self.stored: threading.Event | None = None

    def place_now(self, order: Order) -> Order:
        self.placing.set()
        assert self.stored is not None and self.stored.wait(5), "the trip never happened"
        return super().place_now(order)


def test_a_trip_stored_while_an_entry_is_being_sent_still_cancels_it():
    backend = StoringSignalsBackend()
    gate, exchange, breaker = unjournaled(TripWhilePlacing, CircuitBreakerState(backend))
    exchange.stored = backend.stored

    def trip() -> None:
        exchange.placing.wait(5)
        breaker.trigger("crash from another thread", time_ms=T0)

    tripper = threading.Thread(target=trip)
    tripper.start()
    sent = gate.submit_now(buy(0.01, type=OrderType.LIMIT, price=9_950.0))
    tripper.join(10)
    assert breaker.status is BreakerStatus.TRIGGERED and sent.status is OrderStatus.NEW
    assert exchange.open_orders() == [], "the entry sent during the trip is still resting"


class SlowExchange(PaperExchange):
    """A paper book behind a network: place() answers after the loop has run other work."""

    answers_synchronously = False

    async def place(self, order: Order) -> Order:
        await asyncio.sleep(0.01)
        return self.place_now(order)

    async def cancel(self, client_order_id: str, reason: str = "canceled on request") -> Order:
        return self.cancel_now([client_order_id], reason)[0]


def test_an_entry_that_lands_after_the_halt_is_cancelled_at_once():
    gate, exchange, breaker = unjournaled(SlowExchange)

    async def race() -> Order:
        sending = asyncio.ensure_future(gate.submit(buy(0.01, type=OrderType.LIMIT, price=9_950.0)))
        await asyncio.sleep(0.001)  # the order is on the wire
        breaker.trigger("crash while sending", time_ms=T0)
        return await sending

    result = asyncio.run(race())
    assert result.status is OrderStatus.CANCELED
    assert "landed after the halt" in result.reason  # the gate's reason reaches an asynchronous exchange
    assert exchange.open_orders() == []


class HeldBookExchange(SlowExchange):
    """An exchange that holds its own book across a restart (Binance: reconcile rebuilt it)."""

    def restore(self, balances, open_orders):
        return []


def test_an_order_the_restore_refuses_is_cancelled_on_an_exchange_that_holds_it():
    gate, exchange, _ = unjournaled(HeldBookExchange)
    announced = []
    gate.listeners.append(announced.append)
    too_big = exchange.place_now(buy(0.5, type=OrderType.LIMIT, price=9_950.0))  # 4,975 USD: over the order cap
    assert too_big.status is OrderStatus.NEW
    refused = gate.restore({}, [too_big])
    assert [o.client_order_id for o in refused] == [too_big.client_order_id]
    assert exchange.open_orders() == []  # cancelled where it rests, not only in the gate's account
    final = exchange.get_order(too_big.client_order_id)
    assert final.status is OrderStatus.CANCELED and final.reason == "restore: refused by the gate"
    cancels = [o.client_order_id for o in announced if o.status is OrderStatus.CANCELED]
    assert cancels == [too_big.client_order_id]  # announced once, by the exchange, when it landed


def test_an_order_whose_result_is_unknown_blocks_entries_until_settled():
    rig_gate, exchange, _ = unjournaled()
    lost = buy(0.01, type=OrderType.LIMIT, price=9_950.0).with_(status=OrderStatus.UNKNOWN, reason="timeout")
    rig_gate._on_order_update(lost)  # the exchange could not say whether it landed
    denied = rig_gate.check(buy(0.01, type=OrderType.LIMIT, price=9_950.0))
    assert not denied.allowed and "result is unknown" in denied.reason
    assert rig_gate.check(sell_exit(0.01)).reason != denied.reason  # exits are judged on their own
    rig_gate._on_order_update(lost.with_(status=OrderStatus.REJECTED, reason="never landed"))
    assert rig_gate.check(buy(0.01, type=OrderType.LIMIT, price=9_950.0)).allowed


def test_an_entry_block_refuses_entries_and_passes_exits():
    gate, exchange, _ = unjournaled()
    gate.block_entries("user_stream", "the user data stream is lost: order updates may be missed")
    denied = gate.check(buy(0.01, type=OrderType.LIMIT, price=9_950.0))
    assert not denied.allowed and denied.reason.startswith("the user data stream is lost")
    assert gate.unblock_entries("user_stream") is True
    assert gate.check(buy(0.01, type=OrderType.LIMIT, price=9_950.0)).allowed
    assert gate.unblock_entries("user_stream") is False


def test_submitters_on_several_threads_share_the_caps():
    gate, exchange, _ = unjournaled(symbol="ETHUSDT", price=1_000.0)
    start = threading.Barrier(4)

    def submitter(k: int) -> None:
        start.wait()
        for i in range(30):
            gate.submit_now(buy(0.3, symbol="ETHUSDT", type=OrderType.LIMIT, price=995.0, client_order_id=f"t{k}-{i}"))

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    resting = sum(o.remaining for o in exchange.open_orders())
    assert len(exchange.placed) == 8  # 8 x 0.3 ETH x 1,000 = 2,400 USD: the next would pass the 2,500 cap
    assert resting * 1_000.0 <= SHIPPED.risk_management.max_position_notional_usd


# ---------------------------------------------------------------------- a coin in its own crash
def test_no_new_long_into_a_coin_in_its_own_crash_whatever_the_breaker_says():
    rig = Rig()
    rig.tick("DOGEUSDT", 0.30, qty=100_000.0)
    rig.submit(buy(qty=1_000.0, symbol="DOGEUSDT"))  # a position, before the fall
    for price in (0.28, 0.26, 0.252):  # 16% below its day's high; BTC and ETH calm, the breaker SAFE
        rig.tick("DOGEUSDT", price, qty=100_000.0)
    assert rig.breaker.status is BreakerStatus.SAFE
    assert_denied(rig, buy(qty=1_000.0, symbol="DOGEUSDT"), "DOGEUSDT is 16.0% below its 24-hour high")
    out = rig.submit(sell_exit(500.0, symbol="DOGEUSDT"))
    assert out.status is not OrderStatus.DENIED, "exits stay open: they only take risk off"
    assert rig.submit(buy(qty=0.01)).status is not OrderStatus.DENIED, "other coins trade on"


def test_a_coin_back_within_its_level_can_be_bought_again():
    rig = Rig()
    rig.tick("DOGEUSDT", 0.30, qty=100_000.0)
    rig.tick("DOGEUSDT", 0.25, qty=100_000.0)
    assert_denied(rig, buy(qty=1_000.0, symbol="DOGEUSDT"), "in its own crash")
    rig.tick("DOGEUSDT", 0.256, qty=100_000.0)  # 14.7% below
    assert rig.submit(buy(qty=1_000.0, symbol="DOGEUSDT")).status is not OrderStatus.DENIED


def test_the_rule_can_be_turned_off_and_needs_its_horizon_kept():
    off = SHIPPED.risk_management.falling_coin.model_copy(update={"enabled": False})
    rig = Rig(falling_coin=off)
    rig.tick("DOGEUSDT", 0.30, qty=100_000.0)
    rig.tick("DOGEUSDT", 0.20, qty=100_000.0)
    assert rig.submit(buy(qty=1_000.0, symbol="DOGEUSDT")).status is not OrderStatus.DENIED
    with pytest.raises(ValueError, match="falling_coin needs the market to keep its 1440-minute horizon"):
        OrderGate(SHIPPED.risk_management, CircuitBreakerState(), MarketState(), rig.exchange, Portfolio(1.0))
