"""The rules analyst decides from the evidence (issue 10): confidences are functions of the numbers the
tools gave, bounded and monotone; unknown is not calm; a veto-worthy finding is that decision.

The analyst is driven directly with the conversation a model would get (no crewai, no engine)."""

from __future__ import annotations

import json

import pytest

from core.agents.analyst import ANALYST, DECISION_MARK, find_json_after

BREAKER = {"status": "ok", "breaker_status": "SAFE", "epoch": 0, "policy": "all orders allowed"}


def converse(task, inputs, results, context=(), rounds=1):
    """The messages a model sees after `rounds` rounds of tool calls; `results` maps a tool to its result
    (a list for a tool called several times)."""
    prompt = f"[task: {task}]\nDo the task.\nINPUT_JSON: {json.dumps(inputs)}"
    for d in context:
        prompt += f"\n{DECISION_MARK} {json.dumps(d)}"
    msgs = [{"role": "system", "content": "You are an agent."}, {"role": "user", "content": prompt}]
    n = 0
    for r in range(rounds):
        calls, answers = [], []
        items = results.items() if r == 0 else [("check_circuit_breaker_status", BREAKER)]
        for name, res in items:
            for one in (res if isinstance(res, list) else [res]):
                n += 1
                calls.append({"id": f"c{n}", "type": "function", "function": {"name": name, "arguments": "{}"}})
                answers.append({"role": "tool", "tool_call_id": f"c{n}", "name": name,
                                "content": json.dumps({"tool": name, **one})})
        msgs += [{"role": "assistant", "content": "", "tool_calls": calls}, *answers]
    return msgs


def decide(task, inputs, results, context=(), rounds=1):
    reply = ANALYST.respond(converse(task, inputs, results, context, rounds))
    assert reply.is_final, reply
    [decision] = find_json_after(reply.text, DECISION_MARK)[-1:]
    return decision, reply.text


# ---------------------------------------------------------------------- the scanner
def spike(direction="pump", magnitude=5.0, tf=5, price_from=100.0, vm=4.0, confidence=0.8):
    price_to = price_from * (1 + magnitude / 100 * (1 if direction == "pump" else -1))
    return {"symbol": "DOGEUSDT", "spike_type": "spot_price_spike", "direction": direction, "magnitude_pct": magnitude,
            "timeframe_minutes": tf, "volume_multiple": vm, "price_from": price_from, "price_to": price_to,
            "confidence": confidence, "zscore": 0.0}


def scan(magnitude=5.0, held=1.0, vm=4.0, z1=3.0, sigma=0.5, breadth=0, corr=0.0, direction="pump", others=7,
         with_corr=True):
    s = spike(direction, magnitude, vm=vm)
    sign = 1 if direction == "pump" else -1
    price = s["price_from"] * (1 + sign * magnitude * held / 100)
    ws = {"status": "ok", "price": price, "zscore_1m": sign * z1 if z1 is not None else None,
          "sigma_1m_percent": sigma, "sigma_samples": 40, "volume_baseline_per_min": 10.0, "age_seconds": 1.0,
          "windows": {"5m": {"volume_multiple": vm}}}
    results = {"check_circuit_breaker_status": BREAKER, "binance_websocket": ws,
               "binance_order_book": {"status": "ok", "spread_bps": 2.0, "depth_usd_per_side": 25_000.0,
                                      "source": "model", "caveat": "modelled by the paper exchange"}}
    if with_corr:
        results["correlation_analysis"] = {
            "status": "ok", "breadth": {"other_symbols": others, "moving_same_way": breadth,
                                        "fraction": breadth / others, "market_wide": breadth / others >= 0.6},
            "correlation": {"value": corr}}
    return decide("spike_detection_task", {"spike": s}, results)


def test_a_move_without_z_or_volume_is_discarded():
    # the finding: z=0.01 with volume x0.1 still gave CONFIRM
    d, text = scan(magnitude=0.05, z1=0.01, sigma=1.0, vm=0.1)
    assert d["decision"] == "DISCARD", text
    assert "no statistical backing" in d["reason"] and "x0.10" in d["reason"]


def test_weak_evidence_is_discarded_under_the_floor():
    d, _ = scan(magnitude=1.0, z1=0.5, sigma=0.5, vm=1.2, breadth=4, corr=0.8)  # backed by volume, barely
    assert d["decision"] == "DISCARD" and d["reason"].startswith("evidence too weak")


