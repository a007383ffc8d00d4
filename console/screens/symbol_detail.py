"""One symbol's last hour: a chart of its one-minute closes, and its spikes and trades of this
session. Opened by Enter on the price board; Escape closes it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Label, Static

from console.screens.dialog import Dialog
from console.widgets.chart import chart_with_axis, fmt_price

Spike = tuple[int, str, float, str]  # time_ms, direction ("pump"/"dump"), magnitude_pct, status
Trade = tuple[int, str, float, float, str]  # time_ms, side, qty, price, status


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _when(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, timezone.utc).strftime("%H:%M:%S")


class HourChart(Widget):
    """The chart, drawn for the width it gets."""

    DEFAULT_CSS = "HourChart { height: 10; }"

    def __init__(self, closes: Sequence[float]) -> None:
        super().__init__()
        self.closes = list(closes)

    def render(self) -> Text:
        if not any(math.isfinite(v) for v in self.closes):
            return Text("no closed minute yet")
        return Text("\n".join(chart_with_axis(self.closes, self.size.width, self.size.height)))


class SymbolDetailScreen(Dialog[None]):
    BINDINGS = [Binding("escape", "close", "Close")]
    DEFAULT_CSS = """
    SymbolDetailScreen { align: center middle; }
    SymbolDetailScreen > VerticalScroll { width: 100; max-width: 98%; height: auto; max-height: 95%; border: thick $primary; padding: 0 1; background: $surface; }
    SymbolDetailScreen .title { text-style: bold; }
    """

    def __init__(self, symbol: str, closes: Sequence[float], spikes: Sequence[Spike],
                 orders: Sequence[Trade]) -> None:
        super().__init__()
        self.symbol = symbol
        self.closes = list(closes)  # the window's list changes as minutes close: this view is a snapshot
        self.spikes = list(spikes)
        self.orders = list(orders)

    def compose(self) -> ComposeResult:
        minutes = len(self.closes)
        with VerticalScroll():
            yield Label(f"{self.symbol} · {_count(minutes, 'one-minute close')} · percent from the first",
                        classes="title")
            yield HourChart(self.closes)
            yield Label(_count(len(self.spikes), "spike"), classes="title")
            yield Static(self._spike_table() if self.spikes else "none this session")
            yield Label(_count(len(self.orders), "trade"), classes="title")
            yield Static(self._order_table() if self.orders else "none this session")
            yield Static("Escape closes.")

    def _spike_table(self) -> Table:
        table = Table(box=None, padding=(0, 1), header_style="bold")
        for col, justify in (("UTC", "left"), ("move", "right"), ("status", "left")):
            table.add_column(col, justify=justify)
        for time_ms, direction, magnitude, status in self.spikes:
            up = direction == "pump"
            table.add_row(_when(time_ms), Text(f"{'▲' if up else '▼'} {magnitude:.1f}% {direction}",
                                              style="green" if up else "light_coral"), status)
        return table

    def _order_table(self) -> Table:
        table = Table(box=None, padding=(0, 1), header_style="bold")
        for col, justify in (("UTC", "left"), ("side", "left"), ("qty", "right"), ("price", "right"),
                             ("status", "left")):
            table.add_column(col, justify=justify)
        for time_ms, side, qty, price, status in self.orders:
            table.add_row(_when(time_ms), side, f"{qty:g}", fmt_price(price) if price else "market", status)
        return table

    def action_close(self) -> None:
        self.dismiss(None)
