"""Which answers of the spike crew's first four agents end the run.

A veto binds: the run stops at the task that gave it, with that agent's reason, and the
later agents are not called (the desk's task hook aborts the run before the next task). A
model's later word cannot override it, and finalize() checks again before any proposal.

Vetoes: the Market Scanner's DISCARD, the Market Guardian's UNSTABLE or ESCALATED, the
Context Analyzer's MANIPULATION_SUSPECTED, Risk Assessment's REJECT, and `"veto": true` in
any of their decisions. An answer with no readable decision is no approval either: it ends
the run too (fail closed).
"""

from __future__ import annotations

from typing import Any

from core.agents.analyst import DECISION_MARK, find_json_after, last_json_object
from core.agents.untrusted import clean

AGENT_NAMES = {"spike_detection_task": "Market Scanner", "stability_check_task": "Market Guardian",
               "context_analysis_task": "Context Analyzer", "risk_evaluation_task": "Risk Assessment",
               "execution_task": "Strategy Executor"}  # each spike task's agent, as the operator reads it
VETO_DECISIONS = {"spike_detection_task": {"DISCARD"}, "stability_check_task": {"UNSTABLE", "ESCALATED"},
                  "context_analysis_task": {"MANIPULATION_SUSPECTED"}, "risk_evaluation_task": {"REJECT"}}
VALID_DECISIONS = {"spike_detection_task": {"CONFIRM", "DISCARD"},
                   "stability_check_task": {"STABLE", "CAUTION", "UNSTABLE", "ESCALATED"},
                   "context_analysis_task": {"ISOLATED", "MARKET_WIDE", "NEWS_DRIVEN", "MANIPULATION_SUSPECTED"},
                   "risk_evaluation_task": {"APPROVE", "REJECT"}}


def _decision(text: str) -> dict[str, Any] | None:
    found = find_json_after(text or "", DECISION_MARK)
    return found[-1] if found else last_json_object(text or "", "decision")


def _reason(data: dict[str, Any], text: str) -> str:
    why = data.get("reason") or data.get("reasons") or data.get("recommendation")
    if isinstance(why, list):
        why = "; ".join(str(w) for w in why[:3])
    if not why:  # the last line of reasoning before the decision
        lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and DECISION_MARK not in ln]
        why = lines[-1] if lines else "no reason given"
    return clean(str(why), 300)


def veto_of(task: str, text: str) -> str | None:
    """The veto in `task`'s answer, as one line naming the agent, or None."""
    if task not in VETO_DECISIONS:
        return None
    agent = AGENT_NAMES[task]
    data = _decision(text)
    if data is None:
        return f"{agent} gave no decision: no approval, the run ends here"
    decision = str(data.get("decision") or "").strip().upper()
    if decision not in VALID_DECISIONS[task]:
        return f"{agent} gave no valid decision ({clean(decision, 40) or 'none'}): no approval, the run ends here"
    if decision in VETO_DECISIONS[task] or data.get("veto") is True:
        return f"{agent} {decision}{' (veto)' if decision not in VETO_DECISIONS[task] else ''}: {_reason(data, text)}"
    return None


def first_veto(outputs: list[tuple[str, str]]) -> str | None:
    """The first veto among (task, answer) pairs, in run order."""
    for task, text in outputs:
        veto = veto_of(task, text)
        if veto is not None:
            return veto
    return None


__all__ = ["AGENT_NAMES", "VETO_DECISIONS", "first_veto", "veto_of"]
