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


# ---------------------------------------------------------------------------- failing providers
FAST = dict(limits={"call_timeout_seconds": 1.0, "call_max_retries": 0, "max_tokens": 256,
                    "run_deadline_seconds": 6.0, "pause_after_failures": 2, "pause_seconds": 30.0,
                    "pause_max_seconds": 120.0})


def fast(**extra: Any) -> dict[str, Any]:
    from core.settings import CrewLimits

    return {"limits": CrewLimits(**FAST["limits"]), **extra}


async def test_a_hung_provider_times_out_and_the_run_says_so(tmp_path):
    script = Script(well_behaved(spike_detection_task=[Reply(content="never", delay_s=3600)]))
    answer, took, _, stub = await run_one(tmp_path, script, **fast())
    assert isinstance(answer, Skip) and "Timeout" in answer.reason, answer  # the call's own time-out (1 s)
    assert took < 1.0 + 3.0
    assert all(r.get("max_tokens") == 256 for r in stub.requests)  # every call carries its bound


async def test_a_run_past_its_deadline_ends_with_that_reason(tmp_path):
    from core.settings import CrewLimits

    slow = {t: [Reply(content=r[0].content, delay_s=0.8)] for t, r in well_behaved().items()}  # 4 s in all
    limits = CrewLimits(call_timeout_seconds=5.0, call_max_retries=0, run_deadline_seconds=2.0)
    answer, took, _, _ = await run_one(tmp_path, Script(slow), limits=limits)
    assert answer == Skip("run deadline: no decision within 2s")
    assert took < 2.0 + 1.5


async def test_a_slow_stream_within_the_time_out_still_answers(tmp_path):
    slow = {t: [Reply(content=r[0].content, chunk_delay_s=0.01)] for t, r in well_behaved().items()}
    answer, took, _, _ = await run_one(tmp_path, Script(slow), **fast())
    assert isinstance(answer, TradeProposal), answer
    assert took < 6.0


@pytest.mark.parametrize("status", [429, 500])
async def test_a_failing_provider_pauses_the_crew_and_the_rules_proposer_answers(tmp_path, status):
    from core.agents.desk import AgentDesk

    script = Script({}, default=Reply(status=status, retry_after=0.1))
    with OpenAIStub(script) as stub:
        settings = make_settings(llm_provider="openai", llm_model="gpt-4o-mini", llm_base_url=stub.base_url, **fast())
        session = make_session(settings)
        session.bus.bind_loop(asyncio.get_running_loop())
        desk = AgentDesk(session, settings, None, session.bus, tmp_path / "crewai", secrets=KEY, dedupe_seconds=0)
        await desk.start()
        try:
            spike = dump_spike(session)
            started = time.monotonic()
            first = [await desk.handle_spike(spike) for _ in range(2)]
            took = time.monotonic() - started
            requests_when_paused = len(stub.requests)
            third = await desk.handle_spike(spike)  # paused: no request reaches the provider
        finally:
            await desk.close(grace_seconds=1.0)
    assert all(isinstance(d, Skip) for d in first), first
    assert took < 2 * 6.0
    assert desk.health.paused_for() > 0 and "paused" in desk.status_label()
    assert desk.status_label().startswith("crew (")  # the status bar says a crew answers, and on which model
    assert len(stub.requests) == requests_when_paused
    assert isinstance(third, TradeProposal) and third.source == "rules"  # the rules proposer's answer
    assert requests_when_paused <= 2 * 3  # bounded: no retry storm (one request per agent at most, no retries)


async def test_runaway_tokens_stop_at_max_tokens_and_the_budget_before_the_call(tmp_path):
    runaway = Reply(content="blah " * 200_000)  # the provider cuts it at max_tokens, as a real one does
    script = Script(well_behaved(spike_detection_task=[runaway]))
    answer, _, desk, stub = await run_one(tmp_path, script, token_budget_per_proposal=3_000, **fast())
    assert isinstance(answer, Skip), answer
    run = next(r for r in desk.runs.values() if r.kind == "spike")
    assert run.tokens <= 3_000  # never past the budget: the call that could pass it was not made
    assert "token budget" in answer.reason or "gave no decision" in answer.reason, answer


async def test_a_call_that_could_pass_the_runs_budget_is_not_made(tmp_path):
    script = Script(well_behaved())
    answer, _, desk, stub = await run_one(tmp_path, script, token_budget_per_proposal=500, **fast())
    assert isinstance(answer, Skip) and answer.reason.startswith("token budget: the next call"), answer
    assert stub.requests == []  # refused before the first request went out


async def test_a_session_budget_spent_stops_the_next_call(tmp_path):
    from core.settings import CrewBudget

    script = Script(well_behaved())
    answer, _, _, stub = await run_one(tmp_path, script, budget=CrewBudget(session_tokens=100), **fast())
    assert isinstance(answer, Skip) and "session token budget" in answer.reason, answer
    assert stub.requests == []


