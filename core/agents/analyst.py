"""The deterministic analyst behind `llm: rules` (pure Python: no crewai, no network).

Given what a model would be given (the agent's role, the task, the conversation so far and
the tools on offer), it answers like a model: a list of tool calls, or the final answer. It
reads its inputs only from the messages: the task prompt carries the spike as `INPUT_JSON:`
and earlier tasks' answers (`DECISION: {...}` lines) as context; tool results come back
as `role: "tool"` messages. Each agent follows a short plan (check the breaker first, gather
evidence, sometimes a second round) and then writes its reasoning from the tool results,
ending with one `DECISION:` line of JSON. It never follows text found inside quoted,
untrusted data: it only uses the sentiment score computed from it.

The same module serves the tests' stub "real model" server, which wraps it in HTTP.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from core.agents import evidence as ev

INPUT_MARK = "INPUT_JSON:"
DECISION_MARK = "DECISION:"
TASK_MARK = re.compile(r"\[task:\s*([a-z_]+)\]")

SPIKE_TASKS = ("spike_detection_task", "stability_check_task", "context_analysis_task", "risk_evaluation_task",
               "execution_task")
GUARDIAN_TASK = "market_monitoring_task"


@dataclass
class Reply:
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    text: str | None = None

    @property
    def is_final(self) -> bool:
        return self.text is not None


# ---------------------------------------------------------------------------- reading messages
def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def find_json_after(text: str, mark: str) -> list[dict[str, Any]]:
    """Every JSON object that follows `mark` in text, in order."""
    out = []
    dec = json.JSONDecoder()
    start = 0
    while True:
        i = text.find(mark, start)
        if i < 0:
            return out
        j = text.find("{", i + len(mark))
        if j < 0:
            return out
        try:
            obj, end = dec.raw_decode(text, j)
        except ValueError:
            start = i + len(mark)
            continue
        if isinstance(obj, dict):
            out.append(obj)
        start = end


def last_json_object(text: str, required_key: str | None = None) -> dict[str, Any] | None:
    """The last JSON object in text (optionally: having `required_key`)."""
    dec = json.JSONDecoder()
    best = None
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = dec.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict) and (required_key is None or required_key in obj):
            best = obj
    return best


@dataclass
class Conversation:
    task: str
    role: str
    inputs: dict[str, Any]
    context: dict[str, dict[str, Any]]  # earlier tasks' DECISION objects, by task name
    results: dict[str, list[dict[str, Any]]]  # tool name -> parsed results, in order
    rounds: int  # tool-call rounds made so far
    offered: list[str]

    def result(self, name: str, index: int = -1) -> dict[str, Any]:
        got = self.results.get(name)
        if not got:
            return {"status": "missing"}
        try:
            return got[index]
        except IndexError:
            return {"status": "missing"}

    def ok(self, name: str) -> dict[str, Any] | None:
        r = self.result(name)
        return r if r.get("status") == "ok" else None


def read_conversation(messages: list[dict[str, Any]], role: str = "", task: str | None = None,
                      offered: list[str] | None = None) -> Conversation:
    users = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    systems = [content_text(m.get("content")) for m in messages if m.get("role") == "system"]
    prompt = "\n".join(users)
    if not task:
        m = TASK_MARK.search(prompt)
        task = m.group(1) if m else ""
    if not role:
        m = re.search(r"You are (.+?)\.", "\n".join(systems))
        role = m.group(1) if m else ""
    inputs_list = find_json_after(prompt, INPUT_MARK)
    inputs = inputs_list[0] if inputs_list else {}
    context = {}
    for d in find_json_after(prompt, DECISION_MARK):
        if isinstance(d.get("task"), str):
            context[d["task"]] = d
    names: dict[str, str] = {}
    results: dict[str, list[dict[str, Any]]] = {}
    rounds = 0
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            rounds += 1
            for call in m["tool_calls"]:
                fn = call.get("function", {}) if isinstance(call, dict) else {}
                names[str(call.get("id"))] = fn.get("name", "")
        elif m.get("role") == "tool":
            name = m.get("name") or names.get(str(m.get("tool_call_id")), "")
            text = content_text(m.get("content"))
            parsed = last_json_object(text) if not text.strip().startswith("{") else _loads(text)
            if parsed is None:
                parsed = {"status": "unparsed", "text": text[:500]}
            results.setdefault(parsed.get("tool") or name, []).append(parsed)
    return Conversation(task or "", role, inputs, context, results, rounds, list(offered or []))


def _loads(text: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return last_json_object(text)
    return obj if isinstance(obj, dict) else None


# ---------------------------------------------------------------------------- the analyst
def _fmt(x: Any, spec: str = ".2f") -> str:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return format(x, spec)
    return "n/a"


def _calls(c: Conversation, wanted: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    offered = set(c.offered) if c.offered else None
    return [(n, a) for n, a in wanted if offered is None or n in offered]


def _final(task: str, lines: list[str], decision: dict[str, Any]) -> Reply:
    body = "\n".join(lines)
    decision = {"task": task, **decision}
    return Reply(text=f"{body}\n{DECISION_MARK} {json.dumps(decision, separators=(',', ':'))}")


def _source_note(result: dict[str, Any]) -> str:
    """The caveat a modelled number carries into the reasoning."""
    if "model" in (result.get("source"), result.get("inputs_source")):
        return " (modelled by the paper exchange, not exchange data)"
    if result.get("source") == "feed":
        return " (live book)"
    return ""


def _breaker_line(c: Conversation) -> tuple[str, str]:
    b = c.result("check_circuit_breaker_status")
    status = b.get("breaker_status", "UNKNOWN")
    return status, f"Circuit breaker {status} (epoch {b.get('epoch', '?')}): {b.get('policy', 'unknown policy')}."


class Analyst:
    """Deterministic answers for the desk's six tasks."""

    def respond(self, messages: list[dict[str, Any]], role: str = "", task: str | None = None,
                offered: list[str] | None = None) -> Reply:
        c = read_conversation(messages, role, task, offered)
        handler = getattr(self, f"_{c.task}", None)
        if handler is None:
            return Reply(text=f"I have no procedure for task {c.task!r}.\n{DECISION_MARK} "
                              + json.dumps({"task": c.task, "decision": "NO_OPINION", "confidence": 0.0}))
        return handler(c)

    # ------------------------------------------------------------------ scanner
    def _spike_detection_task(self, c: Conversation) -> Reply:
        s = c.inputs.get("spike", {})
        sym = s.get("symbol", "")
        tf = max(1, min(1440, int(ev.number(s.get("timeframe_minutes")) or 5)))
        if c.rounds == 0:
            return Reply(_calls(c, [("check_circuit_breaker_status", {}), ("binance_websocket", {"symbol": sym}),
                                    ("binance_order_book", {"symbol": sym}),
                                    ("correlation_analysis", {"symbol": sym, "minutes": 30,
                                                              "move_window_minutes": min(tf, 60)})]))
        status, bline = _breaker_line(c)
        lines = [bline]
        ws = c.ok("binance_websocket")
        if status == "TRIGGERED":
            return _final(c.task, lines + ["Trading is halted: no spike analysis."],
                          {"decision": "DISCARD", "confidence": 1.0, "reason": "breaker TRIGGERED"})
        if ws is None:
            return _final(c.task, lines + [f"No live data for {sym}: cannot confirm the spike."],
                          {"decision": "DISCARD", "confidence": 0.9, "reason": "no market data"})
        direction = "dump" if s.get("direction") == "dump" else "pump"
        price = ev.number(ws.get("price"))
        ref = ev.number(s.get("price_from")) or price
        magnitude = ev.number(s.get("magnitude_pct")) or 0.0
        if price is None or not ref:
            return _final(c.task, lines + [f"No usable price for {sym} ({ws.get('price')!r}): cannot confirm the spike."],
                          {"decision": "DISCARD", "confidence": 0.9, "reason": "no usable price"})
        sign = -1.0 if direction == "dump" else 1.0
        move_now = sign * (price - ref) / ref * 100.0
        kept = move_now / magnitude if magnitude > 0 else None
        frame = (ws.get("windows") or {}).get(f"{tf}m") or {}
        vm = ev.number(frame.get("volume_multiple"))
        if vm is None:
            vm = ev.number(s.get("volume_multiple"))
        z1 = ev.number(ws.get("zscore_1m"))
        momentum_z = None if z1 is None else sign * z1  # the last minute, signed with the move
        if not ev.number(ws.get("volume_baseline_per_min")):
            vm = None  # no volume baseline yet: the multiple is unknown, not zero
        sigmas = ev.move_sigmas(move_now, ws.get("sigma_1m_percent"), tf)
        if sigmas is None and ev.flat_history(ws.get("sigma_1m_percent"), ws.get("sigma_samples")) and move_now > 0:
            sigmas = ev.FLAT_HISTORY_SIGMAS  # a move out of a measured, perfectly flat history
            lines.append(f"The 1m sigma is 0 over {ws.get('sigma_samples')} samples: the move is beyond any measured "
                         f"volatility (scored as {ev.FLAT_HISTORY_SIGMAS:g} sigmas).")
        z = sigmas if sigmas is not None else (None if z1 is None else abs(z1))
        age = ev.number(ws.get("age_seconds")) or 0.0
        corr = c.result("correlation_analysis")
        breadth = (corr.get("breadth") or {}) if corr.get("status") == "ok" else {}
        cval = ev.number((corr.get("correlation") or {}).get("value")) if corr.get("status") == "ok" else None
        bfrac = ev.number(breadth.get("fraction")) if breadth.get("other_symbols") else None
        lines.append(f"{sym} {direction}: {magnitude:.2f}% over {tf}m at detection, {move_now:.2f}% from "
                     f"{_fmt(ref, '.6g')} now (price {_fmt(price, '.6g')}, "
                     f"{'n/a' if kept is None else format(kept * 100, '.0f') + '%'} of the move held).")
        lines.append(f"Rolling statistics: move {_fmt(sigmas)} sigmas over {tf}m, 1m z-score {_fmt(z1)}, {tf}m volume "
                     f"x{_fmt(vm)} of baseline, 1m sigma {_fmt(ws.get('sigma_1m_percent'), '.3f')}%.")
        if breadth:
            lines.append(f"Breadth: {breadth.get('moving_same_way', 0)} of {breadth.get('other_symbols', 0)} other "
                         f"symbols moved the same way; correlation with BTC "
                         f"{_fmt(cval) if cval is not None else 'unavailable'}.")
        book = c.ok("binance_order_book")
        if book:
            lines.append(f"Book: spread {_fmt(book.get('spread_bps'))} bps, touch depth "
                         f"{_fmt(book.get('depth_usd_per_side'), ',.0f')} USD{_source_note(book)}.")
        scores = ev.scanner_scores(z, vm, kept, bfrac, cval)
        conf = ev.weighted_confidence(scores, ev.SCANNER_WEIGHTS)
        unknown = ev.unknown_names(scores)
        used = (f"z {_fmt(z)}, volume x{_fmt(vm)}, held {'n/a' if kept is None else format(kept, '.0%')}, breadth "
                f"{_fmt(bfrac)}, BTC correlation {_fmt(cval)}")
        if unknown:
            lines.append(f"Unavailable evidence (scored as none): {', '.join(unknown)}.")
        evidence = {"zscore": None if z is None else round(z, 4), "momentum_z_1m": momentum_z, "volume_multiple": vm,
                    "held_fraction": None if kept is None else round(kept, 4), "breadth_fraction": bfrac,
                    "correlation_btc": cval, "move_now_percent": round(move_now, 4), "unavailable": unknown}
        if age > 60:
            lines.append(f"Data is {age:.0f}s old: stale, discarding.")
            return _final(c.task, lines, {"decision": "DISCARD", "confidence": 0.8, "reason": f"stale data ({age:.0f}s old)",
                                          **evidence})
        if kept is not None and kept < ev.MIN_HELD:
            lines.append("More than half of the move has already reversed: discarding.")
            return _final(c.task, lines, {"decision": "DISCARD", "confidence": round(min(0.95, 0.5 + (0.5 - kept)), 3),
                                          "reason": f"move mostly reversed: {kept:.0%} held", **evidence})
        if (z is None or z < ev.MIN_BACKING_Z) and (vm is None or vm < ev.MIN_BACKING_VOLUME):
            why = f"no statistical backing: z {_fmt(z)} < {ev.MIN_BACKING_Z:g} and volume x{_fmt(vm)} < x{ev.MIN_BACKING_VOLUME:g}"
            lines.append(f"{why[0].upper()}{why[1:]}: discarding.")
            return _final(c.task, lines, {"decision": "DISCARD", "confidence": round(1.0 - conf, 4), "reason": why,
                                          **evidence})
        if conf < ev.SCANNER_FLOOR:
            why = f"evidence too weak: confidence {conf:.2f} < {ev.SCANNER_FLOOR:g} ({used})"
            lines.append(f"Evidence too weak (confidence {conf:.2f}): discarding.")
            return _final(c.task, lines, {"decision": "DISCARD", "confidence": round(1.0 - conf, 4), "reason": why,
                                          **evidence})
        lines.append(f"The move is in place and backed: spike confirmed (confidence {conf:.2f} from {used}).")
        return _final(c.task, lines, {"decision": "CONFIRM", "confidence": conf, "symbol": sym, "direction": direction,
                                      "reason": used + (f"; unavailable: {', '.join(unknown)}" if unknown else ""),
                                      **evidence})

    # ------------------------------------------------------------------ guardian (both crews)
    def _reference_calls(self, c: Conversation) -> list[tuple[str, dict[str, Any]]]:
        refs = c.inputs.get("references") or ["BTCUSDT", "ETHUSDT"]
        return [("calculate_market_drawdown", {"symbol": r, "window_minutes": 60}) for r in refs]

    def _guardian_first_calls(self, c: Conversation) -> list[tuple[str, dict[str, Any]]]:
        """What the Market Guardian reads first, in both crews."""
        return [("check_circuit_breaker_status", {}), *self._reference_calls(c),
                ("assess_market_recovery_conditions", {}), ("get_circuit_breaker_statistics", {})]

    def _escalation(self, c: Conversation) -> tuple[str | None, str]:
        """('trigger'|'warning'|None, reason) from the reference drawdowns."""
        status = c.result("check_circuit_breaker_status").get("breaker_status")
        past_warn, near_warn = [], []
        for r in c.results.get("calculate_market_drawdown", []):
            th = r.get("thresholds")
            if r.get("status") != "ok" or not th:
                continue
            d60 = r.get("drop_60m_percent") or 0.0
            d5 = r.get("drop_5m_percent") or 0.0
            desc = f"{r['symbol']} -{d60:.2f}% (60m), -{d5:.2f}% (5m)"
            if d60 >= th["warning_1h_percent"] or d5 >= th["warning_5m_percent"]:
                past_warn.append(desc)
            elif d60 >= th["warning_1h_percent"] * 0.9 or d5 >= th["warning_5m_percent"] * 0.9:
                near_warn.append(desc)
        # The hard rules already trip at the crash threshold and own recovery (a new low while
        # RECOVERING re-triggers). What they do not combine is a warning on every reference
        # market at once: that correlated sell-off is the one escalation this analyst makes.
        # It never escalates while RECOVERING, so it cannot hold a recovery the rules allow.
        if status in ("SAFE", "WARNING") and len(past_warn) >= 2:
            return "trigger", f"every reference market past its warning level at once: {', '.join(past_warn)}"
        if status == "SAFE" and (past_warn or near_warn):
            return "warning", f"approaching the warning level: {', '.join(past_warn + near_warn)}"
        return None, ""

    def _guardian_round(self, c: Conversation, first: list[tuple[str, dict[str, Any]]]) -> Reply | None:
        if c.rounds == 0:
            return Reply(_calls(c, first))
        if c.rounds == 1:
            action, reason = self._escalation(c)
            if action == "trigger":
                calls = _calls(c, [("trigger_circuit_breaker", {"reason": reason})])
                if calls:
                    return Reply(calls)
            elif action == "warning":
                calls = _calls(c, [("set_circuit_breaker_warning", {"reason": reason})])
                if calls:
                    return Reply(calls)
        return None

    def _drawdown_lines(self, c: Conversation) -> list[str]:
        lines = []
        for r in c.results.get("calculate_market_drawdown", []):
            if r.get("status") != "ok":
                lines.append(f"{r.get('symbol', '?')}: drawdown unavailable ({r.get('reason', r.get('status'))}).")
                continue
            th = r.get("thresholds") or {}
            lines.append(f"{r['symbol']}: {_fmt(r.get('drawdown_percent'))}% below its 60m high "
                         f"({_fmt(r.get('high'), '.6g')} -> {_fmt(r.get('price'), '.6g')}); warning at "
                         f"{_fmt(th.get('warning_1h_percent'), 'g')}%, halt at {_fmt(th.get('trigger_1h_percent'), 'g')}%.")
        return lines

    def _stability_check_task(self, c: Conversation) -> Reply:
        nxt = self._guardian_round(c, self._guardian_first_calls(c))
        if nxt is not None:
            return nxt
        status, bline = _breaker_line(c)
        lines = [bline, *self._drawdown_lines(c)]
        escalated = c.result("trigger_circuit_breaker").get("status") == "triggered"
        warned = c.result("set_circuit_breaker_warning").get("status") == "warning_set"
        if escalated:
            lines.append("I triggered the circuit breaker: no new entries.")
            return _final(c.task, lines, {"decision": "ESCALATED", "confidence": 0.95, "veto": True,
                                          "action": "trigger", "reason": self._escalation(c)[1] or "breaker triggered"})
        if status in ("TRIGGERED", "RECOVERING"):
            lines.append(f"Breaker {status}: the market is not stable enough for new entries.")
            return _final(c.task, lines, {"decision": "UNSTABLE", "confidence": 0.9, "veto": True,
                                          "reason": f"breaker {status}"})
        if warned or status == "WARNING":
            lines.append("WARNING in force: entries only at reduced size.")
            return _final(c.task, lines, {"decision": "CAUTION", "confidence": 0.9, "veto": False,
                                          "action": "warning" if warned else None,
                                          "reason": "breaker WARNING in force" if not warned else "I set a WARNING"})
        return self._stability_from_references(c, lines)

    def _stability_from_references(self, c: Conversation, lines: list[str]) -> Reply:
        """STABLE only when every reference market's drawdown is known and well below its warning level.
        An unavailable reference is unknown, not calm: CAUTION, with a confidence that falls with the share
        of references that could not be read. STABLE's confidence falls as the worst drawdown nears its
        warning level: 0.5 + 0.45 * (1 - used share of the warning level)."""
        refs = [str(r).upper() for r in (c.inputs.get("references") or ["BTCUSDT", "ETHUSDT"])]
        seen = {str(r.get("symbol", "")).upper(): r for r in c.results.get("calculate_market_drawdown", [])}
        known, missing, used = [], [], []
        for sym in refs:
            r = seen.get(sym) or {}
            th = r.get("thresholds") or {}
            d60, d5 = ev.number(r.get("drop_60m_percent")), ev.number(r.get("drop_5m_percent"))
            w60, w5 = ev.number(th.get("warning_1h_percent")), ev.number(th.get("warning_5m_percent"))
            if r.get("status") != "ok" or None in (d60, d5) or not w60 or not w5:
                missing.append(f"{sym} ({r.get('reason') or r.get('status') or 'not read'})")
                continue
            share = max(d60 / w60, d5 / w5, 0.0)
            known.append(sym)
            used.append((share, f"{sym} -{d60:.2f}% (60m) = {share:.0%} of its warning level"))
        worst = max((u[0] for u in used), default=None)
        numbers = "; ".join(u[1] for u in used)
        if missing:
            coverage = len(known) / len(refs) if refs else 0.0
            conf = round(0.2 + 0.3 * coverage, 4)
            why = f"stability unknown: drawdown unavailable for {', '.join(missing)}" + (f"; {numbers}" if numbers else "")
            lines.append(f"Not calm, unknown: {why}.")
            return _final(c.task, lines, {"decision": "CAUTION", "confidence": conf, "veto": False, "reason": why,
                                          "unavailable": [m.split(' ', 1)[0] for m in missing]})
        if worst is not None and worst >= 0.5:
            why = f"approaching the warning level: {numbers}"
            lines.append(f"Caution: {why}.")
            return _final(c.task, lines, {"decision": "CAUTION", "confidence": round(0.5 + 0.4 * min(1.0, worst), 4),
                                          "veto": False, "reason": why})
        conf = round(0.5 + 0.45 * (1.0 - (worst or 0.0)), 4)
        lines.append(f"Every reference market is well below its warning level: stable ({numbers}).")
        return _final(c.task, lines, {"decision": "STABLE", "confidence": conf, "veto": False, "reason": numbers})

    def _market_monitoring_task(self, c: Conversation) -> Reply:
        nxt = self._guardian_round(c, self._guardian_first_calls(c))
        if nxt is not None:
            return nxt
        status, bline = _breaker_line(c)
        change = c.inputs.get("change") or {}
        lines = [f"Transition: {change.get('from', '?')} -> {change.get('to', status)}: {change.get('reason', '')}".strip(),
                 bline, *self._drawdown_lines(c)]
        rec = c.result("assess_market_recovery_conditions")
        advice = rec.get("recommendation") or ""
        if c.result("trigger_circuit_breaker").get("status") == "triggered":
            lines.append("Escalated: I triggered the breaker. Resume only when the recovery conditions hold and the "
                         "operator clears it.")
            return _final(c.task, lines, {"decision": "ESCALATE", "confidence": 0.9, "action": "trigger",
                                          "recommendation": "hold the halt"})
        if c.result("set_circuit_breaker_warning").get("status") == "warning_set":
            lines.append("Escalated to WARNING: entries at reduced size until the drawdowns ease.")
            return _final(c.task, lines, {"decision": "ESCALATE", "confidence": 0.75, "action": "warning",
                                          "recommendation": "reduce size"})
        if status == "TRIGGERED":
            lines.append(f"Hold the halt. {advice}")
            return _final(c.task, lines, {"decision": "HOLD", "confidence": 0.9, "recommendation": advice})
        if status == "RECOVERING":
            met = bool(rec.get("recovery_conditions_met"))
            lines.append(f"{'Recovery conditions met. ' if met else ''}{advice}")
            return _final(c.task, lines, {"decision": "RESUME_ELIGIBLE" if met else "WAIT",
                                          "confidence": 0.7 if met else 0.8, "recommendation": advice})
        lines.append("Monitor: the hard rules will clear the warning once the drawdowns stay below the clear level.")
        blind = sorted(str(r.get("symbol", "?")) for r in c.results.get("calculate_market_drawdown", [])
                       if r.get("status") != "ok")
        if blind:  # unknown is not calm: say which markets could not be seen, and be less sure
            lines.append(f"Unseen reference markets (no drawdown): {', '.join(blind)}.")
        return _final(c.task, lines, {"decision": "MONITOR", "confidence": 0.4 if blind else 0.7,
                                      "recommendation": advice or "monitor",
                                      **({"reason": f"drawdown unavailable for {', '.join(blind)}",
                                          "unavailable": blind} if blind else {})})

    # ------------------------------------------------------------------ context
    def _context_analysis_task(self, c: Conversation) -> Reply:
        s = c.inputs.get("spike", {})
        sym = s.get("symbol", "")
        if c.rounds == 0:
            return Reply(_calls(c, [("check_circuit_breaker_status", {}), ("correlation_analysis", {"symbol": sym}),
                                    ("manipulation_detector", {"symbol": sym}), ("news_sentiment", {"symbol": sym}),
                                    ("twitter_sentiment", {"symbol": sym}), ("onchain_data", {"symbol": sym}),
                                    ("binance_futures_data", {"symbol": sym}), ("binance_liquidation", {"symbol": sym}),
                                    ("binance_order_book", {"symbol": sym})]))
        _, bline = _breaker_line(c)
        lines = [bline]
        direction = s.get("direction", "pump")
        unavailable = sorted(n for n, rs in c.results.items() if rs and rs[-1].get("status") in ("unavailable", "error"))
        corr = c.ok("correlation_analysis") or {}
        breadth = corr.get("breadth") or {}
        man = c.ok("manipulation_detector") or {}
        news = c.ok("news_sentiment")
        social = c.ok("twitter_sentiment")
        fut = c.ok("binance_futures_data")
        liq = c.ok("binance_liquidation")
        if breadth:
            lines.append(f"Breadth: {breadth.get('moving_same_way', 0)}/{breadth.get('other_symbols', 0)} other "
                         f"symbols moved {corr.get('direction', '?')} >= {breadth.get('threshold_percent')}% "
                         f"({'market-wide' if breadth.get('market_wide') else 'not market-wide'}).")
        if man:
            thin = man.get("thin_book")
            lines.append(f"Manipulation check: volume burst x{_fmt(man.get('volume_burst_multiple'))}, thin book "
                         f"{'unknown' if thin is None else thin} ({man.get('thin_book_basis') or 'no basis given'}), "
                         f"fast reversal {man.get('fast_reversal')} -> score {_fmt(man.get('manipulation_score'))}.")
        sentiments = []
        for label, r in (("news", news), ("social", social)):
            if r is not None and r.get("mean_compound") is not None:
                sentiments.append(r["mean_compound"])
                lines.append(f"{label.capitalize()} sentiment {r.get('label')} ({_fmt(r.get('mean_compound'), '+.2f')}) "
                             f"from {r.get('relevant_count', r.get('post_count', 0))} items (quoted data, scored only).")
        if fut:
            lines.append(f"Futures basis {_fmt(fut.get('basis_percent'), '+.3f')}%.")
        if liq and liq.get("count"):
            lines.append(f"Liquidations: {liq['count']} orders, {_fmt(liq.get('notional_usd'), ',.0f')} USD.")
        if unavailable:
            lines.append(f"Unavailable sources (no data used from them): {', '.join(unavailable)}.")
        sentiment = sum(sentiments) / len(sentiments) if sentiments else None
        # confidences from the evidence: breadth share b, manipulation score m, |sentiment|, and the share of
        # the context sources that answered (unknown sources lower it, they never count as calm)
        asked = [n for n in c.results if n != "check_circuit_breaker_status"]
        coverage = 1.0 - len(unavailable) / len(asked) if asked else 0.0
        b = ev.number(breadth.get("fraction")) if breadth.get("other_symbols") else None
        m = ev.number(man.get("manipulation_score"))
        numbers = (f"breadth {'unavailable' if b is None else format(b, '.0%')}, manipulation score "
                   f"{'unavailable' if m is None else format(m, '.2f')}, sentiment "
                   f"{'unavailable' if sentiment is None else format(sentiment, '+.2f')}, {coverage:.0%} of sources answered")
        veto = False
        if man.get("manipulation_suspected"):
            verdict, veto, conf = "MANIPULATION_SUSPECTED", True, 0.5 + 0.45 * (m or 0.0)
            lines.append("The pump-and-dump signature is present: do not chase it.")
        elif breadth.get("market_wide") and direction == "dump":
            verdict, veto, conf = "MARKET_WIDE", True, 0.5 + 0.45 * (b or 0.0)
            lines.append("The whole market is falling: not an isolated flush to fade.")
        elif breadth.get("market_wide"):
            verdict, conf = "MARKET_WIDE", 0.5 + 0.45 * (b or 0.0)
            lines.append("A market-wide move: the spike follows the market.")
        elif sentiment is not None and ((direction == "dump" and sentiment <= -0.5) or
                                        (direction == "pump" and sentiment >= 0.5)):
            verdict, conf = "NEWS_DRIVEN", 0.4 + 0.5 * abs(sentiment)
            lines.append("Strong sentiment in the same direction: the move may have a fundamental cause.")
        else:
            iso = 0.0 if b is None else 1.0 - b
            conf = 0.35 + 0.5 * iso * (1.0 - (0.5 if m is None else m)) + 0.1 * coverage
            verdict = "ISOLATED"
            lines.append("An isolated move without a manipulation signature." if b is not None else
                         "No breadth data: isolation is assumed, not shown.")
        reason = numbers + (f"; unavailable: {', '.join(unavailable)}" if unavailable else "")
        return _final(c.task, lines, {"decision": verdict, "confidence": round(min(0.95, conf), 4), "veto": veto,
                                      "reason": reason, "sentiment": sentiment, "manipulation_score": m,
                                      "breadth_fraction": b, "market_wide": breadth.get("market_wide"),
                                      "thin_book": man.get("thin_book"), "unavailable": unavailable})

    # ------------------------------------------------------------------ risk
    @staticmethod
    def _planned_entry(c: Conversation) -> float | None:
        s = c.inputs.get("spike", {})
        if s.get("direction") == "dump" and s.get("price_to"):
            return round(float(s["price_to"]) * 0.998, 8)
        return None

    def _risk_evaluation_task(self, c: Conversation) -> Reply:
        s = c.inputs.get("spike", {})
        sym = s.get("symbol", "")
        if c.rounds == 0:
            sizing_args: dict[str, Any] = {"symbol": sym}
            entry = self._planned_entry(c)
            if entry:
                sizing_args["entry_price"] = entry
            return Reply(_calls(c, [("check_circuit_breaker_status", {}), ("portfolio_analyzer", {"symbol": sym}),
                                    ("position_sizing_optimizer", sizing_args), ("risk_metrics_calculator", {}),
                                    ("market_stability_checker", {})]))
        sizing = c.ok("position_sizing_optimizer")
        if c.rounds == 1 and sizing and sizing.get("notional_usd"):
            calls = _calls(c, [("slippage_calculator", {"symbol": sym, "notional_usd": sizing["notional_usd"]})])
            if calls:
                return Reply(calls)
        status, bline = _breaker_line(c)
        lines = [bline]
        port = c.ok("portfolio_analyzer") or {}
        metrics = c.ok("risk_metrics_calculator") or {}
        slip = c.ok("slippage_calculator") or {}
        stab = c.ok("market_stability_checker") or {}
        problems = []
        if status == "TRIGGERED":
            problems.append("breaker TRIGGERED")
        if port.get("holding_symbol"):
            problems.append(f"already holding {sym}")
        if port.get("position_slots_left") == 0:
            problems.append("no open-position slot left")
        if metrics.get("daily_limit_hit"):
            problems.append("daily loss limit reached")
        if metrics.get("weekly_limit_hit"):
            problems.append("weekly loss limit reached")
        if sizing is None or not sizing.get("quantity"):
            problems.append("position size rounds to zero" if sizing else "no sizing available")
        if slip.get("expected_cost_bps") is not None and slip["expected_cost_bps"] > 50:
            problems.append(f"expected cost {slip['expected_cost_bps']:.1f} bps > 50 bps")
        # an earlier agent's veto is this agent's rejection too: risk never approves what was discarded
        for task, label, vetoes in (("spike_detection_task", "market scanner", ("DISCARD",)),
                                    ("stability_check_task", "market guardian", ("UNSTABLE", "ESCALATED")),
                                    ("context_analysis_task", "context analysis", ("MANIPULATION_SUSPECTED",))):
            d = c.context.get(task) or {}
            if d.get("veto") is True or str(d.get("decision", "")).upper() in vetoes:
                why = d.get("reason")
                problems.append(f"{label}: {d.get('decision')}" + (f" ({str(why)[:160]})" if why else ""))
        if sizing:
            lines.append(f"Sizing at {_fmt(sizing.get('entry_price'), '.6g')}: {sizing.get('quantity')} "
                         f"({_fmt(sizing.get('notional_usd'), ',.2f')} USD), stop {_fmt(sizing.get('stop_loss'), '.6g')} "
                         f"(-{_fmt(sizing.get('stop_distance_percent'))}%), target {_fmt(sizing.get('take_profit'), '.6g')}, "
                         f"risk {_fmt(sizing.get('risk_usd'))} USD" + (f", capped by {sizing['capped_by']}"
                                                                       if sizing.get("capped_by") else "") + ".")
        if metrics:
            lines.append(f"Loss limits: day {_fmt(metrics.get('daily_pnl_usd'))} of -{_fmt(metrics.get('daily_loss_limit_usd'), 'g')} "
                         f"USD, week {_fmt(metrics.get('weekly_pnl_usd'))} of -{_fmt(metrics.get('weekly_loss_limit_usd'), 'g')} USD; "
                         f"{metrics.get('open_positions', 0)}/{metrics.get('max_open_positions', '?')} positions open.")
        if slip:
            lines.append(f"Expected entry cost {_fmt(slip.get('expected_cost_bps'))} bps (spread, slippage, taker fee)"
                         f"{_source_note(slip)}.")
        else:
            slip_r = c.result("slippage_calculator")
            lines.append(f"Expected entry cost unknown ({slip_r.get('reason') or slip_r.get('status')}): "
                         "not evidence of a cheap fill.")
        if stab:
            st = stab.get("stable")
            lines.append(f"Stability: {'stable' if st is True else 'not stable' if st is False else 'unknown'}"
                         + (f" ({stab['stability_note']})" if stab.get("stability_note") else "")
                         + f", size factor {_fmt(stab.get('size_factor'), 'g')}.")
        if problems:
            lines.append("Rejected: " + "; ".join(problems) + ".")
            return _final(c.task, lines, {"decision": "REJECT", "confidence": 0.9, "veto": True,
                                          "reasons": problems, "reason": "; ".join(problems)[:300]})
        assert sizing is not None
        conf, why = self._risk_confidence(port, metrics, slip, stab)
        lines.append(f"Within every limit: approved at this size (confidence {conf:.2f}: {why}).")
        return _final(c.task, lines, {
            "decision": "APPROVE", "confidence": conf, "veto": False, "reason": why, "quantity": sizing.get("quantity"),
            "entry_price": sizing.get("entry_price"), "stop_loss": sizing.get("stop_loss"),
            "take_profit": sizing.get("take_profit"), "stop_distance_percent": sizing.get("stop_distance_percent"),
            "take_profit_percent": sizing.get("take_profit_percent"), "risk_usd": sizing.get("risk_usd"),
            "expected_cost_bps": slip.get("expected_cost_bps"), "size_factor": stab.get("size_factor")})

    @staticmethod
    def _risk_confidence(port: dict[str, Any], metrics: dict[str, Any], slip: dict[str, Any],
                         stab: dict[str, Any]) -> tuple[float, str]:
        """0.3 + 0.65 * (0.4 headroom + 0.3 cost + 0.15 slots + 0.15 stability): headroom is the smaller share
        of the daily and weekly loss limits left; cost is 1 at 10 bps and 0 at 50 bps, halved when it is
        modelled; an unknown part scores 0."""
        def share(left: Any, limit: Any) -> float | None:
            left, limit = ev.number(left), ev.number(limit)
            return None if left is None or not limit else min(1.0, max(0.0, left / limit))

        heads = [h for h in (share(metrics.get("daily_headroom_usd"), metrics.get("daily_loss_limit_usd")),
                             share(metrics.get("weekly_headroom_usd"), metrics.get("weekly_loss_limit_usd")))
                 if h is not None]
        headroom = min(heads) if heads else None
        bps = ev.number(slip.get("expected_cost_bps"))
        modelled = slip.get("inputs_source") != "feed"  # the impact is always a model; are its inputs measured?
        cost = None if bps is None else (1.0 - (ev.ramp(bps, 10.0, 50.0) or 0.0)) * (0.5 if modelled else 1.0)
        slots = share(port.get("position_slots_left"), port.get("max_open_positions"))
        stable = {True: 1.0, False: 0.5}.get(stab.get("stable"))  # None (unknown) scores 0
        parts = {"headroom": (0.4, headroom), "cost": (0.3, cost), "slots": (0.15, slots), "stability": (0.15, stable)}
        conf = round(0.3 + 0.65 * sum(w * (v or 0.0) for w, v in parts.values()), 4)
        why = (f"loss headroom {'unknown' if headroom is None else format(headroom, '.0%')}, cost "
               f"{'unknown' if bps is None else format(bps, '.1f') + ' bps' + (' modelled' if modelled else '')}, "
               f"slots {'unknown' if slots is None else format(slots, '.0%')}, market "
               f"{'unknown' if stable is None else ('stable' if stable == 1.0 else 'not stable')}")
        return conf, why

    # ------------------------------------------------------------------ executor
    def _execution_plan(self, c: Conversation) -> tuple[dict[str, Any] | None, list[str], str | None]:
        """(order, reasoning lines, skip reason)."""
        s = c.inputs.get("spike", {})
        sym = s.get("symbol", "")
        lines = []
        vetoes = []
        for task in ("spike_detection_task", "stability_check_task", "context_analysis_task", "risk_evaluation_task"):
            d = c.context.get(task)
            if d is None:
                continue
            if d.get("veto") or d.get("decision") in ("DISCARD", "REJECT", "UNSTABLE", "ESCALATED",
                                                      "MANIPULATION_SUSPECTED"):
                vetoes.append(f"{task.replace('_task', '').replace('_', ' ')}: {d.get('decision')}"
                              + (f" ({'; '.join(d['reasons'])})" if d.get("reasons") else
                                 f" ({d['reason']})" if d.get("reason") else ""))
        kind = s.get("spike_type")
        if kind not in ("spot_price_spike", "volume_explosion"):
            return None, lines, f"{kind} is context, not an entry signal"
        if vetoes:
            return None, lines, "; ".join(vetoes)
        risk = c.context.get("risk_evaluation_task") or {}
        scan = c.context.get("spike_detection_task") or {}
        if risk.get("decision") != "APPROVE":
            return None, lines, "no approved sizing from the risk assessment"
        if (ev.number(s.get("confidence")) or 0.0) < 0.5:
            return None, lines, f"spike confidence {ev.number(s.get('confidence')) or 0.0:.2f} below 0.50"
        book = c.ok("binance_order_book")
        mid = (book or {}).get("mid") or s.get("price_to")
        if not mid:
            return None, lines, "no price to enter at"
        if s.get("direction") == "dump":
            entry_type = c.inputs.get("default_order_type") or "limit"
            entry = round(float(mid) * 0.998, 8)
            thesis = (f"{sym} dumped {float(s.get('magnitude_pct') or 0):.1f}% over {s.get('timeframe_minutes')}m; "
                      f"a {entry_type} bid 0.2% under the mid fades the flush")
        else:
            vm = ev.number(s.get("volume_multiple")) or 0.0
            if vm < 3.0:
                return None, lines, f"pump without volume (x{vm:.1f} < x3): likely to fade"
            mz = ev.number(scan.get("momentum_z_1m"))
            if mz is None or mz < ev.MOMENTUM_MIN_Z:
                return None, lines, (f"momentum stalled: the last minute's z-score with the pump is {_fmt(mz)} "
                                     f"(< {ev.MOMENTUM_MIN_Z:g}), a momentum BUY here buys the top")
            entry_type, entry = "market", float(mid)
            thesis = f"{sym} pumped {ev.number(s.get('magnitude_pct')) or 0:.1f}% on x{vm:.1f} volume; momentum entry"
        conf, conf_why = self._trade_confidence(c, scan)
        if conf < ev.TRADE_FLOOR:
            return None, lines, f"combined confidence {conf:.2f} < {ev.TRADE_FLOOR:g} ({conf_why})"
        stop_pct = float(risk.get("stop_distance_percent") or 2.0)
        take_pct = float(risk.get("take_profit_percent") or 2 * stop_pct)
        stop = round(entry * (1 - stop_pct / 100.0), 8)
        target = round(entry * (1 + take_pct / 100.0), 8)
        order = {"symbol": sym, "side": "BUY", "entry_type": entry_type,
                 "entry_price": None if entry_type == "market" else entry, "quantity": risk.get("quantity"),
                 "stop_loss": stop, "take_profit": target, "confidence": round(conf, 4),
                 "rationale": f"{thesis}. Stop {stop_pct:.2f}% below, target {take_pct:.2f}% above; size from the "
                              f"risk assessment ({risk.get('quantity')}). Confidence {conf:.2f}: {conf_why}."}
        lines.append(f"Entry: {entry_type} {'at ' + format(entry, '.6g') if entry_type != 'market' else 'at market'}, "
                     f"stop {stop:.6g}, target {target:.6g}, quantity {risk.get('quantity')}.")
        return order, lines, None

    @staticmethod
    def _trade_confidence(c: Conversation, scan: dict[str, Any]) -> tuple[float, str]:
        """min(detector's, scanner * stability * context * thesis): see core.agents.evidence."""
        s = c.inputs.get("spike", {})
        direction = "dump" if s.get("direction") == "dump" else "pump"
        scanner = ev.number(scan.get("confidence"))
        stab = c.context.get("stability_check_task") or {}
        ctx = c.context.get("context_analysis_task") or {}
        f_stab = ev.stability_factor(str(stab.get("decision") or "") or None)
        f_ctx = ev.context_factor(str(ctx.get("decision") or "") or None, direction, ctx.get("manipulation_score"))
        f_thesis = (ev.momentum_factor(scan.get("momentum_z_1m"), scan.get("zscore")) if direction == "pump" else 1.0)
        detector = ev.number(s.get("confidence"))
        combined = (scanner if scanner is not None else ev.MISSING_FACTOR) * f_stab * f_ctx * f_thesis
        conf = round(max(0.0, min(detector if detector is not None and detector > 0 else 1.0, combined, 0.95)), 4)
        why = (f"scanner {_fmt(scanner)} x stability {f_stab:.2f} ({stab.get('decision', 'no answer')}) x context "
               f"{f_ctx:.2f} ({ctx.get('decision', 'no answer')}) x {'momentum' if direction == 'pump' else 'fade'} "
               f"{f_thesis:.2f}")
        return conf, why

    def _skip_confidence(self, c: Conversation) -> float:
        """As sure of a skip as the surest veto behind it; without one, 1 - the trade's combined confidence."""
        vetoes = [ev.number(d.get("confidence")) or 0.0 for t, d in c.context.items()
                  if t in SPIKE_TASKS and (d.get("veto") is True or d.get("decision") in
                                           ("DISCARD", "REJECT", "UNSTABLE", "ESCALATED", "MANIPULATION_SUSPECTED"))]
        if vetoes:
            return round(max(vetoes), 4)
        conf, _ = self._trade_confidence(c, c.context.get("spike_detection_task") or {})
        if (c.inputs.get("spike") or {}).get("direction") != "dump":
            scan = c.context.get("spike_detection_task") or {}
            if ev.number(scan.get("momentum_z_1m")) is None or ev.number(scan.get("momentum_z_1m")) < ev.MOMENTUM_MIN_Z:
                conf = 0.0  # no momentum: nothing speaks for the momentum trade
        return round(min(0.95, max(0.05, 1.0 - conf)), 4)

    def _execution_task(self, c: Conversation) -> Reply:
        s = c.inputs.get("spike", {})
        sym = s.get("symbol", "")
        if c.rounds == 0:
            return Reply(_calls(c, [("check_circuit_breaker_status", {}), ("binance_account", {}),
                                    ("binance_order_book", {"symbol": sym})]))
        order, lines, skip = self._execution_plan(c)
        status, bline = _breaker_line(c)
        if status == "TRIGGERED":
            order, skip = None, "breaker TRIGGERED"
        if c.rounds == 1 and order is not None:
            calls = _calls(c, [("binance_spot_order", {k: v for k, v in order.items() if v is not None})])
            if calls:
                return Reply(calls)
        lines = [bline, *lines]
        if order is None:
            lines.append(f"No trade: {skip}.")
            return _final(c.task, lines, {"decision": "SKIP", "action": "skip", "confidence": self._skip_confidence(c),
                                          "reason": skip})
        recorded = c.result("binance_spot_order")
        if recorded.get("status") == "recorded":
            lines.append("Order submitted for validation and the operator's approval (not sent to the exchange).")
        lines.append("Proposal below.")
        return _final(c.task, lines, {"decision": "PROPOSE", "action": "propose", **order})


ANALYST = Analyst()

__all__ = ["Analyst", "ANALYST", "Reply", "Conversation", "read_conversation", "find_json_after", "last_json_object",
           "INPUT_MARK", "DECISION_MARK", "SPIKE_TASKS", "GUARDIAN_TASK", "content_text"]
