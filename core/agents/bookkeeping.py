"""The desk's books: what each crew run decided goes to the journal, and how the agents perform.

- agent_decisions: one row per agent per run (decision, confidence, reasoning, input and
  output JSON, execution_time_ms, spike, breaker event, proposal id), plus a row per guardian
  escalation, and one per run with its usage (run_completed or run_aborted: tokens in and
  out, the provider's reported tokens, cost_usd, model, model calls). Each agent's row
  carries its tool calls with their arguments and results, as the model saw them, so a
  decision can be replayed (core.agents.decision_replay).
- agent_performance: per agent and market day (the UTC date of the spike's event time),
  with real verdicts once the outcome loop (core.agents.outcomes) has measured the spike:
  true and false positives, false negatives, correct and incorrect, accuracy. The pseudo
  agent "desk" is the desk's own answer (proposal or skip) for every spike it was asked.
- The figures the headless report and the benchmarks read (proposals, decisions), and the
  model price table that turns a run's tokens into a cost budget.

Kept apart from the desk because none of it steers a run: it only records what happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from core.agents.context import DeskContext, RunState
from core.agents.crew import DECISION_TYPES, TASK_AGENT, decision_fields, spike_payload
from core.agents.outcomes import NEUTRAL, PROFITABLE, UNPROFITABLE, Followed, market_day, submit_logged
from core.desk.proposal import TradeProposal
from core.desk.rules_proposer import Skip

log = logging.getLogger("spikeguard.agents")

SUPPORTING = {"CONFIRM", "STABLE", "CAUTION", "ISOLATED", "MARKET_WIDE", "NEWS_DRIVEN", "APPROVE", "PROPOSE"}
# a vote against the trade: judged a false negative when the spike would have paid
OPPOSING = {"DISCARD", "UNSTABLE", "ESCALATED", "MANIPULATION_SUSPECTED", "REJECT", "SKIP"}
DESK = "desk"  # the desk's own answer (proposal or skip) in agent_performance


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
    true_negatives: int = 0
    neutral: int = 0
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
        self._proposal_support: dict[str, tuple[dict[str, str], str]] = {}  # proposal -> (votes, market day)
        self._outcomes: dict[str, float] = {}
        self._tracker: Any = None
        self._follow()

    def _follow(self) -> Any:
        """The session's outcome tracker, listened to once it exists (it may start after us)."""
        tracker = getattr(self.ctx.session, "outcomes", None)
        if tracker is not None and tracker is not self._tracker:
            self._tracker = tracker
            tracker.on_decided.append(self._on_decided)
            tracker.on_resolved.append(self._on_resolved)
            tracker.on_late_votes.append(self._on_late_votes)
        return self._tracker

    @property
    def journal(self) -> Any:
        """The journal given, else the session's (looked up each time: it may open later)."""
        if self._journal is not None:
            return self._journal
        return getattr(self.ctx.session, "journal", None)

    @journal.setter
    def journal(self, value: Any) -> None:
        self._journal = value

    def _period(self, run: RunState | None = None) -> str:
        """The market day: the spike's event time, else the engine's (never the wall clock in a replay)."""
        if run is not None and run.spike is not None:
            return market_day(run.spike.time_ms)
        return market_day(self.ctx.now_ms())

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
        if spike_id is None and run.spike_row is not None:  # a run a veto ended in milliseconds
            spike_id = await _row_id(run.spike_row)
        breaker_id = await self._breaker_row(run.breaker_epoch if run.kind == "guardian" else run.abort_epoch)
        escalation_rows = {e["epoch"]: await self._breaker_row(e.get("epoch")) for e in run.escalations}
        spike_input = spike_payload(run.spike) if run.spike is not None else None
        period = self._period(run)
        support: dict[str, str] = {}
        votes: dict[str, tuple[str, float | None]] = {}
        context = risk = None
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
            if name == "context_analysis_task":
                context = data
            elif name == "risk_evaluation_task":
                risk = data
            if name == "execution_task" and decision is not None:
                output["final"] = (decision.summary() if isinstance(decision, TradeProposal)
                                   else {"skip": decision.reason})
            if rec.ended is None:
                output["aborted"] = run.abort_reason
            row = dict(agent_name=agent, decision_type=DECISION_TYPES.get(name, name), decision=dec,
                       agent_role=rec.role, confidence=conf, reasoning=_reasoning(rec.output),
                       input_data={"run_id": run.run_id, "task": name, "spike": spike_input, "change": change,
                                   "tool_calls": [_tool_row(t) for t in tools]},
                       output_data=output, execution_time_ms=rec.execution_time_ms, spike_event_id=spike_id,
                       circuit_breaker_event_id=breaker_id, trade_id=trade_id)
            rows.append(row)
            support[agent] = dec
            votes[agent] = (dec, conf)
            self._count(agent, period, dec, conf, rec.execution_time_ms)
        for esc in run.escalations:
            self._perf_for("market_guardian", period).breaker_triggers += esc["action"] == "trigger"
            rows.append(dict(agent_name="market_guardian", decision_type="circuit_breaker_triggered"
                             if esc["action"] == "trigger" else "circuit_breaker_warning", decision=esc["action"].upper(),
                             agent_role=self.settings.agents.market_guardian.role, confidence=None,
                             reasoning=esc["reason"], input_data={"run_id": run.run_id}, output_data=esc,
                             execution_time_ms=None, spike_event_id=spike_id,
                             circuit_breaker_event_id=escalation_rows.get(esc.get("epoch")), trade_id=None))
        # every run's usage, finished or aborted: what it spent, on which model
        usage = run_usage(run)
        usage["tasks_done"] = [n for n in run.task_order if run.tasks[n].ended is not None]
        rows.append(dict(agent_name="crew", decision_type="run_aborted" if run.aborted else "run_completed",
                         decision="ABORTED" if run.aborted else "COMPLETED", agent_role=None, confidence=None,
                         reasoning=run.abort_reason or "", output_data=usage,
                         input_data={"run_id": run.run_id, "kind": run.kind, "spike": spike_input, "change": change},
                         execution_time_ms=round(run.elapsed_ms, 3), spike_event_id=spike_id,
                         circuit_breaker_event_id=breaker_id if run.aborted or run.kind == "guardian" else None,
                         trade_id=decision.proposal_id if isinstance(decision, TradeProposal) else None))
        tracker = self._follow()
        if tracker is not None and run.kind == "spike":
            tracker.note_run(run.spike, votes, context, risk)
        if isinstance(decision, TradeProposal):
            self._proposal_support[decision.proposal_id] = (support, period)
            while len(self._proposal_support) > 2000:
                self._proposal_support.pop(next(iter(self._proposal_support)))
        for row in rows:
            self._submit("agent_decision", row)
            if row["decision_type"] == "run_completed":
                continue  # journaled; the figures (and the replay JSON's decisions) keep the agents' answers
            self.decisions.append({"run_id": run.run_id, "agent": row["agent_name"], "decision": row["decision"],
                                   "confidence": row["confidence"], "execution_time_ms": row["execution_time_ms"],
                                   "decision_type": row["decision_type"]})

    def _submit(self, kind: str, row: dict[str, Any]) -> None:
        journal = self.journal
        if journal is not None:
            submit_logged(journal, kind, **row)

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
        """A proposal's outcome given by hand (PnL after the horizon): a true or false positive for
        every agent that supported it, on the proposal's market day; the day's rows are written
        again. The outcome loop (core.agents.outcomes) measures them itself; this stays for callers
        that know the result another way."""
        found = self._proposal_support.get(proposal_id)
        if found is None or proposal_id in self._outcomes:
            return {}
        support, period = found
        self._outcomes[proposal_id] = pnl
        label = PROFITABLE if pnl > 0 else UNPROFITABLE
        verdicts = {}
        for agent, decision in support.items():
            if decision in SUPPORTING:
                verdicts[agent] = self._judge(agent, period, True, label)
        self.flush_performance(keys={(a, period) for a in verdicts})
        return {a: v for a, v in verdicts.items() if v}

    # ------------------------------------------------------------------ the outcome loop's verdicts
    def _on_decided(self, f: Followed) -> None:
        """The desk answered a spike (a proposal or a skip): the desk's own decision is counted."""
        if f.decision == "blocked":
            return  # the breaker's, not the desk's
        p = self._perf_for(DESK, f.day)
        p.decisions += 1
        if f.proposal is not None:
            p.conf_sum += f.proposal.confidence
            p.conf_n += 1

    def _on_resolved(self, f: Followed) -> None:
        """A spike's outcome is measured: every vote in its run, and the desk's answer, judged."""
        if f.decision == "blocked" or f.outcome not in (PROFITABLE, UNPROFITABLE, NEUTRAL):
            return
        self._judge(DESK, f.day, f.decision == "proposed", f.outcome)
        if f.proposal is not None:
            self._outcomes[f.proposal.proposal_id] = f.pnl_usd or 0.0
        self._judge_votes(f, f.votes, {(DESK, f.day)})

    def _on_late_votes(self, f: Followed, votes: dict[str, tuple[str, float | None]]) -> None:
        if f.decision != "blocked" and f.outcome in (PROFITABLE, UNPROFITABLE, NEUTRAL):
            self._judge_votes(f, votes, set())

    def _judge_votes(self, f: Followed, votes: dict[str, tuple[str, float | None]], keys: set[tuple[str, str]]) -> None:
        """Each agent on its own vote: for the trade (SUPPORTING) or against it (OPPOSING)."""
        for agent, (decision, _conf) in votes.items():
            if decision in SUPPORTING or decision in OPPOSING:
                self._judge(agent, f.day, decision in SUPPORTING, f.outcome)  # type: ignore[arg-type]
                keys.add((agent, f.day))
        self.flush_performance(keys=keys)

    def _judge(self, agent: str, period: str, positive: bool, outcome: str) -> str | None:
        """One verdict: for (a vote for the trade, the outcome) -> the counters it moves."""
        p = self._perf_for(agent, period)
        if outcome == NEUTRAL:
            p.neutral += 1
            return None
        paid = outcome == PROFITABLE
        if positive and paid:
            p.true_positives += 1
            verdict = "true_positive"
        elif positive:
            p.false_positives += 1
            verdict = "false_positive"
        elif paid:
            p.false_negatives += 1
            verdict = "false_negative"
        else:
            p.true_negatives += 1
            verdict = "true_negative"
        if positive == paid:
            p.correct += 1
        else:
            p.incorrect += 1
        return verdict

    def flush_performance(self, agents: set[str] | None = None, keys: set[tuple[str, str]] | None = None) -> None:
        """Write the agent_performance rows (all of them, or those of `agents`, or the (agent,
        market day) `keys`). A row is the day's running total: the newest per (agent, period) counts."""
        for (agent, period), p in self._perf.items():
            if agents is not None and agent not in agents:
                continue
            if keys is not None and (agent, period) not in keys:
                continue
            self._submit("agent_performance", dict(
                agent_name=agent, period=period, total_decisions=p.decisions, correct_decisions=p.correct,
                incorrect_decisions=p.incorrect, avg_confidence=round(p.conf_sum / p.conf_n, 4) if p.conf_n else None,
                avg_execution_time_ms=round(p.time_sum / p.time_n, 3) if p.time_n else None,
                total_spikes_detected=p.spikes_detected, true_positives=p.true_positives,
                false_positives=p.false_positives, false_negatives=p.false_negatives,
                circuit_breaker_triggers=p.breaker_triggers, time_ms=self.ctx.now_ms(),
                notes=f"model {self.label}; true negatives {p.true_negatives}; neutral {p.neutral}"))

    def report_rows(self, approvals: Any = None) -> dict[str, list[dict[str, Any]]]:
        """The headless report's "proposals", "decisions", "outcomes" and "agent_performance" rows
        (`spikeguard replay --agents --json`; keys are only ever added)."""
        from core.events import iso_utc

        tracker = self._follow()
        approvals = approvals if approvals is not None else self.ctx.approvals
        proposals = []
        for p in self.proposals:
            status = getattr(approvals, "status", {}).get(p.proposal_id) if approvals is not None else None
            proposals.append({
                # market (event) time: in a replay the wall clock says nothing about the market
                "time": iso_utc(p.spike_time_ms if p.spike_time_ms is not None else p.created_ms), "symbol": p.symbol, "side": p.side, "quantity": p.quantity,
                "entry_type": p.entry_type, "entry_price": p.entry_price, "stop_loss": p.stop_loss,
                "take_profit": p.take_profit, "status": getattr(status, "value", status) or "pending",
                "source": p.source, "proposal_id": p.proposal_id, "confidence": p.confidence,
                "dissent_score": p.dissent_score, "dissented": list(p.dissented),
                "outcome": tracker.outcome_of(p.proposal_id) if tracker is not None else None,
                "spike": {"time": iso_utc(p.spike_time_ms), "type": p.spike_type, "direction": p.spike_direction,
                          "spike_event_id": p.spike_event_id}})
        decisions = [{"agent": d["agent"], "decision": d["decision"], "confidence": d["confidence"],
                      "execution_time_ms": d["execution_time_ms"], "decision_type": d["decision_type"],
                      "run_id": d["run_id"]} for d in self.decisions]
        return {"proposals": proposals, "decisions": decisions,
                "outcomes": tracker.report() if tracker is not None else [],
                "agent_performance": self.performance_rows()}

    def performance(self) -> dict[str, dict[str, Any]]:
        return {f"{a}@{period}": vars(p).copy() for (a, period), p in self._perf.items()}

    def performance_rows(self) -> list[dict[str, Any]]:
        """agent_performance as the report prints it: per market day and agent."""
        rows = []
        for (agent, period), p in sorted(self._perf.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            judged = p.correct + p.incorrect
            rows.append({"period": period, "agent": agent, "decisions": p.decisions,
                         "true_positives": p.true_positives, "false_positives": p.false_positives,
                         "false_negatives": p.false_negatives, "true_negatives": p.true_negatives,
                         "neutral": p.neutral, "correct": p.correct, "incorrect": p.incorrect,
                         "accuracy_percent": round(p.correct / judged * 100.0, 2) if judged else None,
                         "avg_confidence": round(p.conf_sum / p.conf_n, 4) if p.conf_n else None})
        return rows


async def _row_id(fut: Any, timeout: float = 2.0) -> int | None:
    """A journal row's id once it is committed (its future may still be pending), or None."""
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut) if not asyncio.isfuture(fut) else fut),
                                      timeout)
    except Exception:
        return None


def run_usage(run: RunState) -> dict[str, Any]:
    """What a run spent: journaled for every run, finished or aborted."""
    return {"model": run.model, "source": run.source, "tokens_in": run.tokens_in, "tokens_out": run.tokens_out,
            "reported_tokens": run.reported_tokens, "tokens": run.tokens, "cost_usd": round(run.cost_usd, 8),
            "model_calls": run.model_calls, "tool_calls": len(run.tool_calls)}


def _tool_row(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call as journaled: its arguments and the result the model was given (decision replay)."""
    from core.agents.tools.common import json_safe  # the JSON the tool handed the model: no NaN

    return {"tool": call["tool"], "args": call.get("args"), "status": call.get("status"),
            "result": json_safe(call.get("result"))}


def _reasoning(output: str) -> str:
    lines = [ln for ln in (output or "").splitlines() if not ln.startswith("DECISION:")]
    return "\n".join(lines)[-4000:]




__all__ = ["Bookkeeper", "SUPPORTING", "OPPOSING", "DESK",
           "run_usage"]
