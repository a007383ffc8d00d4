"""Replay input: every Binance layout we claim, and every malformed row a hostile file holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.events import SymbolEnded, Tick
from core.market.replay import CsvSource, ReplayFeed, ReplayInputError, symbol_from_path

ROWS_7 = [
    "1700000000000,100,101,99,100.5,10,1700000059999",   # up bar: O L H C
    "1700000060000,100.5,100.6,98,98.5,20,1700000119999",  # down bar: O H L C
]


def write(tmp_path: Path, name: str, lines: list[str] | bytes) -> Path:
    path = tmp_path / name
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines) + "\n")
    return path


def events(feed: ReplayFeed) -> list:
    return list(feed._events())


def test_kline_rows_become_the_likely_tick_path(tmp_path):
    feed = ReplayFeed([write(tmp_path, "BTCUSDT-1m-x.csv", ROWS_7)])
    ticks = [e for e in events(feed) if isinstance(e, Tick)]
    assert [t.price for t in ticks] == [100, 99, 101, 100.5, 100.5, 100.6, 98, 98.5]
    assert [t.time_ms - 1700000000000 for t in ticks] == [0, 15000, 30000, 45000, 60000, 75000, 90000, 105000]
    assert sum(t.qty for t in ticks) == pytest.approx(30)
    assert feed.cadence_ms == 15000
    assert feed.stats.bad_rows == 0


def test_header_and_twelve_columns_and_microseconds(tmp_path):
    header = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
    rows12 = [r + ",0,0,0,0,0" for r in ROWS_7]
    with_header = write(tmp_path, "ETHUSDT-1m-h.csv", [header, *rows12])
    no_header = write(tmp_path, "SOLUSDT-1m-n.csv", rows12)
    micro = write(tmp_path, "XRPUSDT-1m-u.csv", [
        "1700000000000000,100,101,99,100.5,10,1700000059999999",
    ])
    for path, symbol in ((with_header, "ETHUSDT"), (no_header, "SOLUSDT")):
        ticks = [e for e in events(ReplayFeed([path])) if isinstance(e, Tick)]
        assert len(ticks) == 8 and {t.symbol for t in ticks} == {symbol}
    ticks = [e for e in events(ReplayFeed([micro])) if isinstance(e, Tick)]
    assert ticks[0].time_ms == 1700000000000 and ticks[1].time_ms == 1700000015000


def test_aggtrades_with_and_without_header(tmp_path):
    rows = ["1,100.5,0.2,10,11,1700000000000,true,true", "2,100.7,0.1,12,12,1700000000500,false,true"]
    header = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match"
    for name, lines in (("BTCUSDT-aggTrades-a.csv", rows), ("BTCUSDT-aggTrades-b.csv", [header, *rows]),
                        ("BTCUSDT-aggTrades-c.csv", [r.rsplit(",", 1)[0] for r in rows])):
        ticks = [e for e in events(ReplayFeed([write(tmp_path, name, lines)])) if isinstance(e, Tick)]
        assert [(t.price, t.qty, t.time_ms) for t in ticks] == [(100.5, 0.2, 1700000000000),
                                                                (100.7, 0.1, 1700000000500)], name


def test_several_files_merge_in_time_order(tmp_path):
    a = write(tmp_path, "BTCUSDT-1m-a.csv", ROWS_7)
    b = write(tmp_path, "ETHUSDT-1m-b.csv", ["1700000030000,10,11,9,10.5,5,1700000089999"])
    evs = events(ReplayFeed([a, b]))
    times = [e.time_ms for e in evs]
    assert times == sorted(times)
    assert {e.symbol for e in evs if isinstance(e, Tick)} == {"BTCUSDT", "ETHUSDT"}
    ended = [e for e in evs if isinstance(e, SymbolEnded)]
    assert {e.symbol for e in ended} == {"BTCUSDT", "ETHUSDT"}


HOSTILE = [
    "open_time,open,high,low,close,volume,close_time",
    "1700000000000,100,101,99,100.5,10,1700000059999",   # 2 ok
    "1700000060000,abc,101,99,100,1,1700000119999",      # 3 non-numeric
    "1700000120000,nan,101,99,100,1,1700000179999",      # 4 NaN
    "1700000180000,-5,101,99,100,1,1700000239999",       # 5 negative
    "1700000240000,100,99,101,100,1,1700000299999",      # 6 high below low
    "1700000300000,100,101,99,100",                      # 7 too few columns
    "1700000060000,100,101,99,100,1,1700000119999",      # 8 ok (the rows before it were bad)
    "1700000000000,100,101,99,100.5,10,1700000059999",   # 9 duplicate of row 2: out of order
    "1700000360000,100,101,99,100,-1,1700000419999",     # 10 negative volume
    "1700000420000,100,101,99,100,inf,1700000479999",    # 11 infinite volume
    "",                                                  # blank: ignored
    "1700000480000,100,101,99,100.2,3,1700000539999",    # 13 ok
]


def test_malformed_rows_are_counted_with_file_and_line_and_never_stop_the_replay(tmp_path):
    path = write(tmp_path, "BTCUSDT-1m-bad.csv", HOSTILE)
    feed = ReplayFeed([path])
    ticks = [e for e in events(feed) if isinstance(e, Tick)]
    assert len(ticks) == 12  # rows 2, 8 and 13
    assert feed.stats.bad_rows == 8
    lines = [p.line for p in feed.stats.problems]
    assert lines == [3, 4, 5, 6, 7, 9, 10, 11]
    assert all(p.source == str(path) for p in feed.stats.problems)
    messages = " | ".join(p.error for p in feed.stats.problems)
    for fragment in ("non-numeric", "positive finite", "inconsistent candle", "columns", "not after"):
        assert fragment in messages


def test_binary_garbage_and_nul_bytes_are_bad_rows_not_crashes(tmp_path):
    data = ("1700000000000,100,101,99,100.5,10,1700000059999\n".encode()
            + b"\x00\x00\xff\xfe garbage \x80\x81\n"
            + "1700000060000,100.5,100.6,98,98.5,20,1700000119999\n".encode()
            + "1700000120000,100,101,99,100,1,1700000179999,\xe9\xe8\n".encode("latin-1"))
    feed = ReplayFeed([write(tmp_path, "BTCUSDT-1m-bin.csv", data)])
    ticks = [e for e in events(feed) if isinstance(e, Tick)]
    assert len(ticks) == 8
    assert feed.stats.bad_rows == 2
    assert [p.line for p in feed.stats.problems] == [2, 4]


def test_empty_and_unrecognised_files_report_a_problem(tmp_path):
    empty = ReplayFeed([write(tmp_path, "BTCUSDT-1m-empty.csv", b"")])
    assert events(empty)[-1].__class__ is SymbolEnded
    assert empty.stats.bad_rows == 1 and "no data rows" in empty.stats.problems[0].error
    weird = ReplayFeed([write(tmp_path, "BTCUSDT-1m-weird.csv", ["a,b,c", "1,2,3"])])
    assert not [e for e in events(weird) if isinstance(e, Tick)]
    assert weird.stats.bad_rows >= 1 and "unrecognised layout" in weird.stats.problems[0].error


def test_unusable_paths_are_refused_up_front(tmp_path):
    with pytest.raises(ReplayInputError, match="file not found"):
        ReplayFeed([tmp_path / "BTCUSDT-1m-missing.csv"])
    with pytest.raises(ReplayInputError, match="not a regular file"):
        ReplayFeed([tmp_path])
    with pytest.raises(ReplayInputError, match="symbol"):
        CsvSource(write(tmp_path, "...csv", ROWS_7))
    with pytest.raises(ReplayInputError, match="no files"):
        ReplayFeed([])
    assert symbol_from_path(Path("ethusdt-5m-2022.csv")) == "ETHUSDT"


def test_async_batches_deliver_everything_at_max_speed(tmp_path):
    feed = ReplayFeed([write(tmp_path, "BTCUSDT-1m-x.csv", ROWS_7)], batch_size=3)

    async def collect():
        out = []
        async for batch in feed.batches():
            assert len(batch) <= 3
            out.extend(batch)
        return out

    got = asyncio.run(collect())
    assert len([e for e in got if isinstance(e, Tick)]) == 8


def test_paced_replay_follows_event_time(tmp_path):
    import time

    # two candles = 120 s of event time; at 600x that is 0.2 s of wall time
    feed = ReplayFeed([write(tmp_path, "BTCUSDT-1m-x.csv", ROWS_7)], speed=600.0)

    async def collect():
        n = 0
        async for batch in feed.batches():
            n += len(batch)
        return n

    started = time.monotonic()
    assert asyncio.run(collect()) == 9
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 2.0  # 105 s from first to last tick / 600 = 0.175 s


def test_a_file_that_is_not_csv_at_all_is_given_up_on(tmp_path):
    junk = write(tmp_path, "BTCUSDT-1m-junk.csv", b"\x00\x01garbage\n" * 10_000)
    feed = ReplayFeed([junk])
    assert not [e for e in events(feed) if isinstance(e, Tick)]
    assert feed.stats.bad_rows == 51  # fifty bad rows, then one line saying the rest is skipped
    assert "not a Binance CSV" in feed.stats.problems[-1].error


def test_a_paced_replay_skips_long_gaps_between_files(tmp_path):
    import time

    a = write(tmp_path, "BTCUSDT-1m-a.csv", ROWS_7)
    later = [r.replace("17000000", "17000864") for r in ROWS_7]  # the same candles, a day later
    b = write(tmp_path, "ETHUSDT-1m-b.csv", later)
    feed = ReplayFeed([a, b], speed=600.0)

    async def collect():
        n = 0
        async for batch in feed.batches():
            n += len(batch)
        return n

    started = time.monotonic()
    assert asyncio.run(collect()) == 18
    assert time.monotonic() - started < 2.0  # a day at 600x would be 144 seconds


def test_symbols_from_binance_and_freqtrade_file_names():
    assert symbol_from_path(Path("BTCUSDT-1m-2021-05-19.csv")) == "BTCUSDT"
    assert symbol_from_path(Path("ETHUSDT-5m-2025-10-10-futures.csv")) == "ETHUSDT"
    assert symbol_from_path(Path("BTC_USDT-1m.csv")) == "BTCUSDT"
    assert symbol_from_path(Path("ETH_USDT_USDT-5m-futures.csv")) == "ETHUSDT"
    assert symbol_from_path(Path("DOGEUSDT-aggTrades-2021-04-16.csv")) == "DOGEUSDT"