def test_more_volume_gives_more_confidence_and_it_stays_bounded():
    confs = [scan(vm=vm)[0]["confidence"] for vm in (1.1, 2.0, 3.0, 4.0, 6.0, 50.0)]
    assert confs == sorted(confs) and len(set(confs[:4])) == 4, confs
    assert all(0.0 <= c <= 1.0 for c in confs) and confs[-1] <= 0.95


def test_a_move_given_back_gives_less_confidence_and_mostly_given_back_is_a_discard():
    confs = [scan(held=h)[0]["confidence"] for h in (1.0, 0.9, 0.75, 0.6)]
    assert confs == sorted(confs, reverse=True) and len(set(confs)) == 4, confs
    d, _ = scan(held=0.4)
    assert d["decision"] == "DISCARD" and "40% held" in d["reason"]


def test_breadth_correlation_and_z_move_the_confidence():
    base = scan()[0]["confidence"]
    assert scan(breadth=5)[0]["confidence"] < base  # the market moved with it
    assert scan(corr=0.9)[0]["confidence"] < base  # it follows BTC
    assert scan(magnitude=2.0)[0]["confidence"] < base  # fewer sigmas
    assert scan(sigma=0.1)[0]["confidence"] >= base


def test_unavailable_evidence_lowers_the_confidence_and_is_named():
    full, _ = scan()
    blind, text = scan(with_corr=False, z1=None, sigma=None)
    assert blind["confidence"] < full["confidence"]
    assert set(blind["unavailable"]) == {"zscore", "isolation", "decorrelation"}
    assert "Unavailable evidence" in text and "unavailable: zscore" in blind["reason"]


def test_the_scanner_line_keeps_the_model_caveat_of_the_book():
    _, text = scan()
    assert "touch depth 25,000 USD (modelled by the paper exchange, not exchange data)" in text


def test_hostile_values_in_the_scanner_evidence_do_not_crash():
    s = spike()
    ws = {"status": "ok", "price": "NaN", "zscore_1m": "x", "windows": "nope", "age_seconds": None}
    d, _ = decide("spike_detection_task", {"spike": {**s, "timeframe_minutes": "abc"}},
                  {"check_circuit_breaker_status": BREAKER, "binance_websocket": ws})
    assert d["decision"] == "DISCARD" and d["reason"] == "no usable price"


# ---------------------------------------------------------------------- the guardian
def drawdown(symbol, d60, d5=0.0, ok=True):
    if not ok:
        return {"status": "unavailable", "symbol": symbol, "reason": f"no market data for {symbol} on this feed"}
    return {"status": "ok", "symbol": symbol, "drawdown_percent": d60, "drop_60m_percent": d60, "drop_5m_percent": d5,
            "price": 100.0, "high": 100.0, "thresholds": {"warning_1h_percent": 10.0, "warning_5m_percent": 5.0,
                                                          "trigger_1h_percent": 15.0}}


def stability(*refs):
    results = {"check_circuit_breaker_status": BREAKER, "calculate_market_drawdown": list(refs),
               "assess_market_recovery_conditions": {"status": "ok"}, "get_circuit_breaker_statistics": {"status": "ok"}}
    return decide("stability_check_task", {"references": ["BTCUSDT", "ETHUSDT"]}, results, rounds=2)


def test_blind_references_are_unknown_not_calm():
    # the finding: "Reference markets are calm: stable" (0.85) with both drawdowns unavailable
    d, text = stability(drawdown("BTCUSDT", 0, ok=False), drawdown("ETHUSDT", 0, ok=False))
    assert d["decision"] == "CAUTION" and d["confidence"] < 0.5, d
    assert "calm: stable" not in text and "stability unknown" in d["reason"]
    assert d["unavailable"] == ["BTCUSDT", "ETHUSDT"]
    half, _ = stability(drawdown("BTCUSDT", 0.5), drawdown("ETHUSDT", 0, ok=False))
    assert half["decision"] == "CAUTION" and d["confidence"] < half["confidence"] < 0.5
    assert "ETHUSDT" in half["reason"] and "BTCUSDT -0.50%" in half["reason"]


