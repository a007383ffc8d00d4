"""The interface every exchange implements (paper, Binance testnet, Binance live).

Only the order gate holds an Exchange: nothing else in the product may place an order.
Order updates and fills are pushed to the listeners the gate registers, so the book, the
journal and the console learn of them in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from core.events import Tick
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
    # True when place/cancel answer at once (the paper exchange): the gate then sends and
    # cancels under its lock through place_now/cancel_now; otherwise it awaits place()
    answers_synchronously: bool
    watched_symbols: frozenset[str]  # symbols with resting orders: the gate sends their ticks to on_tick

    def add_listeners(self, on_order: OrderListener, on_fill: FillListener) -> None:
        """Receive every order update and fill (called on the engine's loop)."""

    async def place(self, order: Order) -> Order:
        """Send an order the gate allowed. Returns its state after the exchange's answer
        (NEW, PARTIALLY_FILLED, FILLED, REJECTED or UNKNOWN)."""

    def place_now(self, order: Order) -> Order:
        """place(), answered at once (only when answers_synchronously)."""

    async def cancel(self, client_order_id: str, reason: str = "canceled on request") -> Order:
        """Cancel one open order; returns its final state (`reason` goes on the order)."""

    def cancel_now(self, client_order_ids: list[str], reason: str) -> list[Order]:
        """Issue cancels for these open orders without awaiting the answers: called
        synchronously inside the breaker's halt. Returns the orders it issued cancels for."""

    def get_order(self, client_order_id: str) -> Order | None:
        """The latest known state of an order this exchange has seen."""

    def open_orders(self) -> list[Order]:
        """Orders resting on the exchange (NEW, PARTIALLY_FILLED, UNKNOWN)."""

    def on_tick(self, tick: Tick) -> None:
        """Work resting orders against a trade of tick.symbol."""

    def restore(self, balances: Mapping[str, Any], open_orders: list[Order]) -> list[Order]:
        """Rebuild the book after a restart; returns the orders it could not rest again."""

    def quotes(self, symbol: str) -> tuple[float, float] | None:
        """(bid, ask) now, or None without market data."""

    def depth_usd(self, symbol: str) -> float:
        """USD available at the touch of each side."""

    def balances(self) -> dict[str, dict[str, float]]:
        """{asset: {"free": x, "locked": y}}."""
