"""Live market data from Binance: python-binance's websockets in, the engine's events out.

Two combined streams: spot (aggTrade, bookTicker and partial depth of every symbol) and,
with `futures`, USD-M futures (markPrice@1s and forceOrder). Trades become Ticks, mark
prices MarkPrices, forced orders Liquidations (core/market/binance_messages.py); bookTicker
and depth keep a best bid/ask and a small book per symbol, for the exchange and the desk.

The feed, not the library, reconnects: every socket has python-binance's own reconnects
turned off (their waits are fixed and they cannot say what was lost). A connection ends
when the server closes it or the network drops it (RECONNECTING), when nothing arrives for
`watchdog_seconds` (STALE: the library alone leaves a silent socket "STREAMING" forever),
or when the library's queue overflows and its read loop dies (OVERFLOW, ReadLoopClosed).
The socket is then closed and recreated after a backoff with jitter.

Each spot connection opens a gap in every symbol, start-up included: its live ticks are
held back while REST klines for the missed minutes are fetched; the candles' ticks (the
replay's four-ticks-per-candle path) strictly after the last tick the engine got and before
the first held one are sent first, then the held ticks. The depth books are re-read from
REST. A fill has `request_timeout_seconds` in all: live prices are never held longer for the
sake of old ones. Each of these steps is a FeedHealth event in the batches, and a count in
`stats`. Bad frames and bad REST answers are counted, the first of each kind logged; none
stops the feed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from binance.exceptions import ReadLoopClosed
from binance.ws.constants import WSListenerState

from core.binance.client import open_client, socket_manager
from core.events import FeedHealth, FeedState, Liquidation, MarkPrice, Tick, iso_utc
from core.market.binance_messages import (
    BadFrame,
    Candle,
    Depth,
    ProblemTally,
    Quote,
    StreamError,
    futures_streams,
    parse_depth_snapshot,
    parse_frame,
    parse_message,
    spot_streams,
)
from core.market.feed import Feed, FeedStats
from core.market.history import HistoryError, KlinePager, backoff_seconds
from core.market.replay import candle_ticks
from core.market.symbols import check_symbol
from core.redact import one_line
from core.settings import BinanceEndpoints, BinanceSettings

log = logging.getLogger("spikeguard.binance.feed")

REFERENCES = ("BTCUSDT", "ETHUSDT")
MINUTE_MS = 60_000
REST_CONCURRENCY = 4  # klines and depth requests in flight at once after a reconnect
FILL_ATTEMPTS = 3
# in-band errors python-binance reports when its connection is gone
_DISCONNECTS = frozenset({"ConnectionClosedError", "ConnectionClosedOK", "BinanceWebsocketClosed",
                          "IncompleteReadError", "gaierror", "BinanceWebsocketUnableToConnect", "CancelledError"})
_OVERFLOW = "BinanceWebsocketQueueOverflow"


@dataclass
class BinanceFeedStats(FeedStats):
    reconnects: int = 0  # connections lost or refused, whatever the cause, each followed by another
    stalls: int = 0  # of them, silent for the watchdog's time
    overflows: int = 0  # of them, the library's queue overflowing
    gaps_filled: int = 0  # symbols whose missed minutes came back from REST
    gaps_unfilled: int = 0
    backfilled_ticks: int = 0
    late_ticks: int = 0  # live ticks older than the last one sent, dropped
    error_frames: Counter[str] = field(default_factory=Counter)  # in-band errors by type
    bad_frames: Counter[str] = field(default_factory=Counter)  # bad frames and REST answers by kind


class _Ended(NamedTuple):
    """Why a connection ended."""

    state: FeedState
    detail: str
    heard: bool = False  # it delivered something: the backoff starts again from its minimum


class _Watch:
    """An open socket under the watchdog: silent for `seconds`, it ends as STALE.

    Ending a socket closes its connection, which wakes its reader with python-binance's own
    error frame. The reader is never cancelled: the library's recv() waits in asyncio.wait_for,
    which in Python 3.11 swallows a cancellation that meets an arriving frame."""

    def __init__(self, socket: Any, seconds: float) -> None:
        self.socket = socket
        self.seconds = seconds
        self.loop = asyncio.get_running_loop()
        self.heard_at = self.loop.time()
        self.heard = False
        self.why: _Ended | None = None
        self._closing: asyncio.Task | None = None
        self._timer = self.loop.call_later(seconds, self._check)

    def hear(self) -> None:
        """A frame arrived (the hot path: two stores; the timer re-arms itself when it fires)."""
        self.heard_at = self.loop.time()
        self.heard = True

    def _check(self) -> None:
        silent = self.loop.time() - self.heard_at
        if silent < self.seconds:
            self._timer = self.loop.call_later(self.seconds - silent, self._check)
        else:
            self.end(FeedState.STALE, f"no message for {self.seconds:g} s: reopening")

    def end(self, state: FeedState, detail: str) -> None:
        if self.why is None:
            self.why = _Ended(state, detail, self.heard)
            self._timer.cancel()
            self._closing = self.loop.create_task(_close_connection(self.socket))

    async def finish(self) -> None:
        self._timer.cancel()
        if self._closing is not None:
            await self._closing


@dataclass(eq=False)
class _Line:
    """One symbol's ticks on their way to the engine."""

    symbol: str
    last_ms: int | None = None  # the last tick the engine got
    held: list[Tick] | None = None  # live ticks waiting for the gap fill, while one is pending
    fill: asyncio.Task | None = None
    missed: bool = False  # ticks were dropped while paused: a gap to fill on resume


