"""The main screen in its two layouts, chosen by the terminal's size: compact (80x24 works)
and wide (everything side by side). A change of layout recomposes the screen."""

from __future__ import annotations

from dataclasses import dataclass, fields

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane

from console.widgets.breaker_banner import BreakerBanner
from console.widgets.positions import OrdersLog, PositionsPanel
from console.widgets.price_board import PriceBoard
from console.widgets.proposal_panel import ProposalPanel
from console.widgets.reasoning_log import ReasoningLog
from console.widgets.spike_queue import SpikeQueue
from console.widgets.status_bar import StatusBar

WIDE_MIN_WIDTH, WIDE_MIN_HEIGHT = 120, 32


def wide_enough(width: int, height: int) -> bool:
    return width >= WIDE_MIN_WIDTH and height >= WIDE_MIN_HEIGHT


@dataclass(frozen=True)
class Views:
    """The panels of one composition of the main screen. A recompose replaces all of them, so
    they are looked up together, and new ones are filled from the app's models."""

    banner: BreakerBanner
    board: PriceBoard
    spikes: SpikeQueue
    proposal: ProposalPanel
    reasoning: ReasoningLog
    positions: PositionsPanel
    orders: OrdersLog
    status: StatusBar

    @classmethod
    def of(cls, screen: Screen) -> Views:
        """NoMatches when one is missing."""
        q = screen.query_one
        return cls(banner=q("#banner", BreakerBanner), board=q("#board", PriceBoard), spikes=q("#spikes", SpikeQueue),
                   proposal=q("#proposal", ProposalPanel), reasoning=q("#reasoning", ReasoningLog),
                   positions=q("#positions", PositionsPanel), orders=q("#orders", OrdersLog),
                   status=q("#status", StatusBar))

    def mounted(self) -> bool:
        return all(getattr(self, f.name).is_mounted for f in fields(self))


class MainScreen(Screen):
    def __init__(self, wide: bool) -> None:
        super().__init__()
        self.wide = wide
        self._views: Views | None = None
        self._recomposing = False

    def compose(self) -> ComposeResult:
        yield BreakerBanner(id="banner")
        if self.wide:
            with Horizontal(id="top"):
                yield PriceBoard(id="board")
                with Vertical(id="side"):
                    yield SpikeQueue(id="spikes")
                    yield ProposalPanel(id="proposal")
            with Horizontal(id="bottom"):
                yield ReasoningLog(id="reasoning")
                with Vertical(id="book"):
                    yield PositionsPanel(id="positions")
                    yield OrdersLog(id="orders")
        else:
            yield PriceBoard(id="board")
            with TabbedContent(id="tabs", initial="tab-spikes"):
                with TabPane("Spikes", id="tab-spikes"):
                    yield SpikeQueue(id="spikes")
                with TabPane("Proposal", id="tab-proposal"):
                    yield ProposalPanel(id="proposal")
                with TabPane("Reasoning", id="tab-reasoning"):
                    yield ReasoningLog(id="reasoning")
                with TabPane("Book", id="tab-book"):
                    yield PositionsPanel(id="positions")
                    yield OrdersLog(id="orders")
        yield StatusBar(id="status")
        yield Footer()

    async def recompose(self) -> None:
        self._views, self._recomposing = None, True
        try:
            await super().recompose()
        finally:
            self._recomposing = False

    def views(self) -> Views | None:
        """The panels, or None while they are not all there: a recompose removes them, and the
        compact layout's tabs mount theirs a little after the rest."""
        if self._views is None and not self._recomposing:
            try:
                views = Views.of(self)
            except NoMatches:
                return None
            if views.mounted():
                self._views = views
        return self._views
