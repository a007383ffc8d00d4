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
- Streaming: each run's CrewAI events are published on the engine's bus as ReasoningLine,
  in emission order (core.agents.streaming, the desk's RunStream).
- Journal: every agent's decision and every run's usage go to agent_decisions, and
  agent_performance is aggregated per market day from the outcomes the session's outcome
  loop measures (core.agents.bookkeeping, core.agents.outcomes).
- Vetoes bind (core.agents.vetoes): the run ends at the task that vetoes.
- Bounds (core.agents.limits): every call has a time-out, a retry limit and max_tokens;
  every run a deadline; a call that could pass a run, session or day budget is not made;
  provider failures in a row pause the crew while the rules proposer answers.
- Guardian: every WARNING or TRIGGERED transition runs the guardian crew (one at a time,
  coalesced), and so does a timer every crew.guardian_interval_seconds while RECOVERING.
  It explains the state and may escalate; it can never loosen the breaker.

See the module `core.agents` docstring for how a Session wires it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.agents import offline
from core.agents.analyst import GUARDIAN_TASK
from core.agents.bookkeeping import Bookkeeper
from core.agents.context import CURRENT_RUN, DeskContext, RunState
from core.agents.crew import build_guardian_crew, build_spike_crew, decision_fields, finalize
from core.agents.limits import PriceUnknown, ProviderHealth, SpendLedger, is_provider_failure, price_for
from core.agents.llm import RULES, estimate_tokens, llm_label, make_llm
from core.agents.streaming import RunStream
from core.agents.threads import in_daemon_thread
from core.agents.vetoes import veto_of
from core.desk.proposal import TradeProposal
from core.desk.rules_proposer import Skip
from core.events import BreakerChanged, BreakerStatus, SpikeDetected

log = logging.getLogger("spikeguard.agents")

KEEP_RUNS = 100


class _Delegate:
    """An AgentDesk attribute kept on one of its parts (the stream, the books), same name, so
    `desk.forward_latency_ms`, `desk.journal = j` and the like work as before the split."""

    def __init__(self, part: str) -> None:
        self.part = part

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.part), self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(getattr(obj, self.part), self.name, value)