class BinanceFeed(Feed):
    name = "binance"
    realtime = True

    def __init__(self, settings: BinanceSettings, endpoints: BinanceEndpoints, symbols: Sequence[str] | None = None,
                 *, references: Sequence[str] = REFERENCES, api_key: str | None = None,
                 api_secret: str | None = None, queue_size: int = 1000) -> None:
        """`symbols` default to the settings'; the breaker's `references` are always streamed.
        The keys are accepted like every Binance part's, and never sent: market data is public.
        Raises ValueError for a name that is not a symbol."""
        super().__init__()
        self.settings = settings
        self.endpoints = endpoints
        wanted = settings.symbols if symbols is None else symbols
        self.symbols = tuple(dict.fromkeys(check_symbol(s) for s in [*references, *wanted]))
        self.cadence_ms = 1000
        self.queue_size = queue_size  # python-binance's max_queue_size, for the sockets opened from now on
        self.stats = BinanceFeedStats()
        self._lines = {s: _Line(s) for s in self.symbols}
        self._quotes: dict[str, Quote] = {}
        self._books: dict[str, Depth] = {}
        self._out: list[Any] = []
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._client: Any = None
        self._streams: dict[str, asyncio.Task] = {}  # market -> its stream's task
        self._open: dict[str, _Watch] = {}  # market -> its socket, while it is being read
        self._pager: KlinePager | None = None
        self._rest = asyncio.Semaphore(REST_CONCURRENCY)
        self._tally = ProblemTally("binance", log, self._first_problem)

    # ------------------------------------------------------------------ what others read
    def quotes(self, symbol: str) -> Quote | None:
        """The symbol's best bid and ask (bookTicker), None until one came or while reconnecting."""
        return self._quotes.get(symbol)

    def book(self, symbol: str) -> Depth | None:
        """The top `depth_levels` levels of the symbol's book, None until known or while reconnecting."""
        return self._books.get(symbol)

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        super().stop()
        self._ready.set()

    def resume(self) -> None:
        """Paused, the feed drops market events (the streams stay open); resuming fills the
        gap from REST klines like a reconnect."""
        super().resume()
        missed = [line for line in self._lines.values() if line.missed]
        if missed and self._client is not None:
            self._open_gaps(missed)

    async def batches(self) -> AsyncIterator[list[Any]]:
        """Market events and FeedHealth, as they arrive, until stop(). Call once."""
        self._spawn(self._run())
        try:
            while not self._stopped:
                if not self._out:
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                batch, self._out = self._out, []
                yield batch
        finally:
            await self._shutdown()

    # ------------------------------------------------------------------ lifecycle
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("binance feed task failed", exc_info=task.exception())

    async def _run(self) -> None:
        s = self.settings
        failures = 0
        while self._client is None:
            try:
                self._client = await open_client(s, self.endpoints)
            except Exception as exc:  # the network, or an exchange that answers nonsense: try again
                failures += 1
                self._health("spot", FeedState.RECONNECTING, f"cannot reach {self.endpoints.api_url}: "
                                                             f"{one_line(str(exc), 200)}")
                await asyncio.sleep(backoff_seconds(failures, s.reconnect_min_seconds, s.reconnect_max_seconds))
        self._pager = KlinePager(self._client, self._tally, attempts=FILL_ATTEMPTS, low=s.reconnect_min_seconds,
                                 high=s.reconnect_max_seconds)
        await self._keep_listed()
        self._streams["spot"] = self._spawn(self._stream("spot", spot_streams(self.symbols, s.depth_levels)))
        if s.futures:
            self._streams["futures"] = self._spawn(self._stream("futures", futures_streams(self.symbols)))

    async def _keep_listed(self) -> None:
        """Stream only what trades there: a symbol that is not listed would be silent forever."""
        try:
            info = await self._client.get_exchange_info()
            listed = {s["symbol"] for s in info["symbols"] if s.get("status") == "TRADING"}
        except Exception as exc:
            self._bad("exchange_info", f"cannot read the listed symbols ({one_line(str(exc), 200)}): "
                                       f"streaming every symbol asked for")
            return
        unlisted = [s for s in self.symbols if s not in listed]
        if unlisted:
            self._bad("unlisted_symbol", f"{', '.join(unlisted)} not trading on {self.endpoints.api_url}: not streamed")
            self.symbols = tuple(s for s in self.symbols if s in listed)
            self._lines = {s: self._lines[s] for s in self.symbols}

    async def _shutdown(self) -> None:
        self.stop()  # also when the consumer went away without stopping: no stream may reconnect now
        # a reader is woken by closing its connection, never cancelled (see _Watch)
        for watch in list(self._open.values()):
            watch.end(FeedState.RECONNECTING, "stopped")
        reading = {self._streams[market] for market in self._open}
        for task in self._tasks - reading:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close_connection()
            self._client = None

    # ------------------------------------------------------------------ one stream
    async def _stream(self, market: str, names: list[str]) -> None:
        s = self.settings
        failures = 0
        while not self._stopped:
            socket = self._socket(market, names)
            try:
                ended = await self._connect_and_read(socket, market)
            except Exception as exc:  # a bug of ours must not end the stream for good
                log.exception("binance %s stream", market)
                ended = _Ended(FeedState.RECONNECTING, f"unexpected {type(exc).__name__}: {one_line(str(exc), 200)}",
                               False)
            finally:
                await _close(socket)
            if self._stopped:
                return
            self._ended(market, ended)
            failures = 1 if ended.heard else failures + 1
            await asyncio.sleep(backoff_seconds(failures, s.reconnect_min_seconds, s.reconnect_max_seconds))

    def _socket(self, market: str, names: list[str]) -> Any:
        manager = socket_manager(self._client, self.endpoints, self.queue_size)
        socket = manager.multiplex_socket(names) if market == "spot" else manager.futures_multiplex_socket(names)
        socket.MAX_RECONNECTS = 0  # the feed reconnects: with its backoff, then the gap fill
        # the library's read loop decodes each frame with this: with ours, a frame arrives as its
        # event (no dict between), and one that is not JSON is a bad frame, not the loop's end
        socket.json_loads = parse_frame
        return socket

    async def _connect_and_read(self, socket: Any, market: str) -> _Ended:
        try:
            await socket.connect()
        except Exception as exc:  # refused, reset, a bad handshake...
            return _Ended(FeedState.RECONNECTING, f"cannot connect: {one_line(str(exc) or type(exc).__name__, 200)}",
                          False)
        watch = self._open[market] = _Watch(socket, self.settings.watchdog_seconds)
        try:
            self._health(market, FeedState.CONNECTED, f"{len(self._lines)} symbols")
            if market == "spot":
                self._open_gaps(self._lines.values())
                for symbol in self._lines:
                    self._spawn(self._resync_book(symbol))
            ended = await self._read(watch, market)
            return ended._replace(heard=watch.heard)
        finally:
            del self._open[market]
            await watch.finish()

    async def _read(self, watch: _Watch, market: str) -> _Ended:
        socket = watch.socket
        last_error: StreamError | None = None
        try:
            while watch.why is None:
                parsed = await socket.recv()
                watch.hear()
                kind = type(parsed)
                if kind is dict:  # the library's own in-band errors are still dicts
                    parsed = parse_message(parsed)
                    kind = type(parsed)
                if kind is Tick:
                    self._live(parsed)
                elif kind is Quote:
                    self._quotes[parsed.symbol] = parsed
                elif kind is Depth:
                    self._depth(parsed)
                elif kind is MarkPrice or kind is Liquidation:
                    self._market_event(parsed)
                elif kind is StreamError:
                    if watch.why is not None:  # the close the watchdog or stop() asked for
                        break
                    if parsed.type != "server":  # the library's own: its read loop may have ended
                        last_error = parsed
                    if parsed.type in _DISCONNECTS:
                        return _Ended(FeedState.RECONNECTING, f"connection lost: {parsed.type}: {parsed.message}")
                    if parsed.type == _OVERFLOW:
                        return _Ended(FeedState.OVERFLOW, f"python-binance's queue overflowed: {parsed.message}")
                    self._error_frame(parsed)
                else:
                    self._bad(parsed.kind, f"{market}: {parsed.detail}")
        except ReadLoopClosed:
            if watch.why is not None:
                return watch.why
            if last_error is not None:
                return _Ended(FeedState.RECONNECTING, f"python-binance's read loop ended after {last_error.type}")
            if socket.ws is None or socket.ws_state is WSListenerState.RECONNECTING:
                return _Ended(FeedState.RECONNECTING, "connection lost")
            # the connection is up and nothing failed: the loop died of its full queue
            return _Ended(FeedState.OVERFLOW, "python-binance's queue overflowed (ReadLoopClosed)")
        return watch.why

    def _ended(self, market: str, ended: _Ended) -> None:
        st = self.stats
        st.reconnects += 1
        if ended.state is FeedState.STALE:
            st.stalls += 1
        elif ended.state is FeedState.OVERFLOW:
            st.overflows += 1
        if market == "spot":  # quotes and books are stale from now until the next connection re-reads them
            self._quotes.clear()
            self._books.clear()
        self._health(market, ended.state, ended.detail)

    def _error_frame(self, error: StreamError) -> None:
        self.stats.error_frames[error.type] += 1
        self._tally.add(f"error_frame_{error.type}", error.message)

    # ------------------------------------------------------------------ events out
    def _emit(self, event: Any) -> None:
        self._out.append(event)
        self._ready.set()

    def _health(self, stream: str, state: FeedState, detail: str) -> None:
        st = self.stats
        log.info("binance %s: %s: %s", stream, state.value, detail)
        self._emit(FeedHealth(stream, state, detail, time.time_ns() // 1_000_000, st.reconnects, st.overflows))

    def _send(self, line: _Line, tick: Tick) -> None:
        if line.last_ms is not None and tick.time_ms < line.last_ms:
            self.stats.late_ticks += 1
            self._tally.add("late_tick", f"{tick.symbol} at {iso_utc(tick.time_ms)}, after {iso_utc(line.last_ms)}")
            return
        line.last_ms = tick.time_ms
        self.stats.events += 1
        self.stats.last_event_ms = tick.time_ms
        self._emit(tick)

    def _live(self, tick: Tick) -> None:
        line = self._lines.get(tick.symbol)
        if line is None:
            self._bad("unsubscribed_symbol", f"a trade of {tick.symbol}")
        elif self.paused:
            line.missed = True
        elif line.held is not None:
            line.held.append(tick)
        else:
            self._send(line, tick)

    def _market_event(self, event: MarkPrice | Liquidation) -> None:
        if not self.paused:
            self.stats.events += 1
            self.stats.last_event_ms = event.time_ms
            self._emit(event)

    def _depth(self, depth: Depth) -> None:
        current = self._books.get(depth.symbol)
        if current is None or depth.last_update_id >= current.last_update_id:
            self._books[depth.symbol] = depth

    def _bad(self, kind: str, detail: str) -> None:
        self.stats.bad_rows += 1
        self.stats.bad_frames[kind] += 1
        self._tally.add(kind, detail)

    def _first_problem(self, problem: Any) -> None:
        if len(self.stats.problems) < self.stats.max_problems_kept:
            self.stats.problems.append(problem)

    # ------------------------------------------------------------------ gaps
    def _open_gaps(self, lines: Iterable[_Line]) -> None:
        """Hold back the lines' live ticks until REST has filled what they missed. A newer gap
        replaces a pending one: its fill covers the older gap and the ticks held since."""
        cutoff = self._spawn(self._server_ms())
        for line in lines:
            if line.fill is not None:
                line.fill.cancel()
            line.held = []
            line.missed = False
            line.fill = self._spawn(self._fill(line, cutoff))

    async def _server_ms(self) -> int:
        """Binance's clock now (re-read at every gap: python-binance reads its offset once)."""
        try:
            async with self._rest:
                return int((await self._client.get_server_time())["serverTime"])
        except Exception as exc:
            self._bad("server_time", f"cannot read the server's time ({one_line(str(exc), 200)}): using ours")
            return time.time_ns() // 1_000_000 + int(getattr(self._client, "timestamp_offset", 0) or 0)

    async def _fill(self, line: _Line, cutoff: asyncio.Task) -> None:
        until = await asyncio.shield(cutoff)
        since = until - self.settings.backfill_minutes * MINUTE_MS
        if line.last_ms is not None:
            since = max(since, line.last_ms)
        candles: list[Candle] = []
        if since < until:  # something was missed, and backfill is wanted
            try:
                candles = await self._candles(line.symbol, since - since % MINUTE_MS, until + 1)
            except (TimeoutError, HistoryError) as exc:
                self._unfilled(line, f"since {iso_utc(since)}: {one_line(str(exc) or 'no answer in time', 200)}")
            else:
                if not candles:
                    self._unfilled(line, f"no klines since {iso_utc(since)}")
        self._release(line, candles, until)

    async def _candles(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        async with self._rest, asyncio.timeout(self.settings.request_timeout_seconds):
            return [c async for page in self._pager.pages(symbol, "1m", start_ms, end_ms) for c in page]

    def _unfilled(self, line: _Line, why: str) -> None:
        self.stats.gaps_unfilled += 1
        self._bad("gap_unfilled", f"{line.symbol} {why}: its live ticks go on")

    def _release(self, line: _Line, candles: list[Candle], until: int) -> None:
        """Send the filled ticks, then the live ones held meanwhile."""
        held, line.held, line.fill = line.held or [], None, None
        if self.paused:  # no market events now; the resume fills this gap too
            line.missed = True
            return
        if candles:
            after = line.last_ms if line.last_ms is not None else -1
            before = held[0].time_ms if held else until + 1
            ticks = [t for c in candles for t in candle_ticks(line.symbol, "spot", c.open_ms, MINUTE_MS, c.open,
                                                              c.high, c.low, c.close, c.volume)
                     if after < t.time_ms < before]
            for tick in ticks:
                self._send(line, tick)
            self.stats.gaps_filled += 1
            self.stats.backfilled_ticks += len(ticks)
            self._health(line.symbol, FeedState.GAP_FILLED,
                         f"{len(candles)} candles, {len(ticks)} ticks, {iso_utc(candles[0].open_ms)} to "
                         f"{iso_utc(ticks[-1].time_ms if ticks else candles[-1].open_ms)}")
        for tick in held:
            self._send(line, tick)

    async def _resync_book(self, symbol: str) -> None:
        try:
            async with self._rest:
                answer = await self._client.get_order_book(symbol=symbol, limit=self.settings.depth_levels)
        except Exception as exc:
            self._bad("depth_resync", f"{symbol}: {one_line(str(exc), 200)}")
            return
        depth = parse_depth_snapshot(symbol, answer)
        if type(depth) is BadFrame:
            self._bad(depth.kind, depth.detail)
        else:
            self._depth(depth)


async def _close_connection(socket: Any) -> None:
    """Close a python-binance socket's connection: its read loop wakes at once (it may sit in
    the connection's recv() for the library's whole TIMEOUT on a silent one), reports the
    close on its queue and, EXITING, ends instead of reconnecting."""
    socket.ws_state = WSListenerState.EXITING
    try:
        if socket.ws is not None:
            await socket.ws.close()
    except Exception as exc:  # closing what the network already broke
        log.debug("closing a binance connection: %s", one_line(str(exc), 200))


async def _close(socket: Any) -> None:
    """Close a python-binance socket promptly: the connection first, then the socket, whose
    close() waits for the read loop to end."""
    await _close_connection(socket)
    try:
        await socket.close()
    except Exception as exc:
        log.debug("closing a binance socket: %s", one_line(str(exc), 200))


__all__ = ["REFERENCES", "BinanceFeed", "BinanceFeedStats"]
