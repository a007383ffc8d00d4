"""The default sim scenarios with the crew (`llm: rules`) (issue 10): proposals where the evidence supports
them. A pump-and-dump's isolated, volume-backed, still-held start is bought; its top is not (the old crew
bought it at 0.98); a flash crash's market-wide dumps are skipped for BUY entries."""

from __future__ import annotations

from core.agents.crew import decision_fields
from core.config import load_config
from core.market.feed import MAX_SPEED
from core.market.sim import SCENARIO_LENGTH_S
from core.wiring import FeedChoice, build_feed, build_session


async def _crew_over(scenario, tmp_path):
    settings = load_config(env={}, dotenv_paths=[]).settings
    feed = build_feed(settings, FeedChoice(kind="sim", scenario=scenario, seed=7, speed=MAX_SPEED,
                                           duration_s=SCENARIO_LENGTH_S[scenario])).feed
    session = build_session(settings, feed, None)
    session.desk_enabled = True
    desk = await session.start_agent_desk(tmp_path / "crewai", hold_feed=True)
    try:
        await session.run()
        await session.settle()
    finally:
        await session.close()
    runs = []
    for run in desk.runs.values():
        if run.kind == "spike":
            runs.append((run.spike, {t: decision_fields(run.tasks[t].output) for t in run.task_order}))
    return runs, list(desk.proposals)


async def test_pump_and_dump_buys_the_start_not_the_top(tmp_path):
    runs, proposals = await _crew_over("pump-and-dump", tmp_path)
    pumps = [p for p in proposals if p.spike_direction == "pump"]
    assert pumps, "the isolated, volume-backed start of the pump gets a momentum BUY"
    for p in proposals:
        assert p.dissent_score is not None and p.agreed and p.bull_case and p.bear_case
        assert p.confidence < 0.9, p
    by_time = {s.time_ms: s for s, _ in runs}
    for p in pumps:
        assert by_time[p.spike_time_ms].magnitude_pct < 10.0, "a momentum BUY only early in the pump"
    [(top, tasks)] = [(s, t) for s, t in runs if s.direction == "pump" and s.magnitude_pct > 25.0]
    decision, _, data = tasks["execution_task"]
    assert decision == "SKIP" and "momentum stalled" in data["reason"], data


async def test_a_flash_crash_is_market_wide_and_not_bought(tmp_path):
    runs, proposals = await _crew_over("flash-crash", tmp_path)
    assert proposals == []
    dumps = [t for s, t in runs if s.direction == "dump" and s.spike_type.value == "spot_price_spike"
             and "context_analysis_task" in t]
    assert len(dumps) >= 5 and all(t["context_analysis_task"][0] == "MARKET_WIDE" for t in dumps)
