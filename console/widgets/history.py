"""The history panes: breaker, alerts, orders and fills, operator actions (core.history).

Each pane is a filter field over a log, one line per entry (cut to the width). The log is a
Line-API view: it keeps the matching entries and renders only the rows on screen, so a new
filter over a thousand entries is one pass of substring tests, not a thousand renders. New
entries are appended as they come, and the view follows the end unless the operator scrolled
up. Tabs in a narrow space, side by side in a wide one (`HistoryPanes(side_by_side=...)`).
`/` in a pane focuses its filter; Escape clears it.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timezone
from functools import lru_cache

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, TabbedContent, TabPane

from core.history import PANE_TITLES, PANES, HistoryBook, HistoryEntry

LOG_LINES = 2_000
SEVERITY_MARKS = {"error": ("✖ ", "bold red"), "warning": ("▲ ", "bold yellow"), "info": ("  ", "")}
LABEL_STYLES = {"TRIGGERED": "bold red", "WARNING": "bold yellow", "RECOVERING": "bold blue", "SAFE": "bold green",
                "FILL": "bold green", "FILLED": "green", "DENIED": "bold red", "REJECTED": "red",
                "UNKNOWN": "bold magenta", "CANCELED": "grey62"}


BODY_INDENT = "    "
MAX_BODY_ROWS = 3  # an entry that needs more is cut with an ellipsis (the journal has it whole)


@lru_cache(maxsize=2 * LOG_LINES)  # a new filter redraws the same entries: each is built once
def entry_parts(entry: HistoryEntry) -> tuple[Text, Text]:
    """The entry's head (time, severity, label, actor) and its text."""
    when = datetime.fromtimestamp(entry.time_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    mark, mark_style = SEVERITY_MARKS.get(entry.severity, SEVERITY_MARKS["info"])
    head = Text(f"{when} ", style="grey58")
    head.append(mark, style=mark_style)
    head.append(entry.label, style=LABEL_STYLES.get(entry.label, "bold"))
    if entry.actor:
        head.append(f" by {entry.actor}", style="cyan")
    return head, Text(entry.text)


def wrap_spans(text: str, width: int, max_rows: int) -> tuple[list[tuple[int, int]], bool]:
    """Where `text` breaks into rows of at most `width` (at a space when there is one), and
    whether it was cut at `max_rows`. Plain string work: a filter re-lays a thousand entries."""
    spans: list[tuple[int, int]] = []
    i, n, width = 0, len(text), max(1, width)
    while i < n and len(spans) < max_rows:
        if n - i <= width:
            spans.append((i, n))
            return spans, False
        cut = text.rfind(" ", i, i + width + 1)
        if cut <= i:
            cut = i + width
        spans.append((i, cut))
        i = cut
        while i < n and text[i] == " ":
            i += 1
    return spans, i < n


class HistoryLog(ScrollView, can_focus=True):
    """The pane's entries: one row when the entry fits, else its head then its text wrapped
    under it (at most MAX_BODY_ROWS); Strips made for the rows on screen only."""

    DEFAULT_CSS = """
    HistoryLog { height: 1fr; overflow-x: hidden; scrollbar-size-vertical: 1; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.items: deque[tuple[Text, Text | None]] = deque(maxlen=LOG_LINES)  # (head, text); a rule has no text
        self._rows: list[tuple[tuple[Text, Text | None], int]] = []  # (item, its row number)
        self._laid_width = 0
        self._new: list[tuple[Text, Text | None]] = []  # written since the last flush
        self._strips: dict[tuple[int, int, int], Strip] = {}  # (id of the head, row, width) -> strip

    @property
    def lines(self) -> list[str]:
        """One plain line per entry (head and text), what the log holds."""
        return [head.plain + (f"  {body.plain}" if body is not None else "") for head, body in self.items]

    def clear(self) -> None:
        self.items.clear()
        self._strips.clear()
        self._new.clear()
        self._layout()

    def write(self, head: Text, body: Text | None = None) -> None:
        self.items.append((head, body))
        self._new.append(self.items[-1])

    def flush(self) -> None:
        """After writes: the new rows (only theirs are laid out, unless old ones dropped off the
        end or the width changed), and the view follows the end if it was there."""
        following = self.scroll_offset.y >= self.max_scroll_y - 1
        width = self.size.width or 80
        if width == self._laid_width and len(self.items) < LOG_LINES:  # nothing dropped off the front
            for item in self._new:
                self._rows.extend((item, r) for r in range(self._row_count(item, width)))
            self._new.clear()
            size = Size(width, len(self._rows))
            if size != self.virtual_size:
                self.virtual_size = size
        else:
            self._layout()
        if following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def _layout(self) -> None:
        self._new.clear()
        width = self.size.width or 80
        self._laid_width = width
        rows: list[tuple[tuple[Text, Text | None], int]] = []
        for item in self.items:
            rows.extend((item, r) for r in range(self._row_count(item, width)))
        self._rows = rows
        size = Size(width, len(rows))
        if size != self.virtual_size:
            self.virtual_size = size

    @staticmethod
    def _row_count(item: tuple[Text, Text | None], width: int) -> int:
        head, body = item
        if body is None or head.cell_len + 2 + body.cell_len <= width:
            return 1
        return 1 + len(wrap_spans(body.plain, width - len(BODY_INDENT), MAX_BODY_ROWS)[0])

    def on_resize(self) -> None:
        if self.size.width != self._laid_width:
            self._strips.clear()
            self._layout()

    def render_line(self, y: int) -> Strip:
        index = y + self.scroll_offset.y
        width = self.size.width
        if index >= len(self._rows) or width <= 0:
            return Strip.blank(width, self.rich_style)
        item, row = self._rows[index]
        key = (id(item[0]), row, width)
        strip = self._strips.get(key)
        if strip is None:
            if len(self._strips) > 4 * LOG_LINES:
                self._strips.clear()
            strip = self._strips[key] = self._make_row(item, row, width)
        return strip

    def _make_row(self, item: tuple[Text, Text | None], row: int, width: int) -> Strip:
        head, body = item
        if row == 0:
            line = head.copy()
            if body is not None and head.cell_len + 2 + body.cell_len <= width:
                line.append("  ")
                line.append_text(body)
        else:
            spans, cut = wrap_spans(body.plain, width - len(BODY_INDENT), MAX_BODY_ROWS)  # type: ignore[union-attr]
            start, end = spans[row - 1]
            line = Text(BODY_INDENT) + body[start:end]  # type: ignore[index]
            if cut and row == len(spans):
                line.append("…")
        line.truncate(width, overflow="ellipsis")
        segments = [Segment(seg.text, seg.style or Style()) for seg in line.render(self.app.console)]
        return Strip(segments).extend_cell_length(width, Style()).crop(0, width)  # a styled pad: NO_COLOR filters every style


class HistoryPane(Vertical):
    """One pane of the book: its filter and its log."""

    BINDINGS = [Binding("slash", "focus_filter", "Filter", show=False),
                Binding("escape", "clear_filter", "Clear filter", show=False)]
    DEFAULT_CSS = """
    HistoryPane { height: 1fr; }
    HistoryPane > Input { height: 1; border: none; padding: 0 1; background: $boost; }
    HistoryPane > Input:focus { background: $accent 30%; text-style: bold; }
    """

    def __init__(self, pane: str, **kwargs) -> None:
        super().__init__(id=f"history-{pane}", **kwargs)
        self.pane = pane
        self.query_text = ""
        self._bookmark = 0
        self._past_shown: bool | None = None  # the last entry's `past`: a rule marks where this run starts
        self._book: HistoryBook | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder=f"filter {PANE_TITLES[self.pane].lower()} (/): text, symbol, actor, error…",
                    id=f"filter-{self.pane}")
        yield HistoryLog(id=f"log-{self.pane}")

    @property
    def log_view(self) -> HistoryLog:
        return self.query_one(HistoryLog)

    def shown_lines(self) -> list[str]:
        """One plain line per entry (and rule) the log holds."""
        return self.log_view.lines

    def sync(self, book: HistoryBook) -> None:
        """Append what the book added since the last sync (or rebuild, past its bound)."""
        self._book = book
        bookmark, new = book.tail(self.pane, self._bookmark)
        if new is None:
            self._rebuild()
            return
        self._bookmark = bookmark
        self._write(e for e in new if e.matches(self.query_text))

    def _rebuild(self) -> None:
        self.log_view.clear()
        self._past_shown = None
        if self._book is None:
            return
        self._bookmark = self._book.added[self.pane]
        self._write(self._book.entries(self.pane, self.query_text), cleared=True)

    def _write(self, entries, cleared: bool = False) -> None:
        log = self.log_view
        wrote = cleared
        for entry in entries:
            wrote = True
            if entry.past != self._past_shown:
                rule = "── from the journal: earlier runs ──" if entry.past else "── this run ──"
                if entry.past or self._past_shown is not None:
                    log.write(Text(rule, style="grey50"))
                self._past_shown = entry.past
            log.write(*entry_parts(entry))
        if wrote:
            log.flush()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.query_text = event.value.strip()
        self._rebuild()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.log_view.focus()

    def action_focus_filter(self) -> None:
        self.query_one(Input).focus()

    def action_clear_filter(self) -> None:
        field = self.query_one(Input)
        if field.value:
            field.value = ""  # Changed rebuilds
        self.log_view.focus()


def history_tab_panes() -> list[TabPane]:
    """The four panes as tabs (the compact layout puts them beside its own)."""
    return [TabPane(PANE_TITLES[p], HistoryPane(p), id=f"tab-history-{p}") for p in PANES]


class HistoryPanes(Vertical):
    """The four panes, as tabs or side by side."""

    DEFAULT_CSS = """
    HistoryPanes { height: 1fr; }
    HistoryPanes > Horizontal > HistoryPane { width: 1fr; border-top: solid $primary-darken-2;
                                               border-title-style: bold; }
    HistoryPanes TabPane { padding: 0; }
    """

    def __init__(self, side_by_side: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.side_by_side = side_by_side

    def compose(self) -> ComposeResult:
        if self.side_by_side:
            with Horizontal():
                for pane in PANES:
                    widget = HistoryPane(pane)
                    widget.border_title = PANE_TITLES[pane]
                    yield widget
        else:
            with TabbedContent(id="history-tabs"):
                yield from history_tab_panes()
