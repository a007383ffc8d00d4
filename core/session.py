"""A session: everything one run holds, wired along the product's one path for data.

    feed -> market state -> guardian and scanner -> breaker and spike queue -> desk
         -> approval -> order gate -> exchange -> journal

The console and the headless commands both hold a Session and never reach inside its
parts to trade: orders go through `gate.submit` only, operator commands through the
methods below, and everything they show arrives as events on `bus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.breaker.state import CircuitBreakerState
from core.bus import EventBus
from core.desk.approval import ApprovalQueue, ApprovalResult, log_task_error
from core.desk.proposal import TradeProposal
from core.desk.rules_proposer import RulesProposer, Skip
from core.engine import Engine
from core.history import HistoryBook, load_from_journal
from core.incident import FlightRecorder
from core.events import (
    Actor,
    BreakerChanged,
    BreakerStatus,
    FeedHealth,
    FeedState,
    JournalHealth,
    ReasoningLine,
    SpikeDetected,
    SpikeStatus,
    Tick,
)
from core.market.feed import Feed
from core.market.state import MarketState
from core.settings import Settings
from core.trading.exchange import Exchange
from core.trading.book_view import EquityCurve, PositionView, position_views
from core.trading.derisk import ExposurePolicy, PolicyAction, describe, symbol_view, policy_applies
from core.trading.gate import OrderGate
from core.trading.orders import Order, OrderStatus, OrderType, Origin, Side, new_client_order_id
from core.trading.paper import QUOTE, PaperExchange, base_asset
from core.trading.portfolio import Portfolio
from core.venue import ConfirmLive, VenueLink

log = logging.getLogger("spikeguard.session")

MODES = {"paper": "PAPER", "testnet": "TESTNET", "live": "LIVE"}
POLICY_SEND_DRAIN_S = 10.0  # at close, how long the policy's orders in flight may take

ExchangeFactory = Callable[[Settings, MarketState, Callable[[], int]], Exchange]


def paper_exchange(settings: Settings, market: MarketState, clock: Callable[[], int]) -> Exchange:
    return PaperExchange(settings.execution.paper, market, clock)


@dataclass
class DeskDecisionMaker:
    """Turns a spike into a proposal or a skip. The rules proposer now; the agent crew later."""

    decide: Callable[[SpikeDetected, int | None], Any]
    label: str = "rules"


def describe_spike(spike: SpikeDetected) -> str:
    kind = spike.spike_type.value
    if kind == "futures_spot_divergence":
        body = f"futures mark {spike.magnitude_pct:.2f}% {'above' if spike.direction == 'pump' else 'below'} spot"
    elif kind == "liquidation_cascade":
        body = (f"liquidations {spike.details.get('liquidated_notional_usd', 0):,.0f} USD in "
                f"{spike.timeframe_minutes}m ({spike.details.get('count', 0)} orders)")
    else:
        body = (f"{spike.magnitude_pct:.2f}% over {spike.timeframe_minutes}m, vol x{spike.volume_multiple:.1f}"
                + (f", z {spike.zscore:.1f}" if spike.zscore else ""))
    return f"{spike.symbol} {spike.direction}: {body} ({kind}, conf {spike.confidence:.2f})"


class Session:
    def __init__(self, settings: Settings, feed: Feed, *, journal: Any = None, journal_path: Path | None = None,
                 journal_key: bytes | None = None, journal_force: bool = False,
                 breaker: CircuitBreakerState | None = None, wall_clock: Callable[[], int] | None = None,
                 exchange_factory: ExchangeFactory | None = None, long_minutes: tuple[int, ...] = ()) -> None:
        self.settings = settings
        self.feed = feed
        self.wall_clock = wall_clock or (lambda: time.time_ns() // 1_000_000)
        self.bus = EventBus()
        self.engine = Engine(settings, feed, breaker=breaker, bus=self.bus, long_minutes=long_minutes)
        self.breaker = self.engine.breaker
        self.journal = journal
        self.journal_path = journal_path
        self._journal_key = journal_key
        self._journal_force = journal_force
        self.portfolio = Portfolio(settings.execution.paper.starting_balance_usd)
        exchange = (exchange_factory or paper_exchange)(settings, self.engine.market, self.engine.now_ms)
        self.gate = OrderGate(settings.risk_management, self.breaker, self.engine.market, exchange,
                              self.portfolio, journal=journal, clock=self.engine.now_ms)
        self.mode = MODES[self.gate.exchange_name]  # the badge: the exchange actually wired, not the config
        # an exchange that keeps its own book (Binance) is started and reconciled before any order
        self.venue: VenueLink | None = VenueLink(self, exchange) if hasattr(exchange, "reconcile") else None
        self.approvals = ApprovalQueue(self.gate, self.breaker, self.engine.market, self.bus, journal=journal,
                                       wall_clock=self.wall_clock,
                                       max_drift_pct=settings.execution.max_approval_drift_percent,
                                       spawn=self._spawn)
        self.proposer = RulesProposer(settings, self.engine.market, self.breaker, equity=self._equity,
                                      holdings=self.portfolio.quantity, wall_clock=self.wall_clock)
        self.decision_maker = DeskDecisionMaker(self.proposer.decide, "rules")
        self.desk_enabled = True
        self._breaker_rows: dict[int, Any] = {}  # epoch -> future of its circuit_breaker_events row id
        self._saved_floor = 0  # epochs up to this one are on disk already (restored from the journal)
        self.journal_health: JournalHealth | None = None  # the latest, once the journal has reported
        self._decisions: set[asyncio.Task] = set()
        self.agent_desk: Any = None
        self.outcomes: Any = None  # core.agents.outcomes.OutcomeTracker, once the agent desk starts
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        self.history = HistoryBook()  # what the console's history panes read back
        self.equity_curve = EquityCurve()
        self.gate.listeners.append(self.bus.publish)
        self.gate.fill_listeners.append(self.bus.publish)
        self.gate.listeners.append(lambda order: self.history.on_order(order, self.engine.now_ms()))
        self.gate.fill_listeners.append(self.history.on_fill)
        self.engine.feed_health_listeners.append(self._on_feed_health)
        self._base_speed = getattr(feed, "speed", None)
        self.breaker_sync: Any = None  # core.breaker.redis_sync.RedisBreakerSync, for a shared breaker
        self.background: list[Callable[[], Any]] = []  # coroutine factories run() starts (and close() stops)
        self.breaker_backend_problem: str | None = None  # "breaker backend unreachable: ..." while it is
        self.approvals.on_status.append(self._pace_for_decisions)
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop run() runs on (policy orders go there)
        self.shadows: list[Any] = []  # core.shadow.BreakerScore of each live shadow breaker
        self._policy_sends: set[asyncio.Task] = set()  # the policy's orders on their way (close waits for them)
        policy = settings.protection_policy
        self.policy: ExposurePolicy | None = ExposurePolicy(
            policy, tuple(settings.circuit_breaker.references), holdings=self._long_holdings,
            last_price=self._last_price, own=symbol_view(self.engine.market, policy),
        ) if policy_applies(policy, live=self.mode == "LIVE") else None
        self.engine.tick_listeners.append(self._on_tick)
        self.engine.on_spike(self._on_spike)
        self.recorder: FlightRecorder | None = None
        self.incidents_unjournaled: list[str] = []  # encoded records of a session without a journal (incident.decode)
        if settings.flight_recorder.enabled:
            self.recorder = FlightRecorder(settings, self.engine.market, self.breaker, self._write_incident)
            self.engine.tick_listeners.append(self.recorder.on_tick)
            self.breaker.subscribe(self.recorder.on_breaker)  # before the policy acts: its actions go in the record
            self.gate.listeners.append(self.recorder.on_order)
            self.bus.taps.append(self.recorder.on_event)
        self.breaker.subscribe(self._on_breaker_change)

    # ------------------------------------------------------------------ the hot-path hooks
    def _on_tick(self, tick: Tick) -> None:
        self.gate.on_market_tick(tick)
        self.approvals.on_price(tick.symbol, tick.price)
        if self.policy is not None:
            self._apply_policy(self.policy.on_price(tick.symbol, tick.price, tick.time_ms))

    def _on_breaker_change(self, change: BreakerChanged) -> None:
        self.reason("guardian", "reason", f"{change.previous.value} -> {change.status.value}: {change.reason}"
                    f" (epoch {change.epoch}, by {change.actor.value})", change.time_ms)
        if change.details.get("adopted_from") == "journal":
            self._saved_floor = max(self._saved_floor, change.epoch)  # that row is where it came from
            return  # and the history has it from there
        self.history.on_breaker(change)
        if self.journal is not None:
            self._breaker_rows[change.epoch] = self.journal.enqueue_breaker_change(
                change, self.breaker.snapshot().to_dict())
        if self.policy is not None:
            self._apply_policy(self.policy.on_breaker(change))

    # ------------------------------------------------------------------ the flight recorder
    def _write_incident(self, record: dict[str, Any], encoded: str) -> None:
        """On the recorder's worker thread: enqueue_* is thread-safe and never blocks."""
        trigger = record["trigger"]
        if self.journal is None:
            self.incidents_unjournaled.append(encoded)
            return
        self.journal.enqueue_incident(trigger["time_ms"], trigger["reason"], encoded,
                                      trigger_type=trigger["trigger_type"], symbol=trigger["symbol"])

    # ------------------------------------------------------------------ shadow breakers
    def add_shadows(self, variants: list[tuple[str, Settings]]) -> None:
        """Run these breaker configs live beside the real one (core.shadow): their moves are
        told in the reasoning trail and the status bar, and never reach a gate."""
        from core.shadow import attach_shadows

        self.shadows = attach_shadows(self.engine, variants, (), protection=False)[1:] if variants else []
        for score in self.shadows:
            score.breaker.subscribe(lambda change, name=score.name: self.reason(
                "guardian", "reason", f"shadow {name} would be {change.status.value}: {change.reason} (not acting)",
                change.time_ms))

    def shadow_line(self) -> str:
        return "  ".join(f"{s.name} {s.breaker.status.value}" for s in self.shadows)

    # ------------------------------------------------------------------ the de-risking policy
    def _long_holdings(self) -> dict[str, float]:
        """What the policy may sell: each long position less what open exit orders already sell."""
        free = {s: p.quantity - self.gate.exiting(s) for s, p in self.portfolio.positions().items() if p.quantity > 0}
        return {s: q for s, q in free.items() if q > 0}

    def _last_price(self, symbol: str) -> float | None:
        w = self.engine.market.symbols.get(symbol)
        return w.last_price if w is not None and w.ticks else None

    def policy_line(self, short: bool = False) -> str:
        """The banner's words: the policy's tiers and, while it holds exposure back, how much."""
        line = describe(self.settings.protection_policy, self.policy is not None, short)
        if self.policy is not None and self.policy.baseline:
            line += f" @{self.policy.exposure:.0%}" if short else f"; holding {self.policy.exposure:.0%}"
        return line

    def _apply_policy(self, action: PolicyAction | None) -> None:
        """Journal the policy's decision (actor=policy) and send its orders through the gate.
        A breaker change may come from any thread: the orders go to the session's loop."""
        if action is None:
            return
        details = action.details()
        if self.recorder is not None:
            self.recorder.on_policy(action)
        self.history.on_action(f"policy_{action.kind}", action.reason, details, "policy", action.time_ms)
        self.reason("guardian", "reason", f"policy: {action.reason}", action.time_ms)
        if self.journal is not None:
            self.journal.enqueue_operator_action(f"policy_{action.kind}", action.reason, details, actor="policy",
                                                 time_ms=action.time_ms)
        loop = self._loop
        if loop is None:
            with contextlib.suppress(RuntimeError):  # not on a loop: nothing can trade
                loop = asyncio.get_running_loop()
        if loop is None or loop.is_closed() or not action.orders or self._closed:
            return
        loop.call_soon_threadsafe(self._start_policy_send, action)

    def _start_policy_send(self, action: PolicyAction) -> None:
        if self._closed:
            log.warning("policy %s not sent: the session is closing", action.kind)
            return
        task = asyncio.get_running_loop().create_task(self._send_policy_orders(action))
        self._policy_sends.add(task)
        task.add_done_callback(self._policy_sends.discard)
        task.add_done_callback(log_task_error)

    async def _send_policy_orders(self, action: PolicyAction) -> None:
        for order in action.orders:
            done = await self.gate.submit(order)
            if done.status is OrderStatus.DENIED:
                self.alert("policy", f"policy {action.kind}: {order.side.value} {order.symbol} refused: {done.reason}",
                           symbol=order.symbol)

    def _pace_for_decisions(self, *_: Any) -> None:
        """A sim or replay slows to `testing.decision_speed` while a proposal waits, and goes
        back to its own speed when none does."""
        slow, base = self.settings.testing.decision_speed, self._base_speed
        if not slow or not base or self.feed.realtime or not hasattr(self.feed, "set_speed"):
            return
        self.feed.set_speed(min(base, slow) if self.approvals.pending() else base)

    @property
    def slowed_for_decision(self) -> bool:
        return bool(self._base_speed) and getattr(self.feed, "speed", None) != self._base_speed

    # ------------------------------------------------------------------ durable before shown
    def breaker_saved(self, epoch: int | None = None) -> bool:
        """Whether the transition to `epoch` (default: the current one) is on disk. Without a
        journal there is nothing to wait for."""
        epoch = self.breaker.epoch if epoch is None else epoch
        if self.journal is None or epoch <= self._saved_floor:
            return True
        row = self._breaker_rows.get(epoch)
        return row is not None and row.done() and not row.cancelled() and row.exception() is None

    async def wait_saved(self, epoch: int) -> None:
        """Until the transition to `epoch` is on disk (a failing journal keeps retrying)."""
        if self.breaker_saved(epoch):
            return
        row = self._breaker_rows.get(epoch)
        if row is None:
            raise KeyError(f"no journal row pending for epoch {epoch}")
        await asyncio.wrap_future(row)

    def _on_journal_health(self, health: JournalHealth) -> None:
        self.journal_health = health
        if health.ok:
            self.alert("journal", "journal writing again: every held row is on disk", "info")
        else:
            self.alert("journal", f"JOURNAL FAILING: {health.error}; new entries blocked, "
                                  f"{health.unwritten} rows held in memory", "error")
        self.bus.publish(health)

    def _on_feed_health(self, health: FeedHealth, previous: FeedHealth | None) -> None:
        """A stream that goes stale or reconnects, and its return, are alerts (its halt, if the
        guardian trips on it, is the breaker's)."""
        troubled = (FeedState.STALE, FeedState.RECONNECTING, FeedState.OVERFLOW)
        if health.state in troubled and (previous is None or previous.state is not health.state):
            self.alert("feed", f"{health.stream} {health.state.value}: {health.detail}".rstrip(": "), "warning")
        elif health.state is FeedState.CONNECTED and previous is not None and previous.state in troubled:
            self.alert("feed", f"{health.stream} connected again", "info")

    def on_breaker_backend_problem(self, problem: str | None) -> None:
        """The shared breaker cannot be read (or can again): new entries are held meanwhile,
        as if it were TRIGGERED; exits and cancels still go out."""
        self.breaker_backend_problem = problem
        if problem:
            self.gate.block_entries("breaker-backend", problem)
            self.alert("breaker backend", f"{problem}: new entries blocked", "error")
        elif self.gate.unblock_entries("breaker-backend"):
            self.alert("breaker backend", "breaker backend reachable again", "info")

    def alert(self, kind: str, text: str, severity: str = "warning", symbol: str | None = None,
              echo: bool = True) -> None:
        """Something the operator must be able to read back apart from the agents' chatter: in
        the alerts pane, the journal (as an action of actor "system") and, with `echo`, the
        reasoning trail."""
        if echo:
            self.reason("operator" if kind == "journal" else "guardian", "error" if severity == "error" else "reason",
                        text)
        details = {"kind": kind, "severity": severity, "symbol": symbol}
        now = self.wall_clock()
        self.history.on_action("alert", text, details, "system", now)
        if self.journal is not None:
            self.journal.enqueue_operator_action("alert", text, details, actor="system", time_ms=now)

    def _on_spike(self, spike: SpikeDetected) -> None:
        text = describe_spike(spike)
        self.reason("scanner", "reason", text, spike.time_ms)
        blocked = spike.details.get("blocked_by_breaker")
        status = "blocked" if blocked else "detected"
        self.bus.publish(SpikeStatus(spike, status, f"breaker {blocked}" if blocked else ""))
        row = None  # the future of the spike's journal row id: decisions link to it
        if self.journal is not None:
            row = self.journal.enqueue_spike(spike, status="skipped" if blocked else "detected")
        deciding = not blocked and self.desk_enabled and self.settings.crew.enabled
        if self.outcomes is not None and (blocked or deciding):
            self.outcomes.on_spike(spike, row, blocked)
        if deciding:
            self.bus.publish(SpikeStatus(spike, "analysing"))
            self._decide(spike, row)

    def _decide(self, spike: SpikeDetected, row: Any) -> None:
        """`row` is the future of the spike's journal row id (None without a journal). The
        decision maker is called now, inside the engine's spike hook: the crew's dedupe, rate
        limit and (in a replay) feed hold take effect before the next event; its answer, an
        awaitable for the crew, is applied when it lands."""
        if self.agent_desk is None:
            row = row.result() if row is not None and row.done() and not row.exception() else None
        try:
            decision = self.decision_maker.decide(spike, row)
        except Exception as exc:  # a failing desk skips the spike; it never takes the engine down
            log.exception("decision maker failed on %s", spike.symbol)
            decision = Skip(f"desk failed: {type(exc).__name__}: {exc}")
        if inspect.isawaitable(decision):
            self._spawn(self._apply_later(spike, decision))
        else:
            self._apply_decision(spike, decision)

    async def _apply_later(self, spike: SpikeDetected, pending: Any) -> None:
        try:
            decision = await pending
        except Exception as exc:
            log.exception("agent desk failed on %s", spike.symbol)
            decision = Skip(f"agent desk failed: {type(exc).__name__}: {exc}")
        self._apply_decision(spike, decision)

    def _apply_decision(self, spike: SpikeDetected, decision: Any) -> None:
        if self.outcomes is not None:
            self.outcomes.on_decision(spike, decision)
        if isinstance(decision, Skip):
            self.reason("desk", "reason", f"skip {spike.symbol} {spike.direction}: {decision.reason}", spike.time_ms)
            self.bus.publish(SpikeStatus(spike, "skipped", decision.reason))
            return
        if isinstance(decision, TradeProposal):
            self.approvals.add(decision)
            self.reason("desk", "answer", f"proposal {decision.proposal_id}: {decision.side} {decision.quantity:g} "
                        f"{decision.symbol} {decision.entry_type} (stop {decision.stop_loss:g}, target "
                        f"{decision.take_profit:g}) [{decision.source}]", spike.time_ms)
            self.bus.publish(SpikeStatus(spike, "proposed", "", decision.proposal_id))
            if self.auto_approve:
                self._spawn(self.approvals.approve(decision.proposal_id, decision.content_hash, actor=Actor.RULE,
                                                   note="auto-approved (paper mode)"))

    @property
    def auto_approve(self) -> bool:
        """Only ever on the paper exchange, and only when configured."""
        return self.settings.execution.auto_approve_paper and self.mode == "PAPER"

    def _spawn(self, coro: Any) -> None:
        """Background work of the desk (crew answers, auto-approvals, stops, take-profits):
        tracked, so `settle()` waits for it, and a failure is logged, never lost."""
        task = asyncio.get_running_loop().create_task(coro)
        self._decisions.add(task)
        task.add_done_callback(self._decisions.discard)
        task.add_done_callback(log_task_error)

    # ------------------------------------------------------------------ the agent desk
    async def start_agent_desk(self, storage_dir: Path | None = None, llm: str | None = None,
                               hold_feed: bool | None = None) -> Any:
        """Load CrewAI (in a thread) and put the crew behind the desk. Until this returns, and
        if it fails, the rules proposer answers spikes. A feed that is not live (sim, replay)
        holds at each spike's tick while its crew runs (`hold_feed`, by default); a live one
        never waits."""
        from core.agents.desk import AgentDesk

        self._follow_outcomes()
        hold = not self.feed.realtime if hold_feed is None else hold_feed
        desk = AgentDesk(self, self.settings, None, self.bus, storage_dir, llm=llm, hold_feed=hold)
        try:
            await desk.start()
        except Exception as exc:
            self.reason("desk", "error", f"agent desk unavailable, the rules proposer stays: {exc}")
            raise
        desk.provider_error_listeners.append(
            lambda line: self.alert("agents", f"provider error: {line}", "warning", echo=False))  # the desk streams it
        self.agent_desk = desk
        self.decision_maker = desk.decision_maker()
        self.reason("desk", "reason", f"agent desk ready: {self.decision_maker.label}")
        return desk

    def _follow_outcomes(self) -> None:
        """Every decision's outcome on paper, measured on the ticks (core.agents.outcomes)."""
        from core.agents.outcomes import OutcomeTracker

        if self.outcomes is None:
            self.outcomes = OutcomeTracker(self.settings, self.engine.market, lambda: self.journal, self._equity)
            self.engine.tick_listeners.append(self.outcomes.on_tick)

    async def settle(self) -> None:
        """Wait for the crews still deciding (a replay's end) and the policy's orders; at the
        end of the market data, the outcomes whose horizon was not reached are marked so."""
        await asyncio.sleep(0)
        while self._decisions or self._policy_sends:
            await asyncio.gather(*list(self._decisions), *list(self._policy_sends), return_exceptions=True)
        if self.agent_desk is not None:  # aborted runs journal their decisions after answering
            await self.agent_desk.settle()
        if self.outcomes is not None and self.engine.finished:
            self.outcomes.finish()
        if self.recorder is not None:  # a record still open when the data ends is written now
            if self.engine.finished:
                self.recorder.close("the market data ended", self.engine.now_ms())
            await self.recorder.flushed()

    def reason(self, role: str, kind: str, text: str, time_ms: int | None = None) -> None:
        self.bus.publish(ReasoningLine(role, kind, text, time_ms if time_ms is not None else self.engine.now_ms()))

    def _equity(self) -> float:
        return self.portfolio.equity(self.engine.market.last_prices())

    # ------------------------------------------------------------------ the journal
    async def open_journal(self, path: Path, *, key: bytes | None = None, force: bool = False) -> None:
        """Open (or create) the journal on this loop and restore the last session's state.
        With `key`, the journal's head must verify (core.journal.keys); `force` opens one
        that does not, and journals that it did. Raises JournalError with one line."""
        from core.journal import Journal

        self.attach_journal(await Journal.open(path, key=key, force=force), path)
        await load_from_journal(self.history, self.journal)  # before restore: its own steps are live
        await self.restore()

    def attach_journal(self, journal: Any, path: Path | None) -> None:
        self.journal = journal
        self.journal_path = path
        self.gate.journal = journal
        self.approvals.journal = journal
        add_listener = getattr(journal, "add_health_listener", None)
        if add_listener is not None:
            add_listener(self._on_journal_health)

    async def restore(self) -> dict[str, Any]:
        """A restart takes up where the journal left off: the breaker's last state (TRIGGERED
        stays TRIGGERED), positions from the fills, and the open orders, each re-submitted
        through the gate under that restored state (an entry the gate refuses now is
        cancelled, and the cancellation is journaled; protective exits rest again)."""
        journal = self.journal
        restored: dict[str, Any] = {"breaker": None, "fills": 0, "open_orders": 0, "cancelled": 0}
        # a shared breaker (Redis) is the deployment's, not this journal's: it is not restored from here
        record = await journal.last_breaker_record() if self.breaker.backend_name == "memory" else None
        if record:
            last_row = (await journal.recent("circuit_breaker_events", 1))[0]
            self._adopt_journal_record(record, int(last_row.get("epoch") or 0))
            restored["breaker"] = self.breaker.status.value
        fills = await journal.fills()
        for fill in fills:
            self.portfolio.apply(fill)
        restored["fills"] = len(fills)
        if self.venue is not None:  # the exchange's book is the truth: reconciled at start_venue()
            self.venue.journal_orders = [o for o in await journal.latest_orders() if not o.status.is_final]
            self.venue.journal_fills = fills
            restored["open_orders"] = len(self.venue.journal_orders)
            open_orders = []
        else:
            open_orders = await journal.open_orders()
        if fills or open_orders:
            balances: dict[str, float] = {QUOTE: self.portfolio.cash}
            for symbol, pos in self.portfolio.positions(open_only=True).items():
                asset = base_asset(symbol)
                if asset:
                    balances[asset] = balances.get(asset, 0.0) + pos.quantity
            cancelled = self.gate.restore(balances, open_orders)
            restored["open_orders"] = len(open_orders) - len(cancelled)
            restored["cancelled"] = len(cancelled)
            for order in cancelled:
                self.reason("operator", "reason", f"restored order {order.client_order_id} {order.side.value} "
                            f"{order.quantity:g} {order.symbol} cancelled: {order.reason}")
        if self.policy is not None:
            self.policy.resume(await journal.last_policy_action(), self.breaker.status)
            if self.policy.resume_due:
                self.reason("guardian", "reason", f"policy: restored in {self.breaker.status.value} holding "
                            f"{', '.join(sorted(self.policy.resume_due))} above its {self.policy.exposure:.0%}: "
                            "cut again on the first price")
        if any((restored["breaker"], restored["fills"], restored["open_orders"], restored["cancelled"])):
            self.reason("operator", "reason", f"restored from the journal: breaker {restored['breaker'] or 'SAFE'}, "
                        f"{restored['fills']} fills, {restored['open_orders']} open orders, "
                        f"{restored['cancelled']} cancelled")
        log.info("restored %s", restored)
        return restored

    def _adopt_journal_record(self, record: dict[str, Any], row_epoch: int) -> None:
        """The journal's last breaker state becomes ours. A record that cannot be taken as it
        is (unreadable, illegal) fails closed: TRIGGERED, one epoch past the journal's."""
        from core.breaker.machine import BreakerRecord, IllegalTransition

        try:
            self.breaker.adopt(BreakerRecord.from_dict(record), source="journal")
            return
        except (IllegalTransition, KeyError, TypeError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        epoch = max(row_epoch, record.get("epoch") if isinstance(record.get("epoch"), int) else 0)
        log.error("the journal's last breaker record could not be restored (%s): failing closed", why)
        now = self.wall_clock()
        self.breaker.adopt(BreakerRecord(
            status=BreakerStatus.TRIGGERED, epoch=max(epoch, self.breaker.epoch) + 1, since_ms=now,
            reason=f"restore: the journal's last breaker record could not be read ({why})", actor=Actor.RULE,
            trigger_type="restore_failed", triggered_at_ms=now, trigger_reason="restore failed",
            trigger_actor=Actor.RULE), source="restore")

    # ------------------------------------------------------------------ running
    async def start_venue(self, confirm_live: ConfirmLive | None = None) -> Any:
        """Connect and reconcile an exchange that keeps its own book (core.venue); nothing to do
        on paper. Raises VenueError (one line); the breaker stays TRIGGERED then."""
        if self.venue is None:
            return None
        self.bus.bind_loop(asyncio.get_running_loop())
        return await self.venue.start(confirm_live)

    async def run(self, on_batch: Callable[[], None] | None = None) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self.bus.bind_loop(loop)
        if self.journal is None and self.journal_path is not None:
            await self.open_journal(self.journal_path, key=self._journal_key, force=self._journal_force)
        if self.venue is not None and not self.venue.started:
            await self.start_venue()
        self._tasks.append(loop.create_task(self._housekeeping()))
        if self.breaker_sync is not None:
            self.breaker_sync.start()
        self._tasks.extend(loop.create_task(factory()) for factory in self.background)
        url = self.settings.monitoring.webhook_url
        if url:
            self._tasks.append(loop.create_task(self._alerts(url)))
        await self.engine.run(on_batch=on_batch)

    async def _alerts(self, url: str) -> None:
        """Post WARNING and TRIGGERED transitions to the webhook; journal the delivery."""
        from core.notify import WebhookNotifier

        notifier = WebhookNotifier(url, self.settings.monitoring.webhook_style, on_delivered=self._notified)
        self.notifier = notifier
        queue = self.bus.subscribe()
        while True:
            event = await queue.get()
            if isinstance(event, BreakerChanged):
                await notifier.notify(event)

    async def _notified(self, change: BreakerChanged) -> None:
        row = self._breaker_rows.get(change.epoch)
        if self.journal is not None and row is not None:
            await self.journal.mark_user_notified(await asyncio.wrap_future(row))

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.approvals.expire_due()

    async def close(self, reason: str = "") -> None:
        """Cancel resting entry orders (protective stops stay with the exchange), journal the
        end of the session, flush the journal."""
        if self._closed:
            return
        await asyncio.sleep(0)  # a policy send scheduled by the last breaker move starts now...
        self._closed = True
        self.engine.stop()
        if self._policy_sends:  # ...and its protective orders finish before the journal closes
            await asyncio.wait(set(self._policy_sends), timeout=POLICY_SEND_DRAIN_S)
        if self.outcomes is not None:
            self.outcomes.finish()  # before the desk's last agent_performance rows
        if self.agent_desk is not None:
            await self.agent_desk.close()
        for task in self._tasks:
            task.cancel()
        if self.recorder is not None:
            self.recorder.close("the session ended", self.engine.now_ms())
            await self.recorder.flushed()  # its row is queued before the journal closes
        cancelled = 0
        for order in self.gate.open_orders():
            if not order.reduce_only:
                try:
                    await self.gate.cancel(order.client_order_id, f"session end: {reason or 'closed'}")
                    cancelled += 1
                except Exception:
                    log.exception("cancel on close failed for %s", order.client_order_id)
        if reason:
            self._operator_action("session_end", reason, {"entry_orders_cancelled": cancelled,
                                                          "breaker": self.breaker.status.value})
        if self.venue is not None:
            try:
                await self.venue.close()
            except Exception:
                log.exception("closing the exchange failed")
        if self.breaker_sync is not None:
            await self.breaker_sync.stop()
        if self.journal is not None:
            await self.journal.close()

    # ------------------------------------------------------------------ operator commands
    def force_trigger(self, reason: str) -> bool:
        done = self.engine.force_trigger(reason)
        self._operator_action("force_trigger", reason, {"done": done, "epoch": self.breaker.epoch})
        return done

    def clear_needs_override(self) -> str | None:
        """A sentence explaining why a clear needs a typed override, or None."""
        why = self.engine.clear_needs_override()
        return f"{why[0].upper()}{why[1:]}." if why else None

    def clear_breaker(self, reason: str, override: bool = False) -> tuple[bool, str]:
        """The clear's answer says what the rules did right after it (a condition still true
        raises WARNING again at once); the journal records the same."""
        ok, message = self.engine.clear_breaker(reason, override=override)
        self._operator_action("clear_breaker", reason, {"ok": ok, "override": override, "message": message,
                                                        "state_after": self.breaker.status.value,
                                                        "epoch_after": self.breaker.epoch})
        return ok, message

    async def flatten(self, symbol: str | None, reason: str) -> list[str]:
        """The operator's flatten (any breaker state): for each position (or the one given),
        cancel its orders, then sell it at market, reduce-only, through the gate. If the sale
        is refused, the protective stops that were cancelled go back. One line per symbol."""
        symbols = [symbol] if symbol else sorted(self.portfolio.positions(open_only=True))
        lines = []
        for sym in symbols:
            lines.append(await self._flatten_one(sym, reason))
        self._operator_action("flatten", reason, {"symbol": symbol or "ALL", "results": lines})
        return lines

    async def _flatten_one(self, symbol: str, reason: str) -> str:
        held = self.portfolio.quantity(symbol)
        if held <= 0:
            return f"{symbol}: no position"
        stops = [o for o in self.gate.open_orders() if o.symbol == symbol and o.reduce_only]
        for order in self.gate.open_orders():
            if order.symbol == symbol:
                await self.gate.cancel(order.client_order_id, f"flatten: {reason}")
        sale = await self.gate.submit(Order(symbol=symbol, side=Side.SELL, type=OrderType.MARKET, quantity=held,
                                            reduce_only=True, origin=Origin.OPERATOR, operator_confirmed=True))
        if sale.status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED, OrderStatus.NEW):
            return f"{symbol}: sell {held:g} {sale.status.value.lower()}"
        for stop in stops:  # the position is still there: so is its protection
            await self.gate.submit(stop.with_(client_order_id=new_client_order_id(), quantity=stop.remaining,
                                              filled_quantity=0.0, status=OrderStatus.INTENT, reason=None))
        return f"{symbol}: sell {sale.status.value.lower()}: {sale.reason}"

    async def cancel_order(self, client_order_id: str, reason: str) -> Order:
        """The operator's cancel of one order (allowed in every state), journaled."""
        order = await self.gate.cancel(client_order_id, f"operator: {reason}" if reason else "operator")
        self._operator_action("cancel_order", reason, {"client_order_id": client_order_id,
                                                       "status": order.status.value, "symbol": order.symbol,
                                                       "reduce_only": order.reduce_only})
        return order

    def pause_scanner(self, paused: bool) -> None:
        self.engine.scanner.paused = paused
        self._operator_action("pause_scanner" if paused else "resume_scanner", "", {})

    def pause_feed(self, paused: bool) -> None:
        (self.feed.pause if paused else self.feed.resume)()
        self._operator_action("pause_feed" if paused else "resume_feed", "", {})

    async def approve(self, proposal_id: str, seen_hash: str) -> ApprovalResult:
        result = await self.approvals.approve(proposal_id, seen_hash)
        self._operator_action("approve", result.message, {"proposal_id": proposal_id, "ok": result.ok})
        return result

    def reject(self, proposal_id: str, reason: str) -> bool:
        done = self.approvals.reject(proposal_id, reason)
        self._operator_action("reject", reason, {"proposal_id": proposal_id, "done": done})
        return done

    def _operator_action(self, action: str, reason: str, details: dict[str, Any]) -> None:
        self.reason("operator", "reason", f"{action}{': ' + reason if reason else ''}")
        now = self.wall_clock()
        self.history.on_action(action, reason, details, "operator", now)
        if self.journal is not None:
            self.journal.enqueue_operator_action(action, reason, details, time_ms=now)

    def record_action(self, action: str, reason: str, details: dict[str, Any]) -> None:
        """A session step the journal keeps beside the operator's (the exchange's reconcile,
        a live confirmation)."""
        self._operator_action(action, reason, details)

    # ------------------------------------------------------------------ views for the console
    def open_positions(self) -> list[tuple[str, float, float, float, float]]:
        prices = self.engine.market.last_prices()
        rows = []
        for symbol, pos in sorted(self.portfolio.positions().items()):
            if pos.quantity > 0:
                last = prices.get(symbol, pos.average_price)
                rows.append((symbol, pos.quantity, pos.average_price, last, (last - pos.average_price) * pos.quantity))
        return rows

    def book_view(self) -> tuple[list[PositionView], EquityCurve]:
        """The positions with their stops and targets, and the equity curve (sampled now)."""
        rows = self.open_positions()
        self.equity_curve.sample(self.engine.now_ms(), self._equity())
        return position_views(rows, self.gate.open_orders(), self.approvals.targets()), self.equity_curve

    def has_exposure(self) -> bool:
        return bool(self.open_positions()) or bool(self.gate.open_orders())

    def open_orders(self) -> list[Order]:
        return self.gate.open_orders()


__all__ = ["Session", "MODES", "DeskDecisionMaker", "describe_spike"]
