"""Decision replay: a journaled crew run re-run on its journaled tool results.

The same model on the same results decides the same; a changed result, or another model,
shows where the decision differs; the replay never reads the market (nothing is there)."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from core.agents.decision_replay import JournalAnswers, ReplayError, load_run, replay
from core.desk.proposal import TradeProposal
from tests.agents.conftest import dump_spike, make_session


@pytest.fixture
async def journaled(tmp_path, clock):
    """A journal holding one finished spike run (a proposal) with `llm: rules`."""
    from core.agents.desk import AgentDesk

    session = make_session(clock=clock)
    db = tmp_path / "journal.db"
    await session.open_journal(db)
    session.bus.bind_loop(asyncio.get_running_loop())
    desk = AgentDesk(session, session.settings, None, session.bus, tmp_path / "crewai")
    await desk.start()
    try:
        decision = await desk.handle_spike(dump_spike(session))
        assert isinstance(decision, TradeProposal)
        await desk.close()
        await session.journal.flush()
    finally:
        await desk.close()
        await session.close()
    conn = sqlite3.connect(db)
    ids = dict(conn.execute("SELECT agent_name, id FROM agent_decisions"))
    conn.close()
    return session.settings, db, ids


def _edit_result(db, agent, tool, change):
    """Rewrite one journaled tool result in place (what a different market would have answered)."""
    conn = sqlite3.connect(db)
    row_id, text = conn.execute("SELECT id, input_data FROM agent_decisions WHERE agent_name = ?", (agent,)).fetchone()
    data = json.loads(text)
    for call in data["tool_calls"]:
        if call["tool"] == tool:
            call["result"].update(change)
    conn.execute("UPDATE agent_decisions SET input_data = ? WHERE id = ?", (json.dumps(data), row_id))
    conn.commit()
    conn.close()


async def test_the_same_model_on_the_journaled_results_decides_the_same(journaled, tmp_path):
    settings, db, ids = journaled
    run = load_run(db, ids["risk_assessment"])  # any row of the run finds the whole run
    assert [t.agent for t in run.tasks] == ["market_scanner", "market_guardian", "context_analyzer",
                                            "risk_assessment", "strategy_executor"]
    assert run.model == "rules" and run.spike["symbol"] == "SOLUSDT"
    assert all(c["result"] is not None for t in run.tasks for c in t.tool_calls)
    result = await replay(run, settings, "rules", tmp_path / "crewai")
    assert result.same, [(r.agent, r.journaled, r.replayed) for r in result.rows]
    assert [r.replayed for r in result.rows] == [t.decision for t in run.tasks]
    assert result.rows[-1].replayed == "PROPOSE"
    # every call was answered from the journal, with the same arguments
    assert result.answered == sum(len(t.tool_calls) for t in run.tasks) and not result.missing
    assert result.mismatched == 0


async def test_a_different_journaled_result_shows_where_the_decision_changes(journaled, tmp_path):
    settings, db, ids = journaled
    _edit_result(db, "market_scanner", "check_circuit_breaker_status", {"breaker_status": "TRIGGERED"})
    result = await replay(load_run(db, ids["market_scanner"]), settings, "rules", tmp_path / "crewai")
    assert not result.same
    scanner = result.rows[0]
    assert (scanner.agent, scanner.journaled, scanner.replayed) == ("market_scanner", "CONFIRM", "DISCARD")
    # the scanner's veto binds in the replay too: the later agents are not called
    assert {r.replayed for r in result.rows[1:]} == {"NOT RUN"}


async def test_another_model_can_be_replayed_and_is_compared(journaled, tmp_path):
    from crewai import BaseLLM

    class Discards(BaseLLM):
        """A model that discards every spike without calling a tool (scripted here, not the product's analyst)."""

        def call(self, messages, tools=None, callbacks=None, available_functions=None, from_task=None,
                 from_agent=None, response_model=None):
            task = getattr(from_task, "name", "task")
            return ('Scripted.\nDECISION: {"task": "%s", "decision": "DISCARD", "confidence": 0.9, '
                    '"reason": "scripted discard"}' % task)

        def supports_function_calling(self):
            return True

    settings, db, ids = journaled
    result = await replay(load_run(db, ids["strategy_executor"]), settings, Discards(model="scripted/discards"),
                          tmp_path / "crewai")
    assert result.model == "scripted/discards" and not result.same
    assert result.rows[0].replayed == "DISCARD" and result.answered == 0


def test_answers_are_handed_out_in_journal_order_by_role_tool_and_arguments():
    from core.agents.decision_replay import JournaledRun, JournaledTask

    calls = [{"tool": "binance_websocket", "args": {"symbol": "A"}, "result": {"n": 1}},
             {"tool": "binance_websocket", "args": {"symbol": "B"}, "result": {"n": 2}}]
    run = JournaledRun(1, "run1", "spike", "rules", {}, None, [JournaledTask("t", "a", "role", "X", calls)])
    answers = JournalAnswers(run)
    assert answers.answer("role", "binance_websocket", {"symbol": "B"}) == {"n": 2}  # the arguments pick it
    assert answers.answer("other role", "binance_websocket", {"symbol": "A"})["status"] == "unavailable"
    assert answers.answer("role", "binance_websocket", {"symbol": "Z"}) == {"n": 1}  # the next unused one
    assert answers.mismatched == 1 and answers.missing == 1
    assert answers.answer("role", "binance_websocket", {"symbol": "A"})["status"] == "unavailable"  # used up


async def test_bad_decision_ids_and_files_are_one_line(journaled, tmp_path):
    settings, db, ids = journaled
    with pytest.raises(ReplayError, match="no agent decision 9999"):
        load_run(db, 9999)
    with pytest.raises(ReplayError, match="no journal here"):
        load_run(tmp_path / "missing.db", 1)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ReplayError, match="not a spikeguard journal"):
        load_run(other, 1)
    # a row that is not part of a crew run
    conn = sqlite3.connect(db)
    outcome_free = conn.execute("SELECT MAX(id) FROM agent_decisions").fetchone()[0]
    conn.execute("UPDATE agent_decisions SET input_data = '{}' WHERE id = ?", (outcome_free,))
    conn.commit()
    conn.close()
    with pytest.raises(ReplayError, match="not part of a crew run"):
        load_run(db, outcome_free)


async def test_a_guardian_run_replays_too(tmp_path, clock):
    from core.agents.desk import AgentDesk

    session = make_session(clock=clock)
    db = tmp_path / "journal.db"
    await session.open_journal(db)
    session.bus.bind_loop(asyncio.get_running_loop())
    dump_spike(session)  # some market for the guardian to read
    desk = AgentDesk(session, session.settings, None, session.bus, tmp_path / "crewai")
    await desk.start()
    try:
        done = await desk.run_guardian()
        await desk.close()
        await session.journal.flush()
    finally:
        await desk.close()
        await session.close()
    conn = sqlite3.connect(db)
    [(row_id,)] = conn.execute("SELECT id FROM agent_decisions WHERE decision_type = 'market_monitored'").fetchall()
    conn.close()
    run = load_run(db, row_id)
    assert run.kind == "guardian" and run.spike is None and [t.task for t in run.tasks] == ["market_monitoring_task"]
    result = await replay(run, session.settings, "rules", tmp_path / "crewai")
    assert result.same and result.rows[0].replayed == done["decision"] and result.answered > 0
