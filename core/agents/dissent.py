"""Dissent: the case for and against a crew proposal, from the same evidence, and who disagreed.

For a run that ends in a proposal, `assess(decisions, tools, spike)` writes
- a bull view and a bear view, one line each, with the numbers;
- one line per agent that agreed and per agent that dissented ("Market Guardian: CAUTION 0.35:
  stability unknown: ..."); an agent that gave no usable answer is a dissent (unknown is not
  agreement);
- a dissent score in [0, 1]:
    score = 0.7 * agent doubt + 0.3 * evidence doubt
    agent doubt    = mean over the five agents of (1 - confidence) for one that agreed,
                     confidence for one that dissented, 0.5 for one with no answer
    evidence doubt = (checks against + 0.5 * checks unknown) / checks made
  The checks are the bear view's items (weak volume, small z, move given back, breadth,
  correlation, manipulation, thin book, modelled or unknown cost, blind references, stalled
  momentum for a pump): a proposal everyone backs on strong, measured evidence scores near 0.

Pure: it reads decision objects and tool results (as core.agents.analyst and the tools write
them, or as a real model answered), never the engine. Hostile values are ignored, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.agents.analyst import DECISION_MARK, find_json_after, last_json_object
from core.agents.evidence import number
from core.agents.vetoes import AGENT_NAMES

AGREE = {"CONFIRM", "STABLE", "ISOLATED", "APPROVE", "PROPOSE"}
AGENT_WEIGHT, EVIDENCE_WEIGHT = 0.7, 0.3
MAX_LINE = 160


@dataclass(frozen=True)
class Dissent:
    bull: str
    bear: str
    agreed: tuple[str, ...] = ()
    dissented: tuple[str, ...] = ()
    score: float = 0.0
    checks: dict[str, str] = field(default_factory=dict)  # check -> "for" | "against" | "unknown"

    def proposal_fields(self) -> dict[str, Any]:
        """The TradeProposal fields (core.desk.proposal)."""
        return {"bull_case": self.bull, "bear_case": self.bear, "agreed": self.agreed, "dissented": self.dissented,
                "dissent_score": self.score}


# ---------------------------------------------------------------------------- reading
def _short(text: Any, limit: int = MAX_LINE) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def parse(text: str) -> dict[str, Any] | None:
    """The last DECISION object of an answer (as core.agents.crew.parse_decision)."""
    found = find_json_after(text or "", DECISION_MARK)
    return found[-1] if found else last_json_object(text or "", "decision")


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


# ---------------------------------------------------------------------------- the assessment
def _stance(task: str, d: dict[str, Any] | None, direction: str) -> tuple[str, float | None, str]:
    """('agree' | 'dissent' | 'none', confidence, decision)."""
    if not isinstance(d, dict):
        return "none", None, "NO ANSWER"
    decision = str(d.get("decision") or d.get("action") or "UNPARSED").upper()[:40]
    conf = number(d.get("confidence"))
    conf = None if conf is None else min(1.0, max(0.0, conf))
    agree = decision in AGREE or (decision == "NEWS_DRIVEN" and direction == "pump")
    return ("agree" if agree else "dissent"), conf, decision


def _agent_line(task: str, decision: str, conf: float | None, d: dict[str, Any] | None) -> str:
    reason = ""
    if isinstance(d, dict):
        r = d.get("reason") or d.get("recommendation") or d.get("reasons") or d.get("rationale")
        reason = "; ".join(map(str, r)) if isinstance(r, list) else str(r or "")
    head = f"{AGENT_NAMES.get(task, task)}: {decision}" + (f" {conf:.2f}" if conf is not None else "")
    return _short(f"{head}: {reason}" if reason else head)


def _last(tools: dict[str, Any], name: str) -> dict[str, Any]:
    r = tools.get(name)
    return r if isinstance(r, dict) and r.get("status") == "ok" else {}


def _evidence(decisions: dict[str, Any], tools: dict[str, Any], spike: dict[str, Any]) -> dict[str, Any]:
    scan = decisions.get("spike_detection_task") if isinstance(decisions.get("spike_detection_task"), dict) else {}
    ws = _last(tools, "binance_websocket")
    corr = _last(tools, "correlation_analysis")
    man = _last(tools, "manipulation_detector")
    slip = tools.get("slippage_calculator") if isinstance(tools.get("slippage_calculator"), dict) else {}
    breadth = corr.get("breadth") if isinstance(corr.get("breadth"), dict) else {}
    z = number(scan.get("zscore"))
    if z is None and number(ws.get("zscore_1m")) is not None:
        z = abs(number(ws.get("zscore_1m")))  # type: ignore[arg-type]
    refs = [r for r in [tools.get("calculate_market_drawdown")] if isinstance(r, dict)]
    return {
        "z": z, "vm": number(scan.get("volume_multiple")) if number(scan.get("volume_multiple")) is not None
        else number(spike.get("volume_multiple")),
        "held": number(scan.get("held_fraction")), "momentum": number(scan.get("momentum_z_1m")),
        "breadth": number(breadth.get("fraction")) if breadth.get("other_symbols") else number(scan.get("breadth_fraction")),
        "others": breadth.get("other_symbols"), "same": breadth.get("moving_same_way"),
        "corr": number((corr.get("correlation") or {}).get("value")) if isinstance(corr.get("correlation"), dict)
        else number(scan.get("correlation_btc")),
        "manipulation": number(man.get("manipulation_score")), "thin": man.get("thin_book") if man else None,
        "cost": number(slip.get("expected_cost_bps")) if slip.get("status") == "ok" else None,
        "cost_inputs": slip.get("inputs_source") if slip.get("status") == "ok" else None,
        "unavailable": sorted(n for n, r in tools.items() if isinstance(r, dict)
                              and r.get("status") in ("unavailable", "error")),
        "refs_blind": bool(refs) and refs[-1].get("status") != "ok",
    }


def _checks(e: dict[str, Any], direction: str, decisions: dict[str, Any]) -> tuple[dict[str, str], list[str], list[str]]:
    """Each check: for, against or unknown, with the bear's and the bull's words."""
    checks: dict[str, str] = {}
    bear: list[str] = []
    bull: list[str] = []

    def check(name: str, value: Any, against: bool, bear_text: str, bull_text: str) -> None:
        if value is None:
            checks[name] = "unknown"
            bear.append(f"{name} unknown")
        elif against:
            checks[name] = "against"
            bear.append(bear_text)
        else:
            checks[name] = "for"
            bull.append(bull_text)

    z, vm, held, b, corr = e["z"], e["vm"], e["held"], e["breadth"], e["corr"]
    check("z-score", z, z is not None and z < 2.0, f"z only {_fmt(z, '.2f')}", f"z {_fmt(z, '.2f')}")
    check("volume", vm, vm is not None and vm < 3.0, f"volume only x{_fmt(vm, '.2f')}", f"volume x{_fmt(vm, '.2f')}")
    check("held", held, held is not None and held < 0.8, f"{_fmt(held, '.0%')} of the move held",
          f"{_fmt(held, '.0%')} of the move held")
    check("breadth", b, b is not None and b > 0.3, f"{_fmt(b, '.0%')} of other symbols moved with it",
          f"{e['same'] if e['same'] is not None else _fmt(b, '.0%')}/{e['others'] or '?'} other symbols moved with it")
    check("correlation", corr, corr is not None and corr > 0.5, f"BTC correlation {_fmt(corr, '.2f')}",
          f"BTC correlation {_fmt(corr, '.2f')}")
    m = e["manipulation"]
    check("manipulation", m, m is not None and m > 0.0, f"manipulation score {_fmt(m, '.2f')}",
          f"manipulation score {_fmt(m, '.2f')}")
    thin = e["thin"] if isinstance(e["thin"], bool) else None
    check("book", thin, bool(thin), "thin book for the size", "book deep enough for the size")
    cost = e["cost"]
    modelled = cost is not None and e["cost_inputs"] != "feed"
    check("cost", cost, modelled or (cost is not None and cost > 30.0),
          f"cost {_fmt(cost, '.1f')} bps" + (" modelled, not measured" if modelled else ""),
          f"cost {_fmt(cost, '.1f')} bps measured")
    if e["refs_blind"] or (isinstance(decisions.get("stability_check_task"), dict)
                           and decisions["stability_check_task"].get("unavailable")):
        checks["references"] = "unknown"
        bear.append("reference markets unseen")
    if direction == "pump":
        mz = e["momentum"]
        check("momentum", mz, mz is not None and mz < 0.5, f"last-minute z {_fmt(mz, '.2f')} with the pump",
              f"last-minute z {_fmt(mz, '.2f')} with the pump")
    if e["unavailable"]:
        bear.append(f"{len(e['unavailable'])} sources unavailable ({', '.join(e['unavailable'][:4])}"
                    f"{', …' if len(e['unavailable']) > 4 else ''})")
    return checks, bear, bull


def assess(decisions: dict[str, Any], tools: dict[str, Any], spike: dict[str, Any] | None = None) -> Dissent:
    """decisions: task -> its DECISION object (or None); tools: tool name -> its last result; spike: the
    run's spike payload (symbol, direction, magnitude_pct, ...)."""
    spike = spike if isinstance(spike, dict) else {}
    direction = "dump" if spike.get("direction") == "dump" else "pump"
    sym = _short(spike.get("symbol") or "?", 20)
    mag = number(spike.get("magnitude_pct"))
    agreed, dissented, doubts = [], [], []
    for task in AGENT_NAMES:
        d = decisions.get(task)
        stance, conf, decision = _stance(task, d, direction)
        line = _agent_line(task, decision, conf, d if isinstance(d, dict) else None)
        if stance == "agree":
            agreed.append(line)
            doubts.append(1.0 - (conf if conf is not None else 0.5))
        elif stance == "dissent":
            dissented.append(line)
            doubts.append(conf if conf is not None else 0.5)
        else:
            dissented.append(line)
            doubts.append(0.5)
    e = _evidence(decisions, tools, spike)
    checks, bear, bull = _checks(e, direction, decisions)
    against = sum(1 for v in checks.values() if v == "against")
    unknown = sum(1 for v in checks.values() if v == "unknown")
    evidence_doubt = (against + 0.5 * unknown) / len(checks) if checks else 0.5
    agent_doubt = sum(doubts) / len(doubts)
    score = round(min(1.0, max(0.0, AGENT_WEIGHT * agent_doubt + EVIDENCE_WEIGHT * evidence_doubt)), 4)
    move = f"{sym} {direction} {_fmt(mag, '.2f')}%"
    thesis = "momentum BUY" if direction == "pump" else "BUY to fade the flush"
    bull_line = _short(f"Bull: {move}, {', '.join(bull) or 'no measured support'}; {len(agreed)} of "
                       f"{len(AGENT_NAMES)} agents back the {thesis}.", 300)
    bear_line = _short(f"Bear: {', '.join(bear) or 'nothing measured against it'}; {len(dissented)} of "
                       f"{len(AGENT_NAMES)} agents dissent.", 400)
    return Dissent(bull_line, bear_line, tuple(agreed), tuple(dissented), score, checks)


