"""Hostile replay input through the real `spikeguard` command: each bad input is one line
(file and line for a data row), the rest of the replay is kept, and no traceback is shown.

The files are the real 2021-05-19 BTC crash, altered in one way each: what the breaker does
on them must be what it does on the original.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

CRASH = "BTCUSDT-1m-2021-05-19.csv"


def replay_json(*args: str) -> dict:
    result = run_cli("replay", "--json", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and "Traceback" not in result.stdout
    [line] = [line for line in result.stdout.splitlines() if line.strip()]
    return json.loads(line)


def refused(*args: str) -> str:
    """The one stderr line of a command refused as a usage error."""
    result = run_cli(*args)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def crash_lines(market_data) -> list[str]:
    return (market_data / CRASH).read_text().splitlines()


@pytest.fixture(scope="module")
def original(market_data) -> dict:
    return replay_json(str(market_data / CRASH))


def breaker_of(report: dict) -> list[dict]:
    return report["breaker"]


def spikes_of(report: dict) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "detection_latency_ms"} for s in report["spikes"]]


def altered(tmp_path: Path, lines: list[str], name: str = CRASH, *, row: int | None = None, column: int = 0,
            value: str = "", **write) -> Path:
    out = list(lines)
    if row is not None:
        fields = out[row].split(",")
        fields[column] = value
        out[row] = ",".join(fields)
    path = tmp_path / name
    newline = write.get("newline", "\n")
    path.write_bytes((write.get("bom", "") + newline.join(out) + newline).encode())
    return path


@pytest.mark.parametrize("column, value", [(2, "1e308"), (3, "1e-308"), (2, "1.7976931348623157e308")])
def test_one_absurd_price_is_a_bad_row_and_changes_nothing_else(tmp_path, crash_lines, original, column, value):
    path = altered(tmp_path, crash_lines, row=100, column=column, value=value)
    report = replay_json(str(path))
    st = report["stats"]
    assert st["bad_rows"] == 1 and st["ticks"] == original["stats"]["ticks"] - 4
    [bad] = st["bad_row_examples"]
    assert (bad["file"], bad["line"]) == (str(path), 101) and "not a plausible price" in bad["error"]
    assert breaker_of(report) == breaker_of(original)  # no "down 100.00%"
    assert spikes_of(report) == spikes_of(original)


def test_the_readable_report_names_the_bad_row_and_the_sources(tmp_path, crash_lines):
    path = altered(tmp_path, crash_lines, row=100, column=2, value="1e308")
    result = run_cli("replay", str(path), env={"COLUMNS": "400"})  # rich folds long paths at the width
    assert result.returncode == 0 and "Traceback" not in result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert f"{path}:101: high '1e308' is not a plausible price" in out
    assert f"{CRASH}: BTCUSDT 1m klines, times in ms, 2,879 rows, 1 bad" in out


@pytest.mark.parametrize("unit, scale", [("s", -1000), ("us", 1000), ("ns", 1_000_000)])
def test_every_timestamp_unit_replays_the_crash_the_same(tmp_path, crash_lines, original, unit, scale):
    def rescale(ms: str, end: bool = False) -> str:
        v = int(ms) + 1 if end else int(ms)
        v = v // -scale if scale < 0 else v * scale
        return str(v - 1 if end else v)

    lines = [crash_lines[0]]
    for line in crash_lines[1:]:
        f = line.split(",")
        f[0], f[6] = rescale(f[0]), rescale(f[6], end=True)
        lines.append(",".join(f))
    report = replay_json(str(altered(tmp_path, lines)))
    [src] = report["stats"]["sources"]
    assert src["time_unit"] == unit and src["bad_rows"] == 0 and src["rows"] == 2880
    assert breaker_of(report) == breaker_of(original)
    assert spikes_of(report) == spikes_of(original)


@pytest.mark.parametrize("value, fragment", [("9" * 5000, "5000 digits: longer than any timestamp"),
                                             ("1621339200", "not a time between 2009-01-03 and 2100"),
                                             ("1621339200000000000", "in this file's unit (ms)")])
def test_an_impossible_timestamp_is_one_bad_row(tmp_path, crash_lines, original, value, fragment):
    path = altered(tmp_path, crash_lines, row=5, column=0, value=value)
    report = replay_json(str(path))
    [bad] = report["stats"]["bad_row_examples"]
    assert bad["line"] == 6 and fragment in bad["error"] and len(bad["error"]) < 200
    assert report["stats"]["sources"][0]["time_unit"] == "ms"
    assert breaker_of(report) == breaker_of(original)


def test_an_excel_export_replays_like_the_original(tmp_path, crash_lines, original):
    report = replay_json(str(altered(tmp_path, crash_lines, bom="\ufeff", newline="\r\n")))
    assert report["stats"]["bad_rows"] == 0 and report["stats"]["ticks"] == original["stats"]["ticks"]
    assert breaker_of(report) == breaker_of(original)


def test_a_file_name_without_a_symbol_is_refused_unless_symbol_is_given(tmp_path, crash_lines, original):
    data = altered(tmp_path, crash_lines, name="data.csv")
    line = refused("replay", "--json", str(data))
    assert f"{data}: cannot tell the symbol" in line and "--symbol SYMBOL" in line
    report = replay_json("--symbol", "BTCUSDT", str(data))
    assert report["stats"]["symbols"] == ["BTCUSDT"]
    assert breaker_of(report) == breaker_of(original)  # the crash trips, as BTCUSDT


@pytest.mark.parametrize("argv, fragment", [
    (lambda data, other: ["--symbol", "btcusdt", data], "--symbol: 'btcusdt' is not a Binance symbol"),
    (lambda data, other: ["--symbol", "DATA", data], "--symbol: 'DATA' is not a Binance symbol"),
    (lambda data, other: ["--symbol", "BTCUSDT", data, other], "--symbol names the symbol of a single file; 2 files given"),
    (lambda data, other: [other, str(Path(other).parent / "." / Path(other).name)], "given twice"),
])
def test_bad_symbol_and_repeated_files_are_one_line(tmp_path, crash_lines, argv, fragment):
    data = str(altered(tmp_path, crash_lines, name="data.csv"))
    other = str(altered(tmp_path, crash_lines, name="ETHUSDT-1m-x.csv"))
    assert fragment in refused("replay", "--json", *argv(data, other))


def test_the_same_file_twice_is_refused_not_doubled(market_data):
    path = str(market_data / CRASH)
    assert "given twice: each file may be replayed once" in refused("replay", "--json", path, path)


def test_the_console_takes_symbol_for_a_replay_file(tmp_path, crash_lines):
    data = altered(tmp_path, crash_lines, name="data.csv")
    assert "give --symbol SYMBOL" in refused("console", "--feed", "replay", str(data))
    assert "is not a Binance symbol" in refused("console", "--feed", "replay", "--symbol", "btc", str(data))
    assert "only for --feed replay" in refused("console", "--feed", "sim", "--symbol", "BTCUSDT")
