"""The Textual console. It maps engine events to widgets and keys to session commands;
it holds no business logic.

Events are drained from the bus once per frame and applied in one batch; the price board
is rebuilt from market state once per frame. The layout has two forms, chosen by the
terminal's size: compact (80x24 works) and wide (everything side by side).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

from textual import work
from textual.actions import SkipAction
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, TabbedContent, TabPane

from console.screens.approve import ApproveScreen
from console.screens.confirm import BreakerConfirmScreen, QuitScreen, ReasonScreen
from console.screens.help import HelpScreen
from console.widgets.breaker_banner import BannerState, BreakerBanner
from console.widgets.positions import OrdersLog, PositionsPanel
from console.widgets.price_board import BoardRow, PriceBoard
from console.widgets.proposal_panel import ProposalPanel
from console.widgets.reasoning_log import ReasoningLog
from console.widgets.spike_queue import SpikeQueue
from console.widgets.status_bar import StatusBar, StatusInfo
from core.events import BreakerChanged, BreakerStatus, ProposalUpdate, ReasoningLine, SpikeDetected, SpikeStatus
from core.session import Session
from core.trading.orders import Fill, Order

WIDE_MIN_WIDTH, WIDE_MIN_HEIGHT = 120, 32
STALE_FEED_MS = 3_000


class MainScreen(Screen):
    """The one main screen; `wide` picks the layout and a resize across it recomposes."""

    def __init__(self, wide: bool) -> None:
        super().__init__()
        self.wide = wide

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

    def on_resize(self) -> None:
        app = self.app
        if isinstance(app, SpikeguardApp):
            app.layout_check()


class SpikeguardApp(App[int]):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere
    TITLE = "spikeguard"
    BINDINGS = [
        Binding("a", "approve", "Approve"),
        Binding("r", "reject", "Reject"),
        Binding("T", "trigger", "Trigger", priority=True),
        Binding("C", "clear", "Clear", priority=True),
        Binding("p", "pause_scanner", "Scanner"),
        Binding("space", "pause_feed", "Pause feed"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit_app", "Quit"),
    ]

    def __init__(self, session: Session, *, live: bool = True, feed_label: str = "sim", speed_label: str = "",
                 journal_label: str = "memory", wall_clock: Callable[[], float] = time.time,
                 watchdog: bool = True, watch_tty: bool = True, agents_dir: Path | None = None) -> None:
        super().__init__()
        self.session = session
        self.live = live
        self.feed_label = feed_label
        self.speed_label = speed_label
        self.journal_label = journal_label
        self.wall_clock = wall_clock
        self.watchdog = watchdog
        self._queue = session.bus.subscribe()
        self._spikes: deque[tuple[SpikeDetected, str, str | None]] = deque(
            maxlen=session.settings.performance.max_spike_queue_rows)
        self._spike_index: dict[int, int] = {}
        self._reasoning: deque[ReasoningLine] = deque(maxlen=500)
        self._orders: deque[tuple[Order, int]] = deque(maxlen=300)
        self._wide: bool | None = None
        self._epoch_seen = -1
        self._banner_record = None
        self._state_since = wall_clock()
        self._ticks_seen = 0
        self._rate = 0.0
        self._rate_at = wall_clock()
        self._last_batch_wall = wall_clock()
        self._scanner_paused = False
        self._feed_paused = False
        self.first_frame_at: float | None = None
        self.exit_code = 0
        self.watch_tty = watch_tty
        self.agents_dir = agents_dir  # where CrewAI may write; None: the rules proposer only
        self.desk_label = "rules"
        self._parent_pid = os.getppid()
        self._hung_up = False
        self._board_ticks = -1
        self._side_at = 0.0
        self._shown: dict[str, object] = {}  # what each panel last showed: unchanged panels are not repainted

    # ------------------------------------------------------------------ lifecycle
    def on_mount(self) -> None:
        self.layout_check(force=True)
        fps = self.session.settings.performance.ui_fps
        if self.live:
            self.run_worker(self._run_engine(), name="engine", group="engine", exit_on_error=False)
            if self.agents_dir is not None and self.session.settings.crew.enabled:
                self.run_worker(self._start_agents(), name="agents", group="agents", exit_on_error=False)
            self.set_interval(1 / fps, self.frame)
            if self.watchdog:
                self.set_interval(2.0, self._tty_watchdog)
                try:
                    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
        self.call_after_refresh(self.frame)

    async def on_unmount(self) -> None:
        """Every way out (q, the palette's quit, a browser tab closing under textual-serve)
        passes here: the session is closed, so the journal's thread cannot keep us alive."""
        if not self._hung_up:
            await self.session.close("console closed")

    async def _start_agents(self) -> None:
        """CrewAI loads in a thread after the first frame; the rules proposer answers until then."""
        self.desk_label = "rules (crew loading…)"
        try:
            await self.session.start_agent_desk(self.agents_dir)
            self.desk_label = self.session.decision_maker.label
        except Exception as exc:
            self.desk_label = "rules (crew unavailable)"
            self.notify(f"agent desk unavailable, the rules proposer stays: {exc}", severity="warning", timeout=8)

    async def _run_engine(self) -> None:
        try:
            await self.session.run()
        finally:
            self.frame()

    def layout_check(self, force: bool = False) -> None:
        size = self.size
        wide = size.width >= WIDE_MIN_WIDTH and size.height >= WIDE_MIN_HEIGHT
        if wide == self._wide and not force:
            return
        self._wide = wide
        if isinstance(self.screen, MainScreen) and not force:
            self.screen.wide = wide
            self.screen.refresh(recompose=True)
            self.call_after_refresh(self._repopulate)
        elif force and not isinstance(self.screen, MainScreen):
            self.push_screen(MainScreen(wide))
            self.call_after_refresh(self._repopulate)

    def _repopulate(self) -> None:
        """Views are rebuilt from the app's models after a layout change."""
        screen = self._main()
        if screen is None:
            return
        spikes = screen.query_one("#spikes", SpikeQueue)
        for spike, status, pid in self._spikes:
            spikes.add_spike(spike, status)
            if pid:
                spikes.set_status(spike, status, pid)
        log = screen.query_one("#reasoning", ReasoningLog)
        for line in self._reasoning:
            log.add_line(line)
        orders = screen.query_one("#orders", OrdersLog)
        for order, t in self._orders:
            orders.add_order(order, t)
        self._shown.clear()
        self._board_ticks = -1
        self.frame()

    def _main(self) -> MainScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                return screen
        return None

    # ------------------------------------------------------------------ the frame: batch everything
    def frame(self) -> None:
        """Drain the bus, then repaint only what changed (each update costs a render)."""
        screen = self._main()
        if screen is None or not screen.is_mounted:
            return
        try:
            board = screen.query_one("#board", PriceBoard)
        except Exception:
            return
        events = []
        q = self._queue
        while not q.empty():
            events.append(q.get_nowait())
        if events:
            self._apply(screen, events)
        ticks = self.session.engine.ticks
        if ticks != self._board_ticks or board.flashing:
            self._board_ticks = ticks
            board.update_rows(self._board_rows())
        self._update_banner(screen)
        now = self.wall_clock()
        if events or now - self._side_at >= 0.5:
            self._side_at = now
            self._update_side(screen)
        self._update_status(screen)
        if self.first_frame_at is None:
            self.first_frame_at = time.perf_counter()

    def _changed(self, key: str, value: object) -> bool:
        if self._shown.get(key) == value:
            return False
        self._shown[key] = value
        return True

    def _apply(self, screen: MainScreen, events: list) -> None:
        spikes = screen.query_one("#spikes", SpikeQueue)
        log = screen.query_one("#reasoning", ReasoningLog)
        orders = screen.query_one("#orders", OrdersLog)
        for ev in events:
            if isinstance(ev, SpikeStatus):
                self._track_spike(ev)
                if ev.status in ("detected", "blocked"):
                    spikes.add_spike(ev.spike, ev.status)
                else:
                    spikes.set_status(ev.spike, ev.status, ev.proposal_id)
            elif isinstance(ev, ReasoningLine):
                self._reasoning.append(ev)
                log.add_line(ev)
            elif isinstance(ev, BreakerChanged):
                if ev.status in (BreakerStatus.WARNING, BreakerStatus.TRIGGERED) and \
                        self.session.settings.monitoring.terminal_bell:
                    self.bell()
            elif isinstance(ev, Order):
                t = self.session.engine.now_ms()
                self._orders.append((ev, t))
                orders.add_order(ev, t)
            elif isinstance(ev, Fill):
                pass  # the positions panel reads the book each frame
            elif isinstance(ev, ProposalUpdate):
                self._proposal_status(spikes, ev)

    def _track_spike(self, ev: SpikeStatus) -> None:
        key = id(ev.spike)
        if key in self._spike_index:
            for i, (spike, _status, pid) in enumerate(self._spikes):
                if spike is ev.spike:
                    self._spikes[i] = (spike, ev.status, ev.proposal_id or pid)
                    break
        else:
            self._spike_index[key] = 1
            self._spikes.append((ev.spike, ev.status, ev.proposal_id))

    def _proposal_status(self, spikes: SpikeQueue, ev: ProposalUpdate) -> None:
        status_word = {"executed": "approved", "pending": "proposed"}.get(ev.status, ev.status)
        for i, (spike, _s, pid) in enumerate(self._spikes):
            if pid == ev.proposal.proposal_id:
                self._spikes[i] = (spike, status_word, pid)
                spikes.set_status(spike, status_word, pid)

    def _board_rows(self) -> list[BoardRow]:
        engine = self.session.engine
        refs = engine.settings.circuit_breaker.references
        mw_level = engine.settings.circuit_breaker.market_wide.dump_1h_percent
        rows = []
        for symbol, w in engine.market.symbols.items():
            if not w.ticks:
                continue
            ref = refs.get(symbol)
            rows.append(BoardRow(
                symbol=symbol, last=w.last_price, change_1m=w.change_pct(0), change_5m=w.change_pct(1),
                change_1h=w.change_pct(3), closes=w.closes, spark_version=w.vol_samples,
                volume_multiple=w.volume_multiple(0),
                drop_60m=w.drop_pct(3), trigger_level=ref.dump_1h_percent if ref else mw_level,
                reference=ref is not None,
            ))
        return rows

    def _update_banner(self, screen: MainScreen) -> None:
        breaker = self.session.breaker
        record = breaker.snapshot() if breaker.epoch != self._epoch_seen else None
        if record is not None:
            self._epoch_seen = record.epoch
            self._state_since = self.wall_clock()
            self._banner_record = record
        record = self._banner_record
        if record is None:
            record = self._banner_record = breaker.snapshot()
        reason = record.reason if record.epoch else "no breaker condition"
        state = BannerState(record.status, reason, record.epoch, int(self.wall_clock() - self._state_since),
                            record.actor.value)
        if self._changed("banner", state):
            screen.query_one("#banner", BreakerBanner).show(state)

    def _update_side(self, screen: MainScreen) -> None:
        pending = self.session.approvals.pending()
        proposal = self._selected_proposal()
        now_ms = int(self.wall_clock() * 1000)
        ttl = int(proposal.ttl_seconds(now_ms)) if proposal else 0
        if self._changed("proposal", (proposal.proposal_id if proposal else None, ttl, len(pending))):
            screen.query_one("#proposal", ProposalPanel).show(proposal, ttl, len(pending))
        p = self.session.portfolio
        prices = self.session.engine.market.last_prices()
        rows = self.session.open_positions()
        book = (tuple((r[0], r[1], round(r[4], 2)) for r in rows), round(p.cash, 2), round(p.equity(prices), 2),
                round(p.realized_pnl, 2), round(p.fees_paid, 2), len(self.session.gate.open_orders()))
        if self._changed("book", book):
            screen.query_one("#positions", PositionsPanel).show(rows, p.cash, p.equity(prices), p.realized_pnl,
                                                                p.fees_paid, book[-1])

    def _update_status(self, screen: MainScreen) -> None:
        engine = self.session.engine
        now = self.wall_clock()
        if now - self._rate_at >= 1.0:
            self._rate = (engine.ticks - self._ticks_seen) / (now - self._rate_at)
            self._ticks_seen, self._rate_at = engine.ticks, now
            if self._rate > 0:
                self._last_batch_wall = now
        age_ms = (now - self._last_batch_wall) * 1000
        feed_ok = engine.finished or self._feed_paused or age_ms < STALE_FEED_MS or not self.live
        clock = datetime.fromtimestamp(now, timezone.utc).strftime("%H:%M:%S UTC")
        market_time = datetime.fromtimestamp(engine.now_ms() / 1000, timezone.utc).strftime("%H:%M:%S")
        latency = engine.latency.percentile_ns(50) / 1e6 if engine.latency.count and self.live else None
        info = StatusInfo(
            mode=self.session.mode, feed=f"{self.feed_label} @{market_time}" + (" ended" if engine.finished else ""),
            feed_ok=feed_ok,
            latency_ms=round(latency, 3) if latency is not None else None, ticks_per_second=round(self._rate),
            speed=self.speed_label, journal=self.journal_label, clock=clock,
            scanner_paused=self._scanner_paused, feed_paused=self._feed_paused, desk=self.desk_label)
        if self._changed("status", info):
            screen.query_one("#status", StatusBar).show(info)

    def _selected_proposal(self):
        pending = self.session.approvals.pending()
        if not pending:
            return None
        screen = self._main()
        if screen is not None:
            try:
                pid = screen.query_one("#spikes", SpikeQueue).selected_proposal()
            except Exception:
                pid = None
            for p in pending:
                if p.proposal_id == pid:
                    return p
        return pending[0]

    # ------------------------------------------------------------------ keys -> commands
    PALETTE = (
        ("Approve proposal", "Approve the selected proposal (the gate checks it again)  [a]", "approve"),
        ("Reject proposal", "Reject the selected proposal, with an optional reason  [r]", "reject"),
        ("Trigger breaker", "Force-TRIGGER the circuit breaker, with a reason  [T]", "trigger"),
        ("Clear breaker", "Clear the circuit breaker, with a reason  [C]", "clear"),
        ("Pause/resume scanner", "Stop or restart spike detection  [p]", "pause_scanner"),
        ("Pause/resume feed", "Stop or restart the market feed  [space]", "pause_feed"),
        ("Help", "Keys and breaker states  [?]", "help"),
    )

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every console command is in the palette too (ctrl+p), beside Textual's own."""
        for title, help_text, action in self.PALETTE:
            yield SystemCommand(title, help_text, getattr(self, f"action_{action}"))
        yield from super().get_system_commands(screen)

    def _typing(self) -> bool:
        return isinstance(self.focused, Input)

    def action_approve(self) -> None:
        proposal = self._selected_proposal()
        if proposal is None:
            self.notify("no pending proposal", severity="warning")
            return
        preview = self.session.approvals.preview(proposal.proposal_id)
        self.push_screen(ApproveScreen(preview), lambda ok: self._approved(ok, proposal))

    def _approved(self, ok: bool | None, proposal) -> None:
        if ok:
            self._do_approve(proposal.proposal_id, proposal.content_hash)

    @work(group="commands")
    async def _do_approve(self, proposal_id: str, seen_hash: str) -> None:
        result = await self.session.approve(proposal_id, seen_hash)
        self.notify(result.message, severity="information" if result.ok else "error", timeout=6)
        self.frame()

    def action_reject(self) -> None:
        proposal = self._selected_proposal()
        if proposal is None:
            self.notify("no pending proposal", severity="warning")
            return

        def done(reason: str | None) -> None:
            if reason is None:
                return
            ok = self.session.reject(proposal.proposal_id, reason)
            self.notify("rejected" if ok else "no longer pending", severity="information" if ok else "warning")
            self.frame()

        self.push_screen(ReasonScreen(f"Reject {proposal.side} {proposal.quantity:g} {proposal.symbol}?"), done)

    def action_trigger(self) -> None:
        if self._typing():
            raise SkipAction()  # a capital T typed into a reason field is text
        if isinstance(self.screen, BreakerConfirmScreen):
            return

        def done(request) -> None:
            if request is None:
                return
            ok = self.session.force_trigger(request.reason)
            self.notify("breaker TRIGGERED" if ok else "breaker already TRIGGERED",
                        severity="error" if ok else "warning")
            self.frame()

        self.push_screen(BreakerConfirmScreen("trigger"), done)

    def action_clear(self) -> None:
        if self._typing():
            raise SkipAction()
        if isinstance(self.screen, BreakerConfirmScreen):
            return
        if self.session.breaker.status is BreakerStatus.SAFE:
            self.notify("breaker is already SAFE", severity="information")
            return

        def done(request) -> None:
            if request is None:
                return
            ok, message = self.session.clear_breaker(request.reason, override=request.override)
            self.notify(message, severity="information" if ok else "error", timeout=8)
            self.frame()

        self.push_screen(BreakerConfirmScreen("clear", self.session.clear_needs_override()), done)

    def action_pause_scanner(self) -> None:
        self._scanner_paused = not self._scanner_paused
        self.session.pause_scanner(self._scanner_paused)
        self.notify("scanner paused" if self._scanner_paused else "scanner resumed")
        self.frame()

    def action_pause_feed(self) -> None:
        self._feed_paused = not self._feed_paused
        self.session.pause_feed(self._feed_paused)
        self.notify("feed paused" if self._feed_paused else "feed resumed")
        self.frame()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_quit_app(self) -> None:
        if self.session.has_exposure():
            n_pos, n_orders = len(self.session.open_positions()), len(self.session.gate.open_orders())
            self.push_screen(QuitScreen(f"{n_pos} open positions and {n_orders} open orders."),
                             lambda yes: self._graceful_exit() if yes else None)
        else:
            self._graceful_exit()

    @work(group="shutdown", exclusive=True)
    async def _graceful_exit(self) -> None:
        await self.session.close("operator quit")
        self.exit(self.exit_code)

    # ------------------------------------------------------------------ a dropped SSH session
    def _tty_watchdog(self) -> None:
        """The terminal is gone (SSH dropped) or our parent died (textual-serve stopped)."""
        try:
            orphaned = os.getppid() != self._parent_pid
            alive = not orphaned and (not self.watch_tty or os.isatty(sys.__stdout__.fileno()))
        except (ValueError, OSError, AttributeError):
            alive = False
        if not alive:
            self._hangup()

    def _hangup(self) -> None:
        if self._hung_up:
            return
        self._hung_up = True
        self.exit_code = 129
        self._abandon()

    @work(group="shutdown", exclusive=True)
    async def _abandon(self) -> None:
        """Leave without the terminal: manage the orders, journal the end, flush, and go.
        Restoring a terminal that no longer exists can block forever in the output thread,
        so the process ends here once the journal is safe."""
        try:
            await asyncio.wait_for(self.session.close("terminal lost (hangup)"), timeout=10)
        finally:
            logging.shutdown()
            os._exit(129)
