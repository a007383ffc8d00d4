"""The status bar: trading mode (LIVE unmistakable), a proposal waiting, feed health, the
desk, ticks/s, journal, clock. Most important first: a narrow terminal cuts the end."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

MODE_STYLES = {"PAPER": "bold black on green", "TESTNET": "bold black on yellow",
               "LIVE": "bold white on red blink"}


@dataclass(frozen=True)
class StatusInfo:
    mode: str
    feed: str
    feed_ok: bool
    latency_ms: float | None
    ticks_per_second: float
    speed: str
    journal: str
    clock: str
    scanner_paused: bool = False
    feed_paused: bool = False
    desk: str = "rules"
    journal_failing: bool = False
    feed_detail: str = ""  # a live feed's streams: reconnecting, stale, reconnects and overflows so far
    pending: int = 0  # proposals waiting for the operator
    shadows: str = ""  # the live shadow breakers' states (never acting)


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def show(self, info: StatusInfo) -> None:
        t = Text()
        t.append(f" {info.mode} ", style=MODE_STYLES.get(info.mode, "bold"))
        if info.pending:
            t.append(" ")
            t.append(f" ▶ {info.pending} proposal{'s' if info.pending > 1 else ''} waiting: a ", style="bold reverse")
        if info.journal_failing:
            t.append(f"  JOURNAL FAILING {info.journal}", style="bold reverse red")
        if info.feed_paused:
            t.append("  FEED PAUSED", style="bold yellow")
        if info.scanner_paused:
            t.append("  SCANNER PAUSED", style="bold yellow")
        t.append(f"  {info.feed}" + (f" {info.speed}" if info.speed else ""), style="bold")
        t.append(" ok" if info.feed_ok else " STALE", style="green" if info.feed_ok else "bold red reverse")
        if info.feed_detail:
            t.append(f" {info.feed_detail}", style="bold yellow")
        t.append(f"  desk {info.desk}", style="cyan")
        if info.shadows:
            t.append(f"  shadows: {info.shadows}", style="magenta")
        t.append(f"  {info.ticks_per_second:,.0f} ticks/s")
        if info.latency_ms is not None:
            t.append(f"  decide {info.latency_ms * 1000:.0f}µs")
        if not info.journal_failing:
            t.append(f"  journal {info.journal}", style="grey62")
        t.append(f"  {info.clock}")
        self.update(t, layout=False)  # one line, always
