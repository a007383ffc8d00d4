"""Binance's frames and REST answers as the engine's events: every kind parsed, and every
malformed or error frame a BadFrame or a StreamError, never an exception."""

from __future__ import annotations

import json
import logging

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from core.events import Liquidation, MarkPrice, Tick
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
    parse_kline,
    parse_message,
    spot_streams,
)

T = 1_700_000_000_000


def combined(stream: str, data: object) -> bytes:
    return orjson.dumps({"stream": stream, "data": data})


AGG_TRADE = {"e": "aggTrade", "E": T + 5, "s": "BTCUSDT", "a": 12, "p": "100123.45", "q": "0.250", "f": 100,
             "l": 105, "T": T, "m": True, "M": True}
TRADE = {"e": "trade", "E": T + 5, "s": "ETHUSDT", "t": 7, "p": "3001.5", "q": "2", "T": T, "m": False, "M": True}
BOOK_TICKER = {"u": 400900217, "s": "BTCUSDT", "b": "100123.44", "B": "1.5", "a": "100123.46", "A": "2.25"}
DEPTH = {"lastUpdateId": 160, "bids": [["100.0", "1.0"], ["99.9", "2.0"]], "asks": [["100.1", "3.0"]]}
MARK = {"e": "markPriceUpdate", "E": T, "s": "BTCUSDT", "p": "100150.10", "i": "100140.00", "P": "100151.00",
        "r": "0.00010000", "T": T + 3_600_000}
FORCE = {"e": "forceOrder", "E": T + 9, "o": {"s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "0.014",
                                              "p": "9910", "ap": "9911.5", "X": "FILLED", "l": "0.014",
                                              "z": "0.014", "T": T}}
KLINE = [T, "100.0", "101.0", "99.5", "100.5", "12.5", T + 59_999, "1250.0", 42, "6.0", "600.0", "0"]


# ---------------------------------------------------------------------------- every frame kind
def test_agg_trade_is_a_spot_tick_at_its_trade_time():
    assert parse_frame(combined("btcusdt@aggTrade", AGG_TRADE)) == Tick("BTCUSDT", 100123.45, 0.25, T, "spot")


def test_trade_is_a_spot_tick():
    assert parse_frame(combined("ethusdt@trade", TRADE)) == Tick("ETHUSDT", 3001.5, 2.0, T, "spot")


def test_book_ticker_is_a_quote():
    assert parse_frame(combined("btcusdt@bookTicker", BOOK_TICKER)) == Quote(
        "BTCUSDT", 100123.44, 1.5, 100123.46, 2.25, 400900217)


def test_partial_depth_takes_its_symbol_from_the_stream_name():
    for name in ("btcusdt@depth5@100ms", "btcusdt@depth10", "btcusdt@depth20@1000ms"):
        assert parse_frame(combined(name, DEPTH)) == Depth(
            "BTCUSDT", 160, ((100.0, 1.0), (99.9, 2.0)), ((100.1, 3.0),))


def test_mark_price_is_a_mark_price_at_its_event_time():
    assert parse_frame(combined("btcusdt@markPrice@1s", MARK)) == MarkPrice("BTCUSDT", 100150.10, T)
    assert parse_frame(combined("btcusdt@markPrice", MARK)) == MarkPrice("BTCUSDT", 100150.10, T)


def test_force_order_is_a_liquidation_at_its_average_price_and_filled_quantity():
    assert parse_frame(combined("btcusdt@forceOrder", FORCE)) == Liquidation("BTCUSDT", "SELL", 9911.5, 0.014, T)


def test_force_order_without_an_average_price_uses_its_order_price():
    order = {**FORCE["o"], "ap": "0", "z": "0"}
    assert parse_frame(combined("btcusdt@forceOrder", {**FORCE, "o": order})) == Liquidation(
        "BTCUSDT", "SELL", 9910.0, 0.014, T)


