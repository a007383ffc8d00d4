"""Point-in-time analysis on real data: over a real replay at the default batch size, each
crew reads the market as of its spike's tick. A proposal's entry (its limit, or the market
price it read) lies within the price collar of the spike tick's price; before the engine
stopped at the tick, a 512-event batch put the crew up to two hours of market later."""

from __future__ import annotations

import asyncio

from core.market.replay import ReplayFeed
from core.session import Session
from tests.agents.conftest import make_settings


async def test_every_proposal_on_the_doge_pump_is_priced_at_its_spike(market_data, tmp_path):
    settings = make_settings()
    feed = ReplayFeed([str(market_data / "DOGEUSDT-1m-2021-04-16-pump.csv")])
    assert feed.batch_size == 512
    session = Session(settings, feed)
    session.bus.bind_loop(asyncio.get_running_loop())
    await session.start_agent_desk(tmp_path / "crewai")
    try:
        await session.run()
        await session.settle()
    finally:
        await session.close()
    spikes = {s.time_ms: s for s in session.engine.spikes}
    proposals = list(session.approvals.proposals.values())
    assert proposals, "the pump gave the crew nothing to propose"
    collar = settings.risk_management.price_collar_percent
    for p in proposals:
        spike = spikes[p.spike_time_ms]
        entry = p.entry_price if p.entry_price is not None else p.reference_price
        off = abs(entry / spike.price_to - 1) * 100
        assert off <= collar, (f"{p.proposal_id}: entry {entry} is {off:.2f}% from the spike tick's "
                               f"{spike.price_to} at {p.spike_time_ms}")
        assert p.reference_price == spike.price_to  # the market the crew read is the spike's


async def test_the_guardian_crew_reads_the_market_of_the_transition_it_explains(tmp_path):
    from core.events import BreakerStatus
    from tests.helpers import ListFeed, interleave, path

    # BTC falls 11% by minute 70 (WARNING), and is back at 100,000 within the same batch
    ticks = interleave(path("BTCUSDT", [(0, 100_000.0), (60, 100_000.0), (70, 89_000.0), (71, 100_000.0),
                                        (80, 100_000.0)], step_ms=5000),
                       path("ETHUSDT", [(0, 3_000.0), (80, 3_000.0)], step_ms=5000))
    feed = ListFeed(ticks)
    session = Session(make_settings(), feed)
    session.bus.bind_loop(asyncio.get_running_loop())
    desk = await session.start_agent_desk(tmp_path / "crewai")
    read: list[tuple[str, float]] = []
    desk.hooks["task_started"] = lambda run, name: read.append(
        (name, session.engine.market.symbols["BTCUSDT"].last_price)) if run.kind == "guardian" else None
    try:
        await session.run()
        await session.settle()
    finally:
        await session.close()
    warning = next(c for c in session.breaker.history if c.status is BreakerStatus.WARNING)
    assert read, "no guardian run"
    assert read[0][1] == warning.details["price_to"]  # the market at the WARNING, not after the rebound
