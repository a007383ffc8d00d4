"""Replay input: every Binance layout we claim, and every malformed row a hostile file holds."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from core.events import SymbolEnded, Tick
from core.market.replay import CsvSource, ReplayFeed, ReplayInputError, symbol_from_path
from core.market.ticks import MAX_PRICE, MAX_QTY, MIN_PRICE

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


def ticks_of(feed: ReplayFeed) -> list[Tick]:
    return [e for e in events(feed) if isinstance(e, Tick)]


class VirtualClock:
    """The feed's pacing clock and sleep, in virtual seconds: pacing is checked, not timed."""

    def __init__(self, feed: ReplayFeed) -> None:
        self.now = 0.0
        feed.clock, feed.sleep = self, self.sleep

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.now += delay
        await asyncio.sleep(0)


async def released(feed: ReplayFeed) -> list[tuple[float, object]]:
    """Each event with the virtual time its batch was released at."""
    return [(feed.clock(), e) async for batch in feed.batches() for e in batch]


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
    feed = ReplayFeed([micro])
    ticks = ticks_of(feed)
    assert ticks[0].time_ms == 1700000000000 and ticks[1].time_ms == 1700000015000
    assert feed.describe_sources()[0]["time_unit"] == "us"


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
    for fragment in ("non-numeric", "not a plausible price", "not a plausible quantity", "inconsistent candle",
                     "columns", "not after"):
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


def test_paced_replay_releases_each_event_at_its_event_time(tmp_path):
    """Eight ticks 15 s apart at 600x: one every 25 ms of (virtual) wall time. How close real
    sleeps come to that is a figure of bench/feeds.py."""
    feed = ReplayFeed([write(tmp_path, "BTCUSDT-1m-x.csv", ROWS_7)], speed=600.0)
    clock = VirtualClock(feed)
    got = asyncio.run(released(feed))
    assert len(got) == 9
    first = got[0][1].time_ms
    for at, event in got:
        due = (event.time_ms - first) / 1000 / 600
        assert due - 0.002 <= at <= due + 1e-9, (event, at, due)  # never early, never held back
    assert clock.now == pytest.approx(105 / 600)


def test_a_file_that_is_not_csv_at_all_is_given_up_on(tmp_path):
    junk = write(tmp_path, "BTCUSDT-1m-junk.csv", b"\x00\x01garbage\n" * 10_000)
    feed = ReplayFeed([junk])
    assert not [e for e in events(feed) if isinstance(e, Tick)]
    assert feed.stats.bad_rows == 51  # fifty bad rows, then one line saying the rest is skipped
    assert "not a Binance CSV" in feed.stats.problems[-1].error


def test_a_paced_replay_skips_long_gaps_between_files(tmp_path):
    a = write(tmp_path, "BTCUSDT-1m-a.csv", ROWS_7)
    later = [r.replace("17000000", "17000864") for r in ROWS_7]  # the same candles, a day later
    b = write(tmp_path, "ETHUSDT-1m-b.csv", later)
    feed = ReplayFeed([a, b], speed=600.0)
    clock = VirtualClock(feed)
    assert len(asyncio.run(released(feed))) == 18
    assert clock.now == pytest.approx(2 * 105 / 600)  # each file's own 105 s; the day between is skipped


def test_symbols_from_binance_and_freqtrade_file_names():
    assert symbol_from_path(Path("BTCUSDT-1m-2021-05-19.csv")) == "BTCUSDT"
    assert symbol_from_path(Path("ETHUSDT-5m-2025-10-10-futures.csv")) == "ETHUSDT"
    assert symbol_from_path(Path("BTC_USDT-1m.csv")) == "BTCUSDT"
    assert symbol_from_path(Path("ETH_USDT_USDT-5m-futures.csv")) == "ETHUSDT"
    assert symbol_from_path(Path("DOGEUSDT-aggTrades-2021-04-16.csv")) == "DOGEUSDT"


