"""Binance's market frames and REST answers, as the engine's events.

Pure functions over what Binance sends: combined-stream frames (`{"stream": name, "data":
payload}`) of aggTrade/trade, bookTicker, partial depth, markPrice and forceOrder, the
in-band error frames python-binance puts on its queue, and the REST kline and depth
answers. Trades become Ticks, mark prices MarkPrices, forced orders Liquidations;
bookTicker and depth become Quotes and Depths, which the feed keeps rather than sends to
the engine.

Nothing here raises on any input: a frame that is not what Binance sends, or holds a value
outside core/market/ticks.py's bounds, comes back as a BadFrame naming its kind. A bad
value must never become a tick: one absurd trade time would order every later tick of its
symbol behind it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import msgspec
import orjson

from core.events import FeedProblem, Liquidation, MarkPrice, Tick
from core.market.ticks import EARLIEST_MS, LATEST_MS, MAX_PRICE, MAX_QTY, MIN_PRICE

_SHOWN_CHARS = 120  # of a frame quoted in a problem: enough to recognise it, never a flood in the log


class Quote(NamedTuple):
    """The best bid and ask of a symbol (bookTicker)."""

    symbol: str
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float
    update_id: int


class Depth(NamedTuple):
    """The top levels of a symbol's book, best first (partial depth stream or REST snapshot)."""

    symbol: str
    last_update_id: int
    bids: tuple[tuple[float, float], ...]  # (price, quantity)
    asks: tuple[tuple[float, float], ...]


class StreamError(NamedTuple):
    """An in-band error frame: python-binance reports its own failures this way (`type` is the
    exception's class name); a server's error frame has no type and is "server"."""

    type: str
    message: str


class BadFrame(NamedTuple):
    kind: str  # not_json, unknown_frame, unknown_stream, bad_trade, bad_kline, ...
    detail: str


class Candle(NamedTuple):
    """One validated REST kline; `row` is the answer's row as Binance sent it (for CSV)."""

    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    close_ms: int
    row: list[Any]


Parsed = Tick | MarkPrice | Liquidation | Quote | Depth | StreamError | BadFrame


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _price(text: Any) -> float:
    x = float(text)
    if not MIN_PRICE <= x <= MAX_PRICE:  # NaN fails too
        raise ValueError(f"price {show(text)} is not plausible")
    return x


def _qty(text: Any) -> float:
    x = float(text)
    if not 0.0 <= x <= MAX_QTY:
        raise ValueError(f"quantity {show(text)} is not plausible")
    return x


def _time(value: Any) -> int:
    if type(value) is not int or not EARLIEST_MS <= value <= LATEST_MS:
        raise ValueError(f"time {show(value)} is not epoch milliseconds between 2009 and 2100")
    return value


def _symbol(value: Any) -> str:
    if type(value) is not str or not value.isalnum():
        raise ValueError(f"symbol {show(value)} is not a symbol")
    return value


def _levels(rows: Any) -> tuple[tuple[float, float], ...]:
    if type(rows) is not list:
        raise ValueError(f"levels {show(rows)} are not a list")
    return tuple((_price(p), _qty(q)) for p, q in rows)


# ---------------------------------------------------------------------------- stream payloads
def _trade(symbol: str, d: Any) -> Tick:
    return Tick(_symbol(d["s"]), _price(d["p"]), _qty(d["q"]), _time(d["T"]), "spot")


def _book_ticker(symbol: str, d: Any) -> Quote:
    return Quote(_symbol(d["s"]), _price(d["b"]), _qty(d["B"]), _price(d["a"]), _qty(d["A"]), int(d["u"]))


def _depth(symbol: str, d: Any) -> Depth:
    return Depth(symbol, int(d["lastUpdateId"]), _levels(d["bids"]), _levels(d["asks"]))


def _mark_price(symbol: str, d: Any) -> MarkPrice:
    return MarkPrice(_symbol(d["s"]), _price(d["p"]), _time(d["E"]))


