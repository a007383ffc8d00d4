"""The real `spikeguard` command: help, the replay JSON contract, errors as one line."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.conftest import run_cli

SUBCOMMANDS = ("console", "replay", "simulate", "config", "db", "audit")


def test_help_lists_every_subcommand():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout
    for name in SUBCOMMANDS:
        sub = run_cli(name, "--help")
        assert sub.returncode == 0 and "usage: spikeguard" in sub.stdout


def _check_contract(report: dict) -> None:
    assert set(report) >= {"breaker", "spikes", "stats"}
    for row in report["breaker"]:
        assert set(row) >= {"time", "from", "to", "reason", "symbol", "epoch"}
        datetime.fromisoformat(row["time"].replace("Z", "+00:00"))
        assert row["time"].endswith("Z")
        assert row["from"] in ("SAFE", "WARNING", "TRIGGERED", "RECOVERING") and row["to"] != row["from"]
        assert isinstance(row["reason"], str) and isinstance(row["epoch"], int)
        assert row["symbol"] is None or isinstance(row["symbol"], str)
    epochs = [r["epoch"] for r in report["breaker"]]
    assert epochs == list(range(1, len(epochs) + 1))
    for s in report["spikes"]:
        assert set(s) >= {"time", "symbol", "type", "direction", "magnitude_pct", "timeframe_minutes", "confidence"}
        assert s["direction"] in ("pump", "dump") and 0 <= s["confidence"] <= 1
        assert isinstance(s["magnitude_pct"], float) and isinstance(s["timeframe_minutes"], int)
    st = report["stats"]
    assert isinstance(st["ticks"], int) and isinstance(st["bad_rows"], int)
    assert isinstance(st["wall_seconds"], float) and isinstance(st["ticks_per_second"], float)
    assert set(st["decision_latency_us"]) == {"p50", "p99", "max"}


def test_replay_json_is_exactly_one_object(market_data):
    result = run_cli("replay", "--json", str(market_data / "BTCUSDT-1m-2021-05-19.csv"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    report = json.loads(lines[0])
    _check_contract(report)
    assert report["stats"]["ticks"] == 2880 * 4
    tos = [r["to"] for r in report["breaker"]]
    assert "TRIGGERED" in tos
    first = next(r for r in report["breaker"] if r["to"] == "TRIGGERED")
    assert first["symbol"] == "BTCUSDT" and first["time"] <= "2021-05-19T12:54:59"


def test_replay_of_several_files_and_speed_factor(market_data):
    files = [str(market_data / n) for n in ("BTCUSDT-1m-2020-06-12-calm.csv", "ETHUSDT-1m-2020-06-12-calm.csv")]
    result = run_cli("replay", "--json", "--speed", "max", *files)
    report = json.loads(result.stdout)
    _check_contract(report)
    assert report["stats"]["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert report["breaker"] == []


def test_readable_report(market_data):
    result = run_cli("replay", str(market_data / "ETHUSDT-5m-2025-10-10-futures.csv"), env={"COLUMNS": "100"})
    assert result.returncode == 0
    for text in ("Circuit breaker", "TRIGGERED", "RECOVERING", "ticks/s", "decision latency"):
        assert text in result.stdout


def test_replay_reports_bad_rows_with_file_and_line(tmp_path):
    path = tmp_path / "BTCUSDT-1m-bad.csv"
    path.write_text("1700000000000,100,101,99,100.5,10,1700000059999\nthis,is,not,a,candle,at,all\n"
                    "1700000060000,100.5,100.6,98,98.5,20,1700000119999\n")
    result = run_cli("replay", "--json", str(path))
    report = json.loads(result.stdout)
    assert report["stats"]["bad_rows"] == 1 and report["stats"]["ticks"] == 8
    assert report["stats"]["bad_row_examples"][0]["line"] == 2
    assert report["stats"]["bad_row_examples"][0]["file"] == str(path)
    human = run_cli("replay", str(path), env={"COLUMNS": "120"})
    assert f"{path}:2" in human.stdout


@pytest.mark.parametrize("args, fragment", [
    (("replay",), "the following arguments are required: FILE"),
    (("replay", "--speed", "-3", "x.csv"), "speed must be 'max' or a positive number"),
    (("replay", "--speed", "nan", "x.csv"), "speed must be 'max' or a positive number"),
    (("replay", "/definitely/not/here/BTCUSDT-1m.csv"), "file not found"),
    (("simulate", "--scenario", "moon"), "unknown scenario"),
    (("simulate", "--minutes", "-5"), "minutes must be positive"),
    (("frobnicate",), "invalid choice"),
    (("--set", "oops", "config", "check"), "expected KEY=VALUE"),
])
def test_bad_arguments_are_one_line_exit_2(args, fragment):
    result = run_cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_flash_crash_trips_the_breaker():
    result = run_cli("simulate", "--scenario", "flash-crash", "--seed", "3", "--json")
    report = json.loads(result.stdout)
    _check_contract(report)
    assert "TRIGGERED" in [r["to"] for r in report["breaker"]]


def test_logs_go_to_the_file_and_never_hold_secrets(tmp_path, market_data):
    secret = "sk-THIS-IS-A-TEST-SECRET-0042"
    result = run_cli("--data-dir", str(tmp_path), "replay", "--json", str(market_data / "BTCUSDT-5m-2020-03-12.csv"),
                     env={"OPENAI_API_KEY": secret, "BINANCE_API_KEY": secret + "b"})
    assert result.returncode == 0
    log_file = tmp_path / "logs" / "spikeguard.log"
    text = log_file.read_text()
    assert "breaker SAFE -> WARNING" in text and "TRIGGERED" in text
    assert secret not in text and secret not in result.stdout and secret not in result.stderr
