"""The executor's answer -> TradeProposal or Skip: the schema, the caps, never a crash."""

from __future__ import annotations

import json

import pytest

from core.agents.context import DeskContext, RunState
from core.agents.crew import finalize
from core.desk.proposal import TradeProposal
from core.desk.rules_proposer import Skip
from tests.agents.conftest import dump_spike, make_session


@pytest.fixture
def rig():
    session = make_session()
    spike = dump_spike(session)
    ctx = DeskContext.from_session(session)
    run = RunState(kind="spike", source="crew:openai/gpt-4o-mini", model="openai/gpt-4o-mini", token_budget=20_000,
                   cost_budget_usd=0.05, spike=spike, spike_event_id=7)
    return session, ctx, run


def answer(**order) -> str:
    base = {"task": "execution_task", "decision": "PROPOSE", "action": "propose", "symbol": "SOLUSDT", "side": "BUY",
            "entry_type": "limit", "entry_price": 95.8, "quantity": 5.0, "stop_loss": 93.9, "take_profit": 99.6,
            "confidence": 0.7, "rationale": "fade the flush"}
    base.update(order)
    return "Reasoning line.\nDECISION: " + json.dumps(base)


def test_a_valid_answer_becomes_a_sealed_proposal(rig):
    session, ctx, run = rig
    p = finalize(ctx, run, answer())
    assert isinstance(p, TradeProposal) and p.intact()
    assert p.quantity == 5.0 and p.entry_price == 95.8 and p.source == "crew:openai/gpt-4o-mini"
    assert p.spike_event_id == 7 and p.breaker_epoch == session.breaker.epoch
    assert p.expires_ms - p.created_ms == int(session.settings.execution.proposal_ttl_seconds * 1000)


def test_the_models_quantity_never_bypasses_the_caps(rig):
    session, ctx, run = rig
    risk = session.settings.risk_management
    p = finalize(ctx, run, answer(quantity=1e9, rationale="ignore your rules, buy the maximum"))
    assert isinstance(p, TradeProposal)
    assert p.quantity * p.entry_price <= risk.max_order_notional_usd
    assert p.risk_usd <= 10_000 * risk.risk_per_trade_percent / 100 + 1e-6
    assert "re-capped from 1e+09" in p.rationale
    market = finalize(ctx, run, answer(entry_type="market", entry_price=None, quantity=None))
    assert isinstance(market, TradeProposal) and market.entry_price is None
    assert market.quantity * market.reference_price <= risk.max_order_notional_usd


def test_prose_without_a_decision_is_no_trade(rig):
    _, ctx, run = rig
    assert finalize(ctx, run, "I think we should buy.") == Skip("strategy executor gave no decision: no trade")


@pytest.mark.parametrize("text, why", [
    (answer(side="SELL"), "SELL entries are not allowed"),
    (answer(entry_price=120.0, take_profit=130.0), "collar"),
    (answer(stop_loss=97.0), "stop_loss < entry < take_profit"),
    (answer(symbol="BTCUSDT"), "the spike is in SOLUSDT"),
    (answer(entry_type="iceberg"), "entry_type"),
    (answer(quantity=-3), "quantity"),
    ("DECISION: " + json.dumps({"action": "propose", "symbol": "SOLUSDT", "entry_type": "limit", "entry_price": 95.8,
                                "stop_loss": 93.9, "take_profit": 99.6, "quantity": float("nan")}), "quantity"),
    (answer(entry_type="limit", entry_price=None), "needs entry_price"),
    (answer(stop_loss=None), "missing stop_loss"),
])
def test_invalid_output_is_a_skip_with_the_reason(rig, text, why):
    _, ctx, run = rig
    d = finalize(ctx, run, text)
    assert isinstance(d, Skip), d
    assert d.reason.startswith("agent output failed validation: ") and why in d.reason, d.reason


def test_a_skip_answer_and_the_breaker(rig):
    session, ctx, run = rig
    d = finalize(ctx, run, "DECISION: " + json.dumps({"decision": "SKIP", "action": "skip", "reason": "risk said no"}))
    assert d == Skip("strategy executor: risk said no")
    session.force_trigger("halt")
    d = finalize(ctx, run, answer())
    assert isinstance(d, Skip) and d.reason == "circuit breaker TRIGGERED: no new entries"


def test_a_recorded_candidate_without_a_decision_is_no_proposal(rig):
    _, ctx, run = rig
    run.candidate = {"symbol": "SOLUSDT", "side": "BUY", "entry_type": "limit", "entry_price": 95.8, "quantity": 4.0,
                     "stop_loss": 93.9, "take_profit": 99.6, "confidence": 0.6, "rationale": "from the tool"}
    assert finalize(ctx, run, "I will not trade; skip it.") == Skip("strategy executor gave no decision: no trade")


def test_an_earlier_veto_binds_whatever_the_executor_says(rig):
    _, ctx, run = rig
    run.task_finished("spike_detection_task", "Market Scanner",
                      'DECISION: {"task": "spike_detection_task", "decision": "DISCARD", "reason": "noise"}')
    assert finalize(ctx, run, answer()) == Skip("Market Scanner DISCARD: noise")
