"""A local Binance on 127.0.0.1 for the tests: the REST and websocket subset spikeguard uses,
with faults a test can script. python-binance is pointed at it through the settings'
endpoints (`FakeBinance.endpoints()`), never at the internet.

The server is one aiohttp application over one shared state (`FakeBinance`): symbols with
their exchange filters and last prices, the server's clock, and the fault script. Two
modules install their routes on it:

- tests/fakes/binance/market.py: ping, time, exchangeInfo, klines, depth; the combined
  spot and futures streams (trades/aggTrades, bookTicker, depth, markPrice, forceOrder);
  stream faults (disconnect, silent stall, malformed frames).
- tests/fakes/binance/trading.py: account, order (create, test, query, cancel),
  openOrders, apiRestrictions, the user data stream (listenKey, executionReport,
  outboundAccountPosition); REST faults (429 with Retry-After, 418, 5xx after accepting an
  order, -1021, partial fills, fills after a cancel).

A test moves the market with `set_price()`: the market module streams the trade, the
trading module matches resting orders against it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from core.settings import BinanceEndpoints


@dataclass
class FakeSymbol:
    symbol: str
    base: str
    quote: str
    price: float
    tick_size: str = "0.01"
    step_size: str = "0.00001"
    min_qty: str = "0.00001"
    min_notional: str = "5"
    percent_up: str = "5"  # PERCENT_PRICE_BY_SIDE: bid/ask multipliers
    percent_down: str = "0.2"

    def filters(self) -> list[dict[str, Any]]:
        """exchangeInfo's filters for this symbol, as Binance spells them."""
        return [
            {"filterType": "PRICE_FILTER", "minPrice": self.tick_size, "maxPrice": "1000000.00",
             "tickSize": self.tick_size},
            {"filterType": "LOT_SIZE", "minQty": self.min_qty, "maxQty": "9000.00000", "stepSize": self.step_size},
            {"filterType": "NOTIONAL", "minNotional": self.min_notional, "applyMinToMarket": True,
             "maxNotional": "9000000.00", "applyMaxToMarket": False, "avgPriceMins": 5},
            {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": self.percent_up,
             "bidMultiplierDown": self.percent_down, "askMultiplierUp": self.percent_up,
             "askMultiplierDown": self.percent_down, "avgPriceMins": 5},
        ]

    @property
    def decimal_price(self) -> Decimal:
        return Decimal(str(self.price))


DEFAULT_SYMBOLS = (
    FakeSymbol("BTCUSDT", "BTC", "USDT", 100_000.0, tick_size="0.01", step_size="0.00001"),
    FakeSymbol("ETHUSDT", "ETH", "USDT", 3_000.0, tick_size="0.01", step_size="0.0001"),
    FakeSymbol("SOLUSDT", "SOL", "USDT", 150.0, tick_size="0.01", step_size="0.001"),
)


@dataclass
class Faults:
    """What the next requests and frames should suffer. Each module reads and consumes its
    own entries; a test sets them before it acts. Counters say what happened."""

    pending: dict[str, list[Any]] = field(default_factory=dict)  # fault name -> queued arguments
    happened: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, arg: Any = True, times: int = 1) -> None:
        self.pending.setdefault(name, []).extend([arg] * times)

    def take(self, name: str) -> Any | None:
        """The next queued argument of `name` (consumed), or None."""
        queue = self.pending.get(name)
        if not queue:
            return None
        self.happened[name] = self.happened.get(name, 0) + 1
        return queue.pop(0)


class FakeBinance:
    def __init__(self, symbols: tuple[FakeSymbol, ...] = DEFAULT_SYMBOLS) -> None:
        self.symbols: dict[str, FakeSymbol] = {s.symbol: FakeSymbol(**s.__dict__) for s in symbols}
        self.faults = Faults()
        self.clock_offset_ms = 0  # the server's clock minus the real one (for -1021)
        self.requests: list[tuple[str, str]] = []  # (method, path) of every REST request, in order
        self.price_listeners: list[Callable[[str, float, float], None]] = []  # (symbol, price, qty)
        self.app = web.Application()
        self._runner: web.AppRunner | None = None
        self.port = 0
        from tests.fakes.binance import market, trading

        self.market = market.install(self)
        self.trading = trading.install(self)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> "FakeBinance":
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeBinance":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def endpoints(self) -> BinanceEndpoints:
        base = f"127.0.0.1:{self.port}"
        return BinanceEndpoints(api_url=f"http://{base}/api", stream_url=f"ws://{base}/",
                                futures_api_url=f"http://{base}/fapi", futures_stream_url=f"ws://{base}/f/")

    # ------------------------------------------------------------------ the market
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.clock_offset_ms

    def set_price(self, symbol: str, price: float, qty: float = 1.0) -> None:
        """A trade at `price`: streamed to subscribers, matched against resting orders."""
        self.symbols[symbol].price = price
        for fn in list(self.price_listeners):
            fn(symbol, price, qty)

    async def settle(self) -> None:
        """Let the server's tasks run (frames written, orders matched)."""
        await asyncio.sleep(0)


__all__ = ["DEFAULT_SYMBOLS", "FakeBinance", "FakeSymbol", "Faults"]