def test_the_guardian_crew_names_blind_references_and_is_less_sure():
    warning = {**BREAKER, "breaker_status": "WARNING"}
    results = {"check_circuit_breaker_status": warning,
               "calculate_market_drawdown": [drawdown("BTCUSDT", 3.0), drawdown("ETHUSDT", 0, ok=False)],
               "assess_market_recovery_conditions": {"status": "ok"}, "get_circuit_breaker_statistics": {"status": "ok"}}
    inputs = {"references": ["BTCUSDT", "ETHUSDT"], "change": {"from": "SAFE", "to": "WARNING"}}
    blind, text = decide("market_monitoring_task", inputs, results, rounds=2)
    results["calculate_market_drawdown"] = [drawdown("BTCUSDT", 3.0), drawdown("ETHUSDT", 2.0)]
    seen, _ = decide("market_monitoring_task", inputs, results, rounds=2)
    assert blind["decision"] == seen["decision"] == "MONITOR"
    assert blind["confidence"] < seen["confidence"] and blind["unavailable"] == ["ETHUSDT"]
    assert "Unseen reference markets (no drawdown): ETHUSDT" in text


def test_stable_only_when_seen_and_less_sure_near_the_warning_level():
    calm, _ = stability(drawdown("BTCUSDT", 0.5), drawdown("ETHUSDT", 0.2))
    closer, _ = stability(drawdown("BTCUSDT", 4.0), drawdown("ETHUSDT", 0.2))
    assert calm["decision"] == closer["decision"] == "STABLE"
    assert calm["confidence"] > closer["confidence"] > 0.5
    near, _ = stability(drawdown("BTCUSDT", 6.0), drawdown("ETHUSDT", 0.2))
    assert near["decision"] == "CAUTION" and "approaching" in near["reason"]


# ---------------------------------------------------------------------- the context analyzer
def context(breadth=0, manipulation=None, unavailable=(), direction="pump"):
    results = {"check_circuit_breaker_status": BREAKER,
               "correlation_analysis": {"status": "ok", "direction": "up", "breadth": {
                   "other_symbols": 7, "moving_same_way": breadth, "fraction": breadth / 7, "threshold_percent": 1.0,
                   "market_wide": breadth >= 5}}}
    if manipulation is not None:
        results["manipulation_detector"] = {"status": "ok", "manipulation_score": manipulation,
                                            "manipulation_suspected": manipulation >= 0.7, "thin_book": None,
                                            "thin_book_basis": "unknown"}
    for name in unavailable:
        results[name] = {"status": "unavailable", "reason": "not configured"}
    return decide("context_analysis_task", {"spike": spike(direction)}, results)


def test_context_confidence_comes_from_breadth_manipulation_and_coverage():
    clean, _ = context(manipulation=0.0)
    some, _ = context(manipulation=0.3)
    wide, _ = context(breadth=2, manipulation=0.0)
    blind, text = context(manipulation=0.0, unavailable=("news_sentiment", "twitter_sentiment"))
    assert {clean["decision"], some["decision"], wide["decision"], blind["decision"]} == {"ISOLATED"}
    assert clean["confidence"] > some["confidence"] and clean["confidence"] > wide["confidence"]
    assert clean["confidence"] > blind["confidence"] and "unavailable: news_sentiment" in blind["reason"]
    no_detector, _ = context()
    assert no_detector["confidence"] < clean["confidence"] and "manipulation score unavailable" in no_detector["reason"]
    assert "thin book unknown" in context(manipulation=0.3)[1]


def test_context_vetoes_are_decisions_with_evidence_confidence():
    man, _ = context(manipulation=0.7)
    more, _ = context(manipulation=1.0)
    assert man["decision"] == more["decision"] == "MANIPULATION_SUSPECTED" and man["veto"] is True
    assert more["confidence"] > man["confidence"]
    dump, _ = context(breadth=6, manipulation=0.0, direction="dump")
    assert dump["decision"] == "MARKET_WIDE" and dump["veto"] is True
    assert dump["confidence"] > context(breadth=5, manipulation=0.0, direction="dump")[0]["confidence"]


# ---------------------------------------------------------------------- risk
SIZING = {"status": "ok", "quantity": 10.0, "notional_usd": 1000.0, "entry_price": 100.0, "stop_loss": 98.0,
          "take_profit": 104.0, "stop_distance_percent": 2.0, "take_profit_percent": 4.0, "risk_usd": 20.0}


def risk(context=(), cost=11.1, inputs_source="model", headroom=200.0, stable=True):
    results = {"check_circuit_breaker_status": BREAKER,
               "portfolio_analyzer": {"status": "ok", "holding_symbol": False, "position_slots_left": 3,
                                      "max_open_positions": 3},
               "position_sizing_optimizer": SIZING,
               "risk_metrics_calculator": {"status": "ok", "daily_headroom_usd": headroom, "daily_loss_limit_usd": 200.0,
                                           "weekly_headroom_usd": 500.0, "weekly_loss_limit_usd": 500.0},
               "market_stability_checker": {"status": "ok", "stable": stable, "size_factor": 1.0},
               "slippage_calculator": ({"status": "ok", "expected_cost_bps": cost, "source": "model",
                                        "inputs_source": inputs_source} if cost is not None else
                                       {"status": "unavailable", "reason": "no book depth"})}
    return decide("risk_evaluation_task", {"spike": spike()}, results, context, rounds=2)


