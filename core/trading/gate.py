"""The order gate: the one pre-trade check every order passes, and the only holder of
the exchange.

Agent proposals, operator orders, retries, reconciliation and protective exits all come
through `submit()`. A denied order never reaches the exchange; every denial is journaled
with its reason. The breaker's policy per state:

  SAFE        all orders
  WARNING     entries at a reduced size; exits
  TRIGGERED   no new or modified orders; cancels, and reduce-only exits an operator confirmed;
              every open order is cancelled the moment the breaker trips
  RECOVERING  reduce-only orders, and entries at a reduced size

The epoch a decision read must still be current when the order is sent: an order checked
under one breaker epoch is refused if the breaker moved before it went out (fencing).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from core.breaker.state import CircuitBreakerState
from core.events import BreakerChanged, BreakerStatus
from core.market.state import MarketState
from core.settings import RiskSettings
from core.trading.exchange import Exchange, ExchangeError
from core.trading.orders import Fill, Order, OrderStatus, OrderType, Side, shape_problem

log = logging.getLogger("spikeguard.gate")

SAFE, WARNING, TRIGGERED, RECOVERING = (
    BreakerStatus.SAFE, BreakerStatus.WARNING, BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING,
)
REFERENCE_MAX_AGE_MS = 60_000  # a reference price older than this (event time) is not fresh


@dataclass(frozen=True)
class GateDecision:
    allowed: bool
    reason: str
    quantity: float  # the quantity that may be sent (reduced in WARNING and RECOVERING)
    epoch: int
    status: BreakerStatus
    reference_price: float | None = None
    checks: dict[str, Any] = field(default_factory=dict)


class OrderJournal(Protocol):
    """What the gate needs from the journal (core.journal.Journal provides it)."""

    async def record_order(self, order: Order, event_time_ms: int | None = None) -> int: ...  # durable
    def enqueue_order(self, order: Order, event_time_ms: int | None = None) -> Any: ...  # non-blocking
    def enqueue_fill(self, fill: Fill) -> Any: ...


class OrderGate:
    def __init__(
        self,
        risk: RiskSettings,
        breaker: CircuitBreakerState,
        market: MarketState,
        exchange: Exchange,
        portfolio: Any,
        journal: OrderJournal | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.risk = risk
        self.breaker = breaker
        self.market = market
        self._exchange = exchange  # private: nothing else may reach the exchange
        self.portfolio = portfolio
        self.journal = journal
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._sent_times: deque[int] = deque()
        self.denials = 0
        self.sent = 0
        self.cancels_issued = 0
        self.last_halt_ns = 0
        self.listeners: list[Callable[[Order], None]] = []
        self.fill_listeners: list[Callable[[Fill], None]] = []
        exchange.add_listeners(self._on_order_update, self._on_fill)
        breaker.subscribe(self._on_breaker_change)

    @property
    def exchange_name(self) -> str:
        return self._exchange.name

    def open_orders(self) -> list[Order]:
        return self._exchange.open_orders()

    # ------------------------------------------------------------------ the check (pure, sync)
    def check(self, order: Order, epoch_read: int | None = None) -> GateDecision:
        status = self.breaker.status
        epoch = self.breaker.epoch

        def deny(reason: str, **checks: Any) -> GateDecision:
            return GateDecision(False, reason, 0.0, epoch, status, checks.get("reference_price"), checks)

        if epoch_read is not None and epoch_read != epoch:
            return deny(f"stale breaker epoch: the decision read epoch {epoch_read}, the breaker is at {epoch} "
                        f"({status.value})")
        problem = shape_problem(order)
        if problem:
            return deny(problem)
        q = order.quantity

        position = self._position_qty(order.symbol)
        reduces = order.side is Side.SELL and position > 0
        if order.reduce_only:
            if not reduces:
                return deny(f"reduce-only {order.side.value} would not reduce a {order.symbol} position "
                            f"(holding {position:g})")
            if q > position * (1 + 1e-9):
                return deny(f"reduce-only quantity {q:g} exceeds the position {position:g}")

        # the breaker's policy
        factor = 1.0
        if status is TRIGGERED:
            if not (order.reduce_only and order.operator_confirmed):
                return deny("circuit breaker TRIGGERED: new entries blocked; only cancels and operator-confirmed "
                            "reduce-only exits")
        elif status is RECOVERING and not order.reduce_only:
            factor = self.risk.recovering_size_factor
        elif status is WARNING and not order.reduce_only:
            factor = self.risk.warning_size_factor

        # a fresh reference price
        w = self.market.symbols.get(order.symbol)
        if w is None or not w.ticks:
            return deny(f"no reference price for {order.symbol}")
        ref = w.last_price
        age = self.clock() - w.last_time
        if age > REFERENCE_MAX_AGE_MS:
            return deny(f"reference price for {order.symbol} is stale ({age / 1000:.0f}s old)", reference_price=ref)
        if order.type in (OrderType.LIMIT, OrderType.POST_ONLY):
            off = abs(order.price / ref - 1.0) * 100.0
            if off > self.risk.price_collar_percent:
                return deny(f"limit price {order.price:g} is {off:.2f}% from the reference {ref:g} "
                            f"(collar {self.risk.price_collar_percent:g}%)", reference_price=ref)

        qty = q * factor
        max_qty = self.risk.max_order_quantity.get(order.symbol)
        if max_qty is not None and qty > max_qty:
            return deny(f"quantity {qty:g} exceeds the {order.symbol} cap of {max_qty:g}", reference_price=ref)
        price = order.price or ref
        notional = qty * price
        if not order.reduce_only:
            if notional > self.risk.max_order_notional_usd:
                return deny(f"notional {notional:,.2f} USD exceeds the per-order cap of "
                            f"{self.risk.max_order_notional_usd:,.2f}", reference_price=ref)
            if order.side is Side.BUY:
                after = (position + qty) * ref
                if after > self.risk.max_position_notional_usd:
                    return deny(f"position would be {after:,.2f} USD, above the cap of "
                                f"{self.risk.max_position_notional_usd:,.2f}", reference_price=ref)
                open_symbols = set(self._open_symbols())
                if order.symbol not in open_symbols and len(open_symbols) >= self.risk.max_open_positions:
                    return deny(f"already {len(open_symbols)} open positions (cap {self.risk.max_open_positions})",
                                reference_price=ref)
            loss = self._loss_check()
            if loss:
                return deny(loss, reference_price=ref)

        # rate limit (sliding minute of orders sent)
        now = self.clock()
        sent = self._sent_times
        while sent and sent[0] <= now - 60_000:
            sent.popleft()
        if len(sent) >= self.risk.max_orders_per_minute:
            return deny(f"order rate limit: {len(sent)} orders in the last minute (cap "
                        f"{self.risk.max_orders_per_minute})", reference_price=ref)

        reason = "allowed" if factor == 1.0 else f"allowed at {factor:g}x size ({status.value})"
        return GateDecision(True, reason, qty, epoch, status, ref, {"notional": notional, "factor": factor})

    # ------------------------------------------------------------------ submit (the only way out)
    async def submit(self, order: Order, epoch_read: int | None = None) -> Order:
        now = self.clock()
        order = order.with_(created_ms=order.created_ms or now)
        decision = self.check(order, epoch_read)
        if not decision.allowed:
            return await self._deny(order, decision.reason, now)
        if decision.quantity != order.quantity:
            order = order.with_(quantity=decision.quantity)
        intent = order.with_(status=OrderStatus.INTENT, reason=decision.reason)
        if self.journal is not None:
            await self.journal.record_order(intent, now)  # durable before anything is sent
        # the breaker may have moved while the intent was being written: fence on the epoch
        if self.breaker.epoch != decision.epoch:
            again = self.check(order, None)
            if not again.allowed or again.status is not decision.status:
                return await self._deny(order, f"breaker moved to {self.breaker.status.value} before sending "
                                               f"(epoch {decision.epoch} -> {self.breaker.epoch})", now)
        self._sent_times.append(now)
        self.sent += 1
        try:
            result = await self._exchange.place(intent)
        except ExchangeError as exc:
            result = exc.order or intent.with_(status=OrderStatus.UNKNOWN, reason=str(exc))
            self._record(result)
        return result

    def submit_now(self, order: Order) -> Order:
        """The synchronous submit, for unjournaled paper books (the replay's protection study):
        the same check, then the paper exchange's synchronous placement."""
        place_now = getattr(self._exchange, "place_now", None)
        if self.journal is not None or place_now is None:
            raise RuntimeError("submit_now is only for unjournaled paper books")
        now = self.clock()
        order = order.with_(created_ms=order.created_ms or now)
        decision = self.check(order)
        if not decision.allowed:
            self.denials += 1
            return order.with_(status=OrderStatus.DENIED, reason=decision.reason)
        self._sent_times.append(now)
        self.sent += 1
        return place_now(order.with_(quantity=decision.quantity, status=OrderStatus.INTENT, reason=decision.reason))

    async def cancel(self, client_order_id: str) -> Order:
        """Cancels are always allowed, in every breaker state."""
        return await self._exchange.cancel(client_order_id)

    async def _deny(self, order: Order, reason: str, now: int) -> Order:
        self.denials += 1
        denied = order.with_(status=OrderStatus.DENIED, reason=reason)
        log.info("order denied %s %s %s %g: %s", order.client_order_id, order.side.value, order.symbol,
                 order.quantity, reason)
        if self.journal is not None:
            await self.journal.record_order(denied, now)
        for fn in self.listeners:
            fn(denied)
        return denied

    # ------------------------------------------------------------------ halt
    def _on_breaker_change(self, change: BreakerChanged) -> None:
        if change.status is TRIGGERED:
            self.halt()

    def halt(self) -> list[Order]:
        """Cancel every open order now (synchronously issued; answers arrive as updates)."""
        cancelled = self._exchange.cancel_all_now()
        self.cancels_issued += len(cancelled)
        self.last_halt_ns = time.perf_counter_ns()
        if cancelled:
            log.warning("breaker TRIGGERED: cancels issued for %d open orders", len(cancelled))
        return cancelled

    # ------------------------------------------------------------------ updates from the exchange
    def _on_order_update(self, order: Order) -> None:
        self._record(order)
        for fn in self.listeners:
            fn(order)

    def _on_fill(self, fill: Fill) -> None:
        self.portfolio.apply(fill)
        if self.journal is not None:
            self.journal.enqueue_fill(fill)
        for fn in self.fill_listeners:
            fn(fill)

    def _record(self, order: Order) -> None:
        if self.journal is not None:
            self.journal.enqueue_order(order, self.clock())

    # ------------------------------------------------------------------ book helpers
    def _position_qty(self, symbol: str) -> float:
        pos = self.portfolio.positions().get(symbol)
        return pos.quantity if pos is not None else 0.0

    def _open_symbols(self) -> list[str]:
        return [s for s, p in self.portfolio.positions().items() if p.quantity > 0]

    def _loss_check(self) -> str | None:
        now = self.clock()
        day = datetime.fromtimestamp(now / 1000, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        week = day.timestamp() - day.weekday() * 86_400
        prices = self.market.last_prices()
        unrealized = self.portfolio.unrealized_pnl(prices)
        daily = self.portfolio.realized_pnl_since(int(day.timestamp() * 1000)) + min(0.0, unrealized)
        weekly = self.portfolio.realized_pnl_since(int(week * 1000)) + min(0.0, unrealized)
        if -daily >= self.risk.daily_loss_limit_usd:
            return f"daily loss limit reached: {daily:,.2f} USD (limit {self.risk.daily_loss_limit_usd:,.2f})"
        if -weekly >= self.risk.weekly_loss_limit_usd:
            return f"weekly loss limit reached: {weekly:,.2f} USD (limit {self.risk.weekly_loss_limit_usd:,.2f})"
        return None


__all__ = ["GateDecision", "OrderGate", "OrderJournal"]
