"""The help screen: every key, what it does, and what the breaker states mean."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.screens.dialog import Dialog
from core.breaker.machine import STATE_POLICY

KEYS = [
    ("a", "approve the selected proposal (the gate checks again; shows what changed)"),
    ("r", "reject the selected proposal (asks for an optional reason)"),
    ("T Enter", "kill switch: force-TRIGGER the breaker at once (a reason may be typed first; works over any dialog)"),
    ("C", "clear the breaker (asks for a reason; deep drops need a typed override)"),
    ("F", "flatten one position or all: sell at market, reduce-only, in any breaker state (confirmed)"),
    ("X", "cancel one open order, in any breaker state (confirmed)"),
    ("o", "sort the board: by 1h change, by 60-minute drop, by volume multiple, default"),
    ("Enter", "on a board row: that symbol's last hour as a chart, its spikes and its orders"),
    ("/", "in a history pane: filter it (text, symbol, actor, error, warning); Escape clears"),
    ("tab", "move the focus between the panels (the focused one has a bar down its left edge)"),
    ("p", "pause / resume the scanner"),
    ("space", "pause / resume the feed (replay or sim)"),
    ("?", "this help"),
    ("ctrl+p", "command palette"),
    ("q", "quit (asks when positions or orders are open)"),
]


class HelpScreen(Dialog[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; max-width: 98%; height: auto; max-height: 90%; border: thick $primary; padding: 0 1; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        keys = Table(title="Keys", expand=True, box=None)
        keys.add_column("key", style="bold cyan", no_wrap=True)
        keys.add_column("action")
        for key, what in KEYS:
            keys.add_row(key, what)
        states = Table(title="Breaker states", expand=True, box=None)
        states.add_column("state", style="bold", no_wrap=True)
        states.add_column("orders")
        for status, policy in STATE_POLICY.items():
            states.add_row(status.value, policy)
        with VerticalScroll():
            yield Static(keys)
            yield Static(states)
            yield Static("Escape closes.")

    def action_close(self) -> None:
        self.dismiss(None)
