"""The price board: one Line-API widget, one row per symbol.

Rows are rendered once per frame into Strips (`update_rows`), and `render_line` only hands
them out, so fifty symbols at 10 Hz cost one refresh a frame, not fifty widget updates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

SPARK_CHARS = "▁▂▃▄▅▆▇█"
FLASH_SECONDS = 0.4


@dataclass(frozen=True)
class BoardRow:
    """Everything one row shows; the app builds these from the engine's market state."""

    symbol: str
    last: float
    change_1m: float
    change_5m: float
    change_1h: float
    closes: list[float]  # one-minute closes of the last hour (the engine's own list: not copied)
    spark_version: int  # changes when a minute closes: the sparkline is cached until then
    volume_multiple: float
    drop_60m: float
    trigger_level: float  # the drop that trips the breaker for this symbol (or market-wide)
    reference: bool  # a breaker reference symbol (BTC, ETH)


S_HEADER = Style(bold=True, color="bright_white", bgcolor="grey23")
S_SYMBOL = Style(bold=True)
S_REF = Style(bold=True, color="bright_cyan")
S_UP = Style(color="green")
S_DOWN = Style(color="red")
S_FLAT = Style(color="grey62")
S_FLASH_UP = Style(bold=True, color="bright_green")
S_FLASH_DOWN = Style(bold=True, color="bright_red")
S_SPARK = Style(color="steel_blue1")
S_WARN = Style(color="yellow", bold=True)
S_DANGER = Style(color="white", bgcolor="red", bold=True)
S_DIM = Style(color="grey50")


def sparkline(values: tuple[float, ...], width: int) -> str:
    if width <= 0 or not values:
        return " " * max(0, width)
    vals = values[-width:]
    lo, hi = min(vals), max(vals)
    span = hi - lo
    if span <= 0:
        return (SPARK_CHARS[3] * len(vals)).rjust(width)
    top = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[int((v - lo) / span * top)] for v in vals).rjust(width)


def fmt_price(p: float) -> str:
    if p != p:
        return "-"
    if p >= 1000:
        return f"{p:,.2f}"
    if p >= 1:
        return f"{p:.4f}"
    return f"{p:.6f}"


def _pct(x: float) -> tuple[str, Style]:
    if x != x:
        return "    -", S_DIM
    style = S_UP if x > 0.005 else S_DOWN if x < -0.005 else S_FLAT
    return f"{x:+6.2f}", style


class PriceBoard(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    PriceBoard { height: 1fr; min-height: 4; overflow-x: hidden; scrollbar-size-vertical: 1; }
    """

    def __init__(self, *, id: str | None = None, clock=time.monotonic) -> None:  # noqa: A002
        super().__init__(id=id)
        self._rows: list[BoardRow] = []
        self._strips: list[Strip] = []
        self._last_price: dict[str, float] = {}
        self._flash: dict[str, tuple[float, bool]] = {}  # symbol -> (until, up)
        self._clock = clock
        self._width = 0
        self._sparks: dict[str, tuple[tuple[int, int], str]] = {}

    @property
    def flashing(self) -> bool:
        """A flash is showing: keep repainting until it fades."""
        now = self._clock()
        return any(until > now for until, _ in self._flash.values())

    # ------------------------------------------------------------------ data in (once per frame)
    def update_rows(self, rows: list[BoardRow]) -> None:
        now = self._clock()
        for row in rows:
            prev = self._last_price.get(row.symbol)
            if prev is not None and row.last != prev:
                self._flash[row.symbol] = (now + FLASH_SECONDS, row.last > prev)
            self._last_price[row.symbol] = row.last
        self._rows = rows
        self._rebuild(now)
        size = Size(self._width, len(self._strips))
        if size != self.virtual_size:
            self.virtual_size = size  # a layout only when the row count changes
        self.refresh()

    def on_resize(self) -> None:
        self._rebuild(self._clock())
        self.refresh()

    # ------------------------------------------------------------------ layout
    # symbol, last, three changes, volume multiple, drop/trigger
    _FIXED = 10 + 12 + 7 * 3 + 6 + 12

    def _columns(self, width: int) -> tuple[int, bool]:
        spark = width - self._FIXED
        return min(max(spark, 0), 60), spark >= 8

    def _rebuild(self, now: float) -> None:
        width = self.size.width or 80
        self._width = width
        spark_w, show_spark = self._columns(width)
        header = [
            ("SYMBOL".ljust(10), S_HEADER), ("LAST".rjust(12), S_HEADER), ("  1m%".rjust(7), S_HEADER),
            ("  5m%".rjust(7), S_HEADER), ("  1h%".rjust(7), S_HEADER),
        ]
        if show_spark:
            header.append((" " + "1h".center(spark_w - 1), S_HEADER))
        header += [(" VOLx".rjust(6), S_HEADER), ("DROP/TRIG".rjust(12), S_HEADER)]
        strips = [self._strip(header, width, S_HEADER)]
        for row in self._rows:
            cells: list[tuple[str, Style]] = [(row.symbol.ljust(10)[:10], S_REF if row.reference else S_SYMBOL)]
            flash = self._flash.get(row.symbol)
            last_style = S_SYMBOL
            if flash and flash[0] > now:
                last_style = S_FLASH_UP if flash[1] else S_FLASH_DOWN
            cells.append((fmt_price(row.last).rjust(12), last_style))
            for value in (row.change_1m, row.change_5m, row.change_1h):
                text, style = _pct(value)
                cells.append((text.rjust(7), style))
            if show_spark:
                key = (row.spark_version, spark_w)
                cached = self._sparks.get(row.symbol)
                if cached is None or cached[0] != key:
                    cached = (key, " " + sparkline(tuple(row.closes), spark_w - 1))
                    self._sparks[row.symbol] = cached
                cells.append((cached[1], S_SPARK))
            vm = row.volume_multiple
            cells.append((f"{vm:5.1f}x" if vm > 0 else "    - ", S_WARN if vm >= 3 else S_FLAT))
            ratio = row.drop_60m / row.trigger_level if row.trigger_level > 0 else 0.0
            drop_style = S_DANGER if ratio >= 1 else S_WARN if ratio >= 0.66 else S_FLAT
            cells.append((f"{row.drop_60m:5.1f}/{row.trigger_level:g}%".rjust(12), drop_style))
            strips.append(self._strip(cells, width, Style()))
        self._strips = strips

    @staticmethod
    def _strip(cells: list[tuple[str, Style]], width: int, fill: Style) -> Strip:
        segments = [Segment(text, style) for text, style in cells]
        strip = Strip(segments)
        return strip.extend_cell_length(width, fill).crop(0, width)

    # ------------------------------------------------------------------ the Line API
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = y + scroll_y
        if y == 0 and self._strips:
            return self._strips[0]  # the header stays put
        if index >= len(self._strips):
            return Strip.blank(self.size.width, self.rich_style)
        return self._strips[index].crop(scroll_x, scroll_x + self.size.width)
