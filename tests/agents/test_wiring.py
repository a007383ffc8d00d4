"""The crew behind a real Session: the session schedules the crew's awaitable decision and
applies it when done; a replay holds the feed while a crew runs."""

from __future__ import annotations

import asyncio

from core.desk.proposal import ProposalStatus
from core.events import SpikeStatus
from core.session import Session
from tests.agents.conftest import make_settings
from tests.helpers import ListFeed, interleave, path


def sol_dump(then: float) -> list:
    """Calm BTC; SOL flushes 4% in half a minute at minute 20, is back at `then` half a minute
    later (inside the same 512-event batch) and trades there to minute 25."""
    return interleave(path("BTCUSDT", [(0, 100_000.0), (25, 100_000.0)], step_ms=5000),
                      path("SOLUSDT", [(0, 100.0), (20, 100.0), (20.5, 96.0), (21, then), (25, then)],
                           step_ms=5000))


async def test_a_replay_holds_the_feed_while_the_crew_runs(tmp_path):
    feed = ListFeed(sol_dump(then=99.5))
    assert feed.batch_size == 512  # the default: the spike and the recovery are in the same batch
    session = Session(make_settings(), feed)
    session.bus.bind_loop(asyncio.get_running_loop())
    statuses = session.bus.subscribe()
    await session.start_agent_desk(tmp_path / "crewai")  # not live: it holds by default
    try:
        await session.run()
        await session.settle()
    finally:
        await session.close()
    [proposal] = session.approvals.proposals.values()
    assert proposal.source == "crew:rules"
    # the rebound to 99.5 moved the price past the approval drift limit: it expired by itself, saying so
    assert session.approvals.status[proposal.proposal_id] is ProposalStatus.EXPIRED
    assert "(limit 1%): the price moved since the proposal" in session.approvals.notes[proposal.proposal_id]
    # the crew read the market at its spike, not at the end of the replay
    assert proposal.reference_price < 97.0 and session.engine.market.symbols["SOLUSDT"].last_price == 99.5
    seen = []
    while not statuses.empty():
        ev = statuses.get_nowait()
        if isinstance(ev, SpikeStatus):
            seen.append(ev.status)
    assert seen[:3] == ["detected", "analysing", "proposed"]  # (the rebound is a pump of its own, skipped)


async def test_auto_approve_in_paper_mode(tmp_path):
    settings = make_settings()
    settings = settings.model_copy(update={"execution": settings.execution.model_copy(
        update={"auto_approve_paper": True})})
    session = Session(settings, ListFeed(sol_dump(then=96.0)))
    await session.start_agent_desk(tmp_path / "crewai", hold_feed=True)
    try:
        await session.run()
        await session.settle()
    finally:
        await session.close()
    [proposal] = session.approvals.proposals.values()
    assert session.approvals.status[proposal.proposal_id] is ProposalStatus.EXECUTED
    assert session.approvals.notes[proposal.proposal_id].startswith("entry")
