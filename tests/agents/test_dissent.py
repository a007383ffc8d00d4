"""Dissent (issue 10): for every crew proposal a bull and a bear view of the same evidence, who agreed and
who dissented (one line each), and a dissent score in [0, 1]; sealed into the proposal's hash."""

from __future__ import annotations

import hashlib
import json

import pytest

from core.agents.dissent import assess
from core.desk.proposal import TradeProposal
from tests.agents.conftest import dump_spike

SPIKE = {"symbol": "DOGEUSDT", "direction": "pump", "magnitude_pct": 5.02, "volume_multiple": 3.06}


def decisions(**over):
    base = {
        "spike_detection_task": {"decision": "CONFIRM", "confidence": 0.87, "reason": "z 6.60, volume x3.06",
                                 "zscore": 6.6, "volume_multiple": 3.06, "held_fraction": 1.0, "momentum_z_1m": 4.15,
                                 "breadth_fraction": 0.0, "correlation_btc": -0.24},
        "stability_check_task": {"decision": "STABLE", "confidence": 0.93, "reason": "BTCUSDT -0.22% (60m)"},
        "context_analysis_task": {"decision": "ISOLATED", "confidence": 0.9, "reason": "breadth 0%"},
        "risk_evaluation_task": {"decision": "APPROVE", "confidence": 0.85, "reason": "loss headroom 100%"},
        "execution_task": {"decision": "PROPOSE", "confidence": 0.8, "rationale": "momentum entry"},
    }
    base.update(over)
    return base


def tools(cost_inputs="feed", manipulation=0.0, thin=False, unavailable=()):
    out = {"manipulation_detector": {"status": "ok", "manipulation_score": manipulation, "thin_book": thin},
           "slippage_calculator": {"status": "ok", "expected_cost_bps": 11.1, "source": "model",
                                   "inputs_source": cost_inputs},
           "correlation_analysis": {"status": "ok", "breadth": {"other_symbols": 7, "moving_same_way": 0,
                                                                 "fraction": 0.0}, "correlation": {"value": -0.24}}}
    for name in unavailable:
        out[name] = {"status": "unavailable", "reason": "not configured"}
    return out


def test_everyone_agreeing_on_measured_evidence_is_little_dissent():
    d = assess(decisions(), tools(), SPIKE)
    assert len(d.agreed) == 5 and d.dissented == ()
    assert d.agreed[0] == "Market Scanner: CONFIRM 0.87: z 6.60, volume x3.06"
    assert d.agreed[-1] == "Strategy Executor: PROPOSE 0.80: momentum entry"
    assert 0.0 <= d.score < 0.15, d.score
    assert d.bull.startswith("Bull: DOGEUSDT pump 5.02%, z 6.60, volume x3.06") and "5 of 5 agents" in d.bull
    assert d.bear.startswith("Bear: nothing measured against it; 0 of 5 agents dissent")
    assert "\n" not in d.bull + d.bear


def test_a_dissenting_agent_is_named_with_its_line_and_raises_the_score():
    calm = assess(decisions(), tools(), SPIKE)
    blind = {"decision": "CAUTION", "confidence": 0.35, "reason": "stability unknown: drawdown unavailable for ETHUSDT",
             "unavailable": ["ETHUSDT"]}
    d = assess(decisions(stability_check_task=blind), tools(), SPIKE)
    assert d.dissented == ("Market Guardian: CAUTION 0.35: stability unknown: drawdown unavailable for ETHUSDT",)
    assert len(d.agreed) == 4 and "reference markets unseen" in d.bear and "1 of 5 agents dissent" in d.bear
    assert d.score > calm.score
    sure = assess(decisions(stability_check_task={**blind, "confidence": 0.9}), tools(), SPIKE)
    assert sure.score > d.score  # a confident dissent weighs more than a hesitant one


def test_the_bear_view_has_the_numbers_and_more_against_is_more_dissent():
    scores = []
    for kw in ({}, {"cost_inputs": "model"}, {"cost_inputs": "model", "manipulation": 0.3},
               {"cost_inputs": "model", "manipulation": 0.3, "thin": True, "unavailable": ("news_sentiment",)}):
        d = assess(decisions(), tools(**kw), SPIKE)
        scores.append(d.score)
    assert scores == sorted(scores) and len(set(scores)) == 4, scores
    assert "cost 11.1 bps modelled, not measured" in d.bear and "manipulation score 0.30" in d.bear
    assert "thin book for the size" in d.bear and "1 sources unavailable (news_sentiment)" in d.bear
    weak = decisions(spike_detection_task={"decision": "CONFIRM", "confidence": 0.5, "zscore": 1.2,
                                           "volume_multiple": 1.4, "held_fraction": 0.7, "momentum_z_1m": 0.2})
    d = assess(weak, tools(), SPIKE)
    assert {"z only 1.20", "volume only x1.40", "70% of the move held", "last-minute z 0.20 with the pump"} <= \
        set(x.strip() for x in d.bear[len("Bear: "):].split(";")[0].split(","))