def _force_order(symbol: str, d: Any) -> Liquidation:
    o = d["o"]
    side = o["S"]
    if side not in ("BUY", "SELL"):
        raise ValueError(f"side {show(side)} is neither BUY nor SELL")
    # the average fill price and filled quantity, or the order's own before anything filled
    price = _price(o["ap"]) if float(o["ap"]) > 0 else _price(o["p"])
    qty = _qty(o["z"]) if float(o["z"]) > 0 else _qty(o["q"])
    return Liquidation(_symbol(o["s"]), side, price, qty, _time(o["T"]))


_Payload = Callable[[str, Any], Parsed]
_BY_KIND: dict[str, tuple[_Payload, str]] = {
    "aggTrade": (_trade, "bad_trade"),
    "trade": (_trade, "bad_trade"),
    "bookTicker": (_book_ticker, "bad_book_ticker"),
    "markPrice": (_mark_price, "bad_mark_price"),
    "markPrice@1s": (_mark_price, "bad_mark_price"),
    "forceOrder": (_force_order, "bad_force_order"),
    **{f"depth{n}{speed}": (_depth, "bad_depth") for n in (5, 10, 20) for speed in ("", "@100ms", "@1000ms")},
}
_DEPTH_KINDS = frozenset(kind for kind, (payload, _) in _BY_KIND.items() if payload is _depth)
_BROKEN = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError)


def _error(d: dict) -> StreamError:
    return StreamError(str(d.get("type") or "server"), str(d.get("m", ""))[:_SHOWN_CHARS])


def parse_message(msg: Any) -> Parsed:
    """One decoded frame as what it means: parse_frame's general path, and the in-band error
    dicts python-binance puts on its queue itself."""
    try:
        stream = msg["stream"]
        data = msg["data"]
        at = stream.index("@")
    except _BROKEN:
        if type(msg) is dict and msg.get("e") == "error":
            return _error(msg)
        return BadFrame("unknown_frame", show(msg))
    return _payload(stream, at, data)


def _payload(stream: str, at: int, data: Any) -> Parsed:
    entry = _BY_KIND.get(stream[at + 1:])
    if entry is None:
        if type(data) is dict and data.get("e") == "error":
            return _error(data)
        return BadFrame("unknown_stream", show(stream))
    payload, bad_kind = entry
    try:
        return payload(stream[:at].upper(), data)
    except _BROKEN as exc:
        if type(data) is dict and data.get("e") == "error":
            return _error(data)
        return BadFrame(bad_kind, f"{show(stream)}: {type(exc).__name__}: {show(str(exc))}")