def test_parse_message_takes_the_dict_python_binance_already_decoded():
    assert parse_message({"stream": "btcusdt@aggTrade", "data": AGG_TRADE}) == parse_frame(
        combined("btcusdt@aggTrade", AGG_TRADE))


# ---------------------------------------------------------------------------- error frames
def test_the_library_in_band_errors_are_stream_errors():
    frame = {"e": "error", "type": "ConnectionClosedError", "m": "received 1011"}
    assert parse_message(frame) == StreamError("ConnectionClosedError", "received 1011")


def test_a_server_error_frame_without_a_type_is_a_stream_error():
    assert parse_frame(b'{"e": "error", "m": "too many requests"}') == StreamError("server", "too many requests")
    assert parse_frame(combined("btcusdt@aggTrade", {"e": "error", "m": "x"})) == StreamError("server", "x")


# ---------------------------------------------------------------------------- malformed frames
def kind_of(raw: bytes | str | object) -> str:
    parsed = parse_frame(raw) if isinstance(raw, (bytes, str)) else parse_message(raw)
    assert type(parsed) is BadFrame, parsed
    assert parsed.detail
    return parsed.kind


def test_not_json_is_a_bad_frame():
    assert kind_of(b"{not json") == "not_json"
    assert kind_of(b"\xff\xfe") == "not_json"
    assert kind_of("") == "not_json"


def test_json_that_is_no_stream_frame_is_a_bad_frame():
    assert kind_of(b"[1, 2]") == "unknown_frame"
    assert kind_of(b"42") == "unknown_frame"
    assert kind_of(b'{"result": null, "id": 1}') == "unknown_frame"
    assert kind_of({"stream": 5, "data": {}}) == "unknown_frame"
    assert kind_of({"stream": "nosuffix", "data": {}}) == "unknown_frame"


def test_an_unknown_stream_is_a_bad_frame():
    assert kind_of(combined("btcusdt@kline_1m", {"k": {}})) == "unknown_stream"


def test_broken_fields_are_bad_frames_of_their_kind():
    assert kind_of(combined("btcusdt@aggTrade", {**AGG_TRADE, "p": "abc"})) == "bad_trade"
    assert kind_of(combined("btcusdt@aggTrade", {k: v for k, v in AGG_TRADE.items() if k != "T"})) == "bad_trade"
    assert kind_of(combined("btcusdt@aggTrade", [1, 2])) == "bad_trade"
    assert kind_of(combined("btcusdt@aggTrade", {**AGG_TRADE, "s": 7})) == "bad_trade"
    assert kind_of(combined("btcusdt@bookTicker", {**BOOK_TICKER, "a": None})) == "bad_book_ticker"
    assert kind_of(combined("btcusdt@depth5@100ms", {**DEPTH, "bids": [["1", "2", "3"]]})) == "bad_depth"
    assert kind_of(combined("btcusdt@depth5@100ms", {**DEPTH, "asks": "none"})) == "bad_depth"
    assert kind_of(combined("btcusdt@markPrice@1s", {**MARK, "p": []})) == "bad_mark_price"
    assert kind_of(combined("btcusdt@forceOrder", {**FORCE, "o": {**FORCE["o"], "S": "HOLD"}})) == "bad_force_order"


def test_implausible_values_are_bad_frames_not_events():
    for price in ("1e308", "NaN", "-5", "0", "inf"):
        assert kind_of(combined("btcusdt@aggTrade", {**AGG_TRADE, "p": price})) == "bad_trade", price
    assert kind_of(combined("btcusdt@aggTrade", {**AGG_TRADE, "q": "1e20"})) == "bad_trade"
    assert kind_of(combined("btcusdt@aggTrade", {**AGG_TRADE, "T": 5})) == "bad_trade"  # 1970
    assert kind_of(combined("btcusdt@aggTrade", {**AGG_TRADE, "T": True})) == "bad_trade"
    assert kind_of({"stream": "btcusdt@aggTrade", "data": {**AGG_TRADE, "T": 10**30}}) == "bad_trade"
    assert kind_of(combined("btcusdt@aggTrade", AGG_TRADE).replace(b'"T":1700000000000', b'"T":1e30')) == "bad_trade"
    assert kind_of(combined("btcusdt@bookTicker", {**BOOK_TICKER, "b": "1e300"})) == "bad_book_ticker"
    assert kind_of(combined("btcusdt@depth5", {**DEPTH, "bids": [["NaN", "1"]]})) == "bad_depth"


