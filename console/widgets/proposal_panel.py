"""The proposal panel: the pending proposal in full, with a countdown to its expiry."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from core.desk.proposal import TradeProposal


class ProposalPanel(Static):
    DEFAULT_CSS = """
    ProposalPanel { height: 1fr; padding: 0 1; }
    """

    def show(self, proposal: TradeProposal | None, ttl_seconds: float = 0.0, pending: int = 0) -> None:
        if proposal is None:
            self.update(Text("No pending proposal. Spikes the desk accepts appear here for approval.",
                             style="grey62"))
            return
        p = proposal
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="grey70")
        grid.add_column()
        side_style = "bold green" if p.side == "BUY" else "bold red"
        grid.add_row("trade", Text(f"{p.side} {p.quantity:g} {p.symbol}", style=side_style))
        entry = "market" if p.entry_type == "market" else f"{p.entry_type} @ {p.entry_price:g}"
        grid.add_row("entry", entry)
        grid.add_row("stop / target", f"{p.stop_loss:g} / {p.take_profit:g}  (R:R {p.reward_risk:.2f})")
        grid.add_row("risk", f"{p.risk_usd:,.2f} USD on {p.notional_usd:,.2f} USD notional")
        grid.add_row("confidence", f"{p.confidence:.2f}  ·  source {p.source}")
        expiry_style = "bold red" if ttl_seconds < 15 else "yellow" if ttl_seconds < 45 else ""
        grid.add_row("expires in", Text(f"{ttl_seconds:4.0f}s", style=expiry_style))
        grid.add_row("why", p.rationale)
        if pending > 1:
            grid.add_row("queue", f"{pending - 1} more pending")
        grid.add_row("keys", Text("a approve · r reject", style="bold"))
        self.update(grid)
