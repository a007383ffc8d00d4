"""The fake Binance's market half: REST market data and the combined streams, with faults.

REST (`server.requests` holds every request: the trading module's middleware records them all):
- GET /api/v3/ping, /api/v3/time (`server.now_ms()`), /api/v3/exchangeInfo (from `server.symbols`);
- GET /api/v3/klines: the rows a test gave with `set_history`, or else candles made from the
  trades the server streamed (`server.set_price`), flat at the symbol's first price before them;
- GET /api/v3/depth: a book of 20 levels a side around the symbol's price.

Streams, where python-binance 1.0.37 connects for combined streams:
- /stream?streams=a/b/c, spot (aggTrade, trade, bookTicker, depthN, depthN@100ms);
- /f/market/stream?streams=..., USD-M futures (markPrice, markPrice@1s, forceOrder): the library
  adds the "market" category to the futures stream address.
Every `server.set_price` sends a trade, a bookTicker and a depth frame to each connection
subscribed to them; `push_mark_price` and `push_liquidation` send futures frames. With
`heartbeat_s` set, a connection with nothing to send gets its depth and mark price frames that
often, as Binance's @100ms and @1s streams do, so a healthy stream is never silent.

Faults (`server.faults`). A fault named `NAME:KEY` applies only to that market ("spot",
"futures") or symbol; plain `NAME` applies to the first that asks:
- stream_refuse: the next connection is answered 503 instead of upgraded;
- stream_disconnect: instead of the next frame, the server closes the connection;
- stream_stall: from the next frame on, the connection sends nothing, yet stays open (pings
  are still answered);
- stream_malformed (arg: the text to send) and stream_error (arg: the message of an in-band
  `{"e": "error"}` frame): sent before the next frame;
- klines_error (arg: an HTTP status), klines_slow (arg: an asyncio.Event the answer waits
  for), klines_malformed (the answer's first row is broken), klines_missing (no candles).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSCloseCode, web

_INTERVAL_MS = {"1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
                "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
                "12h": 43_200_000, "1d": 86_400_000}
BOOK_LEVELS = 20
CLOSE_TIMEOUT_S = 1.0  # how long closing a websocket waits for the client's close frame


def _decimal(x: float) -> str:
    return format(x, ".8f")


@dataclass(eq=False)
class Connection:
    """One client's websocket and the streams it asked for."""

    ws: web.WebSocketResponse
    market: str  # "spot" or "futures"
    streams: set[str]
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    stalled: bool = False

    def wants(self, symbol: str) -> list[str]:
        prefix = symbol.lower() + "@"
        return [s for s in self.streams if s.startswith(prefix)]