# -- values outside the bounds of core/market/ticks.py --------------------------------
@pytest.mark.parametrize("column, value, fragment", [
    (2, "1e308", "high '1e308' is not a plausible price"),
    (3, "1e-308", "low '1e-308' is not a plausible price"),
    (2, "1.7976931348623157e308", "not a plausible price"),
    (4, "5e-324", "not a plausible price"),
    (3, "0", "not a plausible price"),
    (2, "1e10", "not a plausible price"),  # just past each bound
    (3, "9e-9", "not a plausible price"),
    (5, "1.1e16", "not a plausible quantity"),
    (5, "1e308", "volume '1e308' is not a plausible quantity"),
    (2, "9" * 5000, "not a plausible price"),  # float() reads it as inf
])
def test_an_implausible_value_is_a_bad_row_with_its_line(tmp_path, column, value, fragment):
    rows = ["1700000000000,100,101,99,100.5,10,1700000059999", "1700000060000,100.5,100.6,98,98.5,20,1700000119999",
            "1700000120000,98.5,99,98,98.7,5,1700000179999"]
    fields = rows[1].split(",")
    fields[column] = value
    rows[1] = ",".join(fields)
    path = write(tmp_path, "BTCUSDT-1m-x.csv", rows)
    feed = ReplayFeed([path])
    assert len(ticks_of(feed)) == 8  # rows 1 and 3: nothing else is lost
    [problem] = feed.stats.problems
    assert (problem.source, problem.line) == (str(path), 2)
    assert fragment in problem.error and len(problem.error) < 200


def test_no_row_of_the_real_market_files_is_outside_the_bounds(market_data):
    files = sorted(p for p in market_data.glob("*.csv") if p.name != "events.csv")
    assert len(files) >= 17
    for path in files:
        feed = ReplayFeed([path])
        ticks = ticks_of(feed)
        [src] = feed.describe_sources()
        rows = sum(1 for line in path.read_text().splitlines()[1:] if line.strip())
        assert (src["rows"], src["bad_rows"], src["time_unit"]) == (rows, 0, "ms"), path.name
        assert all(MIN_PRICE <= t.price <= MAX_PRICE and 0 <= t.qty <= MAX_QTY for t in ticks)
        # the margin: the bounds are orders of magnitude away from every real value
        assert MIN_PRICE * 100 < min(t.price for t in ticks) and max(t.price for t in ticks) * 1000 < MAX_PRICE
        assert max(t.qty for t in ticks) * 1000 < MAX_QTY


