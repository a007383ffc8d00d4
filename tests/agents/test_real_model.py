"""The real-model path: CrewAI's OpenAI provider against a local OpenAI-compatible stub.

The stub answers like a model would (tool calls, then a streamed final answer) from a script
written here, not from the product's analyst, so the whole crew runs through HTTP, native
tool calls and Server-Sent Events and checks something independent of the offline model.
"""

from __future__ import annotations

import asyncio
import json

from pydantic import SecretStr

from core.agents.llm import make_llm
from core.desk.proposal import ProposalStatus, TradeProposal
from core.settings import Secrets
from tests.agents.conftest import Lines, dump_spike, make_session, make_settings
from tests.agents.test_scripted_model import well_behaved
from tests.fakes.openai_stub import OpenAIStub, Reply, Script, decision, tool_messages, user_text


def scripted_with_tools() -> Script:
    """The well-behaved script, with Risk Assessment and the executor calling a tool first."""
    answers = well_behaved()
    answers["risk_evaluation_task"] = [Reply(tool_calls=[("position_sizing_optimizer", {"symbol": "SOLUSDT"})]),
                                       *answers["risk_evaluation_task"]]
    answers["execution_task"] = [Reply(tool_calls=[("check_circuit_breaker_status", {})]),
                                 decision("execution_task", decision="PROPOSE", action="propose", symbol="SOLUSDT",
                                          side="BUY", entry_type="market", entry_price=None, quantity=2.0,
                                          stop_loss=90.0, take_profit=110.0, confidence=0.6,
                                          rationale="Entry: market, fade the flush")]
    return Script(answers)


def test_make_llm_builds_crewais_openai_model_for_the_stub():
    settings = make_settings(llm_provider="openai", llm_model="gpt-4o-mini", llm_base_url="http://127.0.0.1:1/v1")
    llm = make_llm(settings, Secrets(openai_api_key=SecretStr("test")))
    assert type(llm).__name__ == "OpenAICompletion"
    assert llm.model == "gpt-4o-mini" and llm.base_url == "http://127.0.0.1:1/v1" and llm.stream is True
    assert llm.api_key == "test"
    rules = make_llm(make_settings())
    assert type(rules).__name__ == "RulesLLM" and rules.model == "rules" and rules.supports_function_calling()


async def test_a_streamed_answer_from_a_real_model_becomes_a_proposal(tmp_path, clock):
    from core.agents.desk import AgentDesk

    with OpenAIStub(scripted_with_tools()) as stub:
        settings = make_settings(llm_provider="openai", llm_model="gpt-4o-mini", llm_base_url=stub.base_url)
        session = make_session(settings, clock)
        session.bus.bind_loop(asyncio.get_running_loop())
        lines = Lines(session)
        desk = AgentDesk(session, settings, None, session.bus, tmp_path / "crewai",
                         secrets=Secrets(openai_api_key=SecretStr("test")))
        await desk.start()
        try:
            decision = await desk.handle_spike(dump_spike(session))
        finally:
            await desk.close()
    assert not stub.errors
    assert isinstance(decision, TradeProposal), decision
    assert decision.source == "crew:openai/gpt-4o-mini" and decision.intact()
    # every request streamed, authenticated with the configured key, offered the agent's tools
    assert stub.requests and all(r.get("stream") is True for r in stub.requests)
    assert {h.get("Authorization") for h in stub.headers} == {"Bearer test"}
    # the tool results went back to the model as role "tool" messages
    carried = [m for r in stub.requests for m in tool_messages(r)]
    assert carried and any('"tool":"position_sizing_optimizer"' in m["content"] for m in carried)
    executor = [r for r in stub.requests if "[task: execution_task]" in user_text(r)]
    assert tool_messages(executor[-1]), "the executor's final request carried its tool results"
    assert "DECISION:" in user_text(executor[-1]), "earlier agents' answers reach the executor as context"
    # the streamed final answer (SSE chunks) is what became the proposal
    run = next(r for r in desk.runs.values() if r.kind == "spike")
    final = run.tasks["execution_task"].output
    d = json.loads(final.split("DECISION:")[-1])
    assert d["action"] == "propose" and d["quantity"] == decision.quantity and d["stop_loss"] == decision.stop_loss
    thoughts = [ln for ln in lines.for_run(run.run_id) if ln.kind == "thought" and ln.role == "Strategy Executor"]
    assert any("Reasoning from the scripted model" in ln.text for ln in thoughts), \
        "the streamed answer reached the reasoning pane"
    assert run.reported_tokens > 0
    session.approvals.add(decision)
    assert session.approvals.status[decision.proposal_id] is ProposalStatus.PENDING


def test_other_providers_build_offline_or_explain_what_is_missing():
    ollama = make_llm(make_settings(llm_provider="ollama", llm_model="llama3.1",
                                    llm_base_url="http://127.0.0.1:11434"))
    assert ollama.model == "llama3.1" and ollama.base_url.startswith("http://127.0.0.1:11434") and ollama.stream
    compatible = make_llm(make_settings(llm_provider="openai_compatible", llm_model="qwen2.5",
                                        llm_base_url="http://127.0.0.1:8000/v1"))
    assert type(compatible).__name__ == "OpenAICompletion" and compatible.base_url == "http://127.0.0.1:8000/v1"
    claude = make_llm(make_settings(llm_provider="anthropic", llm_model="claude-3-5-haiku-latest"),
                      env={"ANTHROPIC_API_KEY": "k"})  # crewai[anthropic] is pinned in the lock
    assert type(claude).__name__ == "AnthropicCompletion" and claude.model == "claude-3-5-haiku-latest"
    assert claude.stream
