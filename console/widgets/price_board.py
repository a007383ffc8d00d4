"""The price board: one Line-API widget, one row per symbol.

Rows are sorted and rendered once per frame into Strips (`update_rows`), and `render_line`
only hands them out, so fifty symbols at 10 Hz cost one refresh a frame, not fifty widget
updates. Every sparkline is percent from its window's open on one scale, stated in the header,
so rows compare at a glance and calm noise stays flat.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.widgets.chart import extent, fmt_price, nice_scale, percents, sparkline

__all__ = ["BoardRow", "PriceBoard", "SORT_MODES", "fmt_age", "fmt_price", "sort_rows"]

FLASH_SECONDS = 0.4
AGE_WARN_S, AGE_STALE_S = 5.0, 30.0
SPARK_MAX = 60  # glyphs: the engine keeps an hour of one-minute closes


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
    age_s: float = math.nan  # seconds since the symbol's last tick, on the market clock


# Colours are chosen to stay light under NO_COLOR's greyscale (Textual's own red turns dark
# grey there), and danger is reverse video, which survives without colour.
S_HEADER = Style(bold=True, color="bright_white", bgcolor="grey23")
S_SYMBOL = Style(bold=True)
S_REF = Style(bold=True, color="bright_cyan")
S_UP = Style(color="green")
S_DOWN = Style(color="light_coral")
S_FLAT = Style(color="grey62")  # zero, or a magnitude that is not a concern: never a negative
S_FLASH_UP = Style(bold=True, color="bright_green")
S_FLASH_DOWN = Style(bold=True, color="light_coral")
S_SPARK = Style(color="steel_blue1")
S_WARN = Style(color="yellow", bold=True)
S_STALE = Style(color="light_coral", bold=True)
S_DANGER = Style(color="bright_white", bgcolor="red", bold=True, reverse=True)  # red on white
S_DIM = Style(color="grey50")  # a missing value ("-")
S_PLAIN = Style()

# mode -> the header column that shows the arrow
SORT_MODES: dict[str, str | None] = {"default": None, "change": "1h%", "drop": "DROP", "volume": "VOLx"}


def _last_nan(x: float, sign: float) -> tuple[bool, float]:
    return (True, 0.0) if x != x else (False, sign * x)


_SORT_KEYS = {
    "change": lambda r: _last_nan(r.change_1h, 1.0),  # worst first
    "drop": lambda r: _last_nan(r.drop_60m, -1.0),  # largest first
    "volume": lambda r: _last_nan(r.volume_multiple, -1.0),  # highest first
}


def sort_rows(rows: list[BoardRow], mode: str) -> list[BoardRow]:
    """References first, then the given (config) order; a mode sorts that order again, and
    Python's sort is stable, so ties keep it."""
    ordered = sorted(rows, key=lambda r: not r.reference)
    key = _SORT_KEYS.get(mode)
    return sorted(ordered, key=key) if key else ordered


def fmt_age(age_s: float) -> tuple[str, Style]:
    """A feed's age, short (0s, 12s, 3m, 2h, 1d), styled by how long it has been silent."""
    if age_s != age_s:
        return "-", S_DIM
    s = max(age_s, 0.0)  # a tick stamped a little ahead of the clock is fresh
    text = (f"{int(s)}s" if s < 60 else f"{int(s // 60)}m" if s < 3600 else
            f"{int(s // 3600)}h" if s < 86400 else f"{int(s // 86400)}d")
    return text, S_STALE if s > AGE_STALE_S else S_WARN if s > AGE_WARN_S else S_FLAT


def _pct(x: float) -> tuple[str, Style]:
    if x != x:
        return "-", S_DIM
    if abs(x) < 0.005:
        return "0.00", S_FLAT  # not "-0.00": a negative is never shown flat
    return f"{x:+.2f}", S_UP if x > 0 else S_DOWN


