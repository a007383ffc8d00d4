"""`spikeguard data fetch` against the fake Binance: the file replay reads, paging, resuming a
partial download, and bad arguments as one line with exit code 2.

The command runs as a child process (the real entry point) while the fake server answers in
this test's event loop, so the child is awaited, never waited for with a blocking call.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.conftest import REPO

DAY0 = int(datetime(2021, 5, 19, tzinfo=timezone.utc).timestamp() * 1000)
MIN = 60_000
CANDLES = 2_500  # three pages of klines


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.returncode, self.stdout, self.stderr = code, out, err


async def spikeguard(*args: str, stderr: int | None = None) -> Run:
    """The real command in a child process, awaited while the fake server answers."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console.cli", *args, cwd=REPO, env={**os.environ, "COLUMNS": "100"},
        stdout=asyncio.subprocess.PIPE, stderr=stderr if stderr is not None else asyncio.subprocess.PIPE)
    out, err = await child.communicate()
    return Run(child.returncode, out.decode(), (err or b"").decode())


def fetch_args(server, path: Path, *extra: str, symbol: str = "BTCUSDT", start: str = "2021-05-19",
               end: str = "2021-05-20T17:40") -> list[str]:
    return ["--set", f"binance.live.api_url=http://127.0.0.1:{server.port}/api", "data", "fetch", symbol,
            "--interval", "1m", "--start", start, "--end", end, "-o", str(path), *extra]


def crash_history(server) -> list[list]:
    """2,500 minutes of BTC: calm at 40,000, then 20% down in half an hour, then calm again."""
    closes = [40_000.0] * 1_200 + [40_000.0 * (1 - 0.2 * k / 30) for k in range(1, 31)] + [32_000.0] * 1_270
    return server.market.set_history("BTCUSDT", DAY0, closes)


def csv_lines(rows: list[list]) -> list[str]:
    return [",".join(str(v) for v in row) for row in rows]


async def test_data_fetch_writes_the_binance_csv_that_replay_reads_and_trips_on(fake_binance, tmp_path):
    rows = crash_history(fake_binance)
    target = tmp_path / "BTCUSDT-1m-2021-05-19.csv"
    run = await spikeguard(*fetch_args(fake_binance, target))
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # no progress bar when stderr is not a terminal
    assert ": 2500 candles written" in run.stdout
    assert target.read_text().splitlines() == csv_lines(rows)
    assert [len(r) for r in rows][:1] == [12]
    starts = [int(q["startTime"]) for q in fake_binance.market.kline_queries]
    assert starts == [DAY0, DAY0 + 1000 * MIN, DAY0 + 2000 * MIN]  # paged, each after the last
    replay = await spikeguard("replay", "--json", str(target))
    assert replay.returncode == 0, replay.stderr
    report = json.loads(replay.stdout)
    assert report["stats"]["ticks"] == 4 * CANDLES and report["stats"]["bad_rows"] == 0
    assert [(b["to"], b["trigger_type"]) for b in report["breaker"] if b["to"] == "TRIGGERED"][0] == (
        "TRIGGERED", "btc_dump_4h")


async def test_data_fetch_resumes_after_the_last_complete_row(fake_binance, tmp_path):
    rows = crash_history(fake_binance)
    target = tmp_path / "BTCUSDT-1m-2021-05-19.csv"
    first = await spikeguard(*fetch_args(fake_binance, target, end="2021-05-19T20:00"))
    assert first.returncode == 0, first.stderr
    assert target.read_text().splitlines() == csv_lines(rows[:1200])
    with target.open("a") as f:
        f.write(",".join(csv_lines(rows[1200:1201])[0].split(",")[:5]))  # a download killed mid-row
    fake_binance.market.kline_queries.clear()
    second = await spikeguard(*fetch_args(fake_binance, target))
    assert second.returncode == 0, second.stderr
    assert target.read_text().splitlines() == csv_lines(rows)  # the torn row replaced, nothing twice
    assert ": 1300 candles written" in second.stdout and "resumed after 2021-05-19T19:59" in second.stdout
    assert int(fake_binance.market.kline_queries[0]["startTime"]) == DAY0 + 1200 * MIN
    fake_binance.market.kline_queries.clear()
    again = await spikeguard(*fetch_args(fake_binance, target))
    assert again.returncode == 0 and ": 0 candles written" in again.stdout
    assert fake_binance.market.kline_queries == []
    assert target.read_text().splitlines() == csv_lines(rows)


async def test_data_fetch_writes_only_closed_candles(fake_binance, tmp_path):
    target = tmp_path / "BTCUSDT-1m-now.csv"
    now = fake_binance.now_ms()
    run = await spikeguard(*fetch_args(fake_binance, target, start=str(now - 10 * MIN), end=str(now + 10 * MIN)))
    assert run.returncode == 0, run.stderr
    last = int(target.read_text().splitlines()[-1].split(",")[6])
    assert last < fake_binance.now_ms()  # the candle in progress would change: it is left for the next run