@pytest.mark.parametrize("veto", [
    {"task": "spike_detection_task", "decision": "DISCARD", "confidence": 0.9, "reason": "no statistical backing"},
    {"task": "stability_check_task", "decision": "UNSTABLE", "confidence": 0.9, "veto": True},
    {"task": "context_analysis_task", "decision": "MANIPULATION_SUSPECTED", "confidence": 0.8, "veto": True},
])
def test_risk_never_approves_after_a_veto(veto):
    # the finding: risk approved 23 of 23 runs, including after a DISCARD
    d, text = risk(context=[veto])
    assert d["decision"] == "REJECT" and d["veto"] is True, text
    assert veto["decision"] in d["reason"]


def test_risk_confidence_comes_from_headroom_cost_and_its_source():
    base, text = risk()
    assert base["decision"] == "APPROVE" and "modelled" in base["reason"]
    assert "(modelled by the paper exchange, not exchange data)" in text
    assert risk(inputs_source="feed")[0]["confidence"] > base["confidence"]  # a measured cost is worth more
    assert risk(cost=40.0)[0]["confidence"] < base["confidence"]
    assert risk(headroom=50.0)[0]["confidence"] < base["confidence"]
    unknown, text = risk(cost=None)
    assert unknown["confidence"] < base["confidence"] and "cost unknown" in unknown["reason"]
    assert "not evidence of a cheap fill" in text
    blind, _ = risk(stable=None)
    assert blind["confidence"] < base["confidence"] and "market unknown" in blind["reason"]


# ---------------------------------------------------------------------- the executor
def execute(direction="pump", scanner=0.85, momentum=3.0, sigmas=5.0, stab="STABLE", ctx="ISOLATED", manipulation=0.0,
            vm=4.0):
    context = [
        {"task": "spike_detection_task", "decision": "CONFIRM", "confidence": scanner, "momentum_z_1m": momentum,
         "zscore": sigmas},
        {"task": "stability_check_task", "decision": stab, "confidence": 0.9, "veto": False},
        {"task": "context_analysis_task", "decision": ctx, "confidence": 0.8, "veto": False,
         "manipulation_score": manipulation},
        {"task": "risk_evaluation_task", "decision": "APPROVE", "confidence": 0.85, "veto": False, "quantity": 10.0,
         "stop_distance_percent": 2.0, "take_profit_percent": 4.0},
    ]
    results = {"check_circuit_breaker_status": BREAKER, "binance_account": {"status": "ok"},
               "binance_order_book": {"status": "ok", "mid": 105.0}}
    return decide("execution_task", {"spike": spike(direction, vm=vm, confidence=0.99)}, results, context,
                  rounds=2 if direction else 1)


def test_a_pump_whose_momentum_stalled_is_not_bought():
    # the finding: a momentum BUY at confidence 0.98 at the top of a 32% pump
    d, _ = execute(momentum=-0.36, sigmas=6.3, scanner=0.89)
    assert d["decision"] == "SKIP" and "momentum stalled" in d["reason"] and d["confidence"] >= 0.9


def test_the_trade_confidence_is_the_product_of_the_evidence():
    fresh, _ = execute(sigmas=4.0)
    assert fresh["decision"] == "PROPOSE" and fresh["confidence"] == 0.85
    assert "Confidence 0.85" in fresh["rationale"]
    assert execute(sigmas=8.0)[0]["confidence"] < fresh["confidence"]  # chasing a more extended move
    assert execute(momentum=1.0, sigmas=4.0)[0]["confidence"] < fresh["confidence"]  # weaker last-minute momentum
    assert execute(stab="CAUTION", sigmas=4.0)[0]["confidence"] == pytest.approx(0.85 * 0.8, abs=1e-4)
    assert execute(manipulation=0.3, sigmas=4.0)[0]["confidence"] == pytest.approx(0.85 * 0.85, abs=1e-4)
    low, _ = execute(scanner=0.4, stab="CAUTION", ctx="MARKET_WIDE", sigmas=4.0)
    assert low["decision"] == "SKIP" and low["reason"].startswith("combined confidence 0.22 < 0.25")
