"""The operator's hands on the book, in every breaker state: flatten one position or all of
them (F), cancel one order (X). Both are confirmed here and carried out by the session,
through the gate, and journaled."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, Static

from console.screens.confirm import ReasonInput
from console.screens.dialog import Dialog
from core.trading.orders import Order

ALL = "ALL"


@dataclass(frozen=True)
class FlattenRequest:
    symbol: str | None  # None: every position
    reason: str


@dataclass(frozen=True)
class CancelRequest:
    client_order_id: str
    reason: str


class _BookDialog(Dialog):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    _BookDialog { align: center middle; }
    _BookDialog > Vertical { width: 84; max-width: 98%; height: auto; max-height: 95%; border: thick $warning; padding: 1 2; background: $surface; }
    _BookDialog .title { text-style: bold; }
    _BookDialog .note { color: $warning; }
    """

    def on_mount(self) -> None:
        self.query_one("#choice", Input).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _reason(self) -> str:
        return self.query_one("#reason", Input).value.strip()


class FlattenScreen(_BookDialog):
    """Which position (a symbol, or ALL), and why. Each is sold at market, reduce-only; its
    stops are cancelled first and come back if the sale is refused."""

    def __init__(self, positions: list[tuple[str, float, float, float, float]]) -> None:
        super().__init__()
        self.positions = positions

    def compose(self) -> ComposeResult:
        table = Table(box=None, padding=(0, 1), header_style="bold")
        for col in ("symbol", "qty", "avg", "last", "uPnL"):
            table.add_column(col, justify="left" if col == "symbol" else "right")
        for symbol, qty, avg, last, upnl in self.positions:
            table.add_row(symbol, f"{qty:g}", f"{avg:,.4f}", f"{last:,.4f}",
                          Text(f"{upnl:+,.2f}", style="green" if upnl >= 0 else "red"))
        default = self.positions[0][0] if len(self.positions) == 1 else ALL
        with Vertical():
            yield Label("Flatten: sell at market, reduce-only, in any breaker state", classes="title")
            yield Static(table)
            yield Static("The position's stops are cancelled first, and put back if the sale is refused. "
                         "Enter confirms, Escape cancels.", classes="note")
            yield Input(value=default, placeholder=f"a symbol above, or {ALL}", id="choice")
            yield ReasonInput(placeholder="reason (optional)", id="reason")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "choice":
            choice = event.value.strip().upper()
            if choice != ALL and choice not in {p[0] for p in self.positions}:
                self.notify(f"no open position in {choice or '(empty)'}: type a symbol above or {ALL}",
                            severity="warning")
                return
            self.query_one("#reason", Input).focus()
            return
        choice = self.query_one("#choice", Input).value.strip().upper()
        if choice != ALL and choice not in {p[0] for p in self.positions}:
            self.query_one("#choice", Input).focus()
            return
        self.dismiss(FlattenRequest(None if choice == ALL else choice, self._reason() or "operator flatten"))


class CancelOrderScreen(_BookDialog):
    """Which open order (its number), and why. Cancelling a position's protective stop leaves
    that position unprotected: the dialog says so."""

    def __init__(self, orders: list[Order]) -> None:
        super().__init__()
        self.orders = orders

    def compose(self) -> ComposeResult:
        table = Table(box=None, padding=(0, 1), header_style="bold")
        for col in ("#", "side", "qty", "symbol", "type", "price", "kind"):
            table.add_column(col)
        for i, o in enumerate(self.orders, start=1):
            price = f"{o.price:g}" if o.price else f"stop {o.stop_price:g}" if o.stop_price else "market"
            kind = Text("protective exit", style="bold yellow") if o.reduce_only else Text("entry")
            table.add_row(str(i), o.side.value, f"{o.remaining:g}", o.symbol, o.type.value, price, kind)
        with Vertical():
            yield Label("Cancel one order (allowed in any breaker state)", classes="title")
            yield Static(table)
            yield Static("Cancelling a protective exit leaves its position without that protection. "
                         "Enter confirms, Escape cancels.", classes="note")
            yield Input(value="1" if len(self.orders) == 1 else "", placeholder="order number", id="choice")
            yield ReasonInput(placeholder="reason (optional)", id="reason")

    def _chosen(self) -> Order | None:
        text = self.query_one("#choice", Input).value.strip()
        if text.isdigit() and 1 <= int(text) <= len(self.orders):
            return self.orders[int(text) - 1]
        return None

    def on_input_submitted(self, event: Input.Submitted) -> None:
        order = self._chosen()
        if order is None:
            self.notify(f"type an order number from 1 to {len(self.orders)}", severity="warning")
            self.query_one("#choice", Input).focus()
            return
        if event.input.id == "choice":
            self.query_one("#reason", Input).focus()
            return
        self.dismiss(CancelRequest(order.client_order_id, self._reason()))