def test_a_bad_frame_detail_is_short_whatever_the_frame_holds():
    parsed = parse_frame(combined("btcusdt@aggTrade", {**AGG_TRADE, "p": "x" * 100_000}))
    assert type(parsed) is BadFrame and len(parsed.detail) < 300


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["stream", "data", "e", "s", "p", "q", "T", "E", "b", "a", "B", "A", "u", "o", "S", "ap", "z",
         "bids", "asks", "lastUpdateId", "type", "m"]), inner, max_size=8),
    max_leaves=20)
streams = st.sampled_from(["btcusdt@aggTrade", "btcusdt@trade", "btcusdt@bookTicker", "btcusdt@depth5@100ms",
                           "btcusdt@markPrice@1s", "btcusdt@forceOrder", "x@y", "@", ""])


@settings(max_examples=400, deadline=None)
@given(stream=streams, data=json_values)
def test_no_frame_makes_the_parser_raise(stream, data):
    parse_message({"stream": stream, "data": data})
    parse_message(data)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64))
def test_no_bytes_make_the_parser_raise(raw):
    parse_frame(raw)


# ---------------------------------------------------------------------------- REST answers
def test_a_kline_row_is_a_candle_that_keeps_its_row():
    candle = parse_kline(KLINE)
    assert candle == Candle(T, 100.0, 101.0, 99.5, 100.5, 12.5, T + 59_999, KLINE)


def test_bad_kline_rows_are_bad_frames():
    bad = [
        KLINE[:11],
        [True, *KLINE[1:]],
        [str(T), *KLINE[1:]],  # REST times are numbers
        [T, "100.0", "99.0", "99.5", "100.5", *KLINE[5:]],  # high below low
        [T, "100.0", "101.0", "99.5", "102", *KLINE[5:]],  # close above high
        [T, "1,0", *KLINE[2:]],
        [T, " 100.0\n", *KLINE[2:]],  # float() would take it; a CSV row would tear
        [T, "1e308", *KLINE[2:]],
        [*KLINE[:6], T - 1, *KLINE[7:]],  # closes before it opens
        [*KLINE[:8], "42", *KLINE[9:]],
        [*KLINE[:11], None],
        "not a row",
    ]
    for row in bad:
        parsed = parse_kline(row)
        assert type(parsed) is BadFrame and parsed.kind == "bad_kline", row


def test_a_depth_snapshot_is_a_depth():
    answer = {"lastUpdateId": 1027024, "bids": [["4.00000000", "431.00000000"]], "asks": [["4.00000200", "12.0"]]}
    assert parse_depth_snapshot("BNBUSDT", answer) == Depth("BNBUSDT", 1027024, ((4.0, 431.0),), ((4.000002, 12.0),))
    assert type(parse_depth_snapshot("BNBUSDT", {"code": -1121})) is BadFrame
    assert type(parse_depth_snapshot("BNBUSDT", [])) is BadFrame


# ---------------------------------------------------------------------------- stream names
def test_spot_streams_are_trades_book_ticker_and_partial_depth_per_symbol():
    assert spot_streams(["BTCUSDT", "ETHUSDT"], 10) == [
        "btcusdt@aggTrade", "btcusdt@bookTicker", "btcusdt@depth10@100ms",
        "ethusdt@aggTrade", "ethusdt@bookTicker", "ethusdt@depth10@100ms"]


def test_futures_streams_are_mark_price_and_liquidations_per_symbol():
    assert futures_streams(["BTCUSDT"]) == ["btcusdt@markPrice@1s", "btcusdt@forceOrder"]


