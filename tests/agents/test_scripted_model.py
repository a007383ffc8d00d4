"""The real-model path against a local OpenAI-compatible server scripted by the test, not by
the product's analyst: CrewAI's OpenAI provider over HTTP and Server-Sent Events, with the
answers each mode calls for. What must hold, per mode: a well-behaved model's proposal; a
veto that binds (the later agents are never called); a prose refusal is a skip whatever its
tool calls recorded; and for the failing providers (hang, slow stream, 429, 500, runaway
tokens) a bounded run with the reason said, in bounded time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import SecretStr

from core.desk.proposal import TradeProposal
from core.desk.rules_proposer import Skip
from core.settings import Secrets
from tests.agents.conftest import dump_spike, make_session, make_settings
from tests.fakes.openai_stub import OpenAIStub, Reply, Script, decision

KEY = Secrets(openai_api_key=SecretStr("test"))
TASKS = ("spike_detection_task", "stability_check_task", "context_analysis_task", "risk_evaluation_task",
         "execution_task")


def well_behaved(**override: list[Reply]) -> dict[str, list[Reply]]:
    replies = {
        "spike_detection_task": [decision("spike_detection_task", decision="CONFIRM", confidence=0.7,
                                          reason="z 3.1 on volume x4")],
        "stability_check_task": [decision("stability_check_task", decision="STABLE", confidence=0.7, veto=False)],
        "context_analysis_task": [decision("context_analysis_task", decision="ISOLATED", confidence=0.6,
                                           veto=False)],
        "risk_evaluation_task": [decision("risk_evaluation_task", decision="APPROVE", confidence=0.6, veto=False,
                                          quantity=2.0, stop_loss=90.0, take_profit=110.0)],
        "execution_task": [decision("execution_task", decision="PROPOSE", action="propose", symbol="SOLUSDT",
                                    side="BUY", entry_type="market", entry_price=None, quantity=2.0, stop_loss=90.0,
                                    take_profit=110.0, confidence=0.6, rationale="fade the flush")],
    }
    replies.update(override)
    return replies


async def run_one(tmp_path, script: Script, **crew: Any) -> tuple[Any, float, Any, OpenAIStub]:
    """One spike through a desk on the scripted model: (decision, seconds, desk, stub)."""
    from core.agents.desk import AgentDesk

    with OpenAIStub(script) as stub:
        settings = make_settings(llm_provider="openai", llm_model="gpt-4o-mini", llm_base_url=stub.base_url, **crew)
        session = make_session(settings)
        session.bus.bind_loop(asyncio.get_running_loop())
        desk = AgentDesk(session, settings, None, session.bus, tmp_path / "crewai", secrets=KEY)
        await desk.start()
        try:
            started = time.monotonic()
            answer = await desk.handle_spike(dump_spike(session))
            took = time.monotonic() - started
        finally:
            await desk.close(grace_seconds=1.0)
    return answer, took, desk, stub


async def test_a_well_behaved_model_makes_a_proposal(tmp_path):
    script = Script(well_behaved())
    answer, _, _, stub = await run_one(tmp_path, script)
    assert isinstance(answer, TradeProposal), answer
    assert answer.source == "crew:openai/gpt-4o-mini" and answer.quantity > 0
    assert [t for t in TASKS if script.calls.get(t)] == list(TASKS)
    assert not stub.errors


@pytest.mark.parametrize("task, vetoing, said", [
    ("spike_detection_task", dict(decision="DISCARD", confidence=0.8, reason="no volume behind it"),
     "Market Scanner DISCARD: no volume behind it"),
    ("stability_check_task", dict(decision="UNSTABLE", confidence=0.8, veto=True, reason="BTC is falling"),
     "Market Guardian UNSTABLE: BTC is falling"),
    ("context_analysis_task", dict(decision="MANIPULATION_SUSPECTED", confidence=0.8, veto=True,
                                   reason="thin book, burst volume"),
     "Context Analyzer MANIPULATION_SUSPECTED: thin book, burst volume"),
    ("risk_evaluation_task", dict(decision="REJECT", confidence=0.9, veto=True, reasons=["daily loss limit"]),
     "Risk Assessment REJECT: daily loss limit"),
])
async def test_a_veto_ends_the_run_and_the_executor_cannot_override_it(tmp_path, task, vetoing, said):
    script = Script(well_behaved(**{task: [decision(task, **vetoing)]}))  # the executor would still PROPOSE
    answer, _, desk, _ = await run_one(tmp_path, script)
    assert answer == Skip(said)
    later = TASKS[TASKS.index(task) + 1:]
    assert not any(script.calls.get(t) for t in later), f"agents after the veto were called: {script.calls}"
    run = next(r for r in desk.runs.values() if r.kind == "spike")
    assert run.vetoed == said and "execution_task" not in run.tasks


async def test_an_answer_with_no_valid_decision_ends_the_run(tmp_path):
    script = Script(well_behaved(context_analysis_task=[Reply(content="The market looks fine to me.")]))
    answer, _, _, _ = await run_one(tmp_path, script)
    assert isinstance(answer, Skip) and answer.reason.startswith("Context Analyzer gave no decision")
    assert not script.calls.get("risk_evaluation_task")


async def test_a_prose_refusal_is_a_skip_whatever_its_tool_calls_recorded(tmp_path):
    order = {"symbol": "SOLUSDT", "side": "BUY", "entry_type": "market", "quantity": 2.0, "stop_loss": 90.0,
             "take_profit": 110.0}
    script = Script(well_behaved(execution_task=[Reply(tool_calls=[("binance_spot_order", order)]),
                                                 Reply(content="On reflection I will not trade; skip it.")]))
    answer, _, desk, _ = await run_one(tmp_path, script)
    assert answer == Skip("strategy executor gave no decision: no trade")
    run = next(r for r in desk.runs.values() if r.kind == "spike")
    assert run.candidate is not None  # the tool did record an order: it does not become a proposal
