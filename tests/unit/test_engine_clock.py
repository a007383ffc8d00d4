"""A live feed that goes silent sends no ticks for the rules to look at: the engine's wall
clock checks the references' age on its own (a dead websocket must not look SAFE)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from core.engine import Engine
from core.events import BreakerStatus, Tick
from core.market.feed import Feed
from tests.helpers import SEC, T0


class SilentLiveFeed(Feed):
    """Real time: two ticks per reference, then nothing, forever (until stopped)."""

    name = "live-test"
    realtime = True

    def __init__(self) -> None:
        super().__init__()
        self.silent = asyncio.Event()

    async def batches(self) -> AsyncIterator[list]:
        yield [Tick(s, p, 1.0, T0 + i * SEC) for i in range(2) for s, p in (("BTCUSDT", 100.0), ("ETHUSDT", 50.0))]
        self.silent.set()
        while not self._stopped:
            await asyncio.sleep(0.01)


async def test_a_silent_live_feed_raises_the_stale_warning_from_the_wall_clock(settings):
    now = {"ms": T0 + 2 * SEC}
    engine = Engine(settings, SilentLiveFeed(), wall_ms=lambda: now["ms"])
    engine.clock_interval_s = 0.005
    warned = asyncio.Event()
    loop = asyncio.get_running_loop()
    engine.breaker.subscribe(lambda change: loop.call_soon_threadsafe(warned.set))
    runner = asyncio.create_task(engine.run())
    await engine.feed.silent.wait()
    now["ms"] = T0 + 40 * SEC  # 40 s of silence: past the 30 s stale rule
    try:
        await asyncio.wait_for(warned.wait(), 30)
    finally:
        engine.stop()
        await runner
    change = engine.breaker.history[-1]
    assert change.status is BreakerStatus.WARNING and change.trigger_type == "stale_data"
