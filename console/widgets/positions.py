"""Positions and PnL, and the orders log."""

from __future__ import annotations

from datetime import datetime, timezone

from rich.table import Table
from rich.text import Text
from textual.widgets import RichLog, Static

from core.trading.orders import Order, OrderStatus

ORDER_STYLES = {OrderStatus.DENIED: "bold red", OrderStatus.REJECTED: "red", OrderStatus.FILLED: "green",
                OrderStatus.CANCELED: "grey62", OrderStatus.PARTIALLY_FILLED: "yellow", OrderStatus.NEW: "cyan",
                OrderStatus.UNKNOWN: "bold magenta"}


class PositionsPanel(Static):
    DEFAULT_CSS = """
    PositionsPanel { height: auto; max-height: 12; padding: 0 1; }
    """

    def show(self, rows: list[tuple[str, float, float, float, float]], cash: float, equity: float,
             realized: float, fees: float, open_orders: int) -> None:
        table = Table(expand=True, box=None, padding=(0, 1), header_style="bold")
        for col in ("symbol", "qty", "avg", "last", "uPnL"):
            table.add_column(col, justify="left" if col == "symbol" else "right")
        for symbol, qty, avg, last, upnl in rows:
            table.add_row(symbol, f"{qty:g}", f"{avg:,.4f}", f"{last:,.4f}",
                          Text(f"{upnl:+,.2f}", style="green" if upnl >= 0 else "red"))
        if not rows:
            table.add_row(Text("flat", style="grey62"), "", "", "", "")
        summary = Text()
        summary.append(f"equity {equity:,.2f}  cash {cash:,.2f}  ")
        summary.append(f"realized {realized:+,.2f}", style="green" if realized >= 0 else "red")
        summary.append(f"  fees {fees:,.2f}  open orders {open_orders}")
        grid = Table.grid(expand=True)
        grid.add_row(table)
        grid.add_row(summary)
        self.update(grid)


class OrdersLog(RichLog):
    DEFAULT_CSS = """
    OrdersLog { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=500, wrap=True, markup=False, min_width=20, **kwargs)

    def add_order(self, order: Order, time_ms: int) -> None:
        when = datetime.fromtimestamp(time_ms / 1000, timezone.utc).strftime("%H:%M:%S")
        t = Text(f"{when} ", style="grey50")
        t.append(f"{order.status.value:<16}", style=ORDER_STYLES.get(order.status, ""))
        price = f" @ {order.price:g}" if order.price else f" stop {order.stop_price:g}" if order.stop_price else ""
        t.append(f" {order.side.value} {order.quantity:g} {order.symbol} {order.type.value}{price}")
        if order.filled_quantity:
            t.append(f" filled {order.filled_quantity:g} @ {order.average_price:g}")
        if order.reason and order.status in (OrderStatus.DENIED, OrderStatus.REJECTED, OrderStatus.UNKNOWN):
            t.append(f" — {order.reason}", style="grey70")
        self.write(t)
