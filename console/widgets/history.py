"""The history panes: breaker, alerts, orders and fills, operator actions (core.history).

Each pane is a filter field over a log. New entries are appended as they come; a new filter
rebuilds the log from the book. Tabs in a narrow space, side by side in a wide one
(`HistoryPanes(side_by_side=...)`). `/` in a pane focuses its filter; Escape clears it.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timezone

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, RichLog, TabbedContent, TabPane

from core.history import PANE_TITLES, PANES, HistoryBook, HistoryEntry

LOG_LINES = 2_000
SEVERITY_MARKS = {"error": ("✖ ", "bold red"), "warning": ("▲ ", "bold yellow"), "info": ("  ", "")}
LABEL_STYLES = {"TRIGGERED": "bold red", "WARNING": "bold yellow", "RECOVERING": "bold blue", "SAFE": "bold green",
                "FILL": "bold green", "FILLED": "green", "DENIED": "bold red", "REJECTED": "red",
                "UNKNOWN": "bold magenta", "CANCELED": "grey62"}


def entry_text(entry: HistoryEntry) -> Text:
    when = datetime.fromtimestamp(entry.time_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    mark, mark_style = SEVERITY_MARKS.get(entry.severity, SEVERITY_MARKS["info"])
    t = Text(f"{when} ", style="grey58")
    t.append(mark, style=mark_style)
    t.append(entry.label, style=LABEL_STYLES.get(entry.label, "bold"))
    if entry.actor:
        t.append(f" by {entry.actor}", style="cyan")
    t.append(f"  {entry.text}")
    return t


class HistoryPane(Vertical):
    """One pane of the book: its filter and its log."""

    BINDINGS = [Binding("slash", "focus_filter", "Filter", show=False),
                Binding("escape", "clear_filter", "Clear filter", show=False)]
    DEFAULT_CSS = """
    HistoryPane { height: 1fr; }
    HistoryPane > Input { height: 1; border: none; padding: 0 1; background: $boost; }
    HistoryPane > Input:focus { background: $accent 30%; text-style: bold; }
    HistoryPane > RichLog { height: 1fr; }
    """

    def __init__(self, pane: str, **kwargs) -> None:
        super().__init__(id=f"history-{pane}", **kwargs)
        self.pane = pane
        self.query_text = ""
        self._bookmark = 0
        self._past_shown: bool | None = None  # the last entry's `past`: a rule marks where this run starts
        self._book: HistoryBook | None = None
        self._written: deque[str] = deque(maxlen=LOG_LINES)

    def compose(self) -> ComposeResult:
        yield Input(placeholder=f"filter {PANE_TITLES[self.pane].lower()} (/): text, symbol, actor, error…",
                    id=f"filter-{self.pane}")
        yield RichLog(max_lines=LOG_LINES, wrap=True, markup=False, highlight=False, min_width=20,
                      id=f"log-{self.pane}")

    @property
    def log_view(self) -> RichLog:
        return self.query_one(RichLog)

    def shown_lines(self) -> list[str]:
        """One plain line per entry (and rule) the log holds: a hidden tab's log renders later."""
        return list(self._written)

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
        self._written.clear()
        self._past_shown = None
        if self._book is None:
            return
        self._bookmark = self._book.added[self.pane]
        self._write(self._book.entries(self.pane, self.query_text))

    def _write(self, entries) -> None:
        log = self.log_view
        for entry in entries:
            if entry.past != self._past_shown:
                rule = "── from the journal: earlier runs ──" if entry.past else "── this run ──"
                if entry.past or self._past_shown is not None:
                    log.write(Text(rule, style="grey50"))
                    self._written.append(rule)
                self._past_shown = entry.past
            text = entry_text(entry)
            log.write(text)
            self._written.append(text.plain)

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