def test_a_missing_or_hostile_answer_is_a_dissent_not_agreement():
    d = assess(decisions(context_analysis_task=None, risk_evaluation_task="garbage",
                         stability_check_task={"decision": {"x": 1}, "confidence": "NaN"}), {"x": "y"}, {"symbol": 7})
    assert [ln.split(":")[0] for ln in d.dissented] == ["Market Guardian", "Context Analyzer", "Risk Assessment"]
    assert "Context Analyzer: NO ANSWER" in d.dissented and 0.0 <= d.score <= 1.0
    d = assess({}, {}, None)
    assert len(d.dissented) == 5 and d.agreed == () and 0.0 <= d.score <= 1.0


@pytest.mark.parametrize("direction,expected", [("pump", "agreed"), ("dump", "dissented")])
def test_news_backs_momentum_but_dissents_from_fading(direction, expected):
    d = assess(decisions(context_analysis_task={"decision": "NEWS_DRIVEN", "confidence": 0.7}), tools(),
               {**SPIKE, "direction": direction})
    assert any(ln.startswith("Context Analyzer: NEWS_DRIVEN") for ln in getattr(d, expected))


# ---------------------------------------------------------------------- the proposal carries it
def _proposal(**over):
    fields = dict(proposal_id="p1", created_ms=1, expires_ms=2, symbol="SOLUSDT", side="BUY", quantity=1.0,
                  entry_type="limit", entry_price=2.0, stop_loss=1.0, take_profit=3.0, reference_price=2.0,
                  breaker_epoch=0, breaker_status="SAFE", confidence=0.5, risk_usd=1.0, notional_usd=2.0,
                  reward_risk=1.0, rationale="x", source="crew:rules")
    fields.update(over)
    return TradeProposal(**fields)


def test_an_old_journal_row_still_loads_with_its_old_hash():
    old = _proposal().model_dump(mode="json")
    for k in ("bull_case", "bear_case", "agreed", "dissented", "dissent_score"):
        old.pop(k)
    hashed = ("proposal_id", "symbol", "side", "quantity", "entry_type", "entry_price", "stop_loss", "take_profit",
              "expires_ms", "spike_time_ms", "spike_type", "breaker_epoch", "reference_price", "source")
    old["content_hash"] = hashlib.sha256(json.dumps({k: old.get(k) for k in hashed}, sort_keys=True,
                                                    separators=(",", ":"), default=str).encode()).hexdigest()
    p = TradeProposal.model_validate(old)  # as sealed before the dissent fields existed
    assert p.intact() and p.dissent_score is None and p.agreed == ()


def test_the_hash_covers_the_dissent():
    d = assess(decisions(), tools(), SPIKE)
    p = _proposal(**d.proposal_fields()).sealed()
    assert p.intact() and TradeProposal.model_validate(p.model_dump(mode="json")).intact()
    for change in ({"dissent_score": 0.0}, {"dissented": ("Risk Assessment: REJECT",)}, {"bear_case": "Bear: none"},
                   {"agreed": p.agreed[:2]}):
        assert not p.model_copy(update=change).intact(), change
    with pytest.raises(ValueError):
        _proposal(dissent_score=1.5)


async def test_a_crew_proposal_carries_its_dissent(session, desk):
    p = await desk.handle_spike(dump_spike(session))
    assert isinstance(p, TradeProposal), p
    assert p.intact() and p.dissent_score is not None and 0.0 <= p.dissent_score <= 1.0
    # the fixture has no ETHUSDT: the guardian cannot see it and says so, the others agree
    assert [ln.split(":")[0] for ln in p.dissented] == ["Market Guardian"]
    assert "drawdown unavailable for ETHUSDT" in p.dissented[0]
    assert [ln.split(":")[0] for ln in p.agreed] == ["Market Scanner", "Context Analyzer", "Risk Assessment",
                                                    "Strategy Executor"]
    assert p.bull_case.startswith("Bull: SOLUSDT dump") and p.bear_case.startswith("Bear: ")
    assert "thin book for the size" in p.bear_case and "modelled" in p.bear_case
