"""A pause of a feed that is not live stops the engine at the event that asked for it: a crew
started from a spike's hook reads the market as of that spike's tick, not as of the end of a
512-event batch (two hours of 1m candles). A live feed's pause never stops a batch."""

from __future__ import annotations

import asyncio

from core.engine import Engine
from core.events import Tick
from tests.helpers import SEC, T0, ListFeed

PAUSE_AT = 100


def ramp(n: int) -> list[Tick]:
    return [Tick("SOLUSDT", 100.0 + i, 1.0, T0 + i * SEC) for i in range(n)]


class LiveListFeed(ListFeed):
    realtime = True


def test_a_pause_in_a_tick_hook_stops_the_batch_at_that_tick_and_resume_goes_on(settings):
    feed = ListFeed(ramp(1000))
    assert feed.batch_size >= 512  # the default: the whole hold happens inside one batch
    engine = Engine(settings, feed)
    seen_while_held: list[float] = []

    def hook(tick: Tick) -> None:
        if tick.price == 100.0 + PAUSE_AT:
            feed.pause()  # what the desk's hold does from the spike hook

    engine.tick_listeners.append(hook)

    async def main() -> None:
        run = asyncio.create_task(engine.run())
        while engine.held is None:
            await asyncio.sleep(0)
        for _ in range(20):  # the loop turns, the engine stays where it was asked to
            await asyncio.sleep(0)
        seen_while_held.append(engine.market.symbols["SOLUSDT"].last_price)
        feed.resume()
        await run

    asyncio.run(main())
    assert seen_while_held == [100.0 + PAUSE_AT]
    assert engine.ticks == 1000 and engine.market.symbols["SOLUSDT"].last_price == 1099.0  # nothing lost


def test_a_pause_on_the_last_tick_of_a_batch_still_waits(settings):
    feed = ListFeed(ramp(512))
    engine = Engine(settings, feed)
    engine.tick_listeners.append(lambda tick: feed.pause() if tick.price == 611.0 else None)

    async def main() -> list[int]:
        run = asyncio.create_task(engine.run())
        while engine.held is None:
            await asyncio.sleep(0)
        held = [len(engine.held), engine.finished]
        feed.resume()
        await run
        return held

    assert asyncio.run(main()) == [0, False]


def test_a_stopped_feed_drops_what_was_held(settings):
    feed = ListFeed(ramp(1000))
    engine = Engine(settings, feed)
    engine.tick_listeners.append(lambda tick: feed.pause() if tick.price == 200.0 else None)

    async def main() -> None:
        run = asyncio.create_task(engine.run())
        while engine.held is None:
            await asyncio.sleep(0)
        engine.stop()
        await run

    asyncio.run(main())
    assert engine.ticks == 101


def test_a_live_feeds_pause_never_stops_a_batch(settings):
    feed = LiveListFeed()
    engine = Engine(settings, feed)
    engine.tick_listeners.append(lambda tick: feed.pause() if tick.price == 150.0 else None)
    engine.process(ramp(300))
    assert engine.held is None and engine.ticks == 300
