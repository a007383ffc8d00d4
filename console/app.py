"""The Textual console. It maps engine events to widgets and keys to session commands;
it holds no business logic.

Events are drained from the bus once per frame and applied in one batch; the price board
is rebuilt from market state once per frame. The panels are views of the app's models (the
spikes, reasoning lines and orders it keeps): a change of layout replaces them, and the new
ones are filled from the models.

It never dies silently: an unexpected exception anywhere (a handler, a worker, a timer) is
logged with its traceback and ends the app with return code 1 and a one-line `crash`.
"""

from __future__ import annotations

import asyncio
import gc
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
from textual.app import App, SystemCommand
from textual.await_complete import AwaitComplete
from textual.binding import Binding
from textual.command import CommandPalette
from textual.events import Resize
from textual.screen import Screen
from textual.css.query import NoMatches
from textual.widgets import Input, TabbedContent
from textual.worker import WorkerFailed

from console.screens.approve import ApproveScreen
from console.screens.book import CancelOrderScreen, CancelRequest, FlattenRequest, FlattenScreen
from console.screens.confirm import BreakerConfirmScreen, QuitScreen, ReasonScreen
from console.screens.help import HelpScreen
from console.screens.main import MainScreen, Views, layout_for
from console.screens.palette import Palette
from console.screens.symbol_detail import SymbolDetailScreen
from console.widgets.breaker_banner import BannerState
from console.widgets.price_board import BoardRow, PriceBoard
from console.widgets.spike_queue import SpikeQueue
from console.widgets.status_bar import StatusInfo
from core.events import (
    BreakerChanged,
    BreakerStatus,
    FeedHealth,
    FeedState,
    ProposalUpdate,
    ReasoningLine,
    SpikeDetected,
    SpikeStatus,
    VenueAlarm,
)
from core.redact import mask
from core.session import Session
from core.trading.orders import Fill, Order

STALE_FEED_MS = 3_000
CLOSE_WAIT_S = 1.0  # how long quitting waits for the session (the journal's flush) before the app exits
log = logging.getLogger("spikeguard.console")


def feed_detail(health: Iterable[FeedHealth]) -> str:
    """What the status bar says of a live feed's streams: the ones not streaming, and how
    often they reconnected or overflowed (nothing while all is well)."""
    health = list(health)
    troubled = [f"{h.stream} {h.state.value}" for h in health if h.state in (FeedState.STALE, FeedState.RECONNECTING)]
    reconnects, overflows = sum(h.reconnects for h in health), sum(h.overflows for h in health)
    counts = [f"{reconnects} reconnects"] * bool(reconnects) + [f"{overflows} overflows"] * bool(overflows)
    return ", ".join(troubled + counts)


def freeze_heap() -> None:
    """What exists at start-up (the libraries, the session, the models) moves out of the
    collector's reach: a full collection over it paused the console 160-180 ms (a key's
    repaint waited that long); with it frozen the pauses are a few milliseconds."""
    gc.collect()
    gc.freeze()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


