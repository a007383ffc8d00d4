"""The desk's books: what each crew run decided goes to the journal, and how the agents perform.

- agent_decisions: one row per agent per run (decision, confidence, reasoning, input and
  output JSON, execution_time_ms, spike, breaker event, proposal id), plus a row per guardian
  escalation and per aborted run.
- agent_performance: aggregated per agent and UTC day, with true and false positives once a
  proposal's outcome is known (record_outcome).
- The figures the headless report and the benchmarks read (proposals, decisions), and the
  model price table that turns a run's tokens into a cost budget.

Kept apart from the desk because none of it steers a run: it only records what happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from core.agents.context import DeskContext, RunState
from core.agents.crew import DECISION_TYPES, TASK_AGENT, decision_fields, spike_payload
from core.desk.proposal import TradeProposal
from core.desk.rules_proposer import Skip

log = logging.getLogger("spikeguard.agents")

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


class Bookkeeper:
    """The desk's journal rows and performance counters (on the engine's loop)."""

    def __init__(self, ctx: DeskContext, settings: Any, label: str, journal: Any = None) -> None:
        self.ctx = ctx
        self.settings = settings
        self.label = label
        self._journal = journal
        self.proposals: deque[TradeProposal] = deque(maxlen=1000)
        self.decisions: deque[dict[str, Any]] = deque(maxlen=5000)
        self._perf: dict[tuple[str, str], _Perf] = {}
        self._proposal_support: dict[str, dict[str, str]] = {}
        self._outcomes: dict[str, float] = {}

    @property
    def journal(self) -> Any:
        """The journal given, else the session's (looked up each time: it may open later)."""
        if self._journal is not None:
            return self._journal
        return getattr(self.ctx.session, "journal", None)

    @journal.setter
    def journal(self, value: Any) -> None:
        self._journal = value

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

    async def journal_run(self, run: RunState, decision: TradeProposal | Skip | None,
                          change: dict[str, Any] | None = None) -> None:
        """Every agent's decision in a finished run (and its escalations, and its abort)."""
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
        self.flush_performance({a for a in verdicts})
        return verdicts

    def flush_performance(self, agents: set[str] | None = None) -> None:
        """Write the agent_performance rows (all of them, or those of `agents`)."""
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


def _reasoning(output: str) -> str:
    lines = [ln for ln in (output or "").splitlines() if not ln.startswith("DECISION:")]
    return "\n".join(lines)[-4000:]


def _log_journal_failure(fut: Any) -> None:
    try:
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("agent journal row failed: %s", fut.exception())
    except Exception:
        pass


__all__ = ["Bookkeeper", "PRICES", "DEFAULT_PRICE", "LOCAL_PROVIDERS", "SUPPORTING", "price_of"]
