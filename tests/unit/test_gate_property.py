"""The gate under fire: many concurrent submitters (asyncio tasks, and a thread that trips
and clears the breaker at random moments), random quantities including extremes. Whatever
the interleaving, on the shipped caps:

- a denied order never reaches the exchange;
- no order above the per-order cap, and no position plus resting entries above the
  position cap, ever reaches the exchange;
- entries sent in any minute never exceed the order rate;
- no entry is sent under an epoch that was TRIGGERED, and none rests after a trip;
- a trip never cancels the protective stop of an open position.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.breaker.machine import IllegalTransition
from core.breaker.state import CircuitBreakerState
from core.config import load_config
from core.events import Actor, BreakerStatus, Tick
from core.market.state import MarketState
from core.trading.gate import QTY_TOLERANCE, OrderGate
from core.trading.orders import Order, OrderStatus, OrderType, Side
from core.trading.paper import PaperExchange
from core.trading.portfolio import Portfolio
from tests.helpers import TurnJournal

T0 = 1_700_000_000_000
SHIPPED = load_config(env={}, dotenv_paths=[]).settings
RISK = SHIPPED.risk_management
PRICES = {"BTCUSDT": 10_000.0, "ETHUSDT": 1_000.0, "SOLUSDT": 100.0}


class WatchedExchange(PaperExchange):
    """The paper exchange, checking the invariants at the moment an order reaches it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate: OrderGate | None = None
        self.breaker: CircuitBreakerState | None = None
        self.placed: list[tuple[int, Order]] = []  # (clock, order)
        self.violations: list[str] = []

    def place_now(self, order: Order) -> Order:
        assert self.gate is not None and self.breaker is not None
        now = self.clock()
        self.placed.append((now, order))
        status, epoch = self.breaker.current()
        if order.reduce_only:
            held = self.gate.portfolio.quantity(order.symbol)
            exiting = sum(o.remaining for o in self.open_orders() if o.symbol == order.symbol and o.reduce_only)
            if order.quantity + exiting > held * (1 + QTY_TOLERANCE):
                self.violations.append(f"an exit beyond the position: {order.quantity}+{exiting} of {held}")
        elif status is BreakerStatus.TRIGGERED and self.gate._halted_epoch == epoch:
            self.violations.append(f"an entry sent after the halt of epoch {epoch}: {order}")
        if not order.reduce_only:
            ref = PRICES[order.symbol]
            price = order.price if order.type is OrderType.LIMIT else ref
            if order.quantity * price > RISK.max_order_notional_usd:
                self.violations.append(f"over the per-order cap: {order}")
            held = self.gate.portfolio.quantity(order.symbol)
            resting = sum(o.remaining for o in self.open_orders() if o.symbol == order.symbol and not o.reduce_only)
            if (held + resting + order.quantity) * ref > RISK.max_position_notional_usd * (1 + QTY_TOLERANCE):
                self.violations.append(f"over the position cap: {order.symbol} {held}+{resting}+{order.quantity}")
            entries = sum(1 for t, o in self.placed if not o.reduce_only and t > now - 60_000)
            if entries > RISK.max_orders_per_minute:
                self.violations.append(f"{entries} entries in a minute")
        return super().place_now(order)


class Rig:
    def __init__(self) -> None:
        self.now = T0
        self.market = MarketState(long_minutes=(1440,))  # the gate's falling_coin horizon
        self.breaker = CircuitBreakerState()
        self.portfolio = Portfolio(1_000_000.0)
        self.exchange = WatchedExchange(SHIPPED.execution.paper, self.market, lambda: self.now)
        self.gate = OrderGate(RISK, self.breaker, self.market, self.exchange, self.portfolio, TurnJournal(),
                              clock=lambda: self.now)
        self.exchange.gate, self.exchange.breaker = self.gate, self.breaker
        self.updates: list[Order] = []
        self.gate.listeners.append(self.updates.append)
        self.violations = self.exchange.violations
        self.breaker.subscribe(self._after_a_trip)
        self.ticks()

    def ticks(self) -> None:
        self.now += 1_000
        for symbol, price in PRICES.items():
            self.market.windows(symbol).update(price, 50.0, self.now)
            self.gate.on_market_tick(Tick(symbol, price, 50.0, self.now))

    def _after_a_trip(self, change) -> None:
        if change.status is BreakerStatus.TRIGGERED:
            resting = [o for o in self.exchange.open_orders() if not o.reduce_only]
            if resting:
                self.violations.append(f"entries resting after the trip to epoch {change.epoch}: {resting}")


