"""Decision replay: re-run a journaled crew run on its journaled tool results.

Every agent's agent_decisions row holds its tool calls with their arguments and the result
the model was given (core.agents.bookkeeping). `load_run(journal, decision_id)` reads the
run a decision belongs to, read-only (it works beside a running console); `replay(...)`
builds the same crew (core.agents.crew, run by the desk's own kickoff, so its guards and
vetoes apply) with every tool answering from the journal instead of the market, and
compares each agent's decision with the journaled one.

How a call is answered: the first unused journaled call of the same agent (role) and tool
with equal arguments; else the first unused one of that tool (the arguments differed: the
answer is marked so); else {"status": "unavailable"} (the original run made no such call).
With `llm: rules` nothing touches the network.

A run is found by its run_id in input_data. Run ids restart with every process, so a run
is the contiguous block of rows (by id) around the decision that carry its run_id: a run
journals all its rows in one go.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.journal.schema import JournalError

_BLOCK = 200  # rows around the decision searched for the rest of its run


class ReplayError(Exception):
    """One line for the operator: the decision cannot be replayed."""


@dataclass
class JournaledTask:
    task: str
    agent: str
    role: str | None
    decision: str | None
    tool_calls: list[dict[str, Any]]


@dataclass
class JournaledRun:
    decision_id: int
    run_id: str
    kind: str  # spike | guardian
    model: str | None
    spike: dict[str, Any] | None
    change: dict[str, Any] | None
    tasks: list[JournaledTask]
    final: Any = None  # the executor's final answer as journaled (summary or skip)


@dataclass
class Comparison:
    task: str
    agent: str
    journaled: str | None
    replayed: str | None

    @property
    def same(self) -> bool:
        return self.journaled == self.replayed


@dataclass
class ReplayResult:
    run: JournaledRun
    model: str
    rows: list[Comparison]
    answered: int = 0  # tool calls answered from the journal
    mismatched: int = 0  # answered with a journaled call whose arguments differed
    missing: int = 0  # tool calls the journal had no answer for
    abort_reason: str | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return all(r.same for r in self.rows)


# ---------------------------------------------------------------------------- reading (read-only)
def _connect(path: Path) -> sqlite3.Connection:
    from core.journal.reports import read_only

    try:
        return read_only(path, "agent_decisions")
    except JournalError as e:
        raise ReplayError(str(e)) from None


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return None


def load_run(path: str | Path, decision_id: int) -> JournaledRun:
    """The crew run journaled around agent_decisions row `decision_id`. Raises ReplayError."""
    p = Path(path).expanduser()
    conn = _connect(p)
    try:
        try:
            row = conn.execute("SELECT * FROM agent_decisions WHERE id = ?", (decision_id,)).fetchone()
            if row is None:
                raise ReplayError(f"no agent decision {decision_id} in {p}")
            run_id = (_json(row["input_data"]) or {}).get("run_id")
            if not run_id:
                raise ReplayError(f"agent decision {decision_id} is not part of a crew run ({row['decision_type']})")
            near = conn.execute("SELECT * FROM agent_decisions WHERE id BETWEEN ? AND ? ORDER BY id",
                                (decision_id - _BLOCK, decision_id + _BLOCK)).fetchall()
        except sqlite3.OperationalError as e:  # locked, or busy past the timeout
            raise ReplayError(f"cannot read journal {p}: {e}") from None
    finally:
        conn.close()
    by_id = {r["id"]: r for r in near}

    def same_run(i: int) -> bool:
        r = by_id.get(i)
        return r is not None and (_json(r["input_data"]) or {}).get("run_id") == run_id

    lo = hi = decision_id
    while same_run(lo - 1):
        lo -= 1
    while same_run(hi + 1):
        hi += 1
    rows = [by_id[i] for i in range(lo, hi + 1)]
    tasks, model, spike, change, kind, final = [], None, None, None, "spike", None
    for r in rows:
        data = _json(r["input_data"]) or {}
        out = _json(r["output_data"]) or {}
        spike = spike or data.get("spike")
        change = change or data.get("change")
        if r["agent_name"] == "crew":
            model = out.get("model") or model
            kind = data.get("kind") or kind
        elif data.get("task"):
            tasks.append(JournaledTask(data["task"], r["agent_name"], r["agent_role"], r["decision"],
                                       list(data.get("tool_calls") or [])))
            if data["task"] == "execution_task":
                final = out.get("final")
    if not tasks:
        raise ReplayError(f"agent decision {decision_id}: its run {run_id} journaled no agent's task")
    if any(t.task == "market_monitoring_task" for t in tasks):
        kind = "guardian"
    if kind == "spike" and spike is None:
        raise ReplayError(f"agent decision {decision_id}: its run {run_id} journaled no spike")
    if not any(c.get("result") is not None for t in tasks for c in t.tool_calls):
        raise ReplayError(f"agent decision {decision_id}: its run {run_id} was journaled without tool results "
                          f"(before decision replay existed): nothing to replay it on")
    return JournaledRun(decision_id, run_id, kind, model, spike, change, tasks, final)


# ---------------------------------------------------------------------------- answering from the journal
class JournalAnswers:
    """The journaled results, handed out in the order the original run received them."""

    def __init__(self, run: JournaledRun) -> None:
        self.calls: list[dict[str, Any]] = []
        for t in run.tasks:
            for c in t.tool_calls:
                self.calls.append({"role": t.role, "tool": c.get("tool"), "args": c.get("args") or {},
                                   "result": c.get("result"), "used": False})
        self.answered = self.mismatched = self.missing = 0

    def answer(self, role: str | None, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        mine = [c for c in self.calls if not c["used"] and c["tool"] == tool and c["role"] == role]
        exact = [c for c in mine if c["args"] == args]
        pick = (exact or mine or [None])[0]
        if pick is None or pick["result"] is None:
            self.missing += 1
            return {"tool": tool, "status": "unavailable", "reason": "not in the journal: the original run made no "
                                                                     "such call"}
        pick["used"] = True
        self.answered += 1
        if not exact:
            self.mismatched += 1
        return pick["result"]


def _replay_tools(tools: list[Any], answers: JournalAnswers, cache: dict[int, Any]) -> list[Any]:
    """Each desk tool swapped for one of the same name and schema that answers from the journal."""
    from core.agents.tools import SPECS, tool_class
    from core.agents.tools.common import dumps

    out = []
    for tool in tools:
        if id(tool) in cache:
            out.append(cache[id(tool)])
            continue
        name = getattr(tool, "spec_name", None)
        if name not in SPECS:
            out.append(tool)
            continue
        base = tool_class(SPECS[name])

        def _run(self: Any, *args: Any, **kwargs: Any) -> str:
            if args and not kwargs and isinstance(args[0], dict):
                kwargs = dict(args[0])
            result = answers.answer(self._role, self.spec_name, dict(kwargs))
            from core.agents.context import CURRENT_RUN

            run = CURRENT_RUN.get()
            if run is not None:
                run.record_tool(self.spec_name, self._role, dict(kwargs), result)
            return dumps(result)

        cls = type(base.__name__, (base,), {"_run": _run, "__module__": __name__})
        replica = cls(cache_function=tool.cache_function, max_usage_count=tool.max_usage_count)
        replica._ctx = None
        replica._role = tool._role
        cache[id(tool)] = replica
        out.append(replica)
    return out


def _swap_tools(crew: Any, answers: JournalAnswers) -> Any:
    cache: dict[int, Any] = {}
    for agent in crew.agents:
        agent.tools = _replay_tools(list(agent.tools or []), answers, cache)
    for task in crew.tasks:
        task.tools = _replay_tools(list(task.tools or []), answers, cache)
    return crew


# ---------------------------------------------------------------------------- the replay
class _SafeBreaker:
    """The replay's breaker: its state was journaled as the tools' answers; nothing trips here."""

    epoch = 0

    @property
    def status(self) -> Any:
        from core.events import BreakerStatus

        return BreakerStatus.SAFE

    def subscribe(self, fn: Any) -> None:
        pass

    def unsubscribe(self, fn: Any) -> None:
        pass


def _spike(payload: dict[str, Any]) -> Any:
    from core.events import SpikeDetected, SpikeType

    return SpikeDetected(symbol=payload["symbol"], spike_type=SpikeType(payload["spike_type"]),
                         direction=payload["direction"], magnitude_pct=payload["magnitude_pct"],
                         timeframe_minutes=payload["timeframe_minutes"], volume_multiple=payload["volume_multiple"],
                         price_from=payload["price_from"], price_to=payload["price_to"],
                         confidence=payload["confidence"], time_ms=payload["time_ms"], detection_latency_ms=0.0,
                         zscore=payload.get("zscore") or 0.0)


async def replay(journaled: JournaledRun, settings: Any, llm: Any = None, storage_dir: str | Path | None = None,
                 secrets: Any = None) -> ReplayResult:
    """Re-run `journaled` with `llm` ("rules" by default, "provider/model", or a model object)."""
    from core.agents import offline
    from core.agents.context import DeskContext, RunState
    from core.agents.crew import build_guardian_crew, build_spike_crew, decision_fields
    from core.agents.desk import AgentDesk
    from core.agents.llm import llm_label, make_llm
    from core.agents.threads import in_daemon_thread

    await in_daemon_thread(offline.load_crewai, storage_dir, name="crewai-import")
    if llm is None or isinstance(llm, str):
        label = llm_label(settings, llm or "rules")
        model = make_llm(settings, secrets, model=label)
    else:
        model, label = llm, str(getattr(llm, "model", "custom"))
    ctx = DeskContext(settings=settings, market=None, breaker=_SafeBreaker())
    ctx.bind_loop(asyncio.get_running_loop())
    desk = AgentDesk(ctx, settings, llm=model)  # only its kickoff: the same guards and vetoes as a live run
    answers = JournalAnswers(journaled)
    crew_cfg = settings.crew
    run = RunState(kind=journaled.kind, source=f"replay:{label}", model=label,
                   token_budget=crew_cfg.token_budget_per_proposal, cost_budget_usd=0.0,
                   spike=_spike(journaled.spike) if journaled.spike else None, run_id=journaled.run_id)
    if journaled.kind == "guardian":
        change = journaled.change or {}
        build = lambda: _swap_tools(build_guardian_crew(ctx, model, run, change), answers)  # noqa: E731
    else:
        build = lambda: _swap_tools(build_spike_crew(ctx, model, run), answers)  # noqa: E731
    await desk._kickoff(run, build)
    rows = []
    for t in journaled.tasks:
        rec = run.tasks.get(t.task)
        replayed = decision_fields(rec.output)[0] if rec is not None and rec.ended is not None else "NOT RUN"
        rows.append(Comparison(t.task, t.agent, t.decision, replayed))
    extra = [name for name in run.task_order if name not in {t.task for t in journaled.tasks}]
    for name in extra:  # the replay went further than the journaled run (a veto there, none here)
        rec = run.tasks[name]
        rows.append(Comparison(name, name, "NOT RUN", decision_fields(rec.output)[0]))
    return ReplayResult(journaled, label, rows, answers.answered, answers.mismatched, answers.missing,
                        None if run.vetoed else run.abort_reason, extra)


__all__ = ["load_run", "replay", "JournaledRun", "ReplayResult", "Comparison", "ReplayError", "JournalAnswers",
           "JournalError"]
