"""The main screen in its two layouts, chosen by the terminal's size: compact (80x24: the
board over tabs) and wide (the board across the top, the desk and the book beneath it, the
history panes at the bottom, side by side from 180 columns). A change of layout recomposes
the screen."""

from __future__ import annotations

from dataclasses import dataclass, fields

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane

from console.widgets.breaker_banner import BreakerBanner
from console.widgets.history import HistoryPane, HistoryPanes, history_tab_panes
from console.widgets.positions import PositionsPanel
from console.widgets.price_board import PriceBoard
from console.widgets.proposal_panel import ProposalPanel
from console.widgets.reasoning_log import ReasoningLog
from console.widgets.spike_queue import SpikeQueue
from console.widgets.status_bar import StatusBar
from core.history import PANES

WIDE_MIN_WIDTH, WIDE_MIN_HEIGHT = 120, 32
SIDE_BY_SIDE_MIN_WIDTH = 180  # the history panes each get 45 columns


def wide_enough(width: int, height: int) -> bool:
    return width >= WIDE_MIN_WIDTH and height >= WIDE_MIN_HEIGHT


def layout_for(width: int, height: int) -> str:
    if not wide_enough(width, height):
        return "compact"
    return "wide" if width < SIDE_BY_SIDE_MIN_WIDTH else "widest"


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
    status: StatusBar
    history: tuple[HistoryPane, ...]

    @classmethod
    def of(cls, screen: Screen) -> Views:
        """NoMatches when one is missing."""
        q = screen.query_one
        history = tuple(q(f"#history-{pane}", HistoryPane) for pane in PANES)
        return cls(banner=q("#banner", BreakerBanner), board=q("#board", PriceBoard), spikes=q("#spikes", SpikeQueue),
                   proposal=q("#proposal", ProposalPanel), reasoning=q("#reasoning", ReasoningLog),
                   positions=q("#positions", PositionsPanel),
                   status=q("#status", StatusBar), history=history)

    def mounted(self) -> bool:
        widgets = [getattr(self, f.name) for f in fields(self) if f.name != "history"] + list(self.history)
        return all(w.is_mounted for w in widgets)


class MainScreen(Screen):
    AUTO_FOCUS = "#spikes"  # up/down choose the proposal that a and r act on

    def __init__(self, layout: str) -> None:
        super().__init__()
        self.layout_name = layout
        self._views: Views | None = None
        self._recomposing = False

    @property
    def wide(self) -> bool:
        return self.layout_name != "compact"

    def compose(self) -> ComposeResult:
        self.set_class(self.wide, "-wide")
        yield BreakerBanner(id="banner")
        yield PriceBoard(id="board")
        if self.layout_name == "widest":
            with Horizontal(id="middle"):
                yield from self._desk()
                yield PositionsPanel(id="positions")
            yield HistoryPanes(side_by_side=True, id="history")
        elif self.wide:
            with Horizontal(id="middle"):
                yield from self._desk()
            with Horizontal(id="lower"):
                yield PositionsPanel(id="positions")
                yield HistoryPanes(side_by_side=False, id="history")
        else:
            with TabbedContent(id="tabs", initial="tab-spikes"):
                with TabPane("Spikes", id="tab-spikes"):
                    yield SpikeQueue(id="spikes")
                with TabPane("Proposal", id="tab-proposal"):
                    yield ProposalPanel(id="proposal")
                with TabPane("Reasoning", id="tab-reasoning"):
                    yield ReasoningLog(id="reasoning")
                with TabPane("Book", id="tab-book"):
                    yield PositionsPanel(id="positions")
                yield from history_tab_panes()
        yield StatusBar(id="status")
        yield Footer(show_command_palette=self.wide)  # 80 columns keep the keys (ctrl+p still opens it)

    @staticmethod
    def _desk() -> ComposeResult:
        with Vertical(id="side"):
            yield SpikeQueue(id="spikes")
            yield ProposalPanel(id="proposal")
        yield ReasoningLog(id="reasoning")

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
