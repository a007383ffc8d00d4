"""The approval queue: proposals wait for the operator, expire, and go out through the gate.

Approving re-runs the gate's check against the market and breaker as they are now, shows
what changed since the proposal was made (price drift, breaker state), and refuses a
proposal that expired or whose content no longer matches the hash the operator saw.
After the entry fills, a protective stop goes out, and the take-profit is watched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.breaker.state import CircuitBreakerState
from core.bus import EventBus
from core.desk.proposal import ProposalStatus, TradeProposal
from core.events import Actor, BreakerChanged, BreakerStatus, ProposalUpdate
from core.market.state import MarketState
from core.trading.gate import OrderGate
from core.trading.orders import Fill, Order, OrderStatus, OrderType, Origin, Side

log = logging.getLogger("spikeguard.approval")

_ENTRY_TYPES = {"market": OrderType.MARKET, "limit": OrderType.LIMIT, "post_only": OrderType.POST_ONLY}


@dataclass(frozen=True)
class ApprovalPreview:
    proposal: TradeProposal
    status: ProposalStatus
    allowed: bool
    reason: str
    ttl_seconds: float
    reference_now: float | None
    drift_pct: float | None
    breaker_then: str
    breaker_now: str
    epoch_then: int
    epoch_now: int
    quantity_now: float
    intact: bool
    refusal: str | None = None  # why approving now would be refused (the same checks approve() runs), or None

    @property
    def changes(self) -> list[str]:
        out = []
        if self.drift_pct is not None:
            out.append(f"price {self.proposal.reference_price:g} -> {self.reference_now:g} ({self.drift_pct:+.2f}%)")
        if self.epoch_now != self.epoch_then:
            out.append(f"breaker {self.breaker_then} (epoch {self.epoch_then}) -> {self.breaker_now} "
                       f"(epoch {self.epoch_now})")
        if self.quantity_now and abs(self.quantity_now - self.proposal.quantity) > 1e-12:
            out.append(f"size {self.proposal.quantity:g} -> {self.quantity_now:g} under {self.breaker_now}")
        return out


@dataclass(frozen=True)
class ApprovalResult:
    ok: bool
    message: str
    order: Order | None = None


@dataclass
class _Bracket:
    proposal: TradeProposal
    entry_id: str
    filled: float = 0.0
    stop_id: str | None = None
    closed: bool = False


class ApprovalQueue:
    def __init__(self, gate: OrderGate, breaker: CircuitBreakerState, market: MarketState, bus: EventBus,
                 journal: Any = None, wall_clock: Callable[[], int] | None = None, max_drift_pct: float = 1.0,
                 spawn: Callable[[Any], None] | None = None) -> None:
        self.gate = gate
        self.breaker = breaker
        self.market = market
        self.bus = bus
        self.journal = journal
        self.wall_clock = wall_clock or (lambda: time.time_ns() // 1_000_000)
        self.max_drift_pct = max_drift_pct
        self._spawn = spawn or _spawn_logged  # the session passes its own, which it waits for
        self.proposals: dict[str, TradeProposal] = {}
        self.status: dict[str, ProposalStatus] = {}
        self.notes: dict[str, str] = {}
        self._brackets: dict[str, _Bracket] = {}  # by entry client_order_id
        self._tp_watch: dict[str, list[_Bracket]] = {}
        self._pending_by_symbol: dict[str, list[TradeProposal]] = {}  # what on_price checks for staleness
        self.on_status: list[Callable[[TradeProposal, ProposalStatus, str], None]] = []
        gate.listeners.append(self._on_order)
        gate.fill_listeners.append(self._on_fill)
        breaker.subscribe(self._on_breaker_change)

    # ------------------------------------------------------------------ queue
    def pending(self) -> list[TradeProposal]:
        return [p for pid, p in self.proposals.items() if self.status[pid] is ProposalStatus.PENDING]

    def add(self, proposal: TradeProposal) -> None:
        if not proposal.intact():
            raise ValueError("proposal content does not match its hash")
        self.proposals[proposal.proposal_id] = proposal
        self._set(proposal, ProposalStatus.PENDING, "awaiting the operator", Actor.RULE)
        if self.journal is not None:
            self.journal.submit("proposal", proposal=proposal, status=ProposalStatus.PENDING.value)

    def expire_due(self) -> list[TradeProposal]:
        now = self.wall_clock()
        expired = [p for p in self.pending() if now >= p.expires_ms]
        for p in expired:
            self._set(p, ProposalStatus.EXPIRED, "time to live ran out", Actor.RULE)
        return expired

    def _on_breaker_change(self, change: BreakerChanged) -> None:
        # a halt voids what was proposed before it: the market those proposals read is gone
        if change.status is BreakerStatus.TRIGGERED:
            for p in self.pending():
                self._set(p, ProposalStatus.SKIPPED, f"breaker TRIGGERED (epoch {change.epoch}) before approval",
                          Actor.RULE)

    # ------------------------------------------------------------------ operator decisions
    def preview(self, proposal_id: str) -> ApprovalPreview:
        p = self.proposals[proposal_id]
        status = self.status[proposal_id]
        order = self._entry_order(p)
        decision = self.gate.check(order, None)
        w = self.market.symbols.get(p.symbol)
        ref_now = w.last_price if w is not None and w.ticks else None
        drift = (ref_now / p.reference_price - 1.0) * 100.0 if ref_now else None
        if status is not ProposalStatus.PENDING:
            refusal = f"refused: the proposal is {status.value} ({self.notes.get(proposal_id, '')})"
        elif self.wall_clock() >= p.expires_ms:
            refusal = "refused: the proposal expired"
        elif drift is not None and abs(drift) > self.max_drift_pct:
            refusal = f"refused: price moved {drift:+.2f}% since the proposal (limit {self.max_drift_pct:g}%)"
        elif not decision.allowed:
            refusal = f"refused by the order gate: {decision.reason}"
        else:
            refusal = None
        return ApprovalPreview(
            proposal=p, status=status, allowed=decision.allowed, reason=decision.reason,
            ttl_seconds=p.ttl_seconds(self.wall_clock()), reference_now=ref_now, drift_pct=drift,
            breaker_then=p.breaker_status, breaker_now=self.breaker.status.value, epoch_then=p.breaker_epoch,
            epoch_now=self.breaker.epoch, quantity_now=decision.quantity, intact=p.intact(), refusal=refusal,
        )

    async def approve(self, proposal_id: str, seen_hash: str, actor: Actor = Actor.OPERATOR,
                      note: str = "") -> ApprovalResult:
        p = self.proposals.get(proposal_id)
        if p is None:
            return ApprovalResult(False, f"no proposal {proposal_id}")
        status = self.status[proposal_id]
        if status is ProposalStatus.PENDING and (not p.intact() or p.content_hash != seen_hash):
            return ApprovalResult(False, "refused: the proposal changed since it was shown (content hash differs)")
        preview = self.preview(proposal_id)  # the preview's checks are approval's: what it says is what happens
        if preview.refusal is not None:
            if status is ProposalStatus.PENDING and self.wall_clock() >= p.expires_ms:
                self._set(p, ProposalStatus.EXPIRED, "time to live ran out", Actor.RULE)
            return ApprovalResult(False, preview.refusal)
        self._set(p, ProposalStatus.APPROVED, note or "approved", actor)
        entry = self._entry_order(p)
        # registered before sending: a marketable entry fills inside the exchange's answer
        self._brackets[entry.client_order_id] = _Bracket(p, entry.client_order_id)
        order = await self.gate.submit(entry, epoch_read=preview.epoch_now)
        if order.status in (OrderStatus.DENIED, OrderStatus.REJECTED):
            self._brackets.pop(entry.client_order_id, None)
            self._set(p, ProposalStatus.FAILED, order.reason or order.status.value, Actor.RULE)
            return ApprovalResult(False, f"order {order.status.value.lower()}: {order.reason}", order)
        self._set(p, ProposalStatus.EXECUTED, f"entry {order.status.value.lower()} ({order.client_order_id})",
                  Actor.RULE)
        changes = "; ".join(preview.changes)
        return ApprovalResult(True, "sent" + (f" ({changes})" if changes else ""), order)

    def reject(self, proposal_id: str, reason: str = "", actor: Actor = Actor.OPERATOR) -> bool:
        p = self.proposals.get(proposal_id)
        if p is None or self.status[proposal_id] is not ProposalStatus.PENDING:
            return False
        self._set(p, ProposalStatus.REJECTED, reason or "rejected", actor)
        return True

    def skip(self, proposal: TradeProposal, reason: str) -> None:
        self.proposals[proposal.proposal_id] = proposal
        self._set(proposal, ProposalStatus.SKIPPED, reason, Actor.RULE)

    # ------------------------------------------------------------------ bracket: stop and take-profit
    def _entry_order(self, p: TradeProposal) -> Order:
        return Order(symbol=p.symbol, side=Side(p.side), type=_ENTRY_TYPES[p.entry_type], quantity=p.quantity,
                     price=p.entry_price, origin=Origin.AGENT, proposal_id=p.proposal_id)

    def _on_fill(self, fill: Fill) -> None:
        bracket = self._brackets.get(fill.client_order_id)
        if bracket is not None and fill.side is Side.BUY:
            bracket.filled += fill.quantity

    def _on_order(self, order: Order) -> None:
        bracket = self._brackets.get(order.client_order_id)
        if bracket is None or order.status not in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED):
            return
        if bracket.filled <= 0 or bracket.stop_id is not None:
            return
        stop = Order(symbol=order.symbol, side=Side.SELL, type=OrderType.STOP, quantity=bracket.filled,
                     stop_price=bracket.proposal.stop_loss, reduce_only=True, origin=Origin.AGENT,
                     proposal_id=bracket.proposal.proposal_id)
        bracket.stop_id = stop.client_order_id
        self._tp_watch.setdefault(order.symbol, []).append(bracket)
        self._spawn(self.gate.submit(stop))

    def on_price(self, symbol: str, price: float) -> None:
        """A pending proposal whose price passed its stop or target, or drifted past the limit,
        expires by itself; then the take-profit watch: a market exit (reduce-only) when the
        target trades."""
        waiting = self._pending_by_symbol.get(symbol)
        if waiting:
            for p in list(waiting):
                why = self._outdated(p, price)
                if why is not None:
                    self._set(p, ProposalStatus.EXPIRED, why, Actor.RULE)
        watch = self._tp_watch.get(symbol)
        if not watch:
            return
        for bracket in list(watch):
            if bracket.closed or price < bracket.proposal.take_profit:
                continue
            bracket.closed = True
            watch.remove(bracket)
            self._spawn(self._take_profit(bracket))

    def targets(self) -> dict[str, float]:
        """The take-profit each open position's bracket watches for (the nearest, per symbol)."""
        out: dict[str, float] = {}
        for symbol, watch in self._tp_watch.items():
            levels = [b.proposal.take_profit for b in watch if not b.closed]
            if levels:
                out[symbol] = min(levels)
        return out

    async def _take_profit(self, bracket: _Bracket) -> None:
        if bracket.stop_id:
            try:
                await self.gate.cancel(bracket.stop_id, "take-profit reached")  # releases the base the stop reserved
            except Exception:  # the stop may have fired already
                log.info("stop %s already gone", bracket.stop_id)
        held = self.gate.portfolio.quantity(bracket.proposal.symbol)
        qty = min(bracket.filled, held)
        if qty > 0:
            await self.gate.submit(Order(symbol=bracket.proposal.symbol, side=Side.SELL, type=OrderType.MARKET,
                                         quantity=qty, reduce_only=True, origin=Origin.AGENT,
                                         proposal_id=bracket.proposal.proposal_id))

    # ------------------------------------------------------------------ status
    def _outdated(self, p: TradeProposal, price: float) -> str | None:
        if price <= p.stop_loss:
            return f"passed its stop: the price {price:g} reached the stop {p.stop_loss:g} before approval"
        if price >= p.take_profit:
            return f"passed its target: the price {price:g} reached the target {p.take_profit:g} before approval"
        drift = (price / p.reference_price - 1.0) * 100.0
        if abs(drift) > self.max_drift_pct:  # the essential first: the spike queue shows 20 characters
            return f"moved {drift:+.2f}% (limit {self.max_drift_pct:g}%): the price moved since the proposal"
        return None

    def _set(self, p: TradeProposal, status: ProposalStatus, note: str, actor: Actor) -> None:
        waiting = self._pending_by_symbol.setdefault(p.symbol, [])
        if status is ProposalStatus.PENDING:
            waiting.append(p)
        elif p in waiting:
            waiting.remove(p)
        self.status[p.proposal_id] = status
        self.notes[p.proposal_id] = note
        log.info("proposal %s %s %s: %s (%s)", p.proposal_id, p.symbol, status.value, note, actor.value)
        if self.journal is not None and status is not ProposalStatus.PENDING:
            self.journal.submit("proposal_update", proposal_id=p.proposal_id, status=status.value,
                                decided_by=actor.value, decision_reason=note)
        self.bus.publish(ProposalUpdate(p, status.value, note, actor.value))
        for fn in self.on_status:
            fn(p, status, note)


def _spawn_logged(coro: Any) -> None:
    asyncio.get_running_loop().create_task(coro).add_done_callback(log_task_error)


def log_task_error(task: asyncio.Task) -> None:
    """A done-callback: a background task's failure goes to the log instead of vanishing."""
    if not task.cancelled() and task.exception() is not None:
        log.error("desk task failed", exc_info=task.exception())