class AgentDesk:
    """The agent desk behind the Session's decision maker (async: `await handle_spike(...)`)."""

    # these live on the desk's parts and read and write through the desk as they always did
    bus = _Delegate("_stream")
    forward_latency_ms = _Delegate("_stream")  # CrewAI event -> ReasoningLine on the bus (bench)
    lines_published = _Delegate("_stream")
    reorder_window = _Delegate("_stream")  # read only
    journal = _Delegate("_books")  # the journal given, else the session's (looked up each time)
    proposals = _Delegate("_books")
    decisions = _Delegate("_books")

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
        self._stream = RunStream(self.ctx, bus if bus is not None else getattr(self.ctx.session, "bus", None))
        self.storage_dir = storage_dir
        self.secrets = secrets if secrets is not None else getattr(self.settings, "secrets", None)
        self._llm_arg = llm
        self.label = llm_label(self.settings, llm if isinstance(llm, str) else None) if not _is_model(llm) else \
            str(getattr(llm, "model", "custom"))
        if _is_model(llm) and getattr(llm, "provider", None) not in (None, RULES) and "/" not in self.label:
            self.label = f"{llm.provider}/{self.label}"
        self.source = f"crew:{self.label}"
        self._books = Bookkeeper(self.ctx, self.settings, self.label, journal)
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
        self._active: set[RunState] = set()
        self._bg: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closed = False
        self._guardian_busy = False
        self._guardian_pending: BreakerChanged | None = None
        self._guardian_wanted = False
        self._recovery_task: asyncio.Task | None = None
        self._guardian_hold: _FeedHold | None = None  # taken at the transition, so the crew reads that market
        limits = self.settings.crew.limits
        self.ledger = SpendLedger.from_settings(self.settings)
        self.health = ProviderHealth(limits.pause_after_failures, limits.pause_seconds, limits.pause_max_seconds)
        self._reserved: dict[str, list[float]] = {}  # run id -> [tokens, USD] charged to the ledger before calls
        self.agent_llms: dict[str, Any] = {}  # agent key -> its own model (agents.*.llm)
        self.price = (0.0, 0.0)  # USD per million tokens (input, output): the dearest model the crew uses
        self.skips: deque[dict[str, Any]] = deque(maxlen=5000)  # every skip, abort and veto, with its reason
        self.provider_error_listeners: list[Callable[[str], None]] = []  # one line per provider failure
        # figures (bench, tests); proposals, decisions and the stream's figures are on the parts
        self.run_seconds: deque[float] = deque(maxlen=1000)
        self.guardian_runs = 0
        self.hooks: dict[str, Callable[..., Any]] = {}  # test hooks: "task_started" (run, task name)

    # ------------------------------------------------------------------ lifecycle
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
        await in_daemon_thread(offline.load_crewai, self.storage_dir, name="crewai-import")
        if self.switch_interval is not None and sys.getswitchinterval() > self.switch_interval:
            # crews are CPU-bound Python in worker threads: a shorter GIL switch interval keeps the
            # engine loop (and the UI) responsive while they run (bench/agents.py: p99 28 ms -> 6 ms)
            sys.setswitchinterval(self.switch_interval)
        if _is_model(self._llm_arg):  # a model object built by the caller (a test, a benchmark)
            self.llm = self._llm_arg
            try:
                prices = [price_for(self.settings, self.label)]
            except PriceUnknown:
                prices = [(0.0, 0.0)]
        else:
            self.llm = make_llm(self.settings, self.secrets, model=self._llm_arg if isinstance(self._llm_arg, str) else None)
            prices = [price_for(self.settings, self.label)]  # a remote model with no price is refused here
        for key, agent in self.settings.agents:
            if agent.llm and agent.enabled:
                self.agent_llms[key] = make_llm(self.settings, self.secrets, model=agent.llm)
                prices.append(price_for(self.settings, llm_label(self.settings, agent.llm)))
        self.price = (max(p[0] for p in prices), max(p[1] for p in prices))
        self._stream.install(loop)
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
        self._books.flush_performance()
        self._stream.uninstall()

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
        price_in, price_out = self.price
        crew = self.settings.crew
        run = RunState(kind=kind, source=self.source, model=self.label, token_budget=crew.token_budget_per_proposal,
                       cost_budget_usd=crew.cost_budget_usd_per_proposal, price_in_per_m=price_in,
                       price_out_per_m=price_out, spike=spike, spike_event_id=spike_event_id,
                       breaker_epoch=self.ctx.breaker.epoch, breaker_status=self.ctx.breaker.status.value,
                       abort_on_trigger=abort_on_trigger)
        self.runs[run.run_id] = run
        while len(self.runs) > KEEP_RUNS:
            self.runs.popitem(last=False)
        self._stream.open(run)
        return run

    def decide(self, spike: SpikeDetected, spike_event_id: Any = None) -> Any:
        """The DeskDecisionMaker entry point, called synchronously from the engine's spike hook:
        a Skip at once (precheck), or an awaitable of the crew's TradeProposal | Skip. The
        dedupe and rate-limit bookkeeping (and, in a replay, the feed hold) happen here, before
        the engine processes another event; the caller must await (or schedule) the awaitable."""
        pre = self._precheck(spike)
        if pre is not None:
            return pre
        paused = self.health.paused_for()
        if paused > 0:  # the provider keeps failing: the rules proposer answers meanwhile
            return self.ctx.session.proposer.decide(spike, spike_event_id if isinstance(spike_event_id, int) else None)
        key = (spike.symbol, spike.spike_type.value, spike.direction)
        now = self.ctx.now_ms()
        row = spike_event_id if hasattr(spike_event_id, "add_done_callback") else None
        run = self._new_run("spike", spike, None if row is not None else self.ctx.spike_event_id(spike, spike_event_id))
        if row is not None:  # the spike's journal row commits within milliseconds, long before the crew ends
            run.spike_row = row
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
            self._stream.reason(run, "desk", "thought", f"crew run {run.run_id} for {spike.symbol} {spike.direction} "
                                                       f"({spike.spike_type.value}) with model {self.label}")
            task = loop.create_task(self._execute_spike(run), name=f"crew:{run.run_id}")
            self._track(task)
            deadline = self.settings.crew.limits.run_deadline_seconds
            done, _ = await asyncio.wait({task, aborted}, timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                run.abort(f"run deadline: no decision within {deadline:g}s")
                self._provider_failed(run, run.abort_reason or "run deadline")
            if task in done:
                decision = task.result()
            elif run.vetoed:
                decision = Skip(run.vetoed)
                self._stream.reason(run, "desk", "reason", f"run {run.run_id} ends at a veto: {run.vetoed}")
            else:
                decision = Skip(run.abort_reason or "aborted")
                self._stream.reason(run, "desk", "error", f"run {run.run_id} aborted: {decision.reason}")
            if isinstance(decision, TradeProposal):
                self.proposals.append(decision)
            else:
                self._record_skip(run, decision)
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
            await self._kickoff(run, lambda: build_spike_crew(self.ctx, self.llm, run, self.agent_llms))
        finally:
            self._slots.release()
            self._active.discard(run)
            self._settle_spend(run)
        await self._stream.drain(run)
        if run.vetoed:
            decision = Skip(run.vetoed)
        elif run.aborted:
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
            problem = run.budget_problem() or self._stale_problem(run)
            if problem is not None and isinstance(decision, TradeProposal):
                decision = Skip(problem)
        self.run_seconds.append(run.elapsed_ms / 1000.0)
        await self._books.journal_run(run, decision)
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
            tokens_in = estimate_tokens(getattr(hctx, "messages", None) or [])
            run.add_tokens(tokens_in=tokens_in)
            run.model_calls += 1
            refusal = self._call_refusal(run, tokens_in)
            if refusal is not None:
                run.abort(refusal)
            stop_if_needed()

        def pre_tool(hctx: Any) -> None:
            stop_if_needed()

        def task_done(output: Any) -> None:
            name = getattr(output, "name", None) or "task"
            text = str(getattr(output, "raw", "") or "")
            run.task_finished(name, str(getattr(output, "agent", "") or ""), text)
            veto = veto_of(name, text) if run.kind == "spike" else None
            if veto is not None and not run.aborted:
                run.vetoed = veto
                run.abort(veto)  # the next task's pre-step guard stops the crew: later agents are not called
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
                    await in_daemon_thread(crew.kickoff, name="crew-kickoff")
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
            self._stream.reason(run, "desk", "error", reason)
            log.warning("crew run %s failed: %s", run.run_id, exc)
            if is_provider_failure(exc):
                self._provider_failed(run, f"{type(exc).__name__}: {str(exc)[:200]}")
        else:
            if run.model_calls and not run.aborted:
                self.health.answered()
        finally:
            for var_token in (pairing_token, quiet_token, run_token):
                try:
                    if var_token is not None:
                        var_token.var.reset(var_token)
                except (ValueError, RuntimeError, AttributeError):
                    pass

    def _hold(self, run: "RunState | _FeedHold", on: bool) -> None:
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

    def _stale_problem(self, run: RunState) -> str | None:
        """A decision on market data older than the proposal TTL is no basis for an order (a live
        feed runs on while the crew thinks; a paced one holds, so its age stays zero)."""
        ttl = self.settings.execution.proposal_ttl_seconds
        age_s = (self.ctx.now_ms() - run.spike.time_ms) / 1000 if run.spike is not None else 0.0
        if age_s > ttl:
            return f"stale: the spike's market data is {age_s:.0f}s old, past the proposal TTL ({ttl:g}s)"
        return None

    # ------------------------------------------------------------------ bounds (core.agents.limits)
    def _call_refusal(self, run: RunState, tokens_in: int) -> str | None:
        """Why the model call about to be made could pass a budget (its prompt is counted, its
        answer at max_tokens), or None; the call is charged to the session's ledger."""
        answer = self.settings.crew.limits.max_tokens
        price_in, price_out = self.price
        usd = (tokens_in * price_in + answer * price_out) / 1_000_000
        if run.tokens + answer > run.token_budget:
            return (f"token budget: the next call could bring the run to {run.tokens + answer:,} tokens "
                    f"(budget {run.token_budget:,})")
        if run.cost_budget_usd > 0 and run.cost_usd + answer * price_out / 1_000_000 > run.cost_budget_usd:
            return (f"cost budget: the next call could bring the run to "
                    f"{run.cost_usd + answer * price_out / 1_000_000:.4f} USD (budget {run.cost_budget_usd:g} USD)")
        now = self.ctx.wall_clock()
        refusal = self.ledger.refusal(tokens_in + answer, usd, now)
        if refusal is not None:
            return refusal
        self.ledger.spend(tokens_in + answer, usd, now)
        charged = self._reserved.setdefault(run.run_id, [0.0, 0.0])
        charged[0] += tokens_in + answer
        charged[1] += usd
        return None

    def _settle_spend(self, run: RunState) -> None:
        """The ledger takes the run's real spending in place of what its calls reserved."""
        tokens, usd = self._reserved.pop(run.run_id, (0.0, 0.0))
        self.ledger.spend(int(run.tokens - tokens), run.cost_usd - usd, self.ctx.wall_clock())

    def _record_skip(self, run: RunState, skip: Skip) -> None:
        from core.events import iso_utc

        spike = run.spike
        kind = "veto" if run.vetoed else "abort" if run.aborted else "skip"
        self.skips.append({"time": iso_utc(spike.time_ms) if spike else None, "symbol": spike.symbol if spike else None,
                           "direction": spike.direction if spike else None, "kind": kind, "reason": skip.reason,
                           "run_id": run.run_id})

    async def settle(self) -> None:
        """Until every run's threads are done and its decisions journaled (an aborted run's
        caller has its answer before that)."""
        while self._bg:
            await asyncio.gather(*list(self._bg), return_exceptions=True)

    def _provider_failed(self, run: RunState, why: str) -> None:
        for fn in list(self.provider_error_listeners):
            fn(f"{self.label}: {why}")
        pause = self.health.failed(why)
        if pause is None:
            return
        text = (f"crew paused for {pause:g}s after {self.settings.crew.limits.pause_after_failures} provider "
                f"failures in a row (last: {why}); the rules proposer answers meanwhile")
        self._stream.reason(run, "desk", "error", text)
        log.warning("%s", text)
        record = getattr(self.ctx.session, "record_action", None)
        if record is not None:
            record("crew_paused", text, {"seconds": pause, "model": self.label, "last_error": why})

    def status_label(self) -> str:
        """The status bar's word on the desk: the crew and its model, a pause, today's spending."""
        parts = [f"crew ({self.label} model)" if self.label == RULES else f"crew ({self.label})"]
        paused = self.health.paused_for()
        if paused > 0:
            parts.append(f"paused {paused:.0f}s (provider failing), rules answering")
        if self.price != (0.0, 0.0):
            parts.append(f"{self.ledger.day_usd:.3f} USD today")
        return " · ".join(parts)

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
        """Run the guardian crew (coalesced: at most one running and one waiting). With
        hold_feed, the feed holds from here, inside the transition, until the runs are done."""
        if self._closed or not self._started:
            return
        if self.hold_feed and self._guardian_hold is None:
            self._guardian_hold = _FeedHold()
            self._hold(self._guardian_hold, True)
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
            if self._guardian_hold is not None:
                self._hold(self._guardian_hold, False)
                self._guardian_hold = None

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
        self._stream.reason(run, "desk", "thought",
                            f"guardian crew {run.run_id}: breaker {info['to']} ({info['reason']})")
        deadline = self.settings.crew.limits.run_deadline_seconds
        try:
            await asyncio.wait_for(self._kickoff(run, lambda: build_guardian_crew(
                self.ctx, self.agent_llms.get("market_guardian", self.llm), run, info)), deadline)
        except asyncio.TimeoutError:  # a hung provider must not hold every later guardian run
            run.abort(f"run deadline: no answer within {deadline:g}s")
            self._provider_failed(run, run.abort_reason or "run deadline")
        finally:
            self._active.discard(run)
            self._hold(run, False)
            self._settle_spend(run)
        await self._stream.drain(run)
        rec = run.tasks.get(GUARDIAN_TASK)
        decision, confidence, data = decision_fields(rec.output if rec else "")
        await self._books.journal_run(run, None, change=info)
        return {"run_id": run.run_id, "decision": decision, "confidence": confidence, "data": data,
                "aborted": run.abort_reason, "escalations": list(run.escalations)}

    # ------------------------------------------------------------------ the books
    def record_outcome(self, proposal_id: str, pnl: float) -> dict[str, str]:
        """A proposal's outcome (PnL after the horizon): true or false positive for every agent
        that supported it; the day's agent_performance rows are written again."""
        return self._books.record_outcome(proposal_id, pnl)

    def report_rows(self, approvals: Any = None) -> dict[str, list[dict[str, Any]]]:
        """The headless report's "proposals" and "decisions" rows (`spikeguard replay --agents --json`)."""
        return self._books.report_rows(approvals)

    def performance(self) -> dict[str, dict[str, Any]]:
        return self._books.performance()

    # ------------------------------------------------------------------ helpers
    def _track(self, task: asyncio.Task) -> None:
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        task.add_done_callback(_log_task_error)


# ---------------------------------------------------------------------- module helpers
class _FeedHold:
    """A hold on the feed that is no run's own (the guardian's, from its transition on)."""

    holding = False


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


def _silence_event_pairing() -> Any:
    """Aborting a run on purpose leaves CrewAI's start/end event pairs open: do not print about it
    (for this run's context only). Returns the context variable's reset token, or None."""
    try:
        from crewai.events import event_context as ec

        return ec._event_context_config.set(ec.EventContextConfig(
            mismatch_behavior=ec.MismatchBehavior.SILENT, empty_pop_behavior=ec.MismatchBehavior.SILENT))
    except Exception:
        return None


def _log_task_error(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("agent desk task failed", exc_info=task.exception())


__all__ = ["AgentDesk"]
