"""Positions and PnL: each position's stop and target with the distance to each and its
exposure; equity and PnL since the start with a small equity line; realized PnL and fees."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from core.trading.book_view import EquityCurve, PositionView

EQUITY_GLYPHS = "▁▂▃▄▅▆▇█"


def signed(value: float, fmt: str = "+,.2f") -> Text:
    """A signed amount, green or red, and bold when negative: a loss must stay readable
    without colour (the minus sign carries it, never dim grey)."""
    return Text(format(value, fmt), style="green" if value >= 0 else "bold red")


def equity_line(points: list[float], width: int) -> str:
    """The equity curve on its own range (the panel states the range beside it)."""
    pts = points[-width:]
    lo, hi = (min(pts), max(pts)) if pts else (0.0, 0.0)
    if len(pts) < 2 or hi - lo < 0.005:
        return ""  # a flat line says nothing the PnL does not
    top = len(EQUITY_GLYPHS) - 1
    return "".join(EQUITY_GLYPHS[round((p - lo) / (hi - lo) * top)] for p in pts)


def _level(level: float | None, distance: float | None) -> Text:
    if level is None or distance is None:
        return Text("none", style="bold yellow")  # an unprotected position is worth a look
    return Text(f"{level:g} ({distance:+.1f}%)", style="bold red" if distance < 1 else "")


class PositionsPanel(Static):
    """Two lines per position (they fit a 40-column panel): what is held, then its protection."""

    DEFAULT_CSS = """
    PositionsPanel { height: auto; max-height: 16; padding: 0 1; overflow-y: auto; }
    """

    def show(self, positions: list[PositionView], curve: EquityCurve, cash: float, equity: float,
             realized: float, fees: float, open_orders: int) -> None:
        t = Text()
        for p in positions:
            t.append(f"{p.symbol:<9}", style="bold")
            t.append(f" {p.quantity:g} @ {p.average_price:,.6g}  last {p.last:,.6g}  uPnL ")
            t.append_text(signed(p.unrealized))
            t.append(f"  exposure {p.exposure_usd:,.0f}\n")
            t.append("          stop ")
            t.append_text(_level(p.stop, p.stop_distance_pct))
            t.append("  target ")
            t.append_text(_level(p.target, p.target_distance_pct))
            t.append("\n")
        if not positions:
            t.append("flat: no open position\n", style="grey62")
        t.append(f"equity {equity:,.2f}\nPnL since start ")
        t.append_text(signed(curve.pnl))
        t.append(" (")
        t.append_text(signed(curve.pnl_pct, "+.2f"))
        t.append("%)")
        points = list(curve.points)[-max(10, min(40, (self.size.width or 34) - 14)):]
        line = equity_line(points, len(points))
        if line:
            t.append(f"\n{line}", style="cyan")
            t.append(f" {min(points):,.0f}–{max(points):,.0f}", style="grey62")
        t.append(f"\ncash {cash:,.2f}  realized ")
        t.append_text(signed(realized))
        t.append(f"  fees {fees:,.2f}  open orders {open_orders}")
        self.update(t)
