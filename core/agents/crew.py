"""The seed's five agents and two crews, and the validation of what the crew proposes.

Crews (built per run, sequential, no memory, no cache, no delegation, quiet):
- guardian crew: the Market Guardian with `market_monitoring_task`;
- spike trading crew: `spike_detection_task` (Market Scanner), `stability_check_task`
  (Market Guardian), `context_analysis_task` (Context Analyzer), `risk_evaluation_task`
  (Risk Assessment), `execution_task` (Strategy Executor).

Every task starts by checking the breaker: the desk installs a pre-step guard around each
kickoff (a TRIGGERED breaker aborts the run before the next task, model call or step), and
each agent's first tool is `check_circuit_breaker_status`.

`finalize()` turns the executor's answer into a `TradeProposal` or a `Skip`. The model's
numbers never bypass the caps: the quantity is re-capped with the configured limits
(core.desk.sizing.size_long, the per-trade risk, the notional and quantity caps), the
limit price must sit inside the price collar, and the gate checks it all again at approval.
Output that does not validate becomes Skip("agent output failed validation: ..."), never
an exception. Building crews needs crewai loaded; validation does not.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.agents.analyst import DECISION_MARK, GUARDIAN_TASK, INPUT_MARK, find_json_after, last_json_object
from core.agents.context import CURRENT_RUN, DeskContext, RunState
from core.agents.tools import BREAKER_TOOLS, build_tools
from core.agents.untrusted import PROMPT_RULE, clean
from core.agents.vetoes import first_veto
from core.desk.proposal import TradeProposal
from core.desk.rules_proposer import Skip, entry_blocked
from core.desk.sizing import size_long, sizing_notional_cap
from core.events import SpikeDetected

AGENT_KEYS = ("market_guardian", "market_scanner", "context_analyzer", "risk_assessment", "strategy_executor")

AGENT_TOOLS: dict[str, list[str]] = {
    "market_guardian": [*BREAKER_TOOLS, "binance_websocket"],
    "market_scanner": ["check_circuit_breaker_status", "binance_websocket", "binance_order_book",
                       "correlation_analysis"],
    "context_analyzer": ["check_circuit_breaker_status", "correlation_analysis", "manipulation_detector",
                         "news_sentiment", "twitter_sentiment", "onchain_data", "binance_futures_data",
                         "binance_liquidation", "binance_order_book"],
    "risk_assessment": ["check_circuit_breaker_status", "portfolio_analyzer", "position_sizing_optimizer",
                        "risk_metrics_calculator", "slippage_calculator", "market_stability_checker"],
    "strategy_executor": ["check_circuit_breaker_status", "binance_account", "binance_order_book",
                          "binance_futures_data", "binance_spot_order"],
}

_DECISION_TAIL = ("Write your reasoning in a few short lines with the numbers your tools gave you. End with one "
                  f"final line: {DECISION_MARK} followed by a single-line JSON object with the keys ")

# task name -> (agent key, instructions, decision keys)
SPIKE_TASKS: list[tuple[str, str, str, str]] = [
    ("spike_detection_task", "market_scanner",
     "Confirm or discard the spike below with rolling statistics: z-score, volume multiple, breadth and "
     "correlation with BTC. Check the circuit breaker first (check_circuit_breaker_status).",
     "task (spike_detection_task), decision (CONFIRM or DISCARD), confidence (0 to 1), reason."),
    ("stability_check_task", "market_guardian",
     "Check that the market is stable enough for a new entry: breaker status, drawdowns of the reference "
     "markets, recovery conditions. You may escalate (warn or trigger the breaker) when a crash is underway; "
     "you can never loosen it.",
     "task (stability_check_task), decision (STABLE, CAUTION, UNSTABLE or ESCALATED), confidence, veto (true or "
     "false)."),
    ("context_analysis_task", "context_analyzer",
     "Explain why the spike is happening: breadth and correlation (is the whole market moving?), the "
     "pump-and-dump signature (volume burst, thin book, fast reversal), futures basis and liquidations, news and "
     "social sentiment, on-chain whale transfers. A source that answers unavailable gives no data: say so.",
     "task (context_analysis_task), decision (ISOLATED, MARKET_WIDE, NEWS_DRIVEN or MANIPULATION_SUSPECTED), "
     "confidence, veto (true or false)."),
    ("risk_evaluation_task", "risk_assessment",
     "Size the trade within the hard limits: portfolio and exposure, volatility-scaled position size, daily and "
     "weekly loss limits, expected slippage for the size, market stability. Veto what breaks a rule.",
     "task (risk_evaluation_task), decision (APPROVE or REJECT), confidence, veto, quantity, entry_price, "
     "stop_loss, take_profit, stop_distance_percent, take_profit_percent, reasons (a list, for a rejection)."),
    ("execution_task", "strategy_executor",
     "Decide the trade from the earlier analysis: the entry type (market, limit or post_only), the entry price, "
     "the stop-loss and the take-profit, the quantity from the risk assessment. Submit it with binance_spot_order "
     "(it goes to the operator's approval queue, never to the exchange). Skip when any earlier agent vetoed.",
     "task (execution_task), decision (PROPOSE or SKIP), action (propose or skip), reason (for a skip) and, for a "
     "proposal, symbol, side (BUY), entry_type, entry_price (null for market), quantity, stop_loss, take_profit, "
     "confidence (0 to 1), rationale."),
]

# the earlier answers each task reads (CrewAI's default would pass every earlier answer to every task)
TASK_CONTEXT: dict[str, list[str]] = {
    "spike_detection_task": [], "stability_check_task": [], "context_analysis_task": ["spike_detection_task"],
    "risk_evaluation_task": ["spike_detection_task", "stability_check_task", "context_analysis_task"],
    "execution_task": ["spike_detection_task", "stability_check_task", "context_analysis_task",
                       "risk_evaluation_task"],
}
# who reads untrusted text (or answers that may echo it): the rule goes into their prompts
UNTRUSTED_READERS = ("context_analysis_task",)
RULE_IN_SYSTEM = ("context_analyzer", "risk_assessment", "strategy_executor")

GUARDIAN_TASK_TEXT = (
    "The circuit breaker just changed state (see the input). Explain the state with the numbers: drawdowns of "
    "the reference markets, the recovery conditions, the breaker's statistics. Recommend when trading can "
    "resume. You may escalate (set a warning or trigger the breaker) if the market is crashing; you can never "
    "loosen the breaker: recovery belongs to the rules and clearing to the operator.",
    "task (market_monitoring_task), decision (ESCALATE, HOLD, WAIT, RESUME_ELIGIBLE or MONITOR), confidence, "
    "recommendation.")

DECISION_TYPES = {
    "spike_detection_task": "spike_detected", "stability_check_task": "stability_checked",
    "context_analysis_task": "context_analyzed", "risk_evaluation_task": "risk_assessed",
    "execution_task": "trade_proposed", GUARDIAN_TASK: "market_monitored",
}
TASK_AGENT = {name: key for name, key, _, _ in SPIKE_TASKS} | {GUARDIAN_TASK: "market_guardian"}

_proposal_seq = itertools.count(1)


# ---------------------------------------------------------------------------- inputs
def spike_payload(spike: SpikeDetected) -> dict[str, Any]:
    return {"symbol": spike.symbol, "spike_type": spike.spike_type.value, "direction": spike.direction,
            "magnitude_pct": spike.magnitude_pct, "timeframe_minutes": spike.timeframe_minutes,
            "volume_multiple": spike.volume_multiple, "price_from": spike.price_from, "price_to": spike.price_to,
            "confidence": spike.confidence, "zscore": spike.zscore, "time_ms": spike.time_ms}


def run_inputs(ctx: DeskContext, run: RunState, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    s = ctx.settings
    out: dict[str, Any] = {"run_id": run.run_id, "references": list(s.circuit_breaker.references),
                           "default_order_type": s.execution.default_order_type,
                           "proposal_ttl_seconds": s.execution.proposal_ttl_seconds}
    if run.spike is not None:
        out["spike"] = spike_payload(run.spike)
        # a live feed never waits for the crew: its inputs say how old they are when the run starts
        out["data_age_seconds"] = round(max(0, ctx.now_ms() - run.spike.time_ms) / 1000, 1)
    if extra:
        out.update(extra)
    return out


def _description(task: str, text: str, inputs: dict[str, Any]) -> str:
    rule = f"{PROMPT_RULE}\n" if task in UNTRUSTED_READERS else ""
    return (f"[task: {task}]\n{text}\n{rule}"
            f"{INPUT_MARK} {json.dumps(inputs, separators=(',', ':'), default=str)}")


# ---------------------------------------------------------------------------- building (needs crewai)
def agent_enabled(ctx: DeskContext, key: str) -> bool:
    return bool(getattr(ctx.settings.agents, key).enabled)


def build_agent(ctx: DeskContext, key: str, llm: Any, tools: list[str] | None = None) -> Any:
    from crewai import Agent

    cfg = getattr(ctx.settings.agents, key)
    backstory = cfg.backstory or cfg.role
    if key in RULE_IN_SYSTEM:
        backstory += "\n" + PROMPT_RULE
    return Agent(role=cfg.role, goal=cfg.goal, backstory=backstory, llm=llm,
                 tools=build_tools(ctx, tools or AGENT_TOOLS[key], cfg.role), verbose=False, allow_delegation=False,
                 max_iter=cfg.max_iterations, max_retry_limit=0, cache=False)


def build_spike_crew(ctx: DeskContext, llm: Any, run: RunState, llms: dict[str, Any] | None = None) -> Any:
    from crewai import Crew, Process, Task

    inputs = run_inputs(ctx, run)
    agents: dict[str, Any] = {}
    tasks = []
    by_name: dict[str, Any] = {}
    for name, key, text, keys in SPIKE_TASKS:
        if not agent_enabled(ctx, key):
            continue
        if key not in agents:
            agents[key] = build_agent(ctx, key, (llms or {}).get(key, llm))
        context = [by_name[n] for n in TASK_CONTEXT[name] if n in by_name]
        task = Task(name=name, description=_description(name, text, inputs), expected_output=_DECISION_TAIL + keys,
                    agent=agents[key], callback=task_callback, context=context)
        by_name[name] = task
        tasks.append(task)
    return Crew(agents=list(agents.values()), tasks=tasks, process=Process.sequential, verbose=False, cache=False,
                memory=False, tracing=False)


def build_guardian_crew(ctx: DeskContext, llm: Any, run: RunState, change: dict[str, Any]) -> Any:
    from crewai import Crew, Process, Task

    agent = build_agent(ctx, "market_guardian", llm)
    text, keys = GUARDIAN_TASK_TEXT
    task = Task(name=GUARDIAN_TASK, description=_description(GUARDIAN_TASK, text, run_inputs(ctx, run, {"change": change})),
                expected_output=_DECISION_TAIL + keys, agent=agent, callback=task_callback)
    return Crew(agents=[agent], tasks=[task], process=Process.sequential, verbose=False, cache=False, memory=False,
                tracing=False)


def task_callback(output: Any) -> None:
    """Every task's callback (a module-level function, as CrewAI wants for checkpointing): hands
    the TaskOutput to the run it belongs to (found through CURRENT_RUN)."""
    run = CURRENT_RUN.get()
    if run is not None and run.task_hook is not None:
        run.task_hook(output)


# ---------------------------------------------------------------------------- reading answers
def parse_decision(text: str) -> dict[str, Any] | None:
    """The last `DECISION: {...}` object of an answer (or its last JSON object with a decision)."""
    found = find_json_after(text or "", DECISION_MARK)
    if found:
        return found[-1]
    return last_json_object(text or "", "decision")


def _confidence(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f):
        return None
    return min(1.0, max(0.0, f))


def decision_fields(text: str) -> tuple[str, float | None, dict[str, Any] | None]:
    d = parse_decision(text)
    if d is None:
        return "UNPARSED", None, None
    return str(d.get("decision") or d.get("action") or "UNPARSED").upper()[:40], _confidence(d.get("confidence")), d


# ---------------------------------------------------------------------------- validation
class ExecutorOrder(BaseModel):
    """What the Strategy Executor may say. Unknown keys are ignored; numbers must be finite."""

    model_config = ConfigDict(extra="ignore")

    action: Literal["propose", "skip"]
    reason: str | None = None
    symbol: str | None = None
    side: Literal["BUY", "SELL"] = "BUY"
    entry_type: Literal["market", "limit", "post_only"] | None = None
    entry_price: float | None = Field(default=None, gt=0)
    quantity: float | None = Field(default=None, gt=0)
    stop_loss: float | None = Field(default=None, gt=0)
    take_profit: float | None = Field(default=None, gt=0)
    confidence: float = Field(default=0.5, ge=0, le=1)
    rationale: str = ""

    @field_validator("entry_price", "quantity", "stop_loss", "take_profit", "confidence")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @field_validator("action", "side", "entry_type", mode="before")
    @classmethod
    def _case(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            return v.upper() if v.upper() in ("BUY", "SELL") else v.lower().replace("-", "_").replace(" ", "_")
        return v

    @field_validator("symbol", mode="before")
    @classmethod
    def _symbol(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v


def _invalid(why: str) -> Skip:
    return Skip(f"agent output failed validation: {why}")


def _errors(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ())) or "value"
        parts.append(f"{loc}: {e.get('msg')}")
    return "; ".join(parts)


def round_down(qty: float, price: float) -> float:
    """Down to a step that suits the price (like Binance's LOT_SIZE), as core.desk.sizing does."""
    if qty <= 0 or price <= 0:
        return 0.0
    step = max(10 ** math.floor(math.log10(max(1e-12, 1.0 / price)) - 2), 1e-8)
    return math.floor(qty / step + 1e-9) * step


def order_from_answer(text: str, run: RunState) -> dict[str, Any] | None:
    obj = None
    for candidate in reversed(find_json_after(text or "", DECISION_MARK)):
        if "action" in candidate or "decision" in candidate:
            obj = candidate
            break
    if obj is None:
        obj = last_json_object(text or "", "action")
    if obj is not None and "action" not in obj and "decision" in obj:
        d = str(obj.get("decision", "")).lower()
        obj = {**obj, "action": "propose" if d.startswith("propos") else "skip" if d.startswith("skip") else d}
    return obj  # no decision in the answer is no proposal, whatever its tool calls recorded


def finalize(ctx: DeskContext, run: RunState, text: str) -> TradeProposal | Skip:
    """The executor's answer -> a sealed, capped TradeProposal, or a Skip with its reason."""
    spike = run.spike
    if spike is None:
        return Skip("no spike in this run")
    veto = run.vetoed or first_veto([(name, run.tasks[name].output) for name in run.task_order
                                     if name != "execution_task" and name in run.tasks])
    if veto is not None:  # a veto binds, whatever the executor then said
        return Skip(veto)
    obj = order_from_answer(text, run)
    if obj is None:
        return Skip("strategy executor gave no decision: no trade")
    try:
        order = ExecutorOrder.model_validate(obj)
    except ValidationError as exc:
        return _invalid(_errors(exc))
    if order.action == "skip":
        return Skip(f"strategy executor: {clean(order.reason or 'no trade', 300)}")
    missing = [k for k in ("symbol", "entry_type", "stop_loss", "take_profit") if getattr(order, k) is None]
    if missing:
        return _invalid(f"missing {', '.join(missing)}")
    if order.symbol != spike.symbol:
        return _invalid(f"proposed {order.symbol} but the spike is in {spike.symbol}")
    if order.side != "BUY":
        return _invalid("SELL entries are not allowed (spot desk, long only)")
    status = ctx.breaker.status
    blocked = entry_blocked(status, ctx.holdings(spike.symbol), ctx.market, spike.symbol)
    if blocked:
        return Skip(blocked)
    w = ctx.market.symbols[spike.symbol]
    s = ctx.settings
    risk = s.risk_management
    ref = float(w.last_price)
    if order.entry_type == "market":
        entry = ref
        entry_price = None
    else:
        if order.entry_price is None:
            return _invalid(f"a {order.entry_type} entry needs entry_price")
        entry = entry_price = float(order.entry_price)
        off = abs(entry / ref - 1.0) * 100.0
        if off > risk.price_collar_percent:
            return _invalid(f"entry price {entry:g} is {off:.2f}% from the market {ref:g} (collar "
                            f"{risk.price_collar_percent:g}%)")
    stop, target = float(order.stop_loss), float(order.take_profit)  # type: ignore[arg-type]
    if not (stop < entry < target):
        return _invalid(f"a BUY needs stop_loss < entry < take_profit (got {stop:g} / {entry:g} / {target:g})")
    equity = ctx.equity()
    sizing = size_long(risk, w, entry, equity)
    limits = {"volatility-scaled size (size_long)": sizing.quantity,
              "risk per trade": (max(0.0, equity) * risk.risk_per_trade_percent / 100.0) / (entry - stop),
              "max_order_notional_usd": sizing_notional_cap(risk) / entry}
    cap_q = risk.max_order_quantity.get(spike.symbol)
    if cap_q is not None:
        limits["max_order_quantity"] = cap_q
    asked = float(order.quantity) if order.quantity is not None else sizing.quantity
    qty = asked
    binding = None
    for name, limit in limits.items():
        if limit < qty:
            qty, binding = limit, name
    qty = round_down(qty, entry)
    if qty <= 0:
        return Skip("position size rounds to zero under the configured caps")
    notes = []
    if binding is not None and qty < asked * (1 - 1e-9):
        notes.append(f"quantity re-capped from {asked:g} to {qty:g} by {binding}")
    now = ctx.wall_clock()
    rationale = clean(order.rationale, 1500) or "no rationale given"
    tag = "; ".join([run.source, *notes])
    try:
        from core.agents.dissent import proposal_fields  # bull and bear views, who agreed and dissented, the score

        proposal = TradeProposal(
            proposal_id=f"c{now:x}-{next(_proposal_seq)}", created_ms=now,
            expires_ms=now + int(s.execution.proposal_ttl_seconds * 1000), symbol=spike.symbol, side="BUY",
            quantity=qty, entry_type=order.entry_type, entry_price=None if entry_price is None else round(entry_price, 8),
            stop_loss=round(stop, 8), take_profit=round(target, 8), reference_price=ref,
            breaker_epoch=ctx.breaker.epoch, breaker_status=status.value, spike_time_ms=spike.time_ms,
            spike_type=spike.spike_type.value, spike_direction=spike.direction, spike_event_id=run.spike_event_id,
            confidence=round(min(order.confidence, spike.confidence if spike.confidence > 0 else 1.0), 4),
            risk_usd=round(qty * (entry - stop), 2), notional_usd=round(qty * entry, 2),
            reward_risk=round((target - entry) / (entry - stop), 2), rationale=f"{rationale} [{tag}]"[:4000],
            source=run.source, **proposal_fields(run),
        )
    except ValidationError as exc:
        return _invalid(_errors(exc))
    return proposal.sealed()


__all__ = ["AGENT_KEYS", "AGENT_TOOLS", "SPIKE_TASKS", "DECISION_TYPES", "TASK_AGENT", "build_spike_crew",
           "build_guardian_crew", "build_agent", "task_callback", "finalize", "parse_decision", "decision_fields", "ExecutorOrder",
           "run_inputs", "spike_payload", "order_from_answer", "round_down"]
