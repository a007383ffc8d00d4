"""The interface every exchange implements (paper, Binance testnet, Binance live).

Only the order gate holds an Exchange: nothing else in the product may place an order.
Order updates and fills are pushed to the listeners the gate registers, so the book, the
journal and the console learn of them in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from core.trading.orders import Fill, Order

OrderListener = Callable[[Order], None]
FillListener = Callable[[Fill], None]


class ExchangeError(Exception):
    """The exchange refused or failed a request; `order` carries the resulting state."""

    def __init__(self, message: str, order: Order | None = None) -> None:
        super().__init__(message)
        self.order = order


class Exchange(Protocol):
    name: str  # "paper", "testnet", "live"

    def add_listeners(self, on_order: OrderListener, on_fill: FillListener) -> None:
        """Receive every order update and fill (called on the engine's loop)."""

    async def place(self, order: Order) -> Order:
        """Send an order the gate allowed. Returns its state after the exchange's answer
        (NEW, PARTIALLY_FILLED, FILLED, REJECTED or UNKNOWN)."""

    async def cancel(self, client_order_id: str) -> Order:
        """Cancel one open order; returns its final state."""

    def cancel_all_now(self, symbol: str | None = None) -> list[Order]:
        """Issue cancels for every open order (or one symbol's) without awaiting the answers:
        called synchronously inside the breaker's halt. Returns the orders it issued cancels for."""

    def open_orders(self) -> list[Order]:
        """Orders resting on the exchange (NEW, PARTIALLY_FILLED, UNKNOWN)."""
