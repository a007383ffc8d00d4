"""What the agents see and touch: the engine's live objects, and the state of one crew run.

DeskContext holds references to the engine's market state, breaker, guardian, scanner,
gate, portfolio, a read-only view of the exchange and the approval queue. The crew runs in worker threads while
the engine keeps mutating those objects on its loop, so every read or write a tool makes
goes through `on_loop()`: it runs on the engine loop (consistent reads; breaker
transitions and their subscribers on the thread they expect) and the tool thread waits.

RunState is one crew run: its budget, the abort flag the guards read, the executor's
candidate order, the per-task outputs and timings. The run being executed is found with
the CURRENT_RUN context variable, set in the task that starts the kickoff and copied by
CrewAI into its worker and event-handler threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.events import BreakerStatus, SpikeDetected
from core.settings import Settings

CURRENT_RUN: contextvars.ContextVar["RunState | None"] = contextvars.ContextVar("spikeguard_crew_run", default=None)

_run_ids = itertools.count(1)


class LoopTimeout(Exception):
    pass


@dataclass
class DeskContext:
    """The engine's objects the desk's tools read (and, for escalation, write)."""

    settings: Settings
    market: Any  # core.market.state.MarketState
    breaker: Any  # core.breaker.state.CircuitBreakerState
    guardian: Any = None  # core.detect.guardian.Guardian
    scanner: Any = None  # core.detect.scanner.Scanner
    gate: Any = None  # core.trading.gate.OrderGate
    portfolio: Any = None  # core.trading.portfolio.Portfolio
    exchange: Any = None  # the gate's read-only view of the exchange (quotes, depth_usd, balances)
    approvals: Any = None  # core.desk.approval.ApprovalQueue
    now_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)  # engine (event) time
    wall_clock: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)
    feed_name: str = "feed"
    session: Any = None
    breaker_rows: dict[int, Any] | None = None  # epoch -> future of the breaker row id (Session._breaker_rows)
    env: dict[str, str] | None = None  # secrets source for optional data tools (default: os.environ)
    loop: asyncio.AbstractEventLoop | None = None
    loop_thread: int | None = None
    loop_timeout_s: float = 5.0

    @classmethod
    def from_session(cls, session: Any) -> "DeskContext":
        engine = session.engine
        return cls(
            settings=session.settings, market=engine.market, breaker=session.breaker, guardian=engine.guardian,
            scanner=engine.scanner, gate=session.gate, portfolio=session.portfolio, exchange=session.gate.view,
            approvals=session.approvals, now_ms=engine.now_ms, wall_clock=session.wall_clock,
            feed_name=getattr(session.feed, "name", "feed"), session=session,
            breaker_rows=getattr(session, "_breaker_rows", None),
        )

    # ------------------------------------------------------------------ the engine loop
    def bind_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()

    def on_loop(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run fn on the engine loop and return its result (directly when already there,
        or when no loop is running)."""
        loop = self.loop
        if loop is None or threading.get_ident() == self.loop_thread or loop.is_closed() or not loop.is_running():
            return fn(*args, **kwargs)
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the waiting tool thread
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        try:
            return fut.result(self.loop_timeout_s)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise LoopTimeout(f"the engine loop did not answer within {self.loop_timeout_s:g}s") from None

    # ------------------------------------------------------------------ small reads
    def equity(self) -> float:
        if self.portfolio is None:
            return self.settings.risk_management.account_equity_usd
        return float(self.portfolio.equity(self.market.last_prices()))

    def holdings(self, symbol: str) -> float:
        if self.portfolio is None:
            return 0.0
        return float(self.portfolio.quantity(symbol))

    def spike_event_id(self, spike: SpikeDetected | None, given: int | None = None) -> int | None:
        """The spike's journal row (the Session awaits it before the crew starts)."""
        return given

    def breaker_event_id(self, epoch: int | None) -> int | None:
        """The journal row of a breaker transition, when it is already committed."""
        if epoch is None or not self.breaker_rows:
            return None
        fut = self.breaker_rows.get(epoch)
        if fut is None:
            return None
        try:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                return fut.result()
        except Exception:
            return None
        return None

    def getenv(self, key: str) -> str | None:
        import os

        source = self.env if self.env is not None else os.environ
        value = source.get(key)
        return value if value else None


@dataclass
class TaskRecord:
    name: str
    role: str
    started: float  # perf_counter
    ended: float | None = None
    output: str = ""

    @property
    def execution_time_ms(self) -> float | None:
        return None if self.ended is None else round((self.ended - self.started) * 1000.0, 3)


