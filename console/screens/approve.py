"""The approval modal: the proposal, what changed since it was made and what approving now
would do (refreshed twice a second: the countdown, the price and its drift, the gate's
verdict, the same checks approval runs), and for a crew proposal its dissent (bull and bear
views, who agreed and who dissented, one line each). y approves (the gate checks again on
submit), n or Escape goes back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, Static

from console.screens.dialog import Dialog
from core.desk.approval import ApprovalPreview


class ApproveScreen(Dialog[bool]):
    BINDINGS = [Binding("y,enter", "approve", "Approve"), Binding("n,escape", "back", "Back")]
    DEFAULT_CSS = """
    ApproveScreen { align: center middle; }
    ApproveScreen > Vertical { width: 84; max-width: 98%; height: auto; max-height: 95%; overflow-y: auto; border: thick $success; padding: 0 1; background: $surface; }
    ApproveScreen .title { text-style: bold; }
    """

    def __init__(self, preview: ApprovalPreview, refresh: Callable[[], ApprovalPreview] | None = None) -> None:
        super().__init__()
        self.preview = preview
        self._refresh = refresh  # a fresh preview of the same proposal

    def on_mount(self) -> None:
        if self._refresh is not None:
            self.set_interval(0.5, self._update_live)

    def _update_live(self) -> None:
        self.preview = self._refresh()  # type: ignore[misc]
        self.query_one("#live", Static).update(self._live(self.preview))

    @staticmethod
    def _live(pv: ApprovalPreview) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="grey70", width=21)
        grid.add_column()
        left = max(0.0, pv.ttl_seconds)
        grid.add_row("expires in", Text(f"{left:.0f}s", style="bold red" if left < 15 else ""))
        changes = pv.changes or ["nothing material"]
        grid.add_row("changed since", Text("\n".join(changes), style="yellow" if pv.changes else "green"))
        verdict = Text(pv.reason, style="bold green") if pv.allowed else \
            Text(f"DENIED: {pv.reason}", style="bold red")
        grid.add_row("gate now", verdict)
        grid.add_row("approve now", Text(f"would be sent ({pv.quantity_now:g})", style="bold green")
                     if pv.refusal is None else Text(pv.refusal, style="bold red"))
        return grid

    def compose(self) -> ComposeResult:
        pv = self.preview
        p = pv.proposal
        with Vertical():
            yield Label(f"Approve proposal {p.proposal_id}?", classes="title")
            grid = Table.grid(padding=(0, 1))
            grid.add_column(style="grey70")
            grid.add_column()
            grid.add_row("trade", Text(f"{p.side} {p.quantity:g} {p.symbol}", style="bold"))
            entry = "market" if p.entry_type == "market" else f"{p.entry_type} @ {p.entry_price:g}"
            grid.add_row("entry / stop / target", f"{entry} / {p.stop_loss:g} / {p.take_profit:g}")
            grid.add_row("risk", f"{p.risk_usd:,.2f} USD · notional {p.notional_usd:,.2f} USD · R:R {p.reward_risk:.2f}")
            grid.add_row("source", f"{p.source} · confidence {p.confidence:.2f}")
            grid.add_row("hash", p.content_hash[:16] + ("" if pv.intact else "  (MISMATCH)"))
            yield Static(grid)
            yield Static(self._live(pv), id="live")
            why = Table.grid(padding=(0, 1))
            why.add_column(style="grey70", width=21)
            why.add_column()
            why.add_row("why", p.rationale)
            self._dissent_rows(why, p)
            yield Static(why)
            yield Static(Text("y / Enter approve · n / Escape back", style="bold"))

    @staticmethod
    def _dissent_rows(grid: Table, p: Any) -> None:
        """The crew's dissent (core.agents.dissent): its score, the bull and bear views, and one line per
        agent that agreed or dissented. The rules proposer has none: nothing is shown."""
        if p.dissent_score is None:
            return
        score = p.dissent_score
        grid.add_row("dissent", Text(f"{score:.2f} " + ("(contested)" if score >= 0.5 else "(some doubt)"
                                                          if score >= 0.25 else "(broad agreement)"),
                                     style="bold yellow" if score >= 0.5 else ""))
        if p.bull_case:
            grid.add_row("bull", p.bull_case)
        if p.bear_case:
            grid.add_row("bear", p.bear_case)
        # one line per agent, cut to the dialog's width (the full line is in the journal's payload)
        grid.add_row("agreed", Text("\n".join(p.agreed) or "no agent", style="green", no_wrap=True,
                                    overflow="ellipsis"))
        grid.add_row("dissented", Text("\n".join(p.dissented) or "no agent", style="yellow" if p.dissented else "",
                                       no_wrap=True, overflow="ellipsis"))

    def action_approve(self) -> None:
        self.dismiss(True)

    def action_back(self) -> None:
        self.dismiss(False)
