"""The order gate: the one pre-trade check every order passes, and the only holder of
the exchange.

Agent proposals, operator orders, protective stops and take-profits, restored orders and
the operator's flatten all come through here. A denied order never reaches the exchange;
every denial is journaled with its reason. The policy per breaker state:

  SAFE        all orders
  WARNING     entries at a reduced size; exits
  TRIGGERED   no entries; exits (stops, take-profits, flattens) and cancels. The moment the
              breaker trips, the halt step cancels every resting entry; protective orders stay
  RECOVERING  exits, and entries at a reduced size

Exits (reduce-only orders) and cancels are always allowed: they can only take risk off.
New entries are also denied, as under TRIGGERED, while the journal cannot write. A buy of a
coin in its own crash (`risk.falling_coin`: that far below its own high over the horizon)
is denied whatever the breaker's state: the breaker watches the market, not each coin.

Atomicity. The check and the reservation of every budget it spends (exposure, open
positions, the loss budget, a slot of the order rate; core.trading.ledger) happen under one
lock, so concurrent submitters, tasks or threads, each see what the others took. The
intent is journaled (outside the lock: never await while holding it), and then, under the
lock again, the epoch fence and the send: an order whose check read an epoch the breaker
has since left is denied, not re-sized. The halt takes the same lock, so no entry can slip
between a trip and its cancels.

Lock order: the breaker's lock, then this gate's (the halt runs inside a transition). Code
holding this lock never takes the breaker's: it reads `breaker.current()`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

from core.breaker.state import CircuitBreakerState
from core.events import BreakerChanged, BreakerStatus, Tick
from core.market.state import MarketState
from core.settings import RiskSettings
from core.trading.exchange import Exchange, ExchangeError
from core.trading.ledger import RateWindow, Reservation, ReservationLedger
from core.trading.orders import Fill, Order, OrderStatus, OrderType, Side, shape_problem

log = logging.getLogger("spikeguard.gate")

SAFE, WARNING, TRIGGERED, RECOVERING = (
    BreakerStatus.SAFE, BreakerStatus.WARNING, BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING,
)
REFERENCE_MAX_AGE_MS = 60_000  # a reference price older than this (event time) is not fresh
INTENT_DEADLINE_S = 2.0  # an entry whose intent is not on disk by then is not sent
QTY_TOLERANCE = 1e-9  # relative: float sums of fills may overshoot a position by a few ulps
DAY_MS = 86_400_000


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

    @property
    def failing(self) -> bool: ...  # True while writes fail (rows wait in memory)
    async def record_order(self, order: Order, event_time_ms: int | None = None) -> int: ...  # durable
    def enqueue_order(self, order: Order, event_time_ms: int | None = None) -> Any: ...  # non-blocking
    def enqueue_fill(self, fill: Fill) -> Any: ...


class ExchangeView:
    """Read-only access to the exchange for the desk's tools (any thread), under the gate's lock."""

    def __init__(self, gate: "OrderGate") -> None:
        self._gate = gate

    @property
    def name(self) -> str:
        return self._gate.exchange_name

    def quotes(self, symbol: str) -> tuple[float, float] | None:
        with self._gate._lock:
            return self._gate._exchange.quotes(symbol)

    def depth_usd(self, symbol: str) -> float:
        with self._gate._lock:
            return self._gate._exchange.depth_usd(symbol)

    def balances(self) -> dict[str, dict[str, float]]:
        with self._gate._lock:
            return self._gate._exchange.balances()

    def open_orders(self) -> list[Order]:
        return self._gate.open_orders()


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
        falling = risk.falling_coin
        if falling.enabled and falling.horizon_minutes not in market.long_minutes:
            raise ValueError(f"risk_management.falling_coin needs the market to keep its {falling.horizon_minutes}-"
                             f"minute horizon (it keeps {list(market.long_minutes)})")
        self._falling_j = market.long_minutes.index(falling.horizon_minutes) if falling.enabled else None
        self._lock = threading.RLock()
        self._ledger = ReservationLedger()
        self._rate = RateWindow()
        self._in_flight: dict[str, int] = {}  # sent to an asynchronous exchange, answer pending: epoch read
        self._halted_epoch = -1  # the epoch of the last halt
        self._entry_blocks: dict[str, str] = {}  # name -> why: the venue cannot be trusted with entries now
        self.view = ExchangeView(self)
        self.denials = 0
        self.sent = 0
        self.cancels_issued = 0
        self.last_halt_ns = 0
        self.listeners: list[Callable[[Order], None]] = []
        self.fill_listeners: list[Callable[[Fill], None]] = []
        exchange.add_listeners(self._on_order_update, self._on_fill)
        breaker.add_halt_step(self._halt_step)

    @property
    def exchange_name(self) -> str:
        return self._exchange.name

    def open_orders(self) -> list[Order]:
        with self._lock:
            return self._exchange.open_orders()

    def block_entries(self, name: str, reason: str) -> None:
        """Refuse new entries until unblock_entries(name): the exchange cannot be trusted with
        them now (its order updates may be missed). Exits and cancels still pass."""
        with self._lock:
            self._entry_blocks[name] = reason

    def unblock_entries(self, name: str) -> bool:
        with self._lock:
            return self._entry_blocks.pop(name, None) is not None

    @property
    def journal_failing(self) -> bool:
        return self.journal is not None and bool(getattr(self.journal, "failing", False))

    # ------------------------------------------------------------------ the check
    def check(self, order: Order, epoch_read: int | None = None) -> GateDecision:
        """What the gate would decide now, reserving nothing (the approval dialog's preview)."""
        with self._lock:
            return self._decide(order, epoch_read, self.clock())

    def _decide(self, order: Order, epoch_read: int | None, now: int, restoring: bool = False) -> GateDecision:
        """The whole check, counting what other orders reserved. Call under the lock."""
        status, epoch = self.breaker.current()
        deny = partial(_denied, epoch, status)

        if epoch_read is not None and epoch_read != epoch:
            return deny(f"stale breaker epoch: the decision read epoch {epoch_read}, the breaker is at {epoch} "
                        f"({status.value})")
        problem = shape_problem(order)
        if problem:
            return deny(problem)
        q = order.quantity
        position = self._position_qty(order.symbol)
        w = self.market.symbols.get(order.symbol)
        ref = w.last_price if w is not None and w.ticks else None
        fresh = ref is not None and now - w.last_time <= REFERENCE_MAX_AGE_MS  # type: ignore[union-attr]

        if order.reduce_only:  # exits: always allowed while they only take risk off
            if order.side is not Side.SELL or position <= 0:
                return deny(f"reduce-only {order.side.value} would not reduce a {order.symbol} position "
                            f"(holding {position:g})")
            exiting = self._ledger.exit_quantity(order.symbol)
            if q + exiting > position * (1 + QTY_TOLERANCE):
                held = f", {exiting:g} already in exit orders" if exiting else ""
                return deny(f"reduce-only quantity {q:g} exceeds the position {position:g}{held}")
            if fresh and order.type in (OrderType.LIMIT, OrderType.POST_ONLY):
                collar = self._collar(order, ref)  # type: ignore[arg-type]
                if collar:
                    return deny(collar, ref)
            return GateDecision(True, "allowed (exit)", q, epoch, status, ref, {"exit": True})

        # entries
        if status is TRIGGERED:
            return deny("circuit breaker TRIGGERED: new entries blocked; exits and cancels only")
        if self.journal_failing:
            return deny("journal failing: new entries blocked until it can write again")
        if self._entry_blocks:
            return deny(f"{next(iter(self._entry_blocks.values()))}: new entries blocked")
        unknown = self._ledger.unknown
        if unknown:
            return deny(f"order {next(iter(unknown))}'s result is unknown: new entries blocked until the exchange "
                        f"settles it")
        factor = self.risk.recovering_size_factor if status is RECOVERING else \
            self.risk.warning_size_factor if status is WARNING else 1.0
        if ref is None:
            return deny(f"no reference price for {order.symbol}")
        if not fresh:
            return deny(f"reference price for {order.symbol} is stale ({(now - w.last_time) / 1000:.0f}s old)", ref)  # type: ignore[union-attr]
        collar = self._collar(order, ref)
        if collar:
            return deny(collar, ref)
        if order.side is Side.BUY and self._falling_j is not None:
            drop = w.long_drop_pct(self._falling_j)  # type: ignore[union-attr]
            if drop >= self.risk.falling_coin.drop_percent:
                hours = self.risk.falling_coin.horizon_minutes / 60
                return deny(f"{order.symbol} is {drop:.1f}% below its {hours:g}-hour high, in its own crash: "
                            f"no new long into it", ref)

        qty = q * factor
        max_qty = self.risk.max_order_quantity.get(order.symbol)
        if max_qty is not None and qty > max_qty:
            return deny(f"quantity {qty:g} exceeds the {order.symbol} cap of {max_qty:g}", ref)
        price = self._execution_price(order, ref)
        notional = qty * price
        if notional > self.risk.max_order_notional_usd:
            return deny(f"notional {notional:,.2f} USD exceeds the per-order cap of "
                        f"{self.risk.max_order_notional_usd:,.2f}", ref)
        if notional < self.risk.min_order_notional_usd:
            return deny(f"notional {notional:,.4f} USD is below the minimum of "
                        f"{self.risk.min_order_notional_usd:,.2f}", ref)
        if order.side is Side.BUY:
            pending = self._ledger.entry_quantity(order.symbol)
            after = (position + pending + qty) * ref
            if after > self.risk.max_position_notional_usd * (1 + QTY_TOLERANCE):  # sums of fills carry ulps
                held = f" with {pending * ref:,.2f} USD already in entry orders" if pending else ""
                return deny(f"position would be {after:,.2f} USD{held}, above the cap of "
                            f"{self.risk.max_position_notional_usd:,.2f}", ref)
            open_symbols = set(self._open_symbols()) | self._ledger.entry_symbols()
            if order.symbol not in open_symbols and len(open_symbols) >= self.risk.max_open_positions:
                return deny(f"already {len(open_symbols)} open positions (cap {self.risk.max_open_positions})", ref)
        risk_usd = notional * self.risk.stop_loss_percent / 100.0
        loss = self._loss_check(now, risk_usd)
        if loss:
            return deny(loss, ref)
        if not restoring:
            sent = self._rate.count(now)
            if sent >= self.risk.max_orders_per_minute:
                return deny(f"order rate limit: {sent} orders in the last minute (cap "
                            f"{self.risk.max_orders_per_minute})", ref)
        reason = "allowed" if factor == 1.0 else f"allowed at {factor:g}x size ({status.value})"
        return GateDecision(True, reason, qty, epoch, status, ref,
                            {"notional": notional, "factor": factor, "risk_usd": risk_usd})

    def _collar(self, order: Order, ref: float) -> str | None:
        if order.type not in (OrderType.LIMIT, OrderType.POST_ONLY):
            return None
        off = abs(order.price / ref - 1.0) * 100.0  # type: ignore[operator]
        if off > self.risk.price_collar_percent:
            return (f"limit price {order.price:g} is {off:.2f}% from the reference {ref:g} "
                    f"(collar {self.risk.price_collar_percent:g}%)")
        return None

    @staticmethod
    def _execution_price(order: Order, ref: float) -> float:
        """The price an entry's notional is counted at: the fresh reference for a market
        order (never a price field it carries), its limit or its trigger otherwise."""
        if order.type in (OrderType.LIMIT, OrderType.POST_ONLY):
            return order.price  # type: ignore[return-value]
        if order.type is OrderType.STOP:
            return max(order.stop_price, ref) if order.side is Side.BUY else order.stop_price  # type: ignore[type-var,return-value]
        return ref

    def _admit(self, order: Order, epoch_read: int | None, now: int) -> GateDecision:
        """Check and reserve, atomically."""
        with self._lock:
            decision = self._decide(order, epoch_read, now)
            if decision.allowed:
                self._reserve(order, decision, now)
            return decision

    def _reserve(self, order: Order, decision: GateDecision, now: int, rate: bool = True) -> None:
        qty = decision.quantity
        risk = decision.checks.get("risk_usd", 0.0)
        self._ledger.reserve(Reservation(order.client_order_id, order.symbol, order.side, not order.reduce_only,
                                         qty, risk / qty if qty > 0 else 0.0, decision.epoch))
        if rate:
            self._rate.take(now, order.client_order_id)

    def _unreserve(self, client_order_id: str) -> None:
        with self._lock:
            self._ledger.release(client_order_id)
            self._rate.give_back(client_order_id)

    # ------------------------------------------------------------------ submit (the only way out)
    async def submit(self, order: Order, epoch_read: int | None = None) -> Order:
        now = self.clock()
        order = order.with_(created_ms=order.created_ms or now)
        decision = self._admit(order, epoch_read, now)
        if not decision.allowed:
            return self._deny(order, decision.reason, now)
        order = order.with_(quantity=decision.quantity)
        intent = order.with_(status=OrderStatus.INTENT, reason=decision.reason)
        problem = await self._journal_intent(intent, now)
        if problem:
            self._unreserve(order.client_order_id)
            return self._deny(order, problem, now)
        with self._lock:
            status, epoch = self.breaker.current()
            moved = None if epoch == decision.epoch else \
                f"breaker moved to {status.value} before sending (epoch {decision.epoch} -> {epoch})"
            if moved:
                self._ledger.release(order.client_order_id)
                self._rate.give_back(order.client_order_id)
            else:
                self.sent += 1
                if self._exchange.answers_synchronously:
                    return self._place_now(intent)
                self._in_flight[order.client_order_id] = decision.epoch
        if moved:
            return self._deny(order, moved, now)
        return await self._place_async(intent, decision.epoch)

    async def _journal_intent(self, intent: Order, now: int) -> str | None:
        """The intent on disk before the order is sent. An entry whose intent cannot be made
        durable in time is not sent; an exit goes out anyway (its row lands when the journal
        can write): taking risk off beats the record of it."""
        journal = self.journal
        if journal is None:
            return None
        if intent.reduce_only and self.journal_failing:
            journal.enqueue_order(intent, now)
            return None
        try:
            await asyncio.wait_for(asyncio.shield(journal.record_order(intent, now)), INTENT_DEADLINE_S)
        except (asyncio.TimeoutError, Exception) as exc:
            why = "not on disk within %gs" % INTENT_DEADLINE_S if isinstance(exc, asyncio.TimeoutError) else str(exc)
            if intent.reduce_only:
                log.warning("exit %s sent before its intent was journaled: %s", intent.client_order_id, why)
                return None
            return f"journal failing: the order's intent could not be recorded ({why})"
        return None

    def _place_now(self, intent: Order) -> Order:
        """Send to an exchange that answers at once (paper). Call under the lock."""
        try:
            return self._exchange.place_now(intent)
        except ExchangeError as exc:
            result = exc.order or intent.with_(status=OrderStatus.UNKNOWN, reason=str(exc))
            self._on_order_update(result)
            return result

    async def _place_async(self, intent: Order, epoch_read: int) -> Order:
        """Send to an exchange over the network. The halt cannot cancel an order that is on
        the wire, so one that lands open after a halt newer than its check is cancelled here."""
        cid = intent.client_order_id
        try:
            result = await self._exchange.place(intent)
        except ExchangeError as exc:
            result = exc.order or intent.with_(status=OrderStatus.UNKNOWN, reason=str(exc))
            self._on_order_update(result)
        with self._lock:
            self._in_flight.pop(cid, None)
            late = not intent.reduce_only and result.status.is_open and self._halted_epoch > epoch_read
        if late:
            log.warning("entry %s landed after the halt: cancelling it", cid)
            result = await self.cancel(cid, "breaker TRIGGERED: the entry landed after the halt")
        return result

    def submit_now(self, order: Order) -> Order:
        """The synchronous submit, for unjournaled paper books (the replay's protection
        study): the same check and reservation, then the synchronous placement."""
        if self.journal is not None or not self._exchange.answers_synchronously:
            raise RuntimeError("submit_now is only for unjournaled books on an exchange that answers at once")
        now = self.clock()
        order = order.with_(created_ms=order.created_ms or now)
        with self._lock:
            decision = self._decide(order, None, now)
            if decision.allowed:
                self._reserve(order, decision, now)
                self.sent += 1
                return self._place_now(order.with_(quantity=decision.quantity, status=OrderStatus.INTENT,
                                                   reason=decision.reason))
        return self._deny(order, decision.reason, now)

    async def cancel(self, client_order_id: str, reason: str = "canceled on request") -> Order:
        """Cancels are always allowed, in every breaker state. An order already final is
        returned as it is; an unknown one raises ExchangeError."""
        if self._exchange.answers_synchronously:
            with self._lock:
                order = self._exchange.get_order(client_order_id)
                if order is None:
                    raise ExchangeError(f"unknown order {client_order_id}")
                if not order.status.is_open:
                    return order
                return self._exchange.cancel_now([client_order_id], reason)[0]
        return await self._exchange.cancel(client_order_id, reason)

    def _deny(self, order: Order, reason: str, now: int) -> Order:
        """Never awaits: a failing journal must not hold up the answer (the row is queued)."""
        self.denials += 1
        denied = order.with_(status=OrderStatus.DENIED, reason=reason)
        log.info("order denied %s %s %s %g: %s", order.client_order_id, order.side.value, order.symbol,
                 order.quantity, reason)
        if self.journal is not None:
            self.journal.enqueue_order(denied, now)
        for fn in self.listeners:
            fn(denied)
        return denied

    # ------------------------------------------------------------------ halt
    def _halt_step(self, change: BreakerChanged) -> None:
        self.halt(change.epoch)

    def halt(self, epoch: int | None = None) -> list[Order]:
        """Cancel every resting entry now; protective orders (reduce-only) stay. Runs inside
        the transition to TRIGGERED, first (core.breaker.state). Returns what it cancelled."""
        with self._lock:
            self._halted_epoch = self.breaker.current()[1] if epoch is None else epoch
            entries = [o.client_order_id for o in self._exchange.open_orders() if not o.reduce_only]
            cancelled = self._exchange.cancel_now(entries, "breaker TRIGGERED: entries cancelled") if entries else []
            self.cancels_issued += len(cancelled)
            self.last_halt_ns = time.perf_counter_ns()
        if cancelled:
            log.warning("breaker TRIGGERED: cancels issued for %d resting entries", len(cancelled))
        return cancelled

    # ------------------------------------------------------------------ the market and the book
    def exiting(self, symbol: str) -> float:
        """The quantity already in open exit orders on `symbol` (a further exit may sell only the rest)."""
        return self._ledger.exit_quantity(symbol)

    def on_market_tick(self, tick: Tick) -> None:
        """Work resting orders against a trade (called by the engine for every tick)."""
        if tick.symbol in self._exchange.watched_symbols:
            with self._lock:
                self._exchange.on_tick(tick)

    def restore(self, balances: dict[str, Any], orders: Iterable[Order]) -> list[Order]:
        """Rebuild the book after a restart, through the gate: the balances as they were;
        each open order rests again only if the gate allows it now (a protective exit
        whenever it still fits the position; an entry under the restored breaker, with
        fresh prices and room in the caps), else it is cancelled and the cancellation is
        journaled. Returns the cancelled orders."""
        now = self.clock()
        keep: list[Order] = []
        refused: list[Order] = []
        with self._lock:
            for order in orders:
                if not order.status.is_open:
                    continue
                rest = order.with_(quantity=order.remaining, filled_quantity=0.0)
                decision = self._decide(rest, None, now, restoring=True)
                if decision.allowed and decision.quantity >= rest.quantity * (1 - QTY_TOLERANCE):
                    self._reserve(order, replace(decision, quantity=rest.quantity), now, rate=False)
                    self._ledger.on_order(order)  # an UNKNOWN one blocks entries until it is settled
                    keep.append(order)
                else:
                    why = decision.reason if not decision.allowed else f"it would be resized ({decision.reason})"
                    refused.append(order.with_(status=OrderStatus.CANCELED, reason=f"restore: {why}"))
            unfunded = self._exchange.restore(balances, keep)
            # an exchange that holds its own book (Binance) still has the refused orders open:
            # they are cancelled there, and the exchange announces each cancel as it lands
            resting = [o.client_order_id for o in refused if (held := self._exchange.get_order(o.client_order_id))
                       is not None and held.status.is_open]
            if resting:
                self._exchange.cancel_now(resting, "restore: refused by the gate")
        for order in refused:  # announced like any cancel: journaled, shown
            if order.client_order_id in resting:
                continue
            self._on_order_update(order)
        for order in unfunded:  # the exchange announced these itself
            self._unreserve(order.client_order_id)
        return refused + unfunded

    def _on_order_update(self, order: Order) -> None:
        with self._lock:
            self._ledger.on_order(order)
        if self.journal is not None:
            self.journal.enqueue_order(order, self.clock())
        for fn in self.listeners:
            fn(order)

    def _on_fill(self, fill: Fill) -> None:
        self.portfolio.apply(fill)
        if self.journal is not None:
            self.journal.enqueue_fill(fill)
        for fn in self.fill_listeners:
            fn(fill)

    # ------------------------------------------------------------------ book helpers
    def _position_qty(self, symbol: str) -> float:
        return self.portfolio.quantity(symbol)

    def _open_symbols(self) -> list[str]:
        return self.portfolio.open_symbols()

    def _loss_check(self, now: int, risk_usd: float) -> str | None:
        """An entry's risk at its stop must fit in what is left of the daily and weekly loss
        budgets, counting the risk other entries hold while they are in flight or resting."""
        day_ms = now - now % DAY_MS  # UTC midnight
        week_ms = day_ms - (day_ms // DAY_MS + 3) % 7 * DAY_MS  # UTC Monday (1970-01-01 was a Thursday)
        unrealized = min(0.0, self.portfolio.unrealized_pnl(self.market.last_prices()))
        held = self._ledger.risk_usd()
        for name, since_ms, limit in (("daily", day_ms, self.risk.daily_loss_limit_usd),
                                      ("weekly", week_ms, self.risk.weekly_loss_limit_usd)):
            lost = -(self.portfolio.realized_pnl_since(since_ms) + unrealized)
            if lost >= limit:
                return f"{name} loss limit reached: {-lost:,.2f} USD (limit {limit:,.2f})"
            if lost + held + risk_usd > limit:
                return (f"{name} loss budget: {max(lost, 0.0):,.2f} USD lost and {held:,.2f} at risk in open "
                        f"entries leave no room for this order's {risk_usd:,.2f} (limit {limit:,.2f})")
        return None


def _denied(epoch: int, status: BreakerStatus, reason: str, ref: float | None = None) -> GateDecision:
    return GateDecision(False, reason, 0.0, epoch, status, ref)


__all__ = ["ExchangeView", "GateDecision", "OrderGate", "OrderJournal"]