class SpikeguardApp(App[int]):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere
    TITLE = "spikeguard"
    # help and quit first: a narrow footer cuts from the end
    BINDINGS = [
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit_app", "Quit"),
        Binding("a", "approve", "Approve"),
        Binding("r", "reject", "Reject"),
        Binding("T", "trigger", "Trigger", priority=True),
        Binding("C", "clear", "Clear", priority=True),
        Binding("F", "flatten", "Flatten", priority=True),
        Binding("X", "cancel_order", "Cancel", priority=True),
        Binding("o", "sort_board", "Sort"),
        Binding("p", "pause_scanner", "Scanner"),
        Binding("space", "pause_feed", "Pause"),
    ]

    def __init__(self, session: Session, *, live: bool = True, feed_label: str = "sim", speed_label: str = "",
                 journal_label: str = "memory", wall_clock: Callable[[], float] = time.time,
                 watchdog: bool = True, watch_tty: bool = True, agents_dir: Path | None = None,
                 freeze_gc: bool = False) -> None:
        super().__init__()
        self.session = session
        self.live = live
        self.feed_label = feed_label
        self.speed_label = speed_label
        self.journal_label = journal_label
        self.wall_clock = wall_clock
        self.watchdog = watchdog
        self.freeze_gc = freeze_gc  # the process's own console only: a test process keeps its heap collectable
        self._queue = session.bus.subscribe()
        self._spikes: deque[tuple[SpikeDetected, str, str | None, str]] = deque(  # spike, status, proposal, why
            maxlen=session.settings.performance.max_spike_queue_rows)
        self._spike_index: dict[int, int] = {}
        self._reasoning: deque[ReasoningLine] = deque(maxlen=2000)
        self._filled: Views | None = None  # the panels last filled from the models
        self._history_version = -1
        self._waiting_for_operator: str | None = None  # why RECOVERING waits for a clear (the banner says it)
        self._epoch_seen = -1
        self._banner_record = None
        self._state_since = wall_clock()
        self._ticks_seen = 0
        self._rate = 0.0
        self._rate_at = wall_clock()
        self._last_batch_wall = wall_clock()
        self._scanner_paused = session.engine.scanner.paused  # an attached console starts with it paused
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
        self.crash: str | None = None  # the first unexpected exception, as one line
        self.closing: asyncio.Task | None = None  # the session's close, once started

    # ------------------------------------------------------------------ lifecycle
    def on_mount(self) -> None:
        self.push_screen(MainScreen(layout_for(*self.size)))
        fps = self.session.settings.performance.ui_fps
        if self.live:
            # a worker that raises ends the app (exit_on_error): a dead engine must not look like an ended feed
            self.run_worker(self._run_engine(), name="engine", group="engine")
            if self.agents_dir is not None and self.session.settings.crew.enabled:
                self.run_worker(self._start_agents(), name="agents", group="agents")
            self.set_interval(1 / fps, self.frame)
            if self.watchdog:
                self.set_interval(2.0, self._tty_watchdog)
                loop = asyncio.get_running_loop()
                try:
                    loop.add_signal_handler(signal.SIGHUP, self._hangup)
                    # Textual's driver suspends on SIGTSTP and restarts its input and writer threads
                    # on every SIGCONT. A closing terminal sends SIGCONT: the restarted writer left
                    # the loop blocked on a full queue forever, its input threads spinning on the dead
                    # pty. A trading console is never suspended; a SIGCONT only checks the terminal.
                    loop.add_signal_handler(signal.SIGTSTP, lambda: None)
                    loop.add_signal_handler(signal.SIGCONT, self._tty_watchdog)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
        self.call_after_refresh(self.frame)
        if self.freeze_gc:
            self.call_after_refresh(freeze_heap)

    async def on_unmount(self) -> None:
        """Every way out (q, the palette's quit, a crash, a browser tab closing under
        textual-serve) passes here: the session is closed, so the journal's thread cannot keep
        us alive."""
        if not self._hung_up:
            reason = f"console crashed: {self.crash}" if self.crash else "console closed"
            await asyncio.wait({self.close_session(reason)}, timeout=CLOSE_WAIT_S)

    def close_session(self, reason: str) -> asyncio.Task:
        """Close the session once, as a task: the app waits for it with a bound (a journal that
        cannot flush must not hold the console open), and launch waits out the rest after the
        app has returned."""
        if self.closing is None:
            self.closing = asyncio.get_running_loop().create_task(self.session.close(reason))
        return self.closing

    async def _start_agents(self) -> None:
        """CrewAI loads in a thread after the first frame; the rules proposer answers until then."""
        self.desk_label = "rules (crew loading…)"
        try:
            await self.session.start_agent_desk(self.agents_dir)
            self.desk_label = self.session.decision_maker.label
            if self.freeze_gc:
                freeze_heap()  # CrewAI's modules too
        except Exception as exc:
            self.desk_label = "rules (crew unavailable)"
            self.notify(f"agent desk unavailable, the rules proposer stays: {exc}", severity="warning", timeout=8)

    async def _run_engine(self) -> None:
        await self.session.run()
        self.frame()  # the feed ended: say so now

    # ------------------------------------------------------------------ layout
    def on_resize(self, event: Resize) -> None:
        """A resize across the layouts recomposes the main screen, under a dialog too; the frame
        waits for the new panels and fills them from the models."""
        screen, layout = self._main(), layout_for(*event.size)
        if screen is not None and screen.layout_name != layout:
            screen.layout_name = layout
            screen.refresh(recompose=True)

    def _main(self) -> MainScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                return screen
        return None

    def _views(self) -> Views | None:
        """The main screen's panels, filled from the models when they are new; None while a
        layout change has them out (the frame then waits, and the events with it)."""
        screen = self._main()
        views = screen.views() if screen is not None else None
        if views is not None and views is not self._filled:
            self._fill(views)
        return views

    def _fill(self, views: Views) -> None:
        views.spikes.show_date = self.session.feed.name == "replay"  # a replay's days are not today's
        for spike, status, pid, note in self._spikes:
            views.spikes.add_spike(spike, status, note)
            if pid:
                views.spikes.set_status(spike, status, pid, note)
        for line in self._reasoning:
            views.reasoning.add_line(line)
        for pane in views.history:
            pane.sync(self.session.history)
        self._history_version = self.session.history.version
        self._shown.clear()
        self._board_ticks = -1
        self._filled = views

    # ------------------------------------------------------------------ the frame: batch everything
    def frame(self) -> None:
        """Drain the bus, then repaint only what changed (each update costs a render)."""
        views = self._views()
        if views is None:
            return
        events = []
        q = self._queue
        while not q.empty():
            events.append(q.get_nowait())
        if events:
            self._apply(views, events)
        history = self.session.history
        if history.version != self._history_version:
            self._history_version = history.version
            for pane in views.history:
                pane.sync(history)
        ticks = self.session.engine.ticks
        if ticks != self._board_ticks or views.board.flashing:
            self._board_ticks = ticks
            views.board.update_rows(self._board_rows())
        self._update_banner(views)
        now = self.wall_clock()
        if events or now - self._side_at >= 0.5:
            self._side_at = now
            self._update_side(views)
        self._update_status(views)
        if self.first_frame_at is None:
            self.first_frame_at = time.perf_counter()

    def _changed(self, key: str, value: object) -> bool:
        if self._shown.get(key) == value:
            return False
        self._shown[key] = value
        return True

    def _apply(self, views: Views, events: list) -> None:
        spikes, reasoning = views.spikes, views.reasoning
        for ev in events:
            if isinstance(ev, SpikeStatus):
                self._track_spike(ev)
                if ev.status in ("detected", "blocked"):
                    spikes.add_spike(ev.spike, ev.status, ev.note)
                else:
                    spikes.set_status(ev.spike, ev.status, ev.proposal_id, ev.note)
            elif isinstance(ev, ReasoningLine):
                self._reasoning.append(ev)
                reasoning.add_line(ev)
            elif isinstance(ev, BreakerChanged):
                if ev.status in (BreakerStatus.WARNING, BreakerStatus.TRIGGERED) and \
                        self.session.settings.monitoring.terminal_bell:
                    self.bell()
            elif isinstance(ev, (Order, Fill)):
                pass  # the history's orders pane and the positions panel read the session's book
            elif isinstance(ev, ProposalUpdate):
                self._proposal_status(spikes, ev)
            elif isinstance(ev, VenueAlarm):
                self.notify(f"Binance {ev.kind.replace('_', ' ')}: {ev.detail}", severity=ev.severity,
                            timeout=12 if ev.severity == "error" else 6)
                if ev.severity == "error" and self.session.settings.monitoring.terminal_bell:
                    self.bell()

    def _track_spike(self, ev: SpikeStatus) -> None:
        key = id(ev.spike)
        if key in self._spike_index:
            for i, (spike, _status, pid, _note) in enumerate(self._spikes):
                if spike is ev.spike:
                    self._spikes[i] = (spike, ev.status, ev.proposal_id or pid, ev.note)
                    break
        else:
            self._spike_index[key] = 1
            self._spikes.append((ev.spike, ev.status, ev.proposal_id, ev.note))

    def _proposal_status(self, spikes: SpikeQueue, ev: ProposalUpdate) -> None:
        status_word = {"executed": "approved", "pending": "proposed"}.get(ev.status, ev.status)
        for i, (spike, _s, pid, _note) in enumerate(self._spikes):
            if pid == ev.proposal.proposal_id:
                self._spikes[i] = (spike, status_word, pid, ev.note)
                spikes.set_status(spike, status_word, pid, ev.note)

    def _board_rows(self) -> list[BoardRow]:
        engine = self.session.engine
        refs = engine.settings.circuit_breaker.references
        mw_level = engine.settings.circuit_breaker.market_wide.dump_1h_percent
        now_ms = engine.now_ms()
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
                reference=ref is not None, age_s=(now_ms - w.last_time) / 1000,
            ))
        return rows

    def _update_banner(self, views: Views) -> None:
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
        health = self.session.journal_health
        failing = None if health is None or health.ok else f"{health.error} ({health.unwritten} rows held)"
        state = BannerState(record.status, reason, record.epoch, int(self.wall_clock() - self._state_since),
                            record.actor.value, saving=not self.session.breaker_saved(record.epoch),
                            journal_failing=failing, waiting_for_operator=self._waiting_for_operator,
                            backend_problem=self.session.breaker_backend_problem,
                            protection=(self.session.policy_line(), self.session.policy_line(short=True)))
        if self._changed("banner", state):
            views.banner.show(state)

    def _update_side(self, views: Views) -> None:
        recovering = self.session.breaker.status is BreakerStatus.RECOVERING
        self._waiting_for_operator = self.session.engine.clear_needs_override() if recovering else None
        pending = self.session.approvals.pending()
        proposal = self._selected_proposal()
        now_ms = int(self.wall_clock() * 1000)
        ttl = int(proposal.ttl_seconds(now_ms)) if proposal else 0
        if self._changed("proposal", (proposal.proposal_id if proposal else None, ttl, len(pending))):
            views.proposal.show(proposal, ttl, len(pending))
            self._label_proposal_tab(len(pending))
        p = self.session.portfolio
        positions, curve = self.session.book_view()
        equity = p.equity(self.session.engine.market.last_prices())
        book = (tuple(positions), len(curve.points), round(equity, 2), round(p.cash, 2), round(p.realized_pnl, 2),
                round(p.fees_paid, 2), len(self.session.gate.open_orders()))
        if self._changed("book", book):
            views.positions.show(positions, curve, p.cash, equity, p.realized_pnl, p.fees_paid, book[-1])

    def _label_proposal_tab(self, pending: int) -> None:
        """The compact layout's Proposal tab says how many wait (the status bar does too)."""
        screen = self._main()
        if screen is None or screen.wide:
            return
        try:
            tab = screen.query_one("#tabs", TabbedContent).get_tab("tab-proposal")
        except (NoMatches, ValueError):
            return
        tab.label = f"Proposal ▶{pending}" if pending else "Proposal"

    def _update_status(self, views: Views) -> None:
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
            speed=f"{self.session.feed.speed:g}x (slowed: a proposal waits)" if self.session.slowed_for_decision
            else self.speed_label, journal=self.journal_label, clock=clock,
            journal_failing=bool(self.session.journal_health and not self.session.journal_health.ok),
            feed_detail=", ".join(filter(None, (feed_detail(engine.feed_health.values()),
                                                self.session.venue.status() if self.session.venue else ""))),
            scanner_paused=self._scanner_paused, feed_paused=self._feed_paused,
            pending=len(self.session.approvals.pending()), shadows=self.session.shadow_line(),
            desk=self.session.agent_desk.status_label() if self.session.agent_desk is not None else self.desk_label)
        if self._changed("status", info):
            views.status.show(info)

    def _selected_proposal(self):
        pending = self.session.approvals.pending()
        if not pending:
            return None
        views = self._views()
        pid = views.spikes.selected_proposal() if views is not None else None
        for p in pending:
            if p.proposal_id == pid:
                return p
        return pending[0]

    # ------------------------------------------------------------------ screens
    def action_command_palette(self) -> None:
        if self.use_command_palette and not CommandPalette.is_open(self):
            self.push_screen(Palette(id="--command-palette"))

    def search_themes(self) -> None:
        """Textual's theme picker, in a palette that closes once."""
        from textual.theme import ThemeProvider

        self.push_screen(Palette(providers=[ThemeProvider], placeholder="Search for themes…"))

    def pop_screen(self) -> AwaitComplete:
        """The main screen is never popped: a screen dismissed twice (keys typed faster than it
        closes) would pop it, leaving a blank terminal, then ScreenStackError. Ours close once
        (console/screens/dialog.py); this holds for any other."""
        if isinstance(self.screen, MainScreen):
            log.warning("refused to pop the main screen")
            return AwaitComplete.nothing()
        return super().pop_screen()

    # ------------------------------------------------------------------ unexpected errors
    def _handle_exception(self, error: Exception) -> None:
        """Textual (8.2) routes every unhandled exception here: handlers, timers, callbacks and
        workers that exit on error; it exits with return code 1. The traceback goes to the log;
        the terminal gets one line from launch once the app is gone, instead of Textual's dump."""
        cause = error.error if isinstance(error, WorkerFailed) else error
        log.critical("the console stopped on an unexpected error", exc_info=cause)
        if self.crash is None:
            self.crash = mask(" ".join(f"{type(cause).__name__}: {cause}".split()))
        super()._handle_exception(error)  # keeps Textual's bookkeeping: return code 1, the pilot's re-raise

    def _fatal_error(self) -> None:
        """Textual renders a traceback with locals here, to print after exit; the log has it."""
        self._close_messages_no_wait()

    # ------------------------------------------------------------------ keys -> commands
    PALETTE = (
        ("Approve proposal", "Approve the selected proposal (the gate checks it again)  [a]", "approve"),
        ("Reject proposal", "Reject the selected proposal, with an optional reason  [r]", "reject"),
        ("Trigger breaker", "Force-TRIGGER the circuit breaker, with a reason  [T]", "trigger"),
        ("Clear breaker", "Clear the circuit breaker, with a reason  [C]", "clear"),
        ("Flatten", "Sell one position or all of them at market, in any breaker state  [F]", "flatten"),
        ("Cancel order", "Cancel one open order, in any breaker state  [X]", "cancel_order"),
        ("Sort the board", "Cycle the board's order: change, drop, volume multiple, default  [o]", "sort_board"),
        ("Pause/resume scanner", "Stop or restart spike detection  [p]", "pause_scanner"),
        ("Pause/resume feed", "Stop or restart the market feed  [space]", "pause_feed"),
        ("Help", "Keys and breaker states  [?]", "help"),
        ("Quit", "Leave the console (asks when positions or orders are open)  [q]", "quit_app"),
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
        refresh = lambda: self.session.approvals.preview(proposal.proposal_id)  # noqa: E731
        self.push_screen(ApproveScreen(preview, refresh), lambda ok: self._approved(ok, proposal))

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
            if self.session.force_trigger(request.reason):
                self._when_saved(self.session.breaker.epoch, "breaker TRIGGERED", "error")
            else:
                self.notify("breaker already TRIGGERED", severity="warning")
            self.frame()

        self.push_screen(BreakerConfirmScreen("trigger"), done)

    @work(group="saved")
    async def _when_saved(self, epoch: int, message: str, severity: str) -> None:
        """An operator's trip or clear is announced done once it is on disk; until then the
        banner says saving… (and JOURNAL FAILING while the journal cannot write)."""
        await self.session.wait_saved(epoch)
        self.notify(f"{message} (journaled)", severity=severity, timeout=8)
        self.frame()

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
            if ok:
                self._when_saved(self.session.breaker.epoch, message, "information")
            else:
                self.notify(message, severity="error", timeout=8)
            self.frame()

        self.push_screen(BreakerConfirmScreen("clear", self.session.clear_needs_override()), done)

    def action_flatten(self) -> None:
        if self._typing():
            raise SkipAction()  # a capital F typed into a field is text
        if isinstance(self.screen, FlattenScreen):
            return
        positions = self.session.open_positions()
        if not positions:
            self.notify("no open position", severity="information")
            return

        def done(request: FlattenRequest | None) -> None:
            if request is not None:
                self._do_flatten(request)

        self.push_screen(FlattenScreen(positions), done)

    @work(group="commands")
    async def _do_flatten(self, request: FlattenRequest) -> None:
        lines = await self.session.flatten(request.symbol, request.reason)
        failed = any("rejected" in line or "denied" in line for line in lines)
        self.notify("flatten: " + "; ".join(lines), severity="error" if failed else "information", timeout=8)
        self.frame()

    def action_cancel_order(self) -> None:
        if self._typing():
            raise SkipAction()
        if isinstance(self.screen, CancelOrderScreen):
            return
        orders = self.session.open_orders()
        if not orders:
            self.notify("no open order", severity="information")
            return

        def done(request: CancelRequest | None) -> None:
            if request is not None:
                self._do_cancel(request)

        self.push_screen(CancelOrderScreen(orders), done)

    @work(group="commands")
    async def _do_cancel(self, request: CancelRequest) -> None:
        order = await self.session.cancel_order(request.client_order_id, request.reason)
        self.notify(f"{order.side.value} {order.quantity:g} {order.symbol} {order.type.value}: "
                    f"{order.status.value.lower()}", severity="information", timeout=6)
        self.frame()

    def on_price_board_symbol_chosen(self, message: PriceBoard.SymbolChosen) -> None:
        """Enter on a board row: that symbol's last hour, its spikes and its orders."""
        symbol = message.symbol
        window = self.session.engine.market.symbols.get(symbol)
        spikes = [(s.time_ms, s.direction, s.magnitude_pct, status) for s, status, _, _ in self._spikes
                  if s.symbol == symbol]
        orders = [(t, o.side.value, o.quantity, o.average_price or o.price or 0.0, o.status.value)
                  for t, o in self.session.history.orders_for(symbol)]
        self.push_screen(SymbolDetailScreen(symbol, list(window.closes) if window else [], spikes, orders))

    def action_sort_board(self) -> None:
        views = self._views()
        if views is not None:
            self.notify(f"board sorted by {views.board.cycle_sort()}", timeout=2)
            self._board_ticks = -1  # repaint now

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

    async def action_quit(self) -> None:
        """Textual's own quit (the palette's Quit, ctrl+q) asks like q does."""
        self.action_quit_app()

    def action_quit_app(self) -> None:
        if self.session.has_exposure():
            n_pos, n_orders = len(self.session.open_positions()), len(self.session.gate.open_orders())
            self.push_screen(QuitScreen(f"{_count(n_pos, 'open position')} and {_count(n_orders, 'open order')}."),
                             lambda yes: self._graceful_exit() if yes else None)
        else:
            self._graceful_exit()

    @work(group="shutdown", exclusive=True)
    async def _graceful_exit(self) -> None:
        await asyncio.wait({self.close_session("operator quit")}, timeout=CLOSE_WAIT_S)
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
            await asyncio.wait({self.close_session("terminal lost (hangup)")}, timeout=10)
        finally:
            logging.shutdown()
            os._exit(129)
