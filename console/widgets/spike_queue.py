"""The spike queue: a DataTable with a cap on its rows; status moves detected -> analysing
-> proposed -> approved, rejected, expired or skipped, and `why` says why a spike was
skipped, blocked, expired, rejected or failed (cut to the column; the reasoning pane has the
rest). A replay's spikes show their date (`show_date`): its days are not today's."""

from __future__ import annotations

from datetime import datetime, timezone

from rich.text import Text
from textual.widgets import DataTable

from console.widgets.reasoning_log import TAGS
from core.events import SpikeDetected

STATUS_STYLES = {"detected": "white", "analysing": "cyan", "proposed": "bold yellow", "approved": "bold green",
                 "executed": "bold green", "rejected": "red", "expired": "grey50", "skipped": "grey62",
                 "blocked": "bold red", "failed": "bold red"}
COLUMNS = ("time", "symbol", "move%", "type", "status", "why")
WHY_WIDTH = 20  # with the other columns, 65 cells: the side panel at 120 columns, the compact tab
EXPLAINED = frozenset({"skipped", "blocked", "expired", "rejected", "failed"})
TYPE_LABELS = {"spot_price_spike": "price", "volume_explosion": "volume", "futures_spot_divergence": "basis",
               "liquidation_cascade": "liqs"}


def short_why(note: str) -> str:
    """A veto's agent said by its tag, the essential first: "CTX DISAGREE: market-wide dump"."""
    note = " ".join(note.split())
    for tag, (_style, names) in TAGS.items():
        for name in names:
            if note.startswith(name + " ") or note.startswith(name + ":"):
                return (tag + note[len(name):]).replace(" (veto)", "")
    return note


def why_text(status: str, note: str) -> Text:
    if status not in EXPLAINED or not note:
        return Text("")
    note = short_why(note)
    return Text(note if len(note) <= WHY_WIDTH else note[:WHY_WIDTH - 1] + "…", style="grey70")


def spike_key(spike: SpikeDetected) -> str:
    return f"{spike.symbol}:{spike.spike_type.value}:{spike.direction}:{spike.time_ms}"


class SpikeQueue(DataTable):
    DEFAULT_CSS = """
    SpikeQueue { height: 1fr; }
    """

    def __init__(self, max_rows: int = 200, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.max_rows = max_rows
        self.proposal_by_row: dict[str, str] = {}
        self.show_date = False

    def on_mount(self) -> None:
        for name in COLUMNS:
            self.add_column(name, key=name)

    def add_spike(self, spike: SpikeDetected, status: str, note: str = "") -> None:
        """A new row. The cursor follows the newest row only while it is not on a proposal: a
        new spike never takes the selection from a proposal the operator is reading."""
        key = spike_key(spike)
        if key in self.rows:
            return
        held = self._selected_key() if self.selected_proposal() is not None else None
        moment = datetime.fromtimestamp(spike.time_ms / 1000, timezone.utc)
        when = moment.strftime("%Y-%m-%d %H:%M:%S" if self.show_date else "%H:%M:%S")
        up = spike.direction == "pump"
        move = Text(f"{'▲' if up else '▼'}{spike.magnitude_pct:5.1f}", style="green" if up else "red")
        kind = TYPE_LABELS.get(spike.spike_type.value, spike.spike_type.value)
        self.add_row(when, spike.symbol, move, kind, Text(status, style=STATUS_STYLES.get(status, "white")),
                     why_text(status, note), key=key)
        while self.row_count > self.max_rows:
            oldest = next(iter(self.rows))
            self.remove_row(oldest)
            self.proposal_by_row.pop(oldest.value, None)
        if held is not None and held in self.rows:
            self.move_cursor(row=self.get_row_index(held))
        else:
            self.move_cursor(row=self.row_count - 1)

    def _selected_key(self) -> str | None:
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:
            return None

    def set_status(self, spike: SpikeDetected, status: str, proposal_id: str | None = None, note: str = "") -> None:
        key = spike_key(spike)
        if key not in self.rows:
            return
        self.update_cell(key, "status", Text(status, style=STATUS_STYLES.get(status, "white")))
        self.update_cell(key, "why", why_text(status, note))
        if proposal_id:
            self.proposal_by_row[key] = proposal_id

    def selected_proposal(self) -> str | None:
        if self.row_count == 0:
            return None
        key = self._selected_key()
        return self.proposal_by_row.get(key) if key is not None else None