def decode(raw: bytes | str) -> Any:
    """A frame's JSON, or a BadFrame."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return BadFrame("not_json", f"{show(raw)}: {exc}")


# Trades, best quotes and depth are most of the traffic: they decode from the bytes straight into typed
# fields, no dict between. Strict types, and the same checks as the payload functions above, so the
# fast path accepts nothing the general one refuses; whatever it does not take goes the general way.
class _Combined(msgspec.Struct):
    stream: str
    data: msgspec.Raw


class _TradeFields(msgspec.Struct):
    s: str
    p: str
    q: str
    T: int


class _BookTickerFields(msgspec.Struct):
    s: str
    b: str
    B: str
    a: str
    A: str
    u: int


class _DepthFields(msgspec.Struct):
    lastUpdateId: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


_COMBINED = msgspec.json.Decoder(_Combined)
_DEPTH = msgspec.json.Decoder(_DepthFields)
_TRADE = msgspec.json.Decoder(_TradeFields)
_BOOK_TICKER = msgspec.json.Decoder(_BookTickerFields)


def parse_frame(raw: bytes | str) -> Parsed:
    """A frame as it travels on the websocket. The Binance feed has python-binance call this in
    place of its own JSON decoding, so a frame reaches the feed as its event."""
    try:
        frame = _COMBINED.decode(raw)
        stream = frame.stream
        at = stream.index("@")
    except (msgspec.DecodeError, ValueError):  # not a combined frame: an error frame, not JSON...
        msg = decode(raw)
        return msg if type(msg) is BadFrame else parse_message(msg)
    kind = stream[at + 1:]
    try:
        if kind == "aggTrade" or kind == "trade":
            t = _TRADE.decode(frame.data)
            return Tick(_symbol(t.s), _price(t.p), _qty(t.q), _time(t.T), "spot")
        if kind == "bookTicker":
            b = _BOOK_TICKER.decode(frame.data)
            return Quote(_symbol(b.s), _price(b.b), _qty(b.B), _price(b.a), _qty(b.A), b.u)
        if kind in _DEPTH_KINDS:
            d = _DEPTH.decode(frame.data)
            return Depth(stream[:at].upper(), d.lastUpdateId, tuple([(_price(p), _qty(q)) for p, q in d.bids]),
                         tuple([(_price(p), _qty(q)) for p, q in d.asks]))
    except (msgspec.DecodeError, ValueError):  # a ValidationError is a DecodeError
        pass  # the general path below says what is wrong
    return _payload(stream, at, orjson.loads(memoryview(frame.data)))


# ---------------------------------------------------------------------------- REST answers
def _decimal_text(value: Any) -> str:
    """A number as Binance writes it in a JSON string; anything else could tear a CSV row."""
    if type(value) is not str or not value or not value.replace(".", "", 1).isdigit() or not value.isascii():
        raise ValueError(f"{show(value)} is not a decimal number")
    return value


def parse_kline(row: Any) -> Candle | BadFrame:
    """A row of GET /api/v3/klines: [open time, open, high, low, close, volume, close time,
    quote volume, trades, taker base volume, taker quote volume, ignore]."""
    try:
        if type(row) is not list or len(row) != 12:
            raise ValueError(f"expected 12 fields, got {show(row)}")
        open_ms, close_ms = _time(row[0]), _time(row[6])
        for i in (1, 2, 3, 4, 5, 7, 9, 10, 11):
            _decimal_text(row[i])
        if type(row[8]) is not int or row[8] < 0:
            raise ValueError(f"trade count {show(row[8])} is not a count")
        o, h, lo, c = _price(row[1]), _price(row[2]), _price(row[3]), _price(row[4])
        volume = _qty(row[5])
        if not lo <= min(o, c) <= max(o, c) <= h:
            raise ValueError(f"inconsistent candle: open {o} high {h} low {lo} close {c}")
        if close_ms <= open_ms:
            raise ValueError(f"closes at {close_ms}, not after it opens at {open_ms}")
    except _BROKEN as exc:
        return BadFrame("bad_kline", str(exc))
    return Candle(open_ms, o, h, lo, c, volume, close_ms, row)


def parse_depth_snapshot(symbol: str, answer: Any) -> Depth | BadFrame:
    """GET /api/v3/depth's answer."""
    try:
        return _depth(symbol, answer)
    except _BROKEN as exc:
        return BadFrame("bad_depth_snapshot", f"{symbol}: {type(exc).__name__}: {show(str(exc))}")


# ---------------------------------------------------------------------------- subscriptions
def spot_streams(symbols: Iterable[str], depth_levels: int) -> list[str]:
    """Combined spot stream names: trades, best bid/ask and the top `depth_levels` levels."""
    return [f"{s.lower()}@{kind}" for s in symbols
            for kind in ("aggTrade", "bookTicker", f"depth{depth_levels}@100ms")]


def futures_streams(symbols: Iterable[str]) -> list[str]:
    """Combined USD-M futures stream names: the mark price every second, and liquidations."""
    return [f"{s.lower()}@{kind}" for s in symbols for kind in ("markPrice@1s", "forceOrder")]


class ProblemTally:
    """Bad input counted by kind; the first of each kind is logged (no traceback: a bad frame
    is the sender's fault, not a bug) and handed to `on_first` as a FeedProblem."""

    def __init__(self, source: str, log: logging.Logger,
                 on_first: Callable[[FeedProblem], None] | None = None) -> None:
        self.source = source
        self.log = log
        self.on_first = on_first
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] == 1:
            self.log.warning("%s: %s: %s (more of this kind are counted, not logged)", self.source, kind, detail)
            if self.on_first is not None:
                self.on_first(FeedProblem(self.source, None, f"{kind}: {detail}"))


__all__ = ["BadFrame", "Candle", "Depth", "Parsed", "ProblemTally", "Quote", "StreamError", "decode",
           "futures_streams", "parse_depth_snapshot", "parse_frame", "parse_kline", "parse_message", "show",
           "spot_streams"]