# an order's size: mostly a notional in USD (so the caps and the rate bind), sometimes a raw extreme quantity
_usd = st.floats(min_value=1.0, max_value=1_200.0).map(lambda usd: ("usd", usd))
_extreme = st.sampled_from([0.0, -1.0, math.nan, math.inf, 5e-324, 1e-12, 1e300, 10 ** 400]).map(lambda q: ("qty", q))
quantities = st.integers(0, 9).flatmap(lambda k: _extreme if k == 0 else _usd)  # one in ten extreme
orders = st.tuples(st.sampled_from(["market", "limit", "exit", "stop"]), st.sampled_from(sorted(PRICES)),
                   quantities, st.booleans())
breaker_moves = st.lists(st.sampled_from(["trip", "warn", "clear", "recover"]), max_size=6)


def build(kind: str, symbol: str, size, confirmed: bool, i: int, rig: Rig) -> Order:
    ref = PRICES[symbol]
    cid = f"o{i}"
    unit, amount = size
    qty = amount / ref if unit == "usd" else amount
    if kind == "market":
        return Order(symbol=symbol, side=Side.BUY, type=OrderType.MARKET, quantity=qty, client_order_id=cid,
                     operator_confirmed=confirmed)
    if kind == "limit":
        return Order(symbol=symbol, side=Side.BUY, type=OrderType.LIMIT, quantity=qty, price=ref * 0.995,
                     client_order_id=cid, operator_confirmed=confirmed)
    held = rig.portfolio.quantity(symbol)
    q = held * 0.6 if held > 0 and unit == "usd" else qty  # two of these together overshoot the position
    if kind == "exit":
        return Order(symbol=symbol, side=Side.SELL, type=OrderType.MARKET, quantity=q, reduce_only=True,
                     client_order_id=cid)
    return Order(symbol=symbol, side=Side.SELL, type=OrderType.STOP, quantity=q, stop_price=ref * 0.9,
                 reduce_only=True, client_order_id=cid)


def move_breaker(breaker: CircuitBreakerState, moves: list[str], now: int) -> None:
    for move in moves:
        try:
            if move == "trip":
                breaker.trigger("random trip", time_ms=now)
            elif move == "warn":
                breaker.set_warning("random warning", time_ms=now)
            elif move == "recover":
                breaker.start_recovery(time_ms=now)
            else:
                breaker.clear(reason="random clear", actor=Actor.OPERATOR, time_ms=now)
        except IllegalTransition:
            pass
        time.sleep(0)  # let the loop thread run between moves


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bursts=st.lists(st.tuples(st.lists(orders, min_size=10, max_size=40), breaker_moves), min_size=1, max_size=4))
def test_the_gates_invariants_hold_under_concurrency(bursts):
    rig = Rig()
    denied: set[str] = set()
    stops: set[str] = set()
    n = 0
    for burst, moves in bursts:
        built = []
        for kind, symbol, qty, confirmed in burst:
            built.append(build(kind, symbol, qty, confirmed, n, rig))
            n += 1

        async def fire() -> list[Order]:
            tripper = threading.Thread(target=move_breaker, args=(rig.breaker, moves, rig.now))
            tasks = [asyncio.ensure_future(rig.gate.submit(o)) for o in built]
            tripper.start()
            results = await asyncio.gather(*tasks)
            await asyncio.to_thread(tripper.join)
            return results

        for result in asyncio.run(fire()):
            if result.status is OrderStatus.DENIED:
                denied.add(result.client_order_id)
            elif result.type is OrderType.STOP:
                stops.add(result.client_order_id)
        rig.now += 20_000
        rig.ticks()

    assert not rig.violations, rig.violations
    reached = {o.client_order_id for _, o in rig.exchange.placed}
    assert not denied & reached, f"denied orders reached the exchange: {denied & reached}"
    halted_stops = [o for o in rig.updates if o.client_order_id in stops and o.status is OrderStatus.CANCELED
                    and "TRIGGERED" in (o.reason or "")]
    assert not halted_stops, f"a trip cancelled protective stops: {halted_stops}"