async def test_a_failed_kline_request_is_retried(fake_binance, tmp_path):
    rows = crash_history(fake_binance)
    fake_binance.faults.add("klines_error:BTCUSDT", 503)
    target = tmp_path / "BTCUSDT-1m-2021-05-19.csv"
    run = await spikeguard(*fetch_args(fake_binance, target))
    assert run.returncode == 0, run.stderr
    assert target.read_text().splitlines() == csv_lines(rows)


async def test_an_ip_ban_stops_the_download_with_one_line(fake_binance, tmp_path):
    crash_history(fake_binance)
    fake_binance.faults.add("klines_error:BTCUSDT", 418)
    run = await spikeguard(*fetch_args(fake_binance, tmp_path / "BTCUSDT-1m.csv"))
    assert run.returncode == 1
    assert len(run.stderr.splitlines()) == 1 and "418" in run.stderr and "Traceback" not in run.stderr


async def test_a_malformed_kline_is_counted_and_skipped_never_written(fake_binance, tmp_path):
    rows = crash_history(fake_binance)
    fake_binance.faults.add("klines_malformed:BTCUSDT")
    target = tmp_path / "BTCUSDT-1m-2021-05-19.csv"
    run = await spikeguard(*fetch_args(fake_binance, target))
    assert run.returncode == 0, run.stderr
    assert target.read_text().splitlines() == csv_lines(rows[1:])
    assert run.stderr.count("\n") == 1 and "1 malformed" in run.stderr


async def test_the_progress_bar_shows_on_a_terminal(fake_binance, tmp_path):
    crash_history(fake_binance)
    leader, follower = pty.openpty()
    try:
        run = await spikeguard(*fetch_args(fake_binance, tmp_path / "BTCUSDT-1m.csv"), stderr=follower)
        os.close(follower)
        follower = -1
        shown = b""
        while chunk := _read_pty(leader):
            shown += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert run.returncode == 0
    assert b"BTCUSDT" in shown and b"2500" in shown


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO once the child's end is closed and everything was read
        return b""


# ---------------------------------------------------------------------------- bad arguments
BAD = {
    "lower-case symbol": dict(symbol="btcusdt"),
    "no quote asset": dict(symbol="BITCOIN"),
    "unknown interval": dict(interval="7x"),
    "a month is no fixed interval": dict(interval="1M"),
    "start not a date": dict(start="yesterday"),
    "end not a date": dict(end="2021-13-45"),
    "end before start": dict(start="2021-05-20", end="2021-05-19"),
    "before Bitcoin": dict(start="2001-01-01"),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_arguments_are_one_line_and_exit_2(fake_binance, tmp_path, case):
    given = BAD[case]
    args = fetch_args(fake_binance, tmp_path / "BTCUSDT-1m.csv", symbol=given.get("symbol", "BTCUSDT"),
                      start=given.get("start", "2021-05-19"), end=given.get("end", "2021-05-20"))
    if "interval" in given:
        args[args.index("--interval") + 1] = given["interval"]
    await _refused(args)
    assert not (tmp_path / "BTCUSDT-1m.csv").exists()
    assert fake_binance.market.kline_queries == []


async def _refused(args: list[str]) -> Run:
    run = await spikeguard(*args)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert run.stdout == "" and len(run.stderr.splitlines()) == 1 and "Traceback" not in run.stderr
    return run


async def test_missing_arguments_are_one_line_and_exit_2(fake_binance, tmp_path):
    full = fetch_args(fake_binance, tmp_path / "BTCUSDT-1m.csv")
    for flag in ("--start", "-o"):
        i = full.index(flag)
        await _refused(full[:i] + full[i + 2:])


async def test_a_symbol_the_exchange_does_not_list_is_one_line_and_exit_2(fake_binance, tmp_path):
    run = await _refused(fetch_args(fake_binance, tmp_path / "NOPEUSDT-1m.csv", symbol="NOPEUSDT"))
    assert "NOPEUSDT" in run.stderr and "Invalid symbol" in run.stderr


async def test_an_output_that_cannot_be_this_download_is_one_line_and_exit_2(fake_binance, tmp_path):
    crash_history(fake_binance)
    await _refused(fetch_args(fake_binance, tmp_path / "missing-dir" / "BTCUSDT-1m.csv"))
    five_minutes = tmp_path / "BTCUSDT-5m.csv"
    five_minutes.write_text(f"{DAY0},1,1,1,1,0,{DAY0 + 5 * MIN - 1},0,0,0,0,0\n")
    run = await _refused(fetch_args(fake_binance, five_minutes))
    assert "300 s candles" in run.stderr
    notes = tmp_path / "notes.csv"
    notes.write_text("these are my notes\n")
    await _refused(fetch_args(fake_binance, notes))
    earlier = tmp_path / "BTCUSDT-1m-earlier.csv"
    earlier.write_text(f"{DAY0 - 10 * MIN},1,1,1,1,0,{DAY0 - 9 * MIN - 1},0,0,0,0,0\n")
    await _refused(fetch_args(fake_binance, earlier))
    assert notes.read_text() == "these are my notes\n"  # refused files are left as they were
    assert fake_binance.market.kline_queries == []
