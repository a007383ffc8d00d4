"""What the order gate has promised but the book does not show yet.

An order the gate allows reserves its share of every budget at check time: exposure and
open positions (the quantity not yet filled), the loss budget (its risk at the stop), and
a slot of the order rate. Concurrent checks see what earlier ones reserved, so fifty
simultaneous buys cannot each see an empty book. A reservation shrinks as the order fills
(the position takes over) and is released when the order is denied, rejected, cancelled,
expired or filled. An order whose result is unknown keeps its reservation: fail closed.

Not thread-safe on its own: the gate calls it under its lock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from core.trading.orders import Order, OrderStatus, Side

RATE_WINDOW_MS = 60_000


@dataclass
class Reservation:
    client_order_id: str
    symbol: str
    side: Side
    entry: bool  # False for reduce-only exits
    remaining: float  # quantity not filled yet
    risk_per_unit: float  # loss budget held per unit (entries): price x the configured stop distance
    epoch: int  # the breaker epoch the check read

    @property
    def risk_usd(self) -> float:
        return self.remaining * self.risk_per_unit


class ReservationLedger:
    def __init__(self) -> None:
        self._by_id: dict[str, Reservation] = {}
        self.unknown: set[str] = set()  # orders whose result is unknown: sent, never answered for

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, client_order_id: str) -> bool:
        return client_order_id in self._by_id

    def reserve(self, r: Reservation) -> None:
        self._by_id[r.client_order_id] = r

    def release(self, client_order_id: str) -> Reservation | None:
        return self._by_id.pop(client_order_id, None)

    def on_order(self, order: Order) -> None:
        """Follow an order update: shrink by what filled, release when the order is final."""
        if order.status is OrderStatus.UNKNOWN:
            self.unknown.add(order.client_order_id)
        else:
            self.unknown.discard(order.client_order_id)
        r = self._by_id.get(order.client_order_id)
        if r is None:
            return
        if order.status.is_final:
            del self._by_id[order.client_order_id]
        elif order.status is not OrderStatus.UNKNOWN:
            r.remaining = min(r.remaining, order.remaining)

    # ------------------------------------------------------------------ sums the check needs
    def entry_quantity(self, symbol: str) -> float:
        return sum(r.remaining for r in self._by_id.values() if r.entry and r.symbol == symbol)

    def exit_quantity(self, symbol: str) -> float:
        return sum(r.remaining for r in self._by_id.values() if not r.entry and r.symbol == symbol)

    def entry_symbols(self) -> set[str]:
        return {r.symbol for r in self._by_id.values() if r.entry and r.remaining > 0}

    def risk_usd(self) -> float:
        return sum(r.risk_usd for r in self._by_id.values() if r.entry)


class RateWindow:
    """Orders sent in the trailing minute. A slot is taken at check time and given back only
    if the order is never sent (denied after the check); a rejected order was sent."""

    def __init__(self) -> None:
        self._slots: deque[tuple[int, str]] = deque()

    def count(self, now_ms: int) -> int:
        slots = self._slots
        while slots and slots[0][0] <= now_ms - RATE_WINDOW_MS:
            slots.popleft()
        return len(slots)

    def take(self, now_ms: int, client_order_id: str) -> None:
        self._slots.append((now_ms, client_order_id))

    def give_back(self, client_order_id: str) -> None:
        for i, (_, cid) in enumerate(self._slots):
            if cid == client_order_id:
                del self._slots[i]
                return


__all__ = ["RATE_WINDOW_MS", "RateWindow", "Reservation", "ReservationLedger"]
