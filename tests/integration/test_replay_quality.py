"""Quality on real crashes, pumps and calm days (../shared/data/market).

Expectations come from the independent labeller (../shared/tools/crashlabels.py) and
from events.csv, never from this project's own output. Each file is replayed alone with
the default configuration.
"""

from __future__ import annotations

import asyncio
import csv
from collections import Counter
from datetime import datetime

import pytest

from core.headless import run_headless
from core.market.replay import ReplayFeed
from tests.conftest import MARKET_DATA

REFERENCE_SYMBOLS = ("BTCUSDT", "ETHUSDT")
KLINE_FILES = sorted(p.name for p in MARKET_DATA.glob("*.csv") if p.name != "events.csv")
_cache: dict[str, dict] = {}


def replay(settings, name: str) -> dict:
    if name not in _cache:
        _cache[name] = asyncio.run(run_headless(settings, ReplayFeed([MARKET_DATA / name])))[1]
    return _cache[name]


def _ts(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


@pytest.mark.parametrize("name", [n for n in KLINE_FILES if n.split("-")[0] in REFERENCE_SYMBOLS])
def test_breaker_follows_the_independent_labels(settings, crash_labels, name):
    label = crash_labels[name]
    report = replay(settings, name)
    states = [(row["to"], _ts(row["time"])) for row in report["breaker"]]
    triggered = [t for s, t in states if s == "TRIGGERED"]
    warned = [t for s, t in states if s == "WARNING"]
    if label["trigger_15_60_by"]:
        deadline = _ts(label["trigger_15_60_by"].replace("Z", "+00:00"))
        assert triggered, f"{name}: never TRIGGERED, labeller says the 15%/60m drop was reached by {deadline}"
        assert triggered[0] <= deadline, f"{name}: TRIGGERED at {triggered[0]}, after the candle close {deadline}"
    else:
        assert not triggered, f"{name}: TRIGGERED at {triggered} but the drop peaked at {label['max_drop_60m']}%"
        warn_by = [label[k] for k in ("warn_10_60_by", "warn_5_5_by") if label[k]]
        if warn_by:
            deadline = min(_ts(w) for w in warn_by)
            assert warned, f"{name}: never WARNING although the labeller crossed a warning level by {deadline}"
            assert warned[0] <= deadline, f"{name}: WARNING at {warned[0]}, after {deadline}"
        else:
            assert states == [], f"{name}: expected SAFE throughout, got {report['breaker']}"


def test_the_issue_named_crashes_trigger_in_time(settings):
    expected = {
        "BTCUSDT-5m-2020-03-12.csv": "2020-03-12T10:49:59+00:00",
        "BTCUSDT-1m-2021-05-19.csv": "2021-05-19T12:54:59+00:00",
        "ETHUSDT-5m-2025-10-10-futures.csv": "2025-10-10T21:24:59+00:00",
    }
    for name, by in expected.items():
        report = replay(settings, name)
        first = next(_ts(r["time"]) for r in report["breaker"] if r["to"] == "TRIGGERED")
        assert first <= datetime.fromisoformat(by), name


@pytest.mark.parametrize("name", ["BTCUSDT-1m-2021-04-18.csv", "BTCUSDT-1m-2024-08-05.csv",
                                  "ETHUSDT-1m-2021-12-04.csv", "ETHUSDT-5m-2022-11-08.csv"])
def test_near_misses_warn_but_never_trigger(settings, name):
    report = replay(settings, name)
    tos = [r["to"] for r in report["breaker"]]
    assert "WARNING" in tos
    assert "TRIGGERED" not in tos


@pytest.mark.parametrize("name", [n for n in KLINE_FILES if n.endswith("-calm.csv")])
def test_calm_windows_stay_safe_and_quiet(settings, name):
    report = replay(settings, name)
    assert report["breaker"] == [], f"{name}: {report['breaker']}"
    per_day = Counter((s["symbol"], s["time"][:10]) for s in report["spikes"])
    assert all(n <= 2 for n in per_day.values()), f"{name}: too many alerts per symbol-day: {per_day}"


def _labelled_moves() -> list[dict]:
    with (MARKET_DATA / "events.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if r["symbol"] in ("DOGEUSDT", "LUNAUSDT") and abs(float(r["magnitude_pct"])) >= 10]


@pytest.mark.parametrize("event", _labelled_moves(), ids=lambda r: f"{r['file']}:{r['kind']}:{r['start_utc']}")
def test_scanner_flags_every_labelled_pump_and_dump(settings, event):
    report = replay(settings, event["file"])
    start = datetime.fromisoformat(event["start_utc"] + ":00+00:00")
    end = datetime.fromisoformat(event["trough_or_peak_utc"] + ":59.999+00:00")
    direction = "pump" if event["kind"] == "pump" else "dump"
    hits = [s for s in report["spikes"] if s["direction"] == direction and start <= _ts(s["time"]) <= end]
    assert hits, (f"{event['file']}: no {direction} flagged between {start} and {end}; flagged: "
                  f"{[(s['time'], s['direction']) for s in report['spikes'] if start <= _ts(s['time']) <= end]}")
    wrong = [s for s in hits if s["symbol"] != event["symbol"]]
    assert not wrong


def test_replay_is_clean_on_every_real_file(settings):
    for name in KLINE_FILES:
        report = replay(settings, name)
        assert report["stats"]["bad_rows"] == 0, name
        assert report["stats"]["ticks"] > 0, name