def test_every_stream_the_feed_subscribes_to_parses():
    frames = {"aggTrade": AGG_TRADE, "bookTicker": BOOK_TICKER, "depth10@100ms": DEPTH, "markPrice@1s": MARK,
              "forceOrder": FORCE}
    for name in [*spot_streams(["BTCUSDT"], 10), *futures_streams(["BTCUSDT"])]:
        parsed = parse_frame(combined(name, frames[name.split("@", 1)[1]]))
        assert type(parsed) is not BadFrame, name


# ---------------------------------------------------------------------------- the tally
def test_the_tally_counts_every_problem_and_logs_the_first_of_each_kind(caplog):
    firsts = []
    tally = ProblemTally("binance", logging.getLogger("spikeguard.test.tally"), firsts.append)
    with caplog.at_level(logging.WARNING, logger="spikeguard.test.tally"):
        for _ in range(3):
            tally.add("not_json", "{x")
        tally.add("bad_trade", "price 'abc'")
    assert tally.counts == {"not_json": 3, "bad_trade": 1}
    assert len(caplog.records) == 2 and all(r.exc_info is None for r in caplog.records)
    assert [p.error for p in firsts] == ["not_json: {x", "bad_trade: price 'abc'"]
    assert all(p.source == "binance" for p in firsts)


def test_a_mark_price_of_nan_is_refused():
    assert kind_of(combined("btcusdt@markPrice@1s", {**MARK, "p": "nan"})) == "bad_mark_price"


# ---------------------------------------------------------------------------- the typed fast path
TRICKY_TEXT = st.sampled_from(["nan", "inf", "-1", "0", "1e9", "1e10", " 5 ", "1_0", "0x10", "BTC-USDT", "a b", "",
                                "100123.45", "1700000000000", "BTCUSDT"])
LEVELS = st.lists(st.tuples(TRICKY_TEXT, TRICKY_TEXT).map(list)
                  | st.lists(TRICKY_TEXT | st.floats(allow_nan=False), max_size=3), min_size=1, max_size=2)
JSON_VALUES = st.recursive(
    TRICKY_TEXT | LEVELS | st.text(max_size=8) | st.none() | st.booleans()
    | st.integers(min_value=-2**70, max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=4,
)
FAST_KINDS = [("btcusdt@aggTrade", AGG_TRADE), ("ethusdt@trade", TRADE), ("btcusdt@bookTicker", BOOK_TICKER),
              ("btcusdt@depth5@100ms", DEPTH), ("btcusdt@depth20", {**DEPTH, "bids": [["1", "2", "3"]]})]


def general_path(raw: bytes) -> object:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "not_json"
    return parse_message(msg)


def fast_path(raw: bytes | str) -> object:
    parsed = parse_frame(raw)
    return "not_json" if type(parsed) is BadFrame and parsed.kind == "not_json" else parsed


@settings(max_examples=1000, deadline=None)
@given(kind=st.sampled_from(FAST_KINDS), other_stream=st.sampled_from([None, None, None, "btcusdt@trade", "btcusdt"]),
       data=st.data())
def test_the_fast_path_reads_every_frame_as_the_general_path_does(kind, other_stream, data):
    """Trades, quotes and depth skip the dict, never the checks: whatever a field holds, the typed decode
    gives the very event, or the very BadFrame, the dict path gives."""
    stream, payload = kind
    values = st.one_of(TRICKY_TEXT, LEVELS, JSON_VALUES, st.just("<drop>"))
    changes = data.draw(st.dictionaries(st.sampled_from(sorted(payload)), values, min_size=1, max_size=2))
    fields = {k: v for k, v in {**payload, **changes}.items() if v != "<drop>"}
    # json, not orjson: it writes any int, and orjson refuses one beyond 64 bits
    raw = json.dumps({"stream": other_stream or stream, "data": fields}).encode()
    assert fast_path(raw) == general_path(raw)
    assert fast_path(raw.decode()) == general_path(raw)  # python-binance hands over text frames