class PriceBoard(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    PriceBoard { height: 1fr; min-height: 4; overflow-x: hidden; scrollbar-size-vertical: 1; }
    """
    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "cursor_page(-1)", "Page up", show=False),
        Binding("pagedown", "cursor_page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
        Binding("enter", "choose", "Detail", show=False),
    ]

    class SymbolChosen(Message):
        """Enter on a row: the operator wants that symbol's detail."""

        def __init__(self, symbol: str) -> None:
            super().__init__()
            self.symbol = symbol

    # column widths, each with its one-space gap on the left (the symbol's is on its right)
    W_SYMBOL, W_LAST, W_PCT, W_AGE, W_VOL, W_DROP = 10, 11, 7, 4, 6, 11
    _FIXED = W_SYMBOL + W_LAST + 3 * W_PCT + W_AGE + W_VOL + W_DROP
    SPARK_MIN = 8

    def __init__(self, *, id: str | None = None, clock=time.monotonic) -> None:  # noqa: A002
        super().__init__(id=id)
        self.sort_mode = "default"
        self.cursor = 0  # index into the sorted rows
        self.scale_pct = 1.0  # the sparklines' shared ±scale, as the header states it
        self._given: list[BoardRow] = []  # the last rows in, in config order
        self._rows: list[BoardRow] = []  # sorted
        self._cursor_symbol: str | None = None  # the cursor follows its symbol through a sort
        self._strips: list[Strip | None] = []  # the header, then one per row (None: not built this frame)
        self._last_price: dict[str, float] = {}
        self._flash: dict[str, tuple[float, bool]] = {}  # symbol -> (until, up)
        self._clock = clock
        self._width = 0
        self._pcts: dict[str, tuple[tuple[int, int], list[float], float]] = {}  # (version, glyphs), pcts, extent
        self._sparks: dict[str, tuple[tuple[int, int, float], str]] = {}  # (version, glyphs, scale), text

    @property
    def flashing(self) -> bool:
        """A flash is showing: keep repainting until it fades."""
        now = self._clock()
        return any(until > now for until, _ in self._flash.values())

    @property
    def rows(self) -> list[BoardRow]:
        """The rows as shown, sorted."""
        return self._rows

    @property
    def cursor_symbol(self) -> str | None:
        return self._rows[self.cursor].symbol if self._rows else None

    # ------------------------------------------------------------------ data in (once per frame)
    def update_rows(self, rows: list[BoardRow]) -> None:
        now = self._clock()
        for row in rows:
            prev = self._last_price.get(row.symbol)
            if prev is not None and row.last != prev:
                self._flash[row.symbol] = (now + FLASH_SECONDS, row.last > prev)
            self._last_price[row.symbol] = row.last
        self._given = rows
        self._resort()
        self._rebuild(now)
        size = Size(self._width, len(self._strips))
        if size != self.virtual_size:
            self.virtual_size = size  # a layout only when the row count changes
        self.refresh()

    def cycle_sort(self) -> str:
        """The next sort mode (default, change, drop, volume, default, …); its name."""
        modes = list(SORT_MODES)
        self.sort_mode = modes[(modes.index(self.sort_mode) + 1) % len(modes)]
        self._resort()
        self._repaint()
        return self.sort_mode

    def _resort(self) -> None:
        self._rows = sort_rows(self._given, self.sort_mode)
        symbols = [r.symbol for r in self._rows]
        if self._cursor_symbol in symbols:
            self.cursor = symbols.index(self._cursor_symbol)
        else:
            self.cursor = min(self.cursor, max(len(symbols) - 1, 0))
        self._cursor_symbol = self.cursor_symbol

    def _repaint(self) -> None:
        self._rebuild(self._clock())
        self.refresh()

    def on_resize(self) -> None:
        self._repaint()

    def watch_has_focus(self, has_focus: bool) -> None:
        super().watch_has_focus(has_focus)
        self._repaint()  # the cursor shows while the board has focus

    # ------------------------------------------------------------------ the cursor
    def action_cursor(self, step: int) -> None:
        self._move_to(self.cursor + step)

    def action_cursor_page(self, direction: int) -> None:
        self._move_to(self.cursor + direction * max(1, self.size.height - 2))

    def action_cursor_to(self, index: int) -> None:
        self._move_to(index if index >= 0 else len(self._rows) - 1)

    def _move_to(self, index: int) -> None:
        if not self._rows:
            return
        self.cursor = max(0, min(index, len(self._rows) - 1))
        self._cursor_symbol = self.cursor_symbol
        # line 0 is the header, drawn over the scroll: row i is on line i + 1 - scroll_y
        line, top, height = self.cursor + 1, int(self.scroll_offset.y), self.size.height
        if line < top + 1:
            self.scroll_to(y=line - 1, animate=False)
        elif height > 1 and line > top + height - 1:
            self.scroll_to(y=line - height + 1, animate=False)
        self._repaint()

    def action_choose(self) -> None:
        if self._rows:
            self.post_message(self.SymbolChosen(self._rows[self.cursor].symbol))

    # ------------------------------------------------------------------ layout
    def _spark_glyphs(self, width: int) -> int:
        """Sparkline glyphs at this width (0: no room for the column)."""
        glyphs = min(width - self._FIXED, SPARK_MAX + 1) - 1
        return glyphs if glyphs >= self.SPARK_MIN else 0

    def _spark_pcts(self, row: BoardRow, glyphs: int) -> tuple[list[float], float]:
        key = (row.spark_version, glyphs)
        cached = self._pcts.get(row.symbol)
        if cached is None or cached[0] != key:
            pcts = percents(row.closes[-glyphs:])
            cached = (key, pcts, extent(pcts))
            self._pcts[row.symbol] = cached
        return cached[1], cached[2]

    def _spark(self, row: BoardRow, glyphs: int, pcts: list[float]) -> str:
        key = (row.spark_version, glyphs, self.scale_pct)  # a new shared scale redraws every row
        cached = self._sparks.get(row.symbol)
        if cached is None or cached[0] != key:
            cached = (key, sparkline(pcts, glyphs, self.scale_pct))
            self._sparks[row.symbol] = cached
        return cached[1]

    def _header(self, glyphs: int, minutes: int) -> list[tuple[str, Style]]:
        arrow = SORT_MODES.get(self.sort_mode)

        def name(text: str) -> str:
            return text + "▼" if text == arrow else text

        cells = [name("SYMBOL").ljust(self.W_SYMBOL), name("LAST").rjust(self.W_LAST)]
        cells += [name(c).rjust(self.W_PCT) for c in ("1m%", "5m%", "1h%")]
        if glyphs:
            span = "1h " if minutes >= 60 else f"{minutes}m " if minutes else ""
            label = f"{span}±{self.scale_pct:g}%"
            if len(label) > glyphs:
                label = f"±{self.scale_pct:g}%"
            cells.append(" " + label.center(glyphs))
        cells += ["AGE".rjust(self.W_AGE), name("VOLx").rjust(self.W_VOL),
                  (name("DROP") + "/TRIG").rjust(self.W_DROP)]
        return [(c, S_HEADER) for c in cells]

    def _rebuild(self, now: float) -> None:
        """The frame's strips: the header and the rows on screen now; the others are built
        when they scroll into view (50 symbols, 20 rows shown: 30 rows not built)."""
        width = self.size.width or 80
        self._width = width
        glyphs = self._spark_glyphs(width)
        sparks = [self._spark_pcts(row, glyphs) for row in self._rows] if glyphs else []
        self.scale_pct = nice_scale(max((ext for _, ext in sparks), default=0.0))
        minutes = max((len(p) for p, _ in sparks), default=0)
        self._frame = (now, width, glyphs, sparks, self.cursor if self.has_focus else -1)
        self._strips = [self._strip(self._header(glyphs, minutes), width, S_HEADER)] + [None] * len(self._rows)
        top = self.scroll_offset.y
        for index in range(top + 1, min(len(self._strips), top + max(self.size.height, 1))):
            self._row_strip(index)

    def _row_strip(self, index: int) -> Strip:
        strip = self._strips[index]
        if strip is None:
            now, width, glyphs, sparks, cursor = self._frame
            i = index - 1
            row = self._rows[i]
            cells = self._cells(row, now)
            if glyphs:
                cells.insert(5, (" " + self._spark(row, glyphs, sparks[i][0]), S_SPARK))
            fill = S_PLAIN
            if i == cursor:
                # reverse video, visible without colour; a reversed cell turns back, to stay apart
                cells = [(text, style + Style(reverse=not style.reverse)) for text, style in cells]
                fill = Style(reverse=True)
            strip = self._strips[index] = self._strip(cells, width, fill)
        return strip

    def _cells(self, row: BoardRow, now: float) -> list[tuple[str, Style]]:
        """The row's cells but the sparkline; each padded to its column."""
        cells: list[tuple[str, Style]] = [(row.symbol.ljust(self.W_SYMBOL)[:self.W_SYMBOL],
                                           S_REF if row.reference else S_SYMBOL)]
        flash = self._flash.get(row.symbol)
        last_style = S_SYMBOL
        if flash and flash[0] > now:
            last_style = S_FLASH_UP if flash[1] else S_FLASH_DOWN
        cells.append((fmt_price(row.last).rjust(self.W_LAST), last_style))
        for value in (row.change_1m, row.change_5m, row.change_1h):
            text, style = _pct(value)
            cells.append((text.rjust(self.W_PCT), style))
        age, age_style = fmt_age(row.age_s)
        cells.append((age.rjust(self.W_AGE), age_style))
        vm = row.volume_multiple
        cells.append((f"{vm:.1f}x".rjust(self.W_VOL) if vm > 0 else "-".rjust(self.W_VOL),
                      S_WARN if vm >= 3 else S_FLAT if vm > 0 else S_DIM))
        ratio = row.drop_60m / row.trigger_level if row.trigger_level > 0 else 0.0
        drop_style = S_DANGER if ratio >= 1 else S_WARN if ratio >= 0.66 else S_FLAT
        drop = f"{row.drop_60m:.1f}/{row.trigger_level:g}%"
        # the gap stays plain: the danger cell's reverse video covers its text only
        cells += [(" " * max(1, self.W_DROP - len(drop)), S_PLAIN), (drop, drop_style)]
        return cells

    @staticmethod
    def _strip(cells: list[tuple[str, Style]], width: int, fill: Style) -> Strip:
        """One strip of exactly `width` cells. Every character on the board is one cell wide,
        so the length is the characters' count: padded in place, cropped only when too wide."""
        segments = [Segment(text, style) for text, style in cells]
        length = sum(len(text) for text, _ in cells)
        if length < width:
            segments.append(Segment(" " * (width - length), fill))
        elif length > width:
            return Strip(segments, length).crop(0, width)
        return Strip(segments, width)

    # ------------------------------------------------------------------ the Line API
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = y + scroll_y
        if y == 0 and self._strips:
            return self._strips[0]  # the header stays put
        if index >= len(self._strips):
            return Strip.blank(self.size.width, self.rich_style)
        strip = self._row_strip(index)
        return strip if not scroll_x and strip.cell_length == self.size.width else \
            strip.crop(scroll_x, scroll_x + self.size.width)