class FakeMarket:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.history: dict[str, list[list[Any]]] = {}  # symbol -> kline rows a test set
        self.connections: set[Connection] = set()
        self.heartbeat_s: float | None = None
        # called after each frame is handed to the socket: (stream name, payload, perf_counter_ns)
        self.write_listeners: list[Callable[[str, Any, int], None]] = []
        # the query of every klines and depth request (server.requests has their paths: the trading
        # module's middleware records every REST request)
        self.kline_queries: list[dict[str, str]] = []
        self.depth_queries: list[dict[str, str]] = []
        self._trades: dict[str, tuple[list[int], list[float], list[float]]] = {}  # time, price, qty
        self._first_price = {s: sym.price for s, sym in server.symbols.items()}
        self._update_id = 1_000
        self._trade_id = 0
        self._closing = asyncio.Event()
        server.price_listeners.append(self._on_trade)
        add = server.app.router.add_get
        add("/api/v3/ping", self._ping)
        add("/api/v3/time", self._time)
        add("/api/v3/exchangeInfo", self._exchange_info)
        add("/api/v3/klines", self._klines)
        add("/api/v3/depth", self._depth)
        add("/stream", self._spot_stream)
        add("/f/market/stream", self._futures_stream)
        server.app.on_shutdown.append(self._shutdown)

    # ------------------------------------------------------------------ what tests call
    def set_history(self, symbol: str, start_ms: int, closes: list[float], interval_ms: int = 60_000,
                    volume: float = 10.0) -> list[list[Any]]:
        """Klines opening every `interval_ms` from `start_ms`, each from the previous close to
        its own; served instead of candles made from trades."""
        rows, previous = [], closes[0]
        for i, close in enumerate(closes):
            t = start_ms + i * interval_ms
            high, low = max(previous, close) * 1.0005, min(previous, close) * 0.9995
            rows.append(self._row(t, interval_ms, previous, high, low, close, volume, 40))
            previous = close
        self.history[symbol] = rows
        return rows

    def klines(self, symbol: str, interval_ms: int, start_ms: int, end_ms: int, limit: int = 1000) -> list[list[Any]]:
        """The candles opening in [start_ms, end_ms], at most `limit`, oldest first; none opens
        after the server's now (the last one may be in progress), as Binance answers."""
        if symbol in self.history:
            return [r for r in self.history[symbol] if start_ms <= r[0] <= end_ms][:limit]
        end_ms = min(end_ms, self.server.now_ms())
        first = -(-start_ms // interval_ms) * interval_ms
        return [self._candle(symbol, t, interval_ms) for t in range(first, end_ms + 1, interval_ms)][:limit]

    def book(self, symbol: str, levels: int = BOOK_LEVELS) -> dict[str, Any]:
        """The depth snapshot around the symbol's price, as GET /api/v3/depth answers it."""
        sym = self.server.symbols[symbol]
        tick = float(sym.tick_size)
        return {"lastUpdateId": self._update_id,
                "bids": [[_decimal(sym.price - k * tick), _decimal(1.0 + k)] for k in range(1, levels + 1)],
                "asks": [[_decimal(sym.price + k * tick), _decimal(1.0 + k)] for k in range(1, levels + 1)]}

    def push_mark_price(self, symbol: str, mark_price: float) -> None:
        self._publish("futures", symbol, {"markPrice", "markPrice@1s"}, lambda: self._mark(symbol, mark_price))

    def push_liquidation(self, symbol: str, side: str, price: float, qty: float) -> None:
        now = self.server.now_ms()
        order = {"s": symbol, "S": side, "o": "LIMIT", "f": "IOC", "q": _decimal(qty), "p": _decimal(price),
                 "ap": _decimal(price), "X": "FILLED", "l": _decimal(qty), "z": _decimal(qty), "T": now}
        self._publish("futures", symbol, {"forceOrder"}, lambda: {"e": "forceOrder", "E": now, "o": order})

    def subscribers(self, market: str) -> int:
        return sum(1 for c in self.connections if c.market == market)

    # ------------------------------------------------------------------ frames
    def _on_trade(self, symbol: str, price: float, qty: float) -> None:
        now = self.server.now_ms()
        times, prices, qtys = self._trades.setdefault(symbol, ([], [], []))
        times.append(now)
        prices.append(price)
        qtys.append(qty)
        self._update_id += 1
        self._trade_id += 1
        trade = {"e": "trade", "E": now, "s": symbol, "t": self._trade_id, "p": _decimal(price), "q": _decimal(qty),
                 "T": now, "m": False, "M": True}
        agg = {"e": "aggTrade", "E": now, "s": symbol, "a": self._trade_id, "p": trade["p"], "q": trade["q"],
               "f": self._trade_id, "l": self._trade_id, "T": now, "m": False, "M": True}
        self._publish("spot", symbol, {"trade"}, lambda: trade)
        self._publish("spot", symbol, {"aggTrade"}, lambda: agg)
        self._publish("spot", symbol, {"bookTicker"}, lambda: self._book_ticker(symbol))
        self._publish_depth(symbol)

    def _publish(self, market: str, symbol: str, kinds: set[str], payload: Callable[[], Any]) -> None:
        for conn in self.connections:
            if conn.market == market:
                for stream in conn.wants(symbol):
                    if stream.split("@", 1)[1] in kinds:
                        conn.outbox.put_nowait((stream, payload()))

    def _publish_depth(self, symbol: str, only: Connection | None = None) -> None:
        for conn in [only] if only else self.connections:
            if conn.market == "spot":
                for stream in conn.wants(symbol):
                    kind = stream.split("@")[1]
                    if kind.startswith("depth"):
                        snapshot = self.book(symbol, int(kind.removeprefix("depth")))
                        conn.outbox.put_nowait((stream, snapshot))

    def _book_ticker(self, symbol: str) -> dict[str, Any]:
        book = self.book(symbol, 1)
        return {"u": self._update_id, "s": symbol, "b": book["bids"][0][0], "B": book["bids"][0][1],
                "a": book["asks"][0][0], "A": book["asks"][0][1]}

    def _mark(self, symbol: str, mark_price: float) -> dict[str, Any]:
        now = self.server.now_ms()
        return {"e": "markPriceUpdate", "E": now, "s": symbol, "p": _decimal(mark_price),
                "i": _decimal(mark_price), "P": _decimal(mark_price), "r": "0.00010000", "T": now + 3_600_000}

    def _heartbeat(self, conn: Connection) -> None:
        for symbol, sym in self.server.symbols.items():
            if conn.market == "spot":
                self._publish_depth(symbol, conn)
            else:
                for stream in conn.wants(symbol):
                    if stream.split("@", 1)[1].startswith("markPrice"):
                        conn.outbox.put_nowait((stream, self._mark(symbol, sym.price)))

    # ------------------------------------------------------------------ candles
    @staticmethod
    def _row(t: int, interval_ms: int, o: float, h: float, lo: float, c: float, volume: float,
             trades: int) -> list[Any]:
        return [t, _decimal(o), _decimal(h), _decimal(lo), _decimal(c), _decimal(volume), t + interval_ms - 1,
                _decimal(volume * c), trades, _decimal(volume / 2), _decimal(volume * c / 2), "0"]

    def _candle(self, symbol: str, t: int, interval_ms: int) -> list[Any]:
        times, prices, qtys = self._trades.get(symbol, ([], [], []))
        i, j = bisect.bisect_left(times, t), bisect.bisect_left(times, t + interval_ms)
        before = prices[i - 1] if i else self._first_price.get(symbol, 1.0)
        if i == j:
            return self._row(t, interval_ms, before, before, before, before, 0.0, 0)
        inside = prices[i:j]
        return self._row(t, interval_ms, inside[0], max(inside), min(inside), inside[-1], sum(qtys[i:j]), j - i)

    # ------------------------------------------------------------------ REST
    def _take(self, name: str, key: str) -> Any | None:
        faults = self.server.faults
        found = faults.take(f"{name}:{key}")
        return found if found is not None else faults.take(name)

    @staticmethod
    def _error(status: int, code: int, msg: str) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": self.server.now_ms()})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        wanted = set(orjson.loads(request.query["symbols"])) if "symbols" in request.query else None
        if "symbol" in request.query:
            wanted = {request.query["symbol"]}
        if wanted is not None and not wanted <= set(self.server.symbols):
            return self._error(400, -1121, "Invalid symbol.")
        symbols = [{"symbol": s.symbol, "status": "TRADING", "baseAsset": s.base, "baseAssetPrecision": 8,
                    "quoteAsset": s.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT",
                                   "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
                    "isSpotTradingAllowed": True, "isMarginTradingAllowed": False, "filters": s.filters(),
                    "permissions": [], "permissionSets": [["SPOT"]]}
                   for s in self.server.symbols.values() if wanted is None or s.symbol in wanted]
        return web.json_response({"timezone": "UTC", "serverTime": self.server.now_ms(), "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100}],
            "exchangeFilters": [], "symbols": symbols})

    async def _klines(self, request: web.Request) -> web.Response:
        q = request.query
        self.kline_queries.append(dict(q))
        symbol = q.get("symbol", "")
        if symbol not in self.server.symbols:
            return self._error(400, -1121, "Invalid symbol.")
        if q.get("interval") not in _INTERVAL_MS:
            return self._error(400, -1120, "Invalid interval.")
        status = self._take("klines_error", symbol)
        if status is not None:
            return self._error(int(status), -1000 if status >= 500 else -1003, "fake klines error")
        release = self._take("klines_slow", symbol)
        if release is not None:
            await self._until(release)
        step = _INTERVAL_MS[q["interval"]]
        limit = min(int(q.get("limit", 500)), 1000)
        end = int(q.get("endTime", self.server.now_ms()))
        start = int(q["startTime"]) if "startTime" in q else end // step * step - (limit - 1) * step
        rows = self.klines(symbol, step, start, end, limit)
        if self._take("klines_missing", symbol) is not None:
            rows = []
        if rows and self._take("klines_malformed", symbol) is not None:
            rows[0] = [rows[0][0], "not a price", *rows[0][2:]]
        return web.json_response(rows)

    async def _depth(self, request: web.Request) -> web.Response:
        self.depth_queries.append(dict(request.query))
        symbol = request.query.get("symbol", "")
        if symbol not in self.server.symbols:
            return self._error(400, -1121, "Invalid symbol.")
        return web.json_response(self.book(symbol, min(int(request.query.get("limit", 100)), BOOK_LEVELS)))

    async def _until(self, release: asyncio.Event) -> None:
        """Wait for the test's event, or for the server to stop (cleanup never waits on a test)."""
        waits = [asyncio.ensure_future(release.wait()), asyncio.ensure_future(self._closing.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    # ------------------------------------------------------------------ websockets
    async def _spot_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, "spot")

    async def _futures_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, "futures")

    async def _stream(self, request: web.Request, market: str) -> web.StreamResponse:
        if self._take("stream_refuse", market) is not None:
            return web.Response(status=503, text="fake: refused")
        ws = web.WebSocketResponse(timeout=CLOSE_TIMEOUT_S)
        await ws.prepare(request)
        conn = Connection(ws, market, {s for s in request.query.get("streams", "").split("/") if s})
        self.connections.add(conn)
        writer = asyncio.create_task(self._write(conn))
        try:
            async for _ in ws:  # aiohttp answers pings; nothing a client sends matters here
                pass
        finally:
            self.connections.discard(conn)
            writer.cancel()
        return ws

    async def _write(self, conn: Connection) -> None:
        while not conn.ws.closed:
            try:
                stream, payload = await asyncio.wait_for(conn.outbox.get(), self.heartbeat_s)
            except TimeoutError:
                self._heartbeat(conn)
                continue
            if self._take("stream_disconnect", conn.market) is not None:
                await conn.ws.close(code=WSCloseCode.GOING_AWAY)
                return
            if self._take("stream_stall", conn.market) is not None:
                conn.stalled = True
            if conn.stalled:
                continue
            text = self._take("stream_malformed", conn.market)
            if text is not None:
                await conn.ws.send_str(text if isinstance(text, str) else "{not json")
            message = self._take("stream_error", conn.market)
            if message is not None:
                await conn.ws.send_bytes(orjson.dumps({"e": "error", "m": str(message)}))
            await conn.ws.send_bytes(orjson.dumps({"stream": stream, "data": payload}))
            ns = time.perf_counter_ns()
            for fn in self.write_listeners:
                fn(stream, payload, ns)

    async def _shutdown(self, app: web.Application) -> None:
        self._closing.set()
        await asyncio.gather(*(c.ws.close(code=WSCloseCode.GOING_AWAY) for c in list(self.connections)),
                             return_exceptions=True)


def install(server: Any) -> FakeMarket:
    return FakeMarket(server)