@dataclass(eq=False)
class RunState:
    """One crew run (a spike's analysis, or a guardian check)."""

    kind: str  # "spike" or "guardian"
    source: str  # "crew:rules", "crew:openai/gpt-4o-mini"
    model: str  # "rules", "openai/gpt-4o-mini"
    token_budget: int
    cost_budget_usd: float
    price_in_per_m: float = 0.0
    price_out_per_m: float = 0.0
    spike: SpikeDetected | None = None
    spike_event_id: int | None = None
    breaker_epoch: int | None = None
    breaker_status: str | None = None
    abort_on_trigger: bool = True
    run_id: str = field(default_factory=lambda: f"run{next(_run_ids)}")
    started_perf: float = field(default_factory=time.perf_counter)
    started_wall_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    abort_reason: str | None = None
    tokens_in: int = 0  # estimated from the prompts, before each model call
    tokens_out: int = 0  # estimated from the answers
    reported_tokens: int = 0  # what the provider said it used (usage), when it says
    model_calls: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    candidate: dict[str, Any] | None = None  # the executor's intended order (BinanceSpotOrderTool)
    escalations: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    task_order: list[str] = field(default_factory=list)
    holding: bool = False  # holds the feed (replay) until the run ends
    abort_epoch: int | None = None  # the breaker epoch whose trip aborted the run
    vetoed: str | None = None  # the veto that ended the run (core.agents.vetoes)
    spike_row: Any = field(default=None, repr=False)  # the future of the spike's journal row id
    task_hook: Callable[[Any], None] | None = field(default=None, repr=False)  # called with each TaskOutput
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _abort_listeners: list[Callable[[str], None]] = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------ budget
    @property
    def tokens(self) -> int:
        return max(self.tokens_in + self.tokens_out, self.reported_tokens)

    @property
    def cost_usd(self) -> float:
        est_in = self.tokens_in
        est_out = self.tokens_out
        if self.reported_tokens > est_in + est_out and est_in + est_out > 0:
            scale = self.reported_tokens / (est_in + est_out)
            est_in, est_out = est_in * scale, est_out * scale
        return (est_in * self.price_in_per_m + est_out * self.price_out_per_m) / 1_000_000

    def budget_problem(self) -> str | None:
        if self.tokens > self.token_budget:
            return f"token budget exceeded: {self.tokens} tokens > {self.token_budget} per proposal"
        if self.cost_budget_usd > 0 and self.cost_usd > self.cost_budget_usd:
            return f"cost budget exceeded: {self.cost_usd:.4f} USD > {self.cost_budget_usd:g} USD per proposal"
        return None

    def add_tokens(self, tokens_in: int = 0, tokens_out: int = 0, reported: int = 0) -> None:
        with self.lock:
            self.tokens_in += int(tokens_in)
            self.tokens_out += int(tokens_out)
            self.reported_tokens += int(reported)

    # ------------------------------------------------------------------ abort
    def abort(self, reason: str) -> bool:
        """Mark the run aborted (first reason wins). Thread-safe."""
        with self.lock:
            if self.abort_reason is not None:
                return False
            self.abort_reason = reason
            listeners = list(self._abort_listeners)
        for fn in listeners:
            try:
                fn(reason)
            except Exception:
                pass
        return True

    def on_abort(self, fn: Callable[[str], None]) -> None:
        with self.lock:
            self._abort_listeners.append(fn)
            reason = self.abort_reason
        if reason is not None:
            fn(reason)

    @property
    def aborted(self) -> bool:
        return self.abort_reason is not None

    def check(self, breaker: Any = None) -> str | None:
        """Why the run must stop now, or None: aborted, breaker TRIGGERED, over budget."""
        if self.abort_reason is not None:
            return self.abort_reason
        if breaker is not None and self.abort_on_trigger and breaker.status is BreakerStatus.TRIGGERED:
            info = breaker.get_trigger_info()
            self.abort(f"circuit breaker TRIGGERED: {info.get('trigger_reason') or 'halt'}")
            return self.abort_reason
        problem = self.budget_problem()
        if problem is not None:
            self.abort(problem)
            return self.abort_reason
        return None

    # ------------------------------------------------------------------ tasks
    def task_started(self, name: str, role: str) -> None:
        with self.lock:
            if name not in self.tasks:
                self.task_order.append(name)
            self.tasks[name] = TaskRecord(name, role, time.perf_counter())

    def task_finished(self, name: str, role: str, output: str) -> None:
        with self.lock:
            rec = self.tasks.get(name)
            if rec is None:
                rec = self.tasks[name] = TaskRecord(name, role, self.started_perf)
                self.task_order.append(name)
            rec.ended = time.perf_counter()
            rec.output = output

    def record_tool(self, name: str, role: str | None, args: dict[str, Any], result: dict[str, Any]) -> None:
        with self.lock:
            self.tool_calls.append({"tool": name, "role": role, "args": args, "status": result.get("status"),
                                    "result": result})

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started_perf) * 1000.0


__all__ = ["CURRENT_RUN", "DeskContext", "RunState", "TaskRecord", "LoopTimeout"]
