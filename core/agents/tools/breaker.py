"""The seed's eight circuit-breaker tools, over the engine's breaker and guardian.

Agents act with actor=Actor.AGENT: they may escalate (warn, trigger); loosening (recovery,
clearing) is refused with the state machine's own rule, and the breaker is never touched
for a refused request. Drawdowns are computed from the engine's rolling windows.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from core.agents.context import DeskContext, RunState
from core.agents.tools.common import Args, NoArgs, ToolSpec, num, unavailable, window_index, windows_or_none
from core.breaker.machine import IllegalTransition, check_transition
from core.events import Actor, BreakerStatus

REFUSED = "refused: needs the rules and the operator"


class DrawdownArgs(Args):
    symbol: str = Field("BTCUSDT", description="Binance symbol, e.g. BTCUSDT")
    window_minutes: int = Field(60, description="window: 1, 5, 15 or 60 minutes")


class ReasonArgs(Args):
    reason: str = Field(..., description="why, in one sentence, with the numbers")
    symbol: str | None = Field(None, description="the symbol that caused it, if one did")


class LoosenArgs(Args):
    reason: str = Field("", description="why")


class ClearArgs(Args):
    reason: str = Field("", description="why")
    capital_saved: float = Field(0.0, description="capital saved by the halt, USD")


def _role(run: RunState | None) -> str:
    return "agent" if run is None else f"agent ({run.run_id})"


def status_payload(ctx: DeskContext) -> dict[str, Any]:
    state = ctx.breaker.get_full_state()
    status = state["status"]
    return {
        "breaker_status": status, "epoch": state.get("epoch"), "is_safe": state.get("is_safe"),
        "is_active": state.get("is_active"), "reason": state.get("reason"), "since_ms": state.get("since_ms"),
        "actor": state.get("actor"), "trigger_reason": state.get("trigger_reason"),
        "triggered_at_ms": state.get("triggered_at_ms"), "recovery_started_at_ms": state.get("recovery_started_at_ms"),
        "policy": state.get("blocks"), "new_entries_allowed": status in ("SAFE", "WARNING", "RECOVERING"),
        "backend": state.get("backend"),
    }


def check_circuit_breaker_status(ctx: DeskContext, run: RunState | None) -> dict[str, Any]:
    return {"status": "ok", **status_payload(ctx), "as_of_ms": ctx.now_ms()}


def trigger_circuit_breaker(ctx: DeskContext, run: RunState | None, reason: str, symbol: str | None = None) -> dict:
    before = ctx.breaker.status
    reason = f"agent: {str(reason)[:300]}"
    snapshot = ctx.guardian.snapshot() if ctx.guardian is not None else {}
    try:
        done = ctx.breaker.trigger(reason, {"requested_by": _role(run)}, snapshot, actor=Actor.AGENT,
                                   time_ms=ctx.now_ms(), symbol=symbol if symbol in ctx.market.symbols else None,
                                   trigger_type="agent")
    except IllegalTransition as exc:  # an operator's recent clear holds agents off
        return {"status": "refused", "previous": before.value, "breaker_status": ctx.breaker.status.value,
                "epoch": ctx.breaker.epoch, "note": str(exc)}
    if run is not None and done:
        run.escalations.append({"action": "trigger", "reason": reason, "epoch": ctx.breaker.epoch})
    return {"status": "triggered" if done else "unchanged", "previous": before.value,
            "breaker_status": ctx.breaker.status.value, "epoch": ctx.breaker.epoch,
            "note": "trading halted: open orders cancelled by the gate" if done else "already TRIGGERED"}


def set_circuit_breaker_warning(ctx: DeskContext, run: RunState | None, reason: str,
                                symbol: str | None = None) -> dict:
    before = ctx.breaker.status
    reason = f"agent: {str(reason)[:300]}"
    done = ctx.breaker.set_warning(reason, {"requested_by": _role(run)}, actor=Actor.AGENT, time_ms=ctx.now_ms(),
                                   symbol=symbol if symbol in ctx.market.symbols else None, trigger_type="agent")
    if run is not None and done:
        run.escalations.append({"action": "warning", "reason": reason, "epoch": ctx.breaker.epoch})
    return {"status": "warning_set" if done else "unchanged", "previous": before.value,
            "breaker_status": ctx.breaker.status.value, "epoch": ctx.breaker.epoch,
            "note": None if done else f"a warning is only set from SAFE (breaker is {before.value}); "
                                      "a warning never lowers a halt"}


def calculate_market_drawdown(ctx: DeskContext, run: RunState | None, symbol: str = "BTCUSDT",
                              window_minutes: int = 60) -> dict:
    symbol = symbol.upper()
    w = windows_or_none(ctx, symbol)
    if w is None:
        return unavailable(f"no market data for {symbol} on this feed", symbol=symbol)
    k = window_index(w, window_minutes)
    minutes = w.windows_ms[k] // 60_000
    out: dict[str, Any] = {
        "status": "ok", "symbol": symbol, "window_minutes": minutes, "price": w.last_price,
        "high": w.high(k), "high_time_ms": w.high_time(k), "low": w.low(k), "low_time_ms": w.low_time(k),
        "drawdown_percent": num(w.drop_pct(k), 6), "rise_from_low_percent": num(w.rise_pct(k), 6),
        "change_percent": num(w.change_pct(k), 6), "ticks_in_window": w.count(k),
        "source": "engine rolling windows", "as_of_ms": w.last_time,
    }
    ref = ctx.settings.circuit_breaker.references.get(symbol)
    if ref is not None:
        out["thresholds"] = {"trigger_1h_percent": ref.dump_1h_percent, "warning_1h_percent": ref.warning_1h_percent,
                             "warning_5m_percent": ref.warning_5m_percent}
        k5 = window_index(w, 5)
        k60 = window_index(w, 60)
        out["drop_5m_percent"] = num(w.drop_pct(k5), 6)
        out["drop_60m_percent"] = num(w.drop_pct(k60), 6)
    return out


def _refuse(ctx: DeskContext, target: BreakerStatus, what: str) -> dict:
    current = ctx.breaker.status
    try:
        check_transition(current, target, Actor.AGENT)
        why = "agents may only escalate"
    except IllegalTransition as exc:
        why = str(exc)
    return {"status": "refused", "message": REFUSED, "requested": what, "breaker_status": current.value,
            "rule": why, "note": "an agent may warn or trigger; recovery is decided by the hard rules and "
                                 "clearing by the operator"}


def start_circuit_breaker_recovery(ctx: DeskContext, run: RunState | None, reason: str = "") -> dict:
    return _refuse(ctx, BreakerStatus.RECOVERING, "start_recovery")


def clear_circuit_breaker(ctx: DeskContext, run: RunState | None, reason: str = "", capital_saved: float = 0.0) -> dict:
    return _refuse(ctx, BreakerStatus.SAFE, "clear")


def get_circuit_breaker_statistics(ctx: DeskContext, run: RunState | None) -> dict:
    stats = ctx.breaker.get_stats()
    history = [{"epoch": c.epoch, "from": c.previous.value, "to": c.status.value, "actor": c.actor.value,
                "reason": c.reason, "time_ms": c.time_ms} for c in list(ctx.breaker.history)[-5:]]
    return {"status": "ok", **stats, "recent_transitions": history}


def assess_market_recovery_conditions(ctx: DeskContext, run: RunState | None) -> dict:
    status = ctx.breaker.status
    if ctx.guardian is None:
        return unavailable("no guardian attached to this desk", breaker_status=status.value)
    a = ctx.guardian.assess_recovery()
    rec = ctx.settings.circuit_breaker.recovery
    if status is BreakerStatus.TRIGGERED:
        if a.get("episode") is None:
            advice = "operator-initiated or agent halt: only the operator can clear it after review"
        elif a.get("recovery_conditions_met"):
            advice = "recovery conditions met: the rules move to RECOVERING on the next tick"
        else:
            advice = (f"wait: each symbol needs no new low for {rec.no_new_low_minutes:g} min and a "
                      f"{rec.rebound_percent:g}% rebound off its trough")
    elif status is BreakerStatus.RECOVERING:
        advice = (f"recovering: auto-resume after {rec.cooldown_minutes:g} min without a warning condition"
                  if a.get("auto_resume") else "recovering: a deep episode needs the operator to clear it")
    else:
        advice = f"breaker {status.value}: nothing to recover from"
    return {"status": "ok", "breaker_status": status.value, **a, "recommendation": advice,
            "recovery_rules": {"no_new_low_minutes": rec.no_new_low_minutes, "rebound_percent": rec.rebound_percent,
                               "cooldown_minutes": rec.cooldown_minutes}}


SPECS = [
    ToolSpec("check_circuit_breaker_status", "CheckCircuitBreakerStatusTool",
             "Current circuit breaker status (SAFE, WARNING, TRIGGERED, RECOVERING), its epoch, reason and what "
             "it allows. Call it first, before any analysis.", NoArgs, check_circuit_breaker_status, group="breaker"),
    ToolSpec("trigger_circuit_breaker", "TriggerCircuitBreakerTool",
             "Halt all trading now (escalation). Use only when a crash is underway; give the numbers.",
             ReasonArgs, trigger_circuit_breaker, group="breaker"),
    ToolSpec("set_circuit_breaker_warning", "SetCircuitBreakerWarningTool",
             "Set WARNING (entries at reduced size) when a crash threshold is being approached.",
             ReasonArgs, set_circuit_breaker_warning, group="breaker"),
    ToolSpec("calculate_market_drawdown", "CalculateMarketDrawdownTool",
             "Drawdown of a symbol from its high over a 1, 5, 15 or 60 minute window, from the live rolling "
             "windows, with the breaker thresholds for reference symbols.", DrawdownArgs, calculate_market_drawdown,
             group="breaker"),
    ToolSpec("start_circuit_breaker_recovery", "StartCircuitBreakerRecoveryTool",
             "Request recovery (TRIGGERED -> RECOVERING). Agents are refused: recovery belongs to the rules.",
             LoosenArgs, start_circuit_breaker_recovery, group="breaker"),
    ToolSpec("clear_circuit_breaker", "ClearCircuitBreakerTool",
             "Request clearing the breaker (back to SAFE). Agents are refused: clearing needs the operator.",
             ClearArgs, clear_circuit_breaker, group="breaker"),
    ToolSpec("get_circuit_breaker_statistics", "GetCircuitBreakerStatisticsTool",
             "Breaker statistics: triggers, warnings, recoveries, downtime, recent transitions.", NoArgs,
             get_circuit_breaker_statistics, group="breaker"),
    ToolSpec("assess_market_recovery_conditions", "AssessMarketRecoveryConditionsTool",
             "Whether the recovery conditions are met (no new low, rebound off the trough, depth of the episode) "
             "and when trading could resume.", NoArgs, assess_market_recovery_conditions, group="breaker"),
]

BREAKER_TOOL_NAMES = [s.name for s in SPECS]
