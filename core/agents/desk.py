"""AgentDesk: spikes become crew runs, crew runs become proposals (or skips with a reason).

The pipeline, on the engine's loop:

    spike -> dedupe (symbol, type, direction) -> rate limit (crew.max_runs_per_minute)
          -> a run slot (crew.max_concurrent_runs) -> spike trading crew (await akickoff:
             CrewAI works in its own threads, the loop stays free) -> finalize (schema,
             caps) -> TradeProposal for the approval queue, or Skip(reason)

- Guards: around each kickoff the desk installs CrewAI hooks scoped to that run (pre-step,
  pre-model-call, pre-tool-call) that stop the run when the breaker is TRIGGERED, when the
  token or cost budget is spent, or when the desk closes. A trip also answers the waiting
  caller at once with Skip("circuit breaker TRIGGERED: ..."), without waiting for the
  crew's threads to notice.
- Streaming: CrewAI's event bus (agent starts, tool calls and results, streamed thoughts,
  answers, errors) is routed per run with the CURRENT_RUN context variable, sorted by
  emission_sequence in a short reorder window (40 ms, up to 90 ms when CrewAI's handler
  threads run late), and published on the engine's bus
  as ReasoningLine(role=<agent role>, kind, text, time_ms, run_id, sequence).
- Journal: every agent's decision goes to agent_decisions (decision, confidence,
  reasoning, input and output JSON, execution_time_ms, spike, breaker event, proposal id);
  agent_performance is aggregated per UTC day, with true and false positives once a
  proposal's outcome is known (record_outcome).
- Guardian: every WARNING or TRIGGERED transition runs the guardian crew (one at a time,
  coalesced), and so does a timer every crew.guardian_interval_seconds while RECOVERING.
  It explains the state and may escalate; it can never loosen the breaker.

See the module `core.agents` docstring for how a Session wires it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.agents import offline
from core.agents.analyst import GUARDIAN_TASK
from core.agents.context import CURRENT_RUN, DeskContext, RunState
from core.agents.crew import (
    DECISION_TYPES,
    TASK_AGENT,
    build_guardian_crew,
    build_spike_crew,
    decision_fields,
    finalize,
    spike_payload,
)
from core.agents.llm import RULES, estimate_tokens, llm_label, make_llm
from core.desk.proposal import TradeProposal
from core.desk.rules_proposer import Skip
from core.events import BreakerChanged, BreakerStatus, ReasoningLine, SpikeDetected

log = logging.getLogger("spikeguard.agents")

REORDER_WINDOW_S = 0.04  # a line waits this long after its emission for earlier ones to land...
MAX_REORDER_WINDOW_S = 0.09  # ...longer when CrewAI's handler threads run late, never past this
MAX_LINE = 400
KEEP_RUNS = 100
# model prices, USD per million tokens (input, output); unknown remote models use DEFAULT_PRICE
PRICES: dict[str, tuple[float, float]] = {
    "rules": (0.0, 0.0), "openai/gpt-4o-mini": (0.15, 0.60), "openai/gpt-4o": (2.50, 10.0),
    "openai/gpt-4.1-mini": (0.40, 1.60), "openai/gpt-4.1": (2.0, 8.0), "openai/gpt-4.1-nano": (0.10, 0.40),
    "anthropic/claude-3-5-haiku-latest": (0.80, 4.0), "anthropic/claude-3-5-sonnet-latest": (3.0, 15.0),
    "anthropic/claude-sonnet-4-0": (3.0, 15.0), "anthropic/claude-haiku-4-5": (1.0, 5.0),
}
DEFAULT_PRICE = (5.0, 15.0)  # conservative for an unknown remote model
LOCAL_PROVIDERS = ("rules", "ollama", "ollama_chat", "openai_compatible", "local", "vllm", "lmstudio")
SUPPORTING = {"CONFIRM", "STABLE", "CAUTION", "ISOLATED", "MARKET_WIDE", "NEWS_DRIVEN", "APPROVE", "PROPOSE"}


def price_of(label: str) -> tuple[float, float]:
    if label in PRICES:
        return PRICES[label]
    provider = label.split("/", 1)[0].lower()
    if provider in LOCAL_PROVIDERS:
        return 0.0, 0.0
    return DEFAULT_PRICE


@dataclass
class _Perf:
    decisions: int = 0
    conf_sum: float = 0.0
    conf_n: int = 0
    time_sum: float = 0.0
    time_n: int = 0
    spikes_detected: int = 0
    correct: int = 0
    incorrect: int = 0
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    breaker_triggers: int = 0


@dataclass
class _Route:
    """Per-run routing state for the reasoning stream (touched on the loop only, except `pending`)."""

    pending: list[tuple[int, str, str, str, str, float]] = field(default_factory=list)  # seq, kind, role, text, call, t
    armed: bool = False
    streams: dict[str, list[Any]] = field(default_factory=dict)  # call id -> [role, text, last seq]
    lock: threading.Lock = field(default_factory=threading.Lock)


class AgentDesk:
    """The agent desk behind the Session's decision maker (async: `await handle_spike(...)`)."""

    def __init__(self, session_like_context: Any, settings: Any = None, journal: Any = None, bus: Any = None,
                 storage_dir: str | Path | None = None, *, llm: Any = None, secrets: Any = None,
                 dedupe_seconds: float = 60.0, slot_wait_seconds: float = 30.0, hold_feed: bool = False,
                 env: dict[str, str] | None = None, kickoff_mode: str = "thread",
                 switch_interval: float | None = 0.001) -> None:
        if isinstance(session_like_context, DeskContext):
            self.ctx = session_like_context
        else:
            self.ctx = DeskContext.from_session(session_like_context)
        if settings is not None:
            self.ctx.settings = settings
        if env is not None:
            self.ctx.env = env
        self.settings = self.ctx.settings
        self._journal = journal
        self.bus = bus if bus is not None else getattr(self.ctx.session, "bus", None)
        self.storage_dir = storage_dir
        self.secrets = secrets if secrets is not None else getattr(self.settings, "secrets", None)
        self._llm_arg = llm
        self.label = llm_label(self.settings, llm if isinstance(llm, str) else None) if not _is_model(llm) else \
            str(getattr(llm, "model", "custom"))
        if _is_model(llm) and getattr(llm, "provider", None) not in (None, RULES) and "/" not in self.label:
            self.label = f"{llm.provider}/{self.label}"
        self.source = f"crew:{self.label}"
        self.llm: Any = None
        self.dedupe_ms = int(dedupe_seconds * 1000)
        self.slot_wait_seconds = slot_wait_seconds
        self.hold_feed = hold_feed
        self._holds = 0
        self._we_paused = False
        self.kickoff_mode = kickoff_mode
        self.switch_interval = switch_interval
        crew = self.settings.crew
        self._slots = asyncio.Semaphore(crew.max_concurrent_runs)
        self._run_starts: deque[int] = deque()
        self._inflight: dict[tuple[str, str, str], RunState] = {}
        self._recent: dict[tuple[str, str, str], int] = {}
        self.runs: OrderedDict[str, RunState] = OrderedDict()  # the last KEEP_RUNS runs
        self._routes: dict[str, _Route] = {}
        self._active: set[RunState] = set()
        self._bg: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closed = False
        self._handlers: list[tuple[type, Callable[..., Any]]] = []
        self._guardian_busy = False
        self._guardian_pending: BreakerChanged | None = None
        self._guardian_wanted = False
        self._recovery_task: asyncio.Task | None = None
        self._perf: dict[tuple[str, str], _Perf] = {}
        self._proposal_support: dict[str, dict[str, str]] = {}
        self._outcomes: dict[str, float] = {}
        # figures (bench, tests)
        self.proposals: deque[TradeProposal] = deque(maxlen=1000)
        self.decisions: deque[dict[str, Any]] = deque(maxlen=5000)
        self.run_seconds: deque[float] = deque(maxlen=1000)
        self.forward_latency_ms: deque[float] = deque(maxlen=10_000)
        self._handler_lag = 0.0  # a decaying max of how late CrewAI's handler threads run (seconds)
        self.lines_published = 0
        self.guardian_runs = 0
        self.hooks: dict[str, Callable[..., Any]] = {}  # test hooks: "task_started" (run, task name)

    # ------------------------------------------------------------------ lifecycle
    @property
    def journal(self) -> Any:
        if self._journal is not None:
            return self._journal
        return getattr(self.ctx.session, "journal", None)

    @journal.setter
    def journal(self, value: Any) -> None:
        self._journal = value

    @property
    def started(self) -> bool:
        return self._started

    async def start(self) -> "AgentDesk":
        """Load crewai in a worker thread (offline), build the model, subscribe to the bus."""
        if self._started:
            return self
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.ctx.bind_loop(loop)
        if self.bus is not None and getattr(self.bus, "_loop", None) is None:
            self.bus.bind_loop(loop)
        await asyncio.to_thread(offline.load_crewai, self.storage_dir)
        if self.switch_interval is not None and sys.getswitchinterval() > self.switch_interval:
            # crews are CPU-bound Python in worker threads: a shorter GIL switch interval keeps the
            # engine loop (and the UI) responsive while they run (bench/agents.py: p99 28 ms -> 6 ms)
            sys.setswitchinterval(self.switch_interval)
        if _is_model(self._llm_arg):
            self.llm = self._llm_arg
        else:
            self.llm = make_llm(self.settings, self.secrets, model=self._llm_arg if isinstance(self._llm_arg, str) else None)
        self._install_handlers()
        self.ctx.breaker.subscribe(self.on_breaker_change)
        self._started = True
        if self.ctx.breaker.status is BreakerStatus.RECOVERING:
            self._ensure_recovery_timer()
        log.info("agent desk started: model %s, crewai loaded in %.2fs", self.label, offline.load_seconds() or 0.0)
        return self

    async def close(self, grace_seconds: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        if self._recovery_task is not None:
            self._recovery_task.cancel()
        try:
            self.ctx.breaker.unsubscribe(self.on_breaker_change)
        except Exception:
            pass
        # runs in flight finish (they are short); what is still running after the grace period is aborted
        pending = [t for t in self._bg if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace_seconds)
        for run in list(self._active):
            run.abort("the agent desk is closing")
        pending = [t for t in self._bg if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=10.0)
        self._flush_performance()
        self._uninstall_handlers()

    def decision_maker(self) -> Any:
        """A core.session.DeskDecisionMaker over `decide`: a Skip, or an awaitable of the decision."""
        from core.session import DeskDecisionMaker

        return DeskDecisionMaker(self.decide, self.source)

    # ------------------------------------------------------------------ spikes
    def _precheck(self, spike: SpikeDetected) -> Skip | None:
        if not self._started:
            return Skip("the agent desk is not started")
        if self._closed:
            return Skip("the agent desk is closed")
        if not self.settings.crew.enabled:
            return Skip("the crew is disabled (crew.enabled: false)")
        status = self.ctx.breaker.status
        if status in (BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING):
            return Skip(f"circuit breaker {status.value}: no new entries")
        if spike.details.get("blocked_by_breaker"):
            return Skip(f"circuit breaker {spike.details['blocked_by_breaker']}: no new entries")
        if not self.settings.agents.strategy_executor.enabled:
            return Skip("the strategy executor is disabled: the crew cannot propose")
        key = (spike.symbol, spike.spike_type.value, spike.direction)
        now = self.ctx.now_ms()
        running = self._inflight.get(key)
        if running is not None:
            return Skip(f"duplicate: crew run {running.run_id} is already analysing {spike.symbol} {spike.direction}")
        last = self._recent.get(key)
        if last is not None and self.dedupe_ms > 0 and now - last < self.dedupe_ms:
            return Skip(f"duplicate: {spike.symbol} {spike.direction} was analysed {(now - last) / 1000:.0f}s ago")
        starts = self._run_starts
        while starts and starts[0] <= now - 60_000:
            starts.popleft()
        limit = self.settings.crew.max_runs_per_minute
        if len(starts) >= limit:
            return Skip(f"rate limited: {len(starts)} crew runs in the last minute (crew.max_runs_per_minute={limit})")
        return None

    def _new_run(self, kind: str, spike: SpikeDetected | None = None, spike_event_id: int | None = None,
                 abort_on_trigger: bool = True) -> RunState:
        price_in, price_out = price_of(self.label)
        crew = self.settings.crew
        run = RunState(kind=kind, source=self.source, model=self.label, token_budget=crew.token_budget_per_proposal,
                       cost_budget_usd=crew.cost_budget_usd_per_proposal, price_in_per_m=price_in,
                       price_out_per_m=price_out, spike=spike, spike_event_id=spike_event_id,
                       breaker_epoch=self.ctx.breaker.epoch, breaker_status=self.ctx.breaker.status.value,
                       abort_on_trigger=abort_on_trigger)
        self.runs[run.run_id] = run
        while len(self.runs) > KEEP_RUNS:
            self.runs.popitem(last=False)
        self._routes[run.run_id] = _Route()
        return run

    def decide(self, spike: SpikeDetected, spike_event_id: Any = None) -> Any:
        """The DeskDecisionMaker entry point, called synchronously from the engine's spike hook:
        a Skip at once (precheck), or an awaitable of the crew's TradeProposal | Skip. The
        dedupe and rate-limit bookkeeping (and, in a replay, the feed hold) happen here, before
        the engine processes another event; the caller must await (or schedule) the awaitable."""
        pre = self._precheck(spike)
        if pre is not None:
            return pre
        key = (spike.symbol, spike.spike_type.value, spike.direction)
        now = self.ctx.now_ms()
        row = spike_event_id if hasattr(spike_event_id, "add_done_callback") else None
        run = self._new_run("spike", spike, None if row is not None else self.ctx.spike_event_id(spike, spike_event_id))
        if row is not None:  # the spike's journal row commits within milliseconds, long before the crew ends
            row.add_done_callback(functools.partial(_set_spike_row, run))
        self._inflight[key] = run
        self._recent[key] = now
        self._run_starts.append(now)
        self._hold(run, True)
        return self._run_spike(run, key)

    async def handle_spike(self, spike: SpikeDetected, spike_event_id: int | None = None) -> TradeProposal | Skip:
        """Run the spike trading crew for one spike; the proposal (pending approval) or a skip."""
        decision = self.decide(spike, spike_event_id)
        if inspect.isawaitable(decision):
            return await decision
        return decision

    async def _run_spike(self, run: RunState, key: tuple[str, str, str]) -> TradeProposal | Skip:
        spike = run.spike
        assert spike is not None
        loop = asyncio.get_running_loop()
        aborted: asyncio.Future = loop.create_future()
        run.on_abort(lambda reason: _set_threadsafe(loop, aborted, reason))
        try:
            try:
                await asyncio.wait_for(self._slots.acquire(), self.slot_wait_seconds)
            except asyncio.TimeoutError:
                run.abort("desk busy: no crew slot became free")
                return Skip(f"desk busy: {self.settings.crew.max_concurrent_runs} crew runs already in progress")
            self._active.add(run)
            self._reason(run, "desk", "thought", f"crew run {run.run_id} for {spike.symbol} {spike.direction} "
                                                f"({spike.spike_type.value}) with model {self.label}")
            task = loop.create_task(self._execute_spike(run), name=f"crew:{run.run_id}")
            self._track(task)
            done, _ = await asyncio.wait({task, aborted}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                decision = task.result()
            else:
                decision = Skip(run.abort_reason or "aborted")
                self._reason(run, "desk", "error", f"run {run.run_id} aborted: {decision.reason}")
            if isinstance(decision, TradeProposal):
                self.proposals.append(decision)
            return decision
        finally:
            if not aborted.done():
                aborted.cancel()
            self._inflight.pop(key, None)
            # the feed resumes after the caller has taken the decision (its done-callbacks run first)
            loop.call_soon(loop.call_soon, self._hold, run, False)

    async def _execute_spike(self, run: RunState) -> TradeProposal | Skip:
        """The crew run itself (owns the run slot until the crew's threads are done)."""
        decision: TradeProposal | Skip
        try:
            await self._kickoff(run, lambda: build_spike_crew(self.ctx, self.llm, run))
        finally:
            self._slots.release()
            self._active.discard(run)
        await self._drain(run)
        if run.aborted:
            decision = Skip(run.abort_reason or "aborted")
        else:
            rec = run.tasks.get("execution_task")
            if rec is None:
                decision = Skip("agent output failed validation: the strategy executor gave no answer")
            else:
                try:
                    decision = finalize(self.ctx, run, rec.output)
                except Exception as exc:  # validation never crashes the desk
                    log.exception("finalize failed for %s", run.run_id)
                    decision = Skip(f"agent output failed validation: {type(exc).__name__}: {exc}")
            problem = run.budget_problem()
            if problem is not None and isinstance(decision, TradeProposal):
                decision = Skip(problem)
        self.run_seconds.append(run.elapsed_ms / 1000.0)
        await self._journal_run(run, decision)
        return decision

    async def _kickoff(self, run: RunState, build: Callable[[], Any]) -> None:
        """Build and run a crew inside this run's context (guards, routing, quiet console)."""
        from crewai.hooks.dispatch import HookAborted, InterceptionPoint, register_scoped, scoped_hooks

        try:
            from crewai.events.utils.console_formatter import set_suppress_console_output
        except Exception:  # pragma: no cover - older crewai
            set_suppress_console_output = None
        run_token = CURRENT_RUN.set(run)
        quiet_token = set_suppress_console_output(True) if set_suppress_console_output is not None else None
        pairing_token = _silence_event_pairing()
        breaker = self.ctx.breaker

        def stop_if_needed() -> None:
            reason = run.check(breaker)
            if reason is not None:
                raise HookAborted(reason, source="spikeguard")

        def pre_step(hctx: Any) -> None:
            if getattr(hctx, "kind", None) == "task":
                task = getattr(hctx, "task", None)
                name = getattr(task, "name", None) or str(getattr(hctx, "step_name", "task"))
                role = getattr(hctx, "agent_role", None) or getattr(getattr(hctx, "agent", None), "role", "") or ""
                run.task_started(name, role)
                hook = self.hooks.get("task_started")
                if hook is not None:
                    hook(run, name)
            stop_if_needed()

        def pre_model(hctx: Any) -> None:
            run.add_tokens(tokens_in=estimate_tokens(getattr(hctx, "messages", None) or []))
            run.model_calls += 1
            stop_if_needed()

        def pre_tool(hctx: Any) -> None:
            stop_if_needed()

        def task_done(output: Any) -> None:
            name = getattr(output, "name", None) or "task"
            run.task_finished(name, str(getattr(output, "agent", "") or ""), str(getattr(output, "raw", "") or ""))
            stop_if_needed()

        run.task_hook = task_done
        try:
            with scoped_hooks():
                register_scoped(InterceptionPoint.PRE_STEP, pre_step)
                register_scoped(InterceptionPoint.PRE_MODEL_CALL, pre_model)
                register_scoped(InterceptionPoint.PRE_TOOL_CALL, pre_tool)
                crew = build()
                if self.kickoff_mode == "thread":
                    # the whole crew in a worker thread (sync kickoff, no loop there): only tool reads hop to the loop
                    await asyncio.to_thread(contextvars.copy_context().run, crew.kickoff)
                else:
                    await crew.akickoff()
        except HookAborted as exc:
            run.abort(getattr(exc, "reason", None) or str(exc))
        except asyncio.CancelledError:
            run.abort("cancelled")
            raise
        except Exception as exc:
            reason = run.abort_reason or f"crew failed: {type(exc).__name__}: {str(exc)[:300]}"
            run.abort(reason)
            self._reason(run, "desk", "error", reason)
            log.warning("crew run %s failed: %s", run.run_id, exc)
        finally:
            for var_token in (pairing_token, quiet_token, run_token):
                try:
                    if var_token is not None:
                        var_token.var.reset(var_token)
                except (ValueError, RuntimeError, AttributeError):
                    pass

    def _hold(self, run: RunState, on: bool) -> None:
        """With hold_feed (a replay), the feed waits while crews run, so each crew reads the
        market as it was at its spike. Counted per run; a feed the operator paused stays paused."""
        if not self.hold_feed:
            return
        feed = getattr(self.ctx.session, "feed", None)
        if feed is None:
            return
        if on:
            if run.holding:
                return
            run.holding = True
            self._holds += 1
            if self._holds == 1:
                self._we_paused = not feed.paused
                if self._we_paused:
                    feed.pause()
        else:
            if not run.holding:
                return
            run.holding = False
            self._holds -= 1
            if self._holds == 0 and self._we_paused:
                self._we_paused = False
                feed.resume()

    # ------------------------------------------------------------------ the breaker
    def on_breaker_change(self, change: BreakerChanged) -> None:
        """Breaker subscriber (sync, any thread): abort spike runs on TRIGGERED; guardian runs."""
        if change.status is BreakerStatus.TRIGGERED:
            reason = f"circuit breaker TRIGGERED: {change.reason}"
            for run in self._runs_in_flight():
                if run.abort_on_trigger and not run.aborted:
                    run.abort_epoch = change.epoch
                    run.abort(reason)
        loop = self._loop
        if loop is None or self._closed or not self._started:
            return
        if change.status in (BreakerStatus.WARNING, BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING):
            _call_on_loop(loop, self._on_change_on_loop, change)
        elif self._recovery_task is not None:
            _call_on_loop(loop, self._stop_recovery_timer)

    def _runs_in_flight(self) -> list[RunState]:
        """A snapshot of the running and waiting runs (safe from a breaker subscriber on another thread)."""
        for _ in range(3):
            try:
                return list({*self._active, *self._inflight.values()})
            except RuntimeError:  # changed size during iteration: try again
                continue
        return list(self._active)

    def _on_change_on_loop(self, change: BreakerChanged) -> None:
        if self._closed:
            return
        if change.status is BreakerStatus.RECOVERING:
            self._ensure_recovery_timer()
        else:
            self._stop_recovery_timer()
        if change.status in (BreakerStatus.WARNING, BreakerStatus.TRIGGERED):
            self.request_guardian(change)

    def request_guardian(self, change: BreakerChanged | None = None) -> None:
        """Run the guardian crew (coalesced: at most one running and one waiting)."""
        if self._closed or not self._started:
            return
        if self._guardian_busy:
            self._guardian_wanted = True
            if change is not None:
                self._guardian_pending = change  # the latest transition wins; a periodic check keeps it
            return
        self._guardian_busy = True
        task = asyncio.get_running_loop().create_task(self._guardian_loop(change), name="crew:guardian")
        self._track(task)

    async def _guardian_loop(self, change: BreakerChanged | None) -> None:
        try:
            while True:
                await self.run_guardian(change)
                if not self._guardian_wanted or self._closed:
                    return
                change, self._guardian_pending, self._guardian_wanted = self._guardian_pending, None, False
        finally:
            self._guardian_busy = False

    def _ensure_recovery_timer(self) -> None:
        if self._recovery_task is None or self._recovery_task.done():
            self._recovery_task = asyncio.get_running_loop().create_task(self._recovery_timer(), name="crew:recovery")

    def _stop_recovery_timer(self) -> None:
        if self._recovery_task is not None:
            self._recovery_task.cancel()
            self._recovery_task = None

    async def _recovery_timer(self) -> None:
        interval = self.settings.crew.guardian_interval_seconds
        while not self._closed and self.ctx.breaker.status is BreakerStatus.RECOVERING:
            self.request_guardian(None)
            await asyncio.sleep(interval)

    async def run_guardian(self, change: BreakerChanged | None = None) -> dict[str, Any]:
        """One guardian crew run: explains the state, may escalate, never loosens."""
        run = self._new_run("guardian", abort_on_trigger=False)
        state = self.ctx.breaker
        info = {"from": change.previous.value if change else None, "to": (change.status if change else state.status).value,
                "reason": change.reason if change else "periodic check while RECOVERING",
                "epoch": change.epoch if change else state.epoch, "actor": change.actor.value if change else None}
        run.breaker_epoch = info["epoch"]
        self.guardian_runs += 1
        self._active.add(run)
        self._hold(run, True)
        self._reason(run, "desk", "thought", f"guardian crew {run.run_id}: breaker {info['to']} ({info['reason']})")
        try:
            await self._kickoff(run, lambda: build_guardian_crew(self.ctx, self.llm, run, info))
        finally:
            self._active.discard(run)
            self._hold(run, False)
        await self._drain(run)
        rec = run.tasks.get(GUARDIAN_TASK)
        decision, confidence, data = decision_fields(rec.output if rec else "")
        await self._journal_run(run, None, change=info)
        return {"run_id": run.run_id, "decision": decision, "confidence": confidence, "data": data,
                "aborted": run.abort_reason, "escalations": list(run.escalations)}

    # ------------------------------------------------------------------ CrewAI events -> ReasoningLine
    def _event_classes(self) -> dict[str, type]:
        import crewai.events as ev

        names = ["AgentExecutionStartedEvent", "ToolUsageStartedEvent", "ToolUsageFinishedEvent", "ToolUsageErrorEvent",
                 "LLMStreamChunkEvent", "LLMCallCompletedEvent", "LLMCallFailedEvent", "TaskCompletedEvent",
                 "TaskFailedEvent", "AgentExecutionErrorEvent"]
        return {n: getattr(ev, n) for n in names if hasattr(ev, n)}

    def _install_handlers(self) -> None:
        from crewai.events import crewai_event_bus

        for cls in self._event_classes().values():
            crewai_event_bus.on(cls)(self._on_crewai_event)
            self._handlers.append((cls, self._on_crewai_event))

    def _uninstall_handlers(self) -> None:
        if not self._handlers:
            return
        from crewai.events import crewai_event_bus

        for cls, fn in self._handlers:
            try:
                crewai_event_bus.off(cls, fn)
            except Exception:
                pass
        self._handlers.clear()

    def _on_crewai_event(self, source: Any, event: Any) -> None:
        """CrewAI handler thread: classify, queue for the loop. Never raises."""
        try:
            run = CURRENT_RUN.get()
            if run is None:
                return
            route = self._routes.get(run.run_id)
            if route is None:
                return
            item = self._classify(run, event)
            if item is None:
                return
            lag = time.time() - item[5]
            self._handler_lag = max(lag, self._handler_lag * 0.9)
            with route.lock:
                route.pending.append(item)
                arm = not route.armed
                route.armed = True
            if arm and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._arm_flush, run)
        except Exception:  # the stream is best effort; the crew must not notice
            log.debug("event routing failed", exc_info=True)

    def _classify(self, run: RunState, event: Any) -> tuple[int, str, str, str, str, float] | None:
        item = self._classify_event(run, event)
        if item is None:
            return None
        stamp = getattr(event, "timestamp", None)
        try:
            t = stamp.timestamp() if stamp is not None else time.time()
        except Exception:
            t = time.time()
        return (*item, t)

    def _classify_event(self, run: RunState, event: Any) -> tuple[int, str, str, str, str] | None:
        seq = int(getattr(event, "emission_sequence", 0) or 0)
        kind = type(event).__name__
        if kind == "LLMStreamChunkEvent":
            if getattr(event, "tool_call", None) is not None:
                return None
            return seq, "chunk", _role_of(event), str(getattr(event, "chunk", "") or ""), str(getattr(event, "call_id", ""))
        if kind == "LLMCallCompletedEvent":
            usage = getattr(event, "usage", None) or {}
            response = getattr(event, "response", None)
            out_tokens = estimate_tokens(response if isinstance(response, str) else str(response or ""))
            reported = int(usage.get("total_tokens") or 0) if isinstance(usage, dict) else 0
            run.add_tokens(tokens_out=out_tokens, reported=reported)
            return seq, "call_done", _role_of(event), "", str(getattr(event, "call_id", ""))
        if kind == "AgentExecutionStartedEvent":
            task = getattr(event, "task", None)
            return seq, "thought", _role_of(event), f"starts {getattr(task, 'name', None) or 'a task'}", ""
        if kind == "ToolUsageStartedEvent":
            return seq, "tool_call", _role_of(event), f"{event.tool_name}({_compact(event.tool_args, 160)})", ""
        if kind == "ToolUsageFinishedEvent":
            return seq, "tool_result", _role_of(event), f"{event.tool_name} -> {_summarise_result(event.output)}", ""
        if kind in ("ToolUsageErrorEvent",):
            return seq, "error", _role_of(event), f"{event.tool_name} failed: {str(getattr(event, 'error', ''))[:200]}", ""
        if kind == "LLMCallFailedEvent":
            return seq, "error", _role_of(event), f"model call failed: {str(getattr(event, 'error', ''))[:200]}", ""
        if kind == "TaskCompletedEvent":
            output = getattr(event, "output", None)
            raw = str(getattr(output, "raw", "") or "")
            decision, confidence, data = decision_fields(raw)
            role = str(getattr(output, "agent", "") or "") or _role_of(event)
            text = f"{getattr(output, 'name', '') or 'task'}: {decision}"
            if confidence is not None:
                text += f" (confidence {confidence:.2f})"
            reason = (data or {}).get("reason") or (data or {}).get("recommendation")
            if reason:
                text += f": {reason}"
            return seq, "answer", role, text, ""
        if kind in ("TaskFailedEvent", "AgentExecutionErrorEvent"):
            return seq, "error", _role_of(event), f"failed: {str(getattr(event, 'error', ''))[:300]}", ""
        return None

    @property
    def reorder_window(self) -> float:
        return min(MAX_REORDER_WINDOW_S, max(REORDER_WINDOW_S, self._handler_lag + 0.01))

    def _arm_flush(self, run: RunState, delay: float | None = None) -> None:
        loop = self._loop
        if loop is None:
            return
        loop.call_later(max(0.0, self.reorder_window if delay is None else delay), self._flush, run)

    def _flush(self, run: RunState, final: bool = False) -> None:
        """On the loop: publish, in emission_sequence order, what was emitted at least one reorder
        window ago (a handler thread that ran late still lands in order); re-arm for the rest."""
        route = self._routes.get(run.run_id)
        if route is None:
            return
        now = time.time()
        window = self.reorder_window
        with route.lock:
            if final:
                items, route.pending = route.pending, []
            else:
                cutoff = now - window
                items = [x for x in route.pending if x[5] <= cutoff]
                route.pending = [x for x in route.pending if x[5] > cutoff]
            route.armed = bool(route.pending)
            next_due = min((x[5] for x in route.pending), default=None)
        if next_due is not None and not final:
            self._arm_flush(run, next_due + window - now + 0.001)
        items.sort(key=lambda x: x[0])
        for seq, kind, role, text, call, t in items:
            if kind == "chunk":
                buf = route.streams.setdefault(call, [role, "", seq, t])
                buf[1] += text
                buf[2] = seq
                while "\n" in buf[1] or len(buf[1]) > MAX_LINE:
                    if "\n" in buf[1]:
                        line, buf[1] = buf[1].split("\n", 1)
                    else:
                        cut = buf[1].rfind(" ", 0, MAX_LINE)
                        cut = cut if cut > 40 else MAX_LINE
                        line, buf[1] = buf[1][:cut], buf[1][cut:].lstrip()
                    self._emit_thought(run, role, line, seq, buf[3])
                    buf[3] = t
            elif kind == "call_done":
                buf = route.streams.pop(call, None)
                if buf is not None and buf[1].strip():
                    self._emit_thought(run, buf[0] or role, buf[1], seq, buf[3])
            else:
                self._publish(run, role, kind, text, seq, t)
        if final:
            for buf in list(route.streams.values()):
                if buf[1].strip():
                    self._emit_thought(run, buf[0], buf[1], buf[2], buf[3])
            route.streams.clear()

    def _emit_thought(self, run: RunState, role: str, line: str, seq: int, t: float) -> None:
        line = line.strip()
        if not line or line.startswith("DECISION:"):
            return  # the task's decision line is published once, from TaskCompletedEvent
        self._publish(run, role, "thought", line, seq, t)

    def _publish(self, run: RunState, role: str, kind: str, text: str, seq: int, t: float | None = None) -> None:
        if t is not None:
            self.forward_latency_ms.append((time.time() - t) * 1000.0)
        if self.bus is None:
            return
        text = text if len(text) <= MAX_LINE else text[: MAX_LINE - 1] + "…"
        self.lines_published += 1
        self.bus.publish(ReasoningLine(role or "agent", kind, text, self.ctx.now_ms(), run.run_id, seq))

    def _reason(self, run: RunState, role: str, kind: str, text: str) -> None:
        if self.bus is None:
            return
        self.bus.publish(ReasoningLine(role, kind, text, self.ctx.now_ms(), run.run_id, 0))

    async def _drain(self, run: RunState) -> None:
        """Let CrewAI's handler threads finish this run's events, then publish what is left."""
        try:
            from crewai.events import crewai_event_bus

            await asyncio.to_thread(crewai_event_bus.flush, 2.0)
        except Exception:
            pass
        await asyncio.sleep(0)
        self._flush(run, final=True)
        self._routes.pop(run.run_id, None)  # later stragglers of this run are dropped

    # ------------------------------------------------------------------ journal and performance
    def _period(self) -> str:
        return datetime.fromtimestamp(self.ctx.wall_clock() / 1000, timezone.utc).strftime("%Y-%m-%d")

    async def _breaker_row(self, epoch: int | None, timeout: float = 2.0) -> int | None:
        """The journal row id of a breaker transition, waiting briefly for its commit."""
        if epoch is None or not self.ctx.breaker_rows or self.journal is None:
            return None
        fut = self.ctx.breaker_rows.get(epoch)
        if fut is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), timeout)
        except Exception:
            return None

    async def _journal_run(self, run: RunState, decision: TradeProposal | Skip | None,
                           change: dict[str, Any] | None = None) -> None:
        spike_id = self.ctx.spike_event_id(run.spike, run.spike_event_id)
        breaker_id = await self._breaker_row(run.breaker_epoch if run.kind == "guardian" else run.abort_epoch)
        escalation_rows = {e["epoch"]: await self._breaker_row(e.get("epoch")) for e in run.escalations}
        spike_input = spike_payload(run.spike) if run.spike is not None else None
        period = self._period()
        support: dict[str, str] = {}
        rows = []
        for name in run.task_order:
            rec = run.tasks[name]
            agent = TASK_AGENT.get(name, name)
            dec, conf, data = decision_fields(rec.output) if rec.ended is not None else ("ABORTED", None, None)
            tools = [t for t in run.tool_calls if t.get("role") == rec.role]
            trade_id = None
            if name == "execution_task" and isinstance(decision, TradeProposal):
                trade_id = decision.proposal_id
            output = {"decision": data, "answer": rec.output[-3000:],
                      "tool_status": {t["tool"]: t.get("status") for t in tools}}
            if name == "execution_task" and decision is not None:
                output["final"] = (decision.summary() if isinstance(decision, TradeProposal)
                                   else {"skip": decision.reason})
            if rec.ended is None:
                output["aborted"] = run.abort_reason
            row = dict(agent_name=agent, decision_type=DECISION_TYPES.get(name, name), decision=dec,
                       agent_role=rec.role, confidence=conf, reasoning=_reasoning(rec.output),
                       input_data={"run_id": run.run_id, "task": name, "spike": spike_input, "change": change,
                                   "tool_calls": [{"tool": t["tool"], "args": t["args"]} for t in tools]},
                       output_data=output, execution_time_ms=rec.execution_time_ms, spike_event_id=spike_id,
                       circuit_breaker_event_id=breaker_id, trade_id=trade_id)
            rows.append(row)
            support[agent] = dec
            self._count(agent, period, dec, conf, rec.execution_time_ms)
        for esc in run.escalations:
            self._perf_for("market_guardian", period).breaker_triggers += esc["action"] == "trigger"
            rows.append(dict(agent_name="market_guardian", decision_type="circuit_breaker_triggered"
                             if esc["action"] == "trigger" else "circuit_breaker_warning", decision=esc["action"].upper(),
                             agent_role=self.settings.agents.market_guardian.role, confidence=None,
                             reasoning=esc["reason"], input_data={"run_id": run.run_id}, output_data=esc,
                             execution_time_ms=None, spike_event_id=spike_id,
                             circuit_breaker_event_id=escalation_rows.get(esc.get("epoch")), trade_id=None))
        if run.aborted:
            rows.append(dict(agent_name="crew", decision_type="run_aborted", decision="ABORTED", agent_role=None,
                             confidence=None, reasoning=run.abort_reason,
                             input_data={"run_id": run.run_id, "kind": run.kind, "spike": spike_input},
                             output_data={"tokens": run.tokens, "cost_usd": run.cost_usd,
                                          "tasks_done": [n for n in run.task_order if run.tasks[n].ended is not None]},
                             execution_time_ms=round(run.elapsed_ms, 3), spike_event_id=spike_id,
                             circuit_breaker_event_id=breaker_id, trade_id=None))
        if isinstance(decision, TradeProposal):
            self._proposal_support[decision.proposal_id] = support
            while len(self._proposal_support) > 2000:
                self._proposal_support.pop(next(iter(self._proposal_support)))
        for row in rows:
            self.decisions.append({"run_id": run.run_id, "agent": row["agent_name"], "decision": row["decision"],
                                   "confidence": row["confidence"], "execution_time_ms": row["execution_time_ms"],
                                   "decision_type": row["decision_type"]})
            self._submit("agent_decision", row)

    def _submit(self, kind: str, row: dict[str, Any]) -> None:
        journal = self.journal
        if journal is None:
            return
        try:
            fut = journal.submit(kind, **row)
            if fut is not None and hasattr(fut, "add_done_callback"):
                fut.add_done_callback(_log_journal_failure)
        except Exception as exc:
            log.warning("agent decision not journaled: %s", exc)

    def _perf_for(self, agent: str, period: str) -> _Perf:
        return self._perf.setdefault((agent, period), _Perf())

    def _count(self, agent: str, period: str, decision: str, confidence: float | None, ms: float | None) -> None:
        p = self._perf_for(agent, period)
        p.decisions += 1
        if confidence is not None:
            p.conf_sum += confidence
            p.conf_n += 1
        if ms is not None:
            p.time_sum += ms
            p.time_n += 1
        if agent == "market_scanner" and decision == "CONFIRM":
            p.spikes_detected += 1

    def record_outcome(self, proposal_id: str, pnl: float) -> dict[str, str]:
        """A proposal's outcome (PnL after the horizon): true or false positive for every agent
        that supported it; the day's agent_performance rows are written again."""
        support = self._proposal_support.get(proposal_id)
        if support is None or proposal_id in self._outcomes:
            return {}
        self._outcomes[proposal_id] = pnl
        good = pnl > 0
        period = self._period()
        verdicts = {}
        for agent, decision in support.items():
            if decision not in SUPPORTING:
                continue
            p = self._perf_for(agent, period)
            if good:
                p.true_positives += 1
                p.correct += 1
            else:
                p.false_positives += 1
                p.incorrect += 1
            verdicts[agent] = "true_positive" if good else "false_positive"
        self._flush_performance({a for a in verdicts})
        return verdicts

    def _flush_performance(self, agents: set[str] | None = None) -> None:
        for (agent, period), p in self._perf.items():
            if agents is not None and agent not in agents:
                continue
            self._submit("agent_performance", dict(
                agent_name=agent, period=period, total_decisions=p.decisions, correct_decisions=p.correct,
                incorrect_decisions=p.incorrect, avg_confidence=round(p.conf_sum / p.conf_n, 4) if p.conf_n else None,
                avg_execution_time_ms=round(p.time_sum / p.time_n, 3) if p.time_n else None,
                total_spikes_detected=p.spikes_detected, true_positives=p.true_positives,
                false_positives=p.false_positives, false_negatives=p.false_negatives,
                circuit_breaker_triggers=p.breaker_triggers, notes=f"model {self.label}"))

    def report_rows(self, approvals: Any = None) -> dict[str, list[dict[str, Any]]]:
        """The headless report's "proposals" and "decisions" rows (`spikeguard replay --agents --json`)."""
        from core.events import iso_utc

        approvals = approvals if approvals is not None else self.ctx.approvals
        proposals = []
        for p in self.proposals:
            status = getattr(approvals, "status", {}).get(p.proposal_id) if approvals is not None else None
            proposals.append({
                # market (event) time: in a replay the wall clock says nothing about the market
                "time": iso_utc(p.spike_time_ms if p.spike_time_ms is not None else p.created_ms), "symbol": p.symbol, "side": p.side, "quantity": p.quantity,
                "entry_type": p.entry_type, "entry_price": p.entry_price, "stop_loss": p.stop_loss,
                "take_profit": p.take_profit, "status": getattr(status, "value", status) or "pending",
                "source": p.source, "proposal_id": p.proposal_id,
                "spike": {"time": iso_utc(p.spike_time_ms), "type": p.spike_type, "direction": p.spike_direction,
                          "spike_event_id": p.spike_event_id}})
        decisions = [{"agent": d["agent"], "decision": d["decision"], "confidence": d["confidence"],
                      "execution_time_ms": d["execution_time_ms"], "decision_type": d["decision_type"],
                      "run_id": d["run_id"]} for d in self.decisions]
        return {"proposals": proposals, "decisions": decisions}

    def performance(self) -> dict[str, dict[str, Any]]:
        return {f"{a}@{period}": vars(p).copy() for (a, period), p in self._perf.items()}

    # ------------------------------------------------------------------ helpers
    def _track(self, task: asyncio.Task) -> None:
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        task.add_done_callback(_log_task_error)