async def test_a_remote_model_without_a_price_is_refused_at_start(tmp_path):
    from core.agents.desk import AgentDesk
    from core.agents.limits import PriceUnknown

    settings = make_settings(llm_provider="openai", llm_model="gpt-99-unpriced", llm_base_url="http://127.0.0.1:9/v1")
    session = make_session(settings)
    desk = AgentDesk(session, settings, None, session.bus, tmp_path / "crewai", secrets=KEY)
    with pytest.raises(PriceUnknown, match="no price for model openai/gpt-99-unpriced: set crew.budget"):
        await desk.start()
    await desk.close()


async def test_an_agents_own_model_is_the_one_it_calls(tmp_path):
    """agents.risk_assessment.llm names its own model: only that agent's requests reach it,
    while the crew's model (rules, offline) answers the others."""
    from core.agents.desk import AgentDesk

    script = Script(well_behaved())
    with OpenAIStub(script) as stub:
        settings = make_settings(llm_base_url=stub.base_url)  # the crew: rules
        agents = settings.agents.model_copy(update={"risk_assessment": settings.agents.risk_assessment.model_copy(
            update={"llm": "openai/gpt-4o-mini"})})
        settings = settings.model_copy(update={"agents": agents})
        session = make_session(settings)
        session.bus.bind_loop(asyncio.get_running_loop())
        desk = AgentDesk(session, settings, None, session.bus, tmp_path / "crewai", secrets=KEY)
        await desk.start()
        try:
            await desk.handle_spike(dump_spike(session))
        finally:
            await desk.close(grace_seconds=1.0)
    assert set(script.calls) == {"risk_evaluation_task"}, script.calls
    assert desk.price == (0.15, 0.60)  # the dearest model the crew uses prices its calls


async def test_on_a_live_feed_a_decision_older_than_the_ttl_is_skipped(tmp_path):
    """A live feed never waits for the crew: its inputs carry their age, and a run deciding on
    data older than the proposal TTL is skipped with that reason."""
    from core.agents.desk import AgentDesk
    from core.session import Session
    from tests.helpers import ListFeed

    class LiveFeed(ListFeed):
        realtime = True

    script = Script(well_behaved())
    with OpenAIStub(script) as stub:
        settings = make_settings(llm_provider="openai", llm_model="gpt-4o-mini", llm_base_url=stub.base_url)
        session = Session(settings, LiveFeed())  # event time is wall time: the 2023 spike is old now
        session.desk_enabled = False
        session.bus.bind_loop(asyncio.get_running_loop())
        desk = AgentDesk(session, settings, None, session.bus, tmp_path / "crewai", secrets=KEY)
        await desk.start()
        try:
            answer = await desk.handle_spike(dump_spike(session))
        finally:
            await desk.close(grace_seconds=1.0)
        prompt = next(r for r in stub.requests if "[task: spike_detection_task]" in str(r))
    assert isinstance(answer, Skip) and answer.reason.startswith("stale: the spike's market data is "), answer
    assert "past the proposal TTL (120s)" in answer.reason
    assert "data_age_seconds" in str(prompt)  # the model was told how old its inputs are


async def test_a_run_a_veto_ends_at_once_is_still_journaled_against_its_spike(tmp_path):
    """A veto answers in milliseconds, before the spike's own journal row may have committed:
    the run's decision rows still carry that row's id."""
    import sqlite3

    from core.agents.desk import AgentDesk
    from core.journal import Journal

    script = Script(well_behaved(spike_detection_task=[decision("spike_detection_task", decision="DISCARD",
                                                                 reason="noise")]))
    with OpenAIStub(script) as stub:
        settings = make_settings(llm_provider="openai", llm_model="gpt-4o-mini", llm_base_url=stub.base_url)
        session = make_session(settings)
        session.bus.bind_loop(asyncio.get_running_loop())
        session.attach_journal(await Journal.open(tmp_path / "journal.db"), tmp_path / "journal.db")
        desk = AgentDesk(session, settings, None, session.bus, tmp_path / "crewai", secrets=KEY)
        await desk.start()
        try:
            import concurrent.futures

            spike = dump_spike(session)
            committed = session.journal.enqueue_spike(spike, status="detected")
            row: concurrent.futures.Future = concurrent.futures.Future()  # a row that commits late
            await desk.handle_spike(spike, row)
            await asyncio.sleep(0.2)
            row.set_result(await asyncio.wrap_future(committed))
            await desk.settle()
        finally:
            await desk.close(grace_seconds=1.0)
            await session.journal.close()
    with sqlite3.connect(tmp_path / "journal.db") as con:
        ids = {r[0] for r in con.execute("SELECT spike_event_id FROM agent_decisions")}
    assert ids == {row.result()}