def from_run(run: Any) -> Dissent:
    """The assessment of a crew run (core.agents.context.RunState): its tasks' answers and tool results."""
    decisions: dict[str, Any] = {}
    for task in AGENT_NAMES:
        rec = getattr(run, "tasks", {}).get(task)
        decisions[task] = parse(getattr(rec, "output", "") or "") if rec is not None else None
    tools: dict[str, Any] = {}
    for call in list(getattr(run, "tool_calls", []) or []):
        if isinstance(call, dict) and isinstance(call.get("result"), dict):
            name, result = str(call.get("tool")), call["result"]
            if name == "calculate_market_drawdown" and tools.get(name, {}).get("status", "ok") != "ok":
                continue  # one blind reference market is enough to say the references are not all seen
            tools[name] = result
    spike = getattr(run, "spike", None)
    payload = {"symbol": getattr(spike, "symbol", None), "direction": getattr(spike, "direction", None),
               "magnitude_pct": getattr(spike, "magnitude_pct", None),
               "volume_multiple": getattr(spike, "volume_multiple", None)} if spike is not None else {}
    return assess(decisions, tools, payload)


def proposal_fields(run: Any) -> dict[str, Any]:
    """What finalize() passes into TradeProposal; never raises (a failed assessment is recorded as such)."""
    try:
        return from_run(run).proposal_fields()
    except Exception as exc:  # the proposal must not be lost over its commentary
        return {"bear_case": _short(f"Bear: dissent could not be assessed ({type(exc).__name__})", 400),
                "dissent_score": 1.0}


__all__ = ["Dissent", "assess", "from_run", "proposal_fields", "parse", "AGREE"]
