"""The Binance feed against the local fake Binance (tests/fakes/binance): start-up backfill,
live frames, reconnects with the gap filled, the watchdog, queue overflows, bad frames,
stop, and the real engine tripping on a crash scripted on the server.

Tests wait on what the feed yields (a Recorder wakes them batch by batch), never on sleeps.
The watchdog and backoff settings are short so that a reconnect takes milliseconds; none of
them bounds how long a test may take.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from binance.ws.reconnecting_websocket import ReconnectingWebsocket

from core.engine import Engine
from core.events import BreakerStatus, FeedHealth, FeedState, Liquidation, MarkPrice, Tick
from core.market import binance_feed
from core.market.binance_feed import BinanceFeed
from core.market.history import backoff_seconds
from core.settings import BinanceSettings

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
MIN = 60_000


class Recorder:
    """Consumes a feed's batches in a task and wakes the test after each one."""

    def __init__(self, feed: BinanceFeed) -> None:
        self.feed = feed
        self.events: list = []
        self._batch = asyncio.Event()
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        async for batch in self.feed.batches():
            self.events.extend(batch)
            self._batch.set()

    async def until(self, predicate: Callable[[], object]) -> None:
        while not predicate():
            self._batch.clear()
            waiter = asyncio.ensure_future(self._batch.wait())
            await asyncio.wait([waiter, self.task], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if self.task.done():
                self.task.result()  # the feed's failure, if that is why
                raise AssertionError("the feed ended")

    def health(self, stream: str | None = None) -> list[FeedHealth]:
        return [e for e in self.events if type(e) is FeedHealth and (stream is None or e.stream == stream)]

    def states(self, stream: str) -> list[FeedState]:
        return [h.state for h in self.health(stream)]

    def ticks(self, symbol: str) -> list[Tick]:
        return [e for e in self.events if type(e) is Tick and e.symbol == symbol]

    def filled(self, *symbols: str, times: int = 1) -> Callable[[], bool]:
        return lambda: all(self.states(s).count(FeedState.GAP_FILLED) >= times for s in symbols)

    def count(self, stream: str, state: FeedState) -> Callable[[], int]:
        return lambda: self.states(stream).count(state)


class Writes:
    """The frames the fake server wrote, to wait on (the server's signal, not a sleep)."""

    def __init__(self, market) -> None:
        self.seen: list[tuple[str, object]] = []
        self._changed = asyncio.Event()
        market.write_listeners.append(self._on_write)

    def _on_write(self, stream: str, payload: object, ns: int) -> None:
        self.seen.append((stream, payload))
        self._changed.set()

    async def until(self, predicate: Callable[[list], object]) -> None:
        while not predicate(self.seen):
            self._changed.clear()
            await self._changed.wait()


def binance_settings(**overrides) -> BinanceSettings:
    base = dict(symbols=SYMBOLS, reconnect_min_seconds=0.01, reconnect_max_seconds=0.05, watchdog_seconds=60,
                request_timeout_seconds=30)
    return BinanceSettings(**{**base, **overrides})


@contextlib.asynccontextmanager
async def streaming(server, feed: BinanceFeed | None = None, **overrides) -> AsyncIterator[Recorder]:
    """A feed on the fake server, consumed by a Recorder; stopped (its client closed) after."""
    feed = feed or BinanceFeed(binance_settings(**overrides), server.endpoints())
    recorder = Recorder(feed)
    try:
        yield recorder
    finally:
        feed.stop()
        await asyncio.gather(recorder.task, return_exceptions=True)


def live_tick(recorder: Recorder, symbol: str, price: float) -> Callable[[], bool]:
    return lambda: any(t.price == price for t in recorder.ticks(symbol))


def strictly_increasing(ticks: list[Tick]) -> bool:
    return all(a.time_ms < b.time_ms for a, b in zip(ticks, ticks[1:]))


# ---------------------------------------------------------------------------- start-up
async def test_startup_backfills_60_minutes_of_every_symbol_before_its_live_ticks(fake_binance):
    async with streaming(fake_binance) as rec:
        await rec.until(rec.filled(*SYMBOLS))
        backfilled = {s: rec.ticks(s) for s in SYMBOLS}
        fake_binance.set_price("BTCUSDT", 100_500.0)
        await rec.until(live_tick(rec, "BTCUSDT", 100_500.0))
    assert rec.states("spot")[:1] == [FeedState.CONNECTED]
    assert rec.states("futures")[:1] == [FeedState.CONNECTED]
    for symbol, ticks in backfilled.items():
        assert strictly_increasing(ticks), symbol
        minutes = sorted({t.time_ms // MIN for t in ticks})
        assert minutes == list(range(minutes[0], minutes[-1] + 1)), f"{symbol}: a minute is missing"
        assert len(minutes) >= 60 and ticks[-1].time_ms - ticks[0].time_ms >= 59 * MIN
        assert all(t.market == "spot" and t.price == 100_000.0 or symbol != "BTCUSDT" for t in ticks)
    btc = rec.ticks("BTCUSDT")
    assert btc[-1].price == 100_500.0 and btc[-1].time_ms > backfilled["BTCUSDT"][-1].time_ms
    queries = [q for q in fake_binance.market.kline_queries if q["symbol"] == "BTCUSDT"]
    assert len(queries) == 1 and queries[0]["interval"] == "1m"
    assert rec.feed.stats.gaps_filled == 3 and rec.feed.stats.bad_rows == 0


async def test_the_references_are_always_streamed_and_unlisted_symbols_are_dropped(fake_binance, caplog):
    feed = BinanceFeed(binance_settings(), fake_binance.endpoints(), symbols=["SOLUSDT", "NOPEUSDT"])
    assert feed.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT", "NOPEUSDT")
    with caplog.at_level(logging.WARNING, logger="spikeguard.binance.feed"):
        async with streaming(fake_binance, feed) as rec:
            await rec.until(rec.filled("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    assert feed.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert "NOPEUSDT" not in {q["symbol"] for q in fake_binance.market.kline_queries}
    assert feed.stats.bad_frames["unlisted_symbol"] == 1
    assert any("NOPEUSDT not trading" in p.error for p in feed.stats.problems)
    assert sum("NOPEUSDT" in r.getMessage() for r in caplog.records) == 1


def test_a_name_that_is_no_symbol_is_refused(fake_binance):
    with pytest.raises(ValueError, match="not a Binance symbol"):
        BinanceFeed(binance_settings(), fake_binance.endpoints(), symbols=["btc-usdt"])


# ---------------------------------------------------------------------------- live frames
async def test_live_frames_become_ticks_mark_prices_liquidations_quotes_and_books(fake_binance):
    async with streaming(fake_binance) as rec:
        await rec.until(rec.filled(*SYMBOLS))
        fake_binance.set_price("ETHUSDT", 3_010.5, qty=2.5)
        fake_binance.market.push_mark_price("BTCUSDT", 100_020.0)
        fake_binance.market.push_liquidation("BTCUSDT", "SELL", 99_000.0, 0.75)
        await rec.until(lambda: any(type(e) is Liquidation for e in rec.events)
                        and live_tick(rec, "ETHUSDT", 3_010.5)() and rec.feed.book("ETHUSDT") is not None
                        and rec.feed.book("ETHUSDT").bids[0][0] == 3_010.49)
        feed = rec.feed
        tick = rec.ticks("ETHUSDT")[-1]
        assert tick[:2] == ("ETHUSDT", 3_010.5) and tick.qty == 2.5 and tick.market == "spot"
        marks = [e for e in rec.events if type(e) is MarkPrice]
        assert [(m.symbol, m.mark_price) for m in marks] == [("BTCUSDT", 100_020.0)]
        liquidations = [e for e in rec.events if type(e) is Liquidation]
        assert [(e.symbol, e.side, e.price, e.qty) for e in liquidations] == [("BTCUSDT", "SELL", 99_000.0, 0.75)]
        quote = feed.quotes("ETHUSDT")
        assert (quote.bid, quote.ask) == (3_010.49, 3_010.51)
        book = feed.book("ETHUSDT")
        assert len(book.bids) == len(book.asks) == 5 and book.asks[0][0] == 3_010.51
        assert feed.book("BTCUSDT").bids[0][0] == 99_999.99  # the REST snapshot at connect


# ---------------------------------------------------------------------------- reconnects
async def test_a_disconnect_reconnects_and_fills_the_gap_without_duplicate_or_missing_minute(fake_binance):
    server, market = fake_binance, fake_binance.market
    async with streaming(server) as rec:
        await rec.until(rec.filled(*SYMBOLS))
        server.set_price("BTCUSDT", 100_100.0)
        await rec.until(live_tick(rec, "BTCUSDT", 100_100.0))
        last_seen = rec.ticks("BTCUSDT")[-1]
        depth_before = len(market.depth_queries)
        server.faults.add("stream_disconnect:spot")
        server.set_price("BTCUSDT", 100_200.0)  # the frame that never arrives: the server hangs up instead
        # five minutes pass on the server while the feed is away, one trade in each
        missed = [99_000.0, 98_000.0, 97_500.0, 98_500.0, 99_500.0]
        for price in missed:
            server.clock_offset_ms += MIN
            server.set_price("BTCUSDT", price)
        await rec.until(rec.filled(*SYMBOLS, times=2))
        server.set_price("BTCUSDT", 99_600.0)
        await rec.until(live_tick(rec, "BTCUSDT", 99_600.0))
    assert rec.states("spot") == [FeedState.CONNECTED, FeedState.RECONNECTING, FeedState.CONNECTED]
    assert rec.states("futures") == [FeedState.CONNECTED]
    lost = rec.health("spot")[1]
    assert "ConnectionClosed" in lost.detail and lost.reconnects == 1 and rec.feed.stats.reconnects == 1
    btc = rec.ticks("BTCUSDT")
    assert strictly_increasing(btc)  # time order kept, no tick twice
    after = btc[btc.index(last_seen) + 1:]
    gap, live = after[:-1], after[-1]
    assert live.price == 99_600.0 and all(t.time_ms > last_seen.time_ms for t in after)
    minutes = sorted({t.time_ms // MIN for t in [last_seen, *gap]})
    assert minutes == list(range(minutes[0], minutes[-1] + 1))  # no missing minute
    assert minutes[-1] - minutes[0] >= 5
    assert set(missed) <= {t.price for t in gap}  # the missed trades are in the candles' ticks
    # the gap's ticks came before the live tick, with the symbol's GAP_FILLED between
    events = rec.events
    refilled = [i for i, e in enumerate(events) if type(e) is FeedHealth and e.stream == "BTCUSDT"][-1]
    assert events.index(gap[-1]) < refilled < events.index(live)
    assert {q["symbol"] for q in market.depth_queries[depth_before:]} == set(SYMBOLS)  # books re-read
    assert rec.feed.stats.late_ticks == 0 and rec.feed.stats.bad_rows == 0


def test_the_reconnect_backoff_grows_from_the_minimum_to_the_maximum_with_jitter():
    top = [backoff_seconds(n, 0.5, 30.0, rand=lambda: 1.0) for n in range(1, 10)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert all(backoff_seconds(n, 0.5, 30.0, rand=lambda: 0.0) == 0.5 for n in range(1, 10))
    waits = {backoff_seconds(6, 0.5, 30.0) for _ in range(100)}
    assert len(waits) > 50 and all(0.5 <= w <= 16.0 for w in waits)


async def test_refused_connections_back_off_more_each_time_and_start_over_once_one_works(fake_binance, monkeypatch):
    asked: list[tuple[int, float, float]] = []

    def recorded(failures: int, low: float, high: float) -> float:
        asked.append((failures, low, high))
        return low

    monkeypatch.setattr(binance_feed, "backoff_seconds", recorded)
    fake_binance.faults.add("stream_refuse:spot", times=2)
    async with streaming(fake_binance, futures=False, reconnect_min_seconds=0.01, reconnect_max_seconds=0.04) as rec:
        await rec.until(rec.filled(*SYMBOLS))
        fake_binance.faults.add("stream_disconnect:spot")
        fake_binance.set_price("BTCUSDT", 100_100.0)
        await rec.until(rec.filled(*SYMBOLS, times=2))
    assert rec.states("spot") == [FeedState.RECONNECTING, FeedState.RECONNECTING, FeedState.CONNECTED,
                                  FeedState.RECONNECTING, FeedState.CONNECTED]
    assert "cannot connect" in rec.health("spot")[0].detail
    assert asked == [(1, 0.01, 0.04), (2, 0.01, 0.04), (1, 0.01, 0.04)]


async def test_live_ticks_that_arrive_during_a_slow_fill_wait_behind_it(fake_binance):
    server = fake_binance
    async with streaming(server) as rec:
        await rec.until(rec.filled(*SYMBOLS))
        before = rec.ticks("BTCUSDT")[-1]
        release = asyncio.Event()
        server.faults.add("klines_slow:BTCUSDT", release)
        server.faults.add("stream_disconnect:spot")
        server.set_price("ETHUSDT", 3_000.0)  # the frame the disconnect replaces
        server.clock_offset_ms += 2 * MIN
        await rec.until(lambda: rec.count("spot", FeedState.CONNECTED)() == 2 and rec.filled("ETHUSDT", times=2)())
        server.set_price("BTCUSDT", 101_000.0)
        server.set_price("ETHUSDT", 3_001.0)  # behind BTC's trade on the same connection
        await rec.until(live_tick(rec, "ETHUSDT", 3_001.0))
        assert not live_tick(rec, "BTCUSDT", 101_000.0)()  # the feed has it, and holds it behind the fill
        release.set()
        await rec.until(live_tick(rec, "BTCUSDT", 101_000.0))
    btc = rec.ticks("BTCUSDT")
    gap, live = btc[btc.index(before) + 1:-1], btc[-1]
    assert gap and strictly_increasing(btc) and live.price == 101_000.0
    minutes = sorted({t.time_ms // MIN for t in [before, *gap]})
    assert minutes == list(range(minutes[0], minutes[-1] + 1)) and minutes[-1] - minutes[0] >= 2
    filled_at = [i for i, e in enumerate(rec.events) if type(e) is FeedHealth and e.stream == "BTCUSDT"][-1]
    assert rec.events.index(gap[-1]) < filled_at < rec.events.index(live)
    assert rec.feed.stats.late_ticks == 0


async def test_a_failed_kline_request_is_retried(fake_binance):
    fake_binance.faults.add("klines_error:SOLUSDT", 503)
    async with streaming(fake_binance) as rec:
        await rec.until(rec.filled(*SYMBOLS))
    assert [q["symbol"] for q in fake_binance.market.kline_queries].count("SOLUSDT") == 2
    assert rec.feed.stats.gaps_unfilled == 0


async def test_a_gap_that_cannot_be_filled_lets_live_ticks_through(fake_binance, caplog):
    fake_binance.faults.add("klines_error:SOLUSDT", 500, times=3)  # every attempt of the fill
    with caplog.at_level(logging.WARNING, logger="spikeguard.binance.feed"):
        async with streaming(fake_binance) as rec:
            await rec.until(rec.filled("BTCUSDT", "ETHUSDT"))
            fake_binance.set_price("SOLUSDT", 151.0)  # held until the fill gives up, then sent
            await rec.until(live_tick(rec, "SOLUSDT", 151.0))
    assert rec.ticks("SOLUSDT")[0].price == 151.0  # nothing backfilled, the live tick goes on
    assert FeedState.GAP_FILLED not in rec.states("SOLUSDT")
    assert rec.feed.stats.bad_frames["gap_unfilled"] == rec.feed.stats.gaps_unfilled == 1
    assert sum("gap_unfilled" in r.getMessage() for r in caplog.records) == 1


async def test_a_silent_stream_is_caught_by_the_watchdog_and_reopened(fake_binance):
    server = fake_binance
    server.market.heartbeat_s = 0.02  # depth and mark prices flow as Binance's do: silence is a fault
    async with streaming(server, watchdog_seconds=0.5) as rec:
        await rec.until(rec.filled(*SYMBOLS))
        server.faults.add("stream_stall:spot")
        server.set_price("BTCUSDT", 100_300.0)  # never sent: the connection stays open and goes quiet
        await rec.until(rec.filled(*SYMBOLS, times=2))
        server.set_price("BTCUSDT", 100_400.0)
        await rec.until(live_tick(rec, "BTCUSDT", 100_400.0))
        assert server.market.subscribers("spot") == 1  # the silent one was closed
    spot = rec.health("spot")
    assert [h.state for h in spot] == [FeedState.CONNECTED, FeedState.STALE, FeedState.CONNECTED]
    assert "no message for 0.5 s" in spot[1].detail and spot[1].reconnects == 1
    assert rec.feed.stats.stalls == 1 and rec.feed.stats.overflows == 0
    assert strictly_increasing(rec.ticks("BTCUSDT"))


async def test_a_queue_overflow_recreates_the_socket_and_is_counted(fake_binance):
    server = fake_binance
    # python-binance's read loop dies when its queue holds max_queue_size frames: at 0, with the
    # first frame, as it does when a consumer falls behind (no race to win for the test)
    feed = BinanceFeed(binance_settings(futures=False), server.endpoints(), queue_size=0)
    async with streaming(server, feed) as rec:
        await rec.until(rec.filled(*SYMBOLS))
        server.set_price("BTCUSDT", 100_700.0)
        await rec.until(lambda: FeedState.OVERFLOW in rec.states("spot"))
        feed.queue_size = 1000  # the next socket has room; no frame is sent before it connects
        await rec.until(rec.filled(*SYMBOLS, times=2))
        server.set_price("BTCUSDT", 100_800.0)
        await rec.until(live_tick(rec, "BTCUSDT", 100_800.0))
    spot = rec.health("spot")
    assert [h.state for h in spot] == [FeedState.CONNECTED, FeedState.OVERFLOW, FeedState.CONNECTED]
    assert spot[1].overflows == 1 and feed.stats.overflows == 1 and feed.stats.reconnects == 1
    assert strictly_increasing(rec.ticks("BTCUSDT"))


# ---------------------------------------------------------------------------- bad frames
async def test_malformed_and_error_frames_are_counted_logged_once_and_never_stop_the_feed(fake_binance, caplog):
    """Not even a frame that is not JSON: python-binance's read loop used to die of one (and the
    feed to reconnect and refill the gap); the feed's decoder makes it a bad frame like the rest."""
    server = fake_binance
    bad_trade = '{"stream": "btcusdt@aggTrade", "data": {"s": "BTCUSDT", "p": "abc"}}'
    with caplog.at_level(logging.WARNING, logger="spikeguard.binance.feed"):
        async with streaming(server) as rec:
            await rec.until(rec.filled(*SYMBOLS))
            for _ in range(2):
                server.faults.add("stream_malformed:spot", bad_trade)
                server.faults.add("stream_error:spot", "rate limited")
                server.faults.add("stream_malformed:spot", "{not json")
            for price in (100_010.0, 100_020.0):
                server.set_price("BTCUSDT", price)
            await rec.until(live_tick(rec, "BTCUSDT", 100_020.0))
    stats = rec.feed.stats
    assert stats.bad_frames["bad_trade"] == 2 and stats.bad_frames["not_json"] == 2
    assert stats.error_frames == {"server": 2}
    assert rec.states("spot") == [FeedState.CONNECTED] and stats.reconnects == 0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("bad_trade" in m for m in messages) == 1
    assert sum("not_json" in m for m in messages) == 1
    assert sum("rate limited" in m for m in messages) == 1
    assert all(r.exc_info is None for r in caplog.records)
    kinds = [p.error.split(":")[0] for p in stats.problems]
    assert kinds.count("bad_trade") == 1 and kinds.count("not_json") == 1


# ---------------------------------------------------------------------------- pause and stop
async def test_a_pause_drops_market_events_and_the_resume_fills_the_gap(fake_binance):
    server, market = fake_binance, fake_binance.market
    writes = Writes(market)
    async with streaming(server) as rec:
        await rec.until(rec.filled(*SYMBOLS))
        rec.feed.pause()
        paused_at = len(rec.events)
        server.set_price("BTCUSDT", 100_900.0)
        market.push_mark_price("BTCUSDT", 100_900.0)
        await writes.until(lambda seen: {"btcusdt@aggTrade", "btcusdt@markPrice@1s"} <= {s for s, _ in seen})
        # each stream then drops: once the feed says so, it has read (and dropped) what came before
        server.faults.add("stream_disconnect:spot")
        server.faults.add("stream_disconnect:futures")
        server.set_price("ETHUSDT", 3_001.0)
        market.push_mark_price("ETHUSDT", 3_001.0)
        await rec.until(lambda: rec.count("spot", FeedState.CONNECTED)() == rec.count(
            "futures", FeedState.CONNECTED)() == 2)
        server.clock_offset_ms += 2 * MIN
        resumed_at = len(rec.events)
        rec.feed.resume()
        await rec.until(rec.filled(*SYMBOLS, times=2))
        server.set_price("BTCUSDT", 101_000.0)
        await rec.until(live_tick(rec, "BTCUSDT", 101_000.0))
    assert all(type(e) is FeedHealth for e in rec.events[paused_at:resumed_at])
    assert not any(type(e) is MarkPrice for e in rec.events)
    btc = rec.ticks("BTCUSDT")
    assert strictly_increasing(btc) and 100_900.0 in {t.price for t in btc}  # back from its candle


async def test_stop_is_prompt_even_on_silent_streams(fake_binance, monkeypatch):
    # python-binance's read loop waits up to TIMEOUT for a frame before it looks at its state: at an
    # hour, a stop that waited for it on these silent streams would outlast the test's time limit
    monkeypatch.setattr(ReconnectingWebsocket, "TIMEOUT", 3600)
    feed = BinanceFeed(binance_settings(watchdog_seconds=600), fake_binance.endpoints())
    rec = Recorder(feed)
    try:
        await rec.until(rec.filled(*SYMBOLS))
        assert fake_binance.market.subscribers("spot") == fake_binance.market.subscribers("futures") == 1
        client = feed._client
    finally:
        feed.stop()
        await rec.task
    assert client.session.closed
    assert fake_binance.market.subscribers("spot") == fake_binance.market.subscribers("futures") == 0
    assert not feed._tasks


# ---------------------------------------------------------------------------- the engine
async def until_set(event: asyncio.Event, task: asyncio.Task) -> None:
    waiter = asyncio.ensure_future(event.wait())
    await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not event.is_set():
        task.result()
        raise AssertionError("the engine ended")


async def test_the_engine_over_the_feed_trips_the_breaker_on_a_crash_scripted_on_the_server(fake_binance, settings):
    server = fake_binance
    feed = BinanceFeed(binance_settings(), server.endpoints())
    engine = Engine(settings, feed)
    backfilled, tripped = asyncio.Event(), asyncio.Event()

    def on_change(change) -> None:
        if change.status is BreakerStatus.TRIGGERED:
            tripped.set()

    def after_batch() -> None:
        if feed.stats.gaps_filled == len(SYMBOLS):
            backfilled.set()

    engine.breaker.subscribe(on_change)
    run = asyncio.create_task(engine.run(on_batch=after_batch))
    try:
        await until_set(backfilled, run)
        assert engine.breaker.status is BreakerStatus.SAFE
        for step in range(1, 17):  # BTC walks down 16% on the server, a trade a percent
            server.set_price("BTCUSDT", 100_000.0 * (1 - step / 100))
        await until_set(tripped, run)
    finally:
        engine.stop()
        await asyncio.gather(run, return_exceptions=True)
    change = [c for c in engine.breaker.history if c.status is BreakerStatus.TRIGGERED][0]
    assert change.trigger_type == "btc_dump_4h" and change.symbol == "BTCUSDT"
    assert engine.market.symbols["BTCUSDT"].span_ms() >= 59 * MIN  # the 60-minute window was full at once
    assert engine.rejected_ticks == 0