# ---------------------------------------------------------------------- module helpers
def _set_spike_row(run: RunState, row: Any) -> None:
    if not row.cancelled() and row.exception() is None:
        run.spike_event_id = row.result()


def _is_model(llm: Any) -> bool:
    return llm is not None and not isinstance(llm, str)


def _set_threadsafe(loop: asyncio.AbstractEventLoop, fut: asyncio.Future, value: Any) -> None:
    def setter() -> None:
        if not fut.done():
            fut.set_result(value)

    try:
        if loop.is_closed():
            return
        if _on_thread_of(loop):
            setter()
        else:
            loop.call_soon_threadsafe(setter)
    except RuntimeError:
        pass


def _on_thread_of(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _call_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    try:
        if _on_thread_of(loop):
            fn(*args)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass


def _role_of(event: Any) -> str:
    role = getattr(event, "agent_role", None)
    if role:
        return str(role)
    for attr in ("from_agent", "agent"):
        agent = getattr(event, attr, None)
        role = getattr(agent, "role", None)
        if role:
            return str(role)
    task = getattr(event, "task", None) or getattr(event, "from_task", None)
    agent = getattr(task, "agent", None)
    return str(getattr(agent, "role", "") or "agent")


def _compact(args: Any, limit: int) -> str:
    if isinstance(args, dict):
        text = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in args.items())
    else:
        text = str(args or "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


_SKIP_KEYS = {"tool", "elapsed_ms", "untrusted_note", "quoted", "windows", "scores", "guardian_snapshot", "balances",
              "positions", "recent_transitions", "legs", "symbols", "feeds", "method", "source", "note", "policy"}


def _summarise_result(output: Any, limit: int = 240) -> str:
    import json as _json

    text = str(output or "")
    try:
        data = _json.loads(text)
    except ValueError:
        return text if len(text) <= limit else text[: limit - 1] + "…"
    if not isinstance(data, dict):
        return text[:limit]
    parts = []
    status = data.get("status")
    if status and status != "ok":
        parts.append(str(status))
        if data.get("reason"):
            parts.append(str(data["reason"]))
    for k, v in data.items():
        if k in _SKIP_KEYS or k in ("status", "reason") or isinstance(v, (dict, list)) or v is None:
            continue
        parts.append(f"{k}={v}")
    out = ", ".join(parts)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _reasoning(output: str) -> str:
    lines = [ln for ln in (output or "").splitlines() if not ln.startswith("DECISION:")]
    return "\n".join(lines)[-4000:]


def _silence_event_pairing() -> Any:
    """Aborting a run on purpose leaves CrewAI's start/end event pairs open: do not print about it
    (for this run's context only). Returns the context variable's reset token, or None."""
    try:
        from crewai.events import event_context as ec

        return ec._event_context_config.set(ec.EventContextConfig(
            mismatch_behavior=ec.MismatchBehavior.SILENT, empty_pop_behavior=ec.MismatchBehavior.SILENT))
    except Exception:
        return None


def _log_journal_failure(fut: Any) -> None:
    try:
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("agent journal row failed: %s", fut.exception())
    except Exception:
        pass


def _log_task_error(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("agent desk task failed", exc_info=task.exception())


__all__ = ["AgentDesk", "price_of", "PRICES"]