# -- timestamps -----------------------------------------------------------------------
def in_unit(rows: list[str], factor: int, divisor: int = 1) -> list[str]:
    """ROWS_7-style rows with open_time and close_time rescaled from ms."""
    out = []
    for r in rows:
        f = r.split(",")
        f[0] = str(int(f[0]) * factor // divisor)
        f[6] = str((int(f[6]) + 1) * factor // divisor - 1)
        out.append(",".join(f))
    return out


@pytest.mark.parametrize("unit, factor, divisor", [("s", 1, 1000), ("ms", 1, 1), ("us", 1000, 1),
                                                   ("ns", 1_000_000, 1)])
def test_the_timestamp_unit_is_detected_per_file_and_reported(tmp_path, unit, factor, divisor):
    reference = ticks_of(ReplayFeed([write(tmp_path, "BTCUSDT-1m-ms.csv", ROWS_7)]))
    feed = ReplayFeed([write(tmp_path, f"BTCUSDT-1m-{unit}.csv", in_unit(ROWS_7, factor, divisor))])
    assert ticks_of(feed) == reference  # seconds are no longer read as 1970 milliseconds
    assert feed.describe_sources()[0]["time_unit"] == unit and feed.stats.bad_rows == 0


def test_each_file_has_its_own_unit(tmp_path):
    a = write(tmp_path, "BTCUSDT-1m-a.csv", in_unit(ROWS_7, 1_000_000))
    b = write(tmp_path, "ETHUSDT-1m-b.csv", in_unit(ROWS_7, 1, 1000))
    feed = ReplayFeed([a, b])
    assert len(ticks_of(feed)) == 16
    assert [s["time_unit"] for s in feed.describe_sources()] == ["ns", "s"]


@pytest.mark.parametrize("open_time, fragment", [
    ("9" * 5000, "5000 digits: longer than any timestamp"),
    ("12345678901234567890", "20 digits"),
    ("1", "not a time between 2009-01-03 and 2100"),  # 1970
    ("1230940799999", "not a time between 2009-01-03 and 2100"),  # a millisecond before the genesis block
    ("4102444800001", "not a time between 2009-01-03 and 2100"),
    ("1700000000000000", "in this file's unit (ms)"),  # microseconds in a millisecond file
    ("-1700000000000", "is not a timestamp"),
    ("1.7e12", "is not a timestamp"),
    ("1_700_000_120_000", "is not a timestamp"),  # int() would take it
    ("١٧٠٠٠٠٠١٢٠٠٠٠", "is not a timestamp"),  # Arabic-Indic digits: int() would take them too
])
def test_a_timestamp_no_file_can_hold_is_a_bad_row(tmp_path, open_time, fragment):
    rows = [*ROWS_7, f"{open_time},100,101,99,100,1,1700000179999", "1700000180000,100,101,99,100,1,1700000239999"]
    path = write(tmp_path, "BTCUSDT-1m-t.csv", rows)
    feed = ReplayFeed([path])
    assert len(ticks_of(feed)) == 12
    [problem] = feed.stats.problems
    assert problem.line == 3 and fragment in problem.error and len(problem.error) < 200


@pytest.mark.parametrize("first", ["1,100,101,99,100.5,10,59999",  # 1970
                                   "1700000000,abc,101,99,100.5,10,1700000059"])  # seconds, but a bad price
def test_the_unit_comes_from_the_first_good_row(tmp_path, first):
    feed = ReplayFeed([write(tmp_path, "BTCUSDT-1m-late.csv", [first, *in_unit(ROWS_7, 1000)])])
    assert len(ticks_of(feed)) == 8
    assert [p.line for p in feed.stats.problems] == [1]
    assert feed.describe_sources()[0]["time_unit"] == "us"


def test_aggtrades_timestamps_are_checked_too(tmp_path):
    rows = ["1,100.5,0.2,10,11,1700000000000000,true,true", "2,100.7,0.1,12,12,99999999999999999999,false,true",
            "3,100.6,0.1,13,13,1700000000500000,false,true"]
    feed = ReplayFeed([write(tmp_path, "BTCUSDT-aggTrades-us.csv", rows)])
    assert [t.time_ms for t in ticks_of(feed)] == [1700000000000, 1700000000500]
    assert [p.line for p in feed.stats.problems] == [2]
    assert feed.describe_sources()[0]["time_unit"] == "us"


# -- encodings and line ends ----------------------------------------------------------
@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("newline", ["\r\n", "\r", "\n"])
def test_an_excel_export_with_a_bom_and_any_line_ends_is_read(tmp_path, header, newline):
    lines = (["open_time,open,high,low,close,volume,close_time"] if header else []) + ROWS_7
    path = tmp_path / "BTCUSDT-1m-excel.csv"
    path.write_bytes(("\ufeff" + newline.join(lines) + newline).encode("utf-8"))
    feed = ReplayFeed([path])
    assert [t.price for t in ticks_of(feed)] == [100, 99, 101, 100.5, 100.5, 100.6, 98, 98.5]
    assert feed.stats.bad_rows == 0


# -- which symbol, which files --------------------------------------------------------
def test_a_file_name_without_a_symbol_needs_symbol(tmp_path):
    data = write(tmp_path, "data.csv", ROWS_7)
    with pytest.raises(ReplayInputError, match=r"data\.csv: cannot tell the symbol .* give --symbol SYMBOL"):
        ReplayFeed([data])
    feed = ReplayFeed([data], symbol="BTCUSDT")
    assert {t.symbol for t in ticks_of(feed)} == {"BTCUSDT"}
    assert feed.symbols == ("BTCUSDT",) and feed.describe_sources()[0]["symbol"] == "BTCUSDT"


@pytest.mark.parametrize("name", ["data.csv", "export-1m.csv", "BTC-1m.csv", "candles_2021.csv", "USDT-1m.csv"])
def test_names_that_do_not_end_in_a_quote_asset_are_refused(name):
    with pytest.raises(ReplayInputError, match="cannot tell the symbol"):
        symbol_from_path(Path(name))


@pytest.mark.parametrize("symbol", ["btcusdt", "DATA", "BTC-USDT", "BTCUSDT\n", "", "USDT", "A" * 30 + "USDT"])
def test_symbol_must_be_an_upper_case_binance_symbol(tmp_path, symbol):
    with pytest.raises(ReplayInputError, match="--symbol: .* is not a Binance symbol"):
        ReplayFeed([write(tmp_path, "data.csv", ROWS_7)], symbol=symbol)


def test_symbol_names_one_file_only(tmp_path):
    a, b = write(tmp_path, "a.csv", ROWS_7), write(tmp_path, "b.csv", ROWS_7)
    with pytest.raises(ReplayInputError, match="single file; 2 files given"):
        ReplayFeed([a, b], symbol="BTCUSDT")


def test_a_file_given_twice_is_refused_by_any_name(tmp_path, monkeypatch):
    path = write(tmp_path, "BTCUSDT-1m-x.csv", ROWS_7)
    (tmp_path / "sub").mkdir()
    link = tmp_path / "BTCUSDT-1m-link.csv"
    link.symlink_to(path)
    hard = tmp_path / "BTCUSDT-1m-hard.csv"
    os.link(path, hard)
    monkeypatch.chdir(tmp_path / "sub")
    for again in (path, Path("..") / path.name, link, hard):
        with pytest.raises(ReplayInputError, match="each file may be replayed once"):
            ReplayFeed([path, again])
    with pytest.raises(ReplayInputError, match="given twice"):
        ReplayFeed([path, Path("..") / path.name])


def test_sources_report_what_each_file_held(tmp_path):
    a = write(tmp_path, "BTCUSDT-5m-a.csv", [*in_unit(ROWS_7, 1, 1000), "garbage,row"])
    b = write(tmp_path, "DOGEUSDT-aggTrades-b.csv", ["1,0.25,100,10,11,1700000000000,true,true"])
    feed = ReplayFeed([a, b])
    events(feed)
    assert feed.describe_sources() == [
        {"file": str(a), "symbol": "BTCUSDT", "market": "spot", "kind": "kline", "interval": "5m",
         "time_unit": "s", "rows": 2, "bad_rows": 1},
        {"file": str(b), "symbol": "DOGEUSDT", "market": "spot", "kind": "aggtrades", "interval": None,
         "time_unit": "ms", "rows": 1, "bad_rows": 0},
    ]


def test_the_same_data_under_another_name_is_not_counted_twice(tmp_path):
    a = write(tmp_path, "BTCUSDT-1m-a.csv", ROWS_7)
    copy = write(tmp_path, "BTCUSDT-1m-copy.csv", ROWS_7)
    feed = ReplayFeed([a, copy])
    assert ticks_of(feed) == ticks_of(ReplayFeed([a]))
    (problem,) = feed.stats.problems
    assert problem.source == str(copy) and "8 ticks" in problem.error and "overlap BTCUSDT-1m-a.csv" in problem.error


def test_consecutive_files_of_one_symbol_play_as_one_stream_that_ends_once(tmp_path):
    day1 = write(tmp_path, "BTCUSDT-1m-day1.csv", ROWS_7)
    day2 = write(tmp_path, "BTCUSDT-1m-day2.csv", ["1700000120000,98.5,99,98,98.7,5,1700000179999"])
    out = events(ReplayFeed([day2, day1]))
    ended = [e for e in out if isinstance(e, SymbolEnded)]
    assert ended == [SymbolEnded("BTCUSDT", 1_700_000_120_000 + 45_000)] and out[-1] == ended[0]
    assert len([e for e in out if isinstance(e, Tick)]) == 12


def test_spot_and_futures_of_one_symbol_are_not_an_overlap(tmp_path):
    spot = write(tmp_path, "ETHUSDT-1m-spot.csv", ROWS_7)
    futures = write(tmp_path, "ETHUSDT-1m-futures.csv", ROWS_7)
    feed = ReplayFeed([spot, futures])
    assert len(ticks_of(feed)) == 16 and not feed.stats.problems


def test_a_new_speed_paces_from_the_next_event_without_a_jump(tmp_path):
    """At 600x the ticks come 25 ms apart; slowed to 150x after the fourth, 100 ms apart."""
    feed = ReplayFeed([write(tmp_path, "BTCUSDT-1m-x.csv", ROWS_7)], speed=600.0)
    clock = VirtualClock(feed)

    async def run():
        out = []
        async for batch in feed.batches():
            for e in batch:
                out.append((clock.now, e))
                if len(out) == 4:
                    feed.set_speed(150.0)
        return out

    got = asyncio.run(run())
    # (virtual seconds per market second) between consecutive events of different times
    pace = [round((b[0] - a[0]) / ((b[1].time_ms - a[1].time_ms) / 1000), 6)
            for a, b in zip(got, got[1:]) if b[1].time_ms != a[1].time_ms]
    fast, slow = round(1 / 600, 6), round(1 / 150, 6)
    assert pace[:3] == [fast] * 3 and pace[-3:] == [slow] * 3, pace
    assert len(pace) == 7 and set(pace) == {fast, slow}, pace  # no jump, no catch-up
    feed.set_speed(0)  # max speed is not a pace: refused
    assert feed.speed == 150.0
