"""The flight recorder: a record per TRIGGERED in the journal, shown and exported, and the
exported pack replays the trip at the same time, for the same reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

from core.config import ConfigError, load_config
from core.headless import run_headless
from core.incident import IncidentError, decode, encode
from core.journal import verify
from core.market.replay import ReplayFeed
from core.session import Session
from core.trading.orders import Order, OrderType, Side
from tests.conftest import MARKET_DATA, run_cli
from tests.helpers import ListFeed, path

MIN = 60_000


def _replay(settings, files, db=None) -> dict:
    return asyncio.run(run_headless(settings, ReplayFeed(files), db_path=db, journal=db is not None))[1]


def _records(db: Path) -> list[dict]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return [decode(r[0]) for r in con.execute("SELECT record FROM incidents ORDER BY id")]


@pytest.fixture(scope="module")
def crash_journal(tmp_path_factory):
    settings = load_config(env={}, dotenv_paths=[]).settings
    db = tmp_path_factory.mktemp("incident") / "journal.db"
    report = _replay(settings, [MARKET_DATA / "BTCUSDT-5m-2020-03-12.csv"], db)
    return db, report


def test_every_trip_leaves_a_self_contained_record(crash_journal):
    db, report = crash_journal
    trips = [r for r in report["breaker"] if r["to"] == "TRIGGERED"]
    records = _records(db)
    assert len(records) == len(trips) >= 1
    rec = records[0]
    assert rec["trigger"]["time"] == trips[0]["time"] and rec["trigger"]["reason"] == trips[0]["reason"]
    assert rec["trigger"]["trigger_type"] == trips[0]["trigger_type"]
    tape = rec["tapes"]["BTCUSDT"]
    trip_ms = rec["trigger"]["time_ms"]
    assert tape["ticks"][-1][0] == trip_ms  # the crossing tick itself
    assert tape["ticks"][-2][0] - tape["ticks"][0][0] <= 120 * MIN  # two hours of raw ticks before it...
    assert tape["bars"] and tape["bars"][-1][0] < tape["ticks"][0][0]  # ...and whole minutes before them
    assert trip_ms - tape["bars"][0][0] <= (1440 + 121) * MIN
    assert rec["windows"]["BTCUSDT"]["240m"]["drop_percent"] >= 12.0
    assert [t["to"] for t in rec["transitions"]][:2] == ["WARNING", "TRIGGERED"]  # the warning before it too
    assert rec["circuit_breaker"]["slow_crash"]["horizons"]["4h"]["trigger_percent"] == 12.0
    assert rec["closed"]["why"]
    assert verify(db).ok


def test_the_exported_pack_replays_the_trip_bit_for_bit(crash_journal, tmp_path):
    db, report = crash_journal
    out = tmp_path / "pack"
    run = run_cli("incident", "export", "1", "--db", str(db), "--out", str(out))
    assert run.returncode == 0, run.stderr
    files = sorted(out.glob("*.csv"))
    assert {f.name for f in files} == {"BTCUSDT-1m-before.csv", "BTCUSDT-aggTrades-incident.csv"}
    settings = load_config(config_file=out / "config.yaml", env={}, dotenv_paths=[]).settings
    again = _replay(settings, files)
    first = next(r for r in again["breaker"] if r["to"] == "TRIGGERED")
    original = next(r for r in report["breaker"] if r["to"] == "TRIGGERED")
    assert {k: first[k] for k in ("time", "reason", "trigger_type", "symbol", "from")} == {
        k: original[k] for k in ("time", "reason", "trigger_type", "symbol", "from")}
    assert again["stats"]["bad_rows"] == 0


def test_show_and_list_tell_it_with_a_chart(crash_journal):
    db, _ = crash_journal
    listed = run_cli("incident", "list", "--db", str(db))
    assert listed.returncode == 0 and "btc_dump_4h" in listed.stdout and " 1  2020-03-12" in listed.stdout
    shown = run_cli("incident", "show", "1", "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "TRIGGERED 2020-03-12T10:42:30" in text and "windows at the trip:" in text
    assert "drawdown from its running high" in text and "█" in text
    marks = text.splitlines()[-1]
    assert "W" in marks.split("W warning")[0] and "T" in marks.split("W warning")[0]  # transitions on the axis


async def test_the_record_holds_the_policy_s_sells_and_the_halt_s_cancels(tmp_path):
    db = tmp_path / "j.db"
    s = Session(load_config(env={}, dotenv_paths=[]).settings, ListFeed(), journal_path=db)
    await s.open_journal(db)
    try:
        s.engine.process(path("BTCUSDT", [(0, 100_000.0), (10, 100_000.0)]))
        s.engine.process(path("ETHUSDT", [(0, 3_000.0), (10, 3_000.0)]))
        await s.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.2))
        await s.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity=0.1, price=2_950.0))
        s.force_trigger("operator saw it coming")
        for _ in range(5):
            await asyncio.sleep(0)
        await s.settle()
    finally:
        await s.close()
    [rec] = _records(db)
    assert rec["trigger"]["actor"] == "operator" and rec["closed"]["why"] == "the session ended"
    assert [a["kind"] for a in rec["policy_actions"]] == ["cut"]
    sells = [o for o in rec["orders"] if o["origin"] == "policy" and o["side"] == "SELL"]
    assert sells and all(o["reduce_only"] for o in sells)
    cancelled = [o for o in rec["orders"] if o["status"] == "CANCELED"]
    assert [(o["type"], o["price"]) for o in cancelled] == [("LIMIT", 2_950.0)]
    assert any("TRIGGERED" in line[2] for line in rec["reasoning"])


def test_the_tick_cap_bounds_memory_and_says_so(tmp_path):
    settings = load_config(env={}, dotenv_paths=[], overrides=["flight_recorder.max_ticks_per_symbol=1000"]).settings
    s = Session(settings, ListFeed())
    s.engine.process(path("BTCUSDT", [(0, 100.0), (60, 100.0), (70, 84.0)], step_ms=500))  # 8,400 ticks
    assert s.breaker.status.value == "TRIGGERED"
    s.recorder.close("test", s.engine.now_ms())
    [rec] = s.incidents_unjournaled
    tape = rec["tapes"]["BTCUSDT"]
    assert tape["truncated"] and len(tape["ticks"]) <= 1001
    assert len(s.recorder.tapes["BTCUSDT"].ticks) <= 1000


def test_records_compress_and_a_damaged_one_is_refused_on_one_line():
    rec = {"version": 1, "tapes": {"BTCUSDT": {"ticks": [[i * 1000, 100.0 + i % 7, 0.5] for i in range(5000)]}}}
    text = encode(rec)
    assert decode(text) == rec and len(text) < len(json.dumps(rec)) / 3
    for bad in ("not base64!", encode({"version": 99}), "aGVsbG8="):
        with pytest.raises(IncidentError) as exc:
            decode(bad)
        assert "\n" not in str(exc.value)


def test_a_tampered_record_breaks_the_chain(crash_journal, tmp_path):
    db, _ = crash_journal
    copy = tmp_path / "copy.db"
    copy.write_bytes(db.read_bytes())
    with contextlib.closing(sqlite3.connect(copy)) as con:
        con.execute("UPDATE incidents SET record = ? WHERE id = 1", (encode({"version": 1, "forged": True}),))
        con.commit()
    result = verify(copy)
    assert not result.ok and result.first_bad["table"] == "incidents" and result.first_bad["id"] == 1


def test_a_session_without_the_recorder_records_nothing(tmp_path):
    settings = load_config(env={}, dotenv_paths=[], overrides=["flight_recorder.enabled=false"]).settings
    db = tmp_path / "j.db"
    _replay(settings, [MARKET_DATA / "BTCUSDT-5m-2020-03-12.csv"], db)
    assert _records(db) == []


@pytest.mark.parametrize("args, words", [
    (["show"], "needs an ID"),
    (["export", "1"], "needs --out"),
    (["show", "99"], "no incident 99"),
    (["list", "3"], "takes no ID"),
])
def test_incident_commands_refuse_bad_input_on_one_line(crash_journal, args, words):
    db, _ = crash_journal
    run = run_cli("incident", *args, "--db", str(db))
    assert run.returncode == 2 and words in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_incident_commands_on_a_missing_journal_a_full_folder_and_a_damaged_row(crash_journal, tmp_path):
    db, _ = crash_journal
    run = run_cli("incident", "list", "--db", str(tmp_path / "nope.db"))
    assert run.returncode == 2 and "no journal here" in run.stderr
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("mine")
    run = run_cli("incident", "export", "1", "--db", str(db), "--out", str(full))
    assert run.returncode == 2 and "not an empty folder" in run.stderr and (full / "x").read_text() == "mine"
    broken = tmp_path / "broken.db"
    broken.write_bytes(db.read_bytes())
    with contextlib.closing(sqlite3.connect(broken)) as con:
        con.execute("UPDATE incidents SET record = 'garbage' WHERE id = 1")
        con.commit()
    run = run_cli("incident", "show", "1", "--db", str(broken))
    assert run.returncode == 2 and "damaged" in run.stderr and "Traceback" not in run.stderr


def test_a_bad_recorder_setting_names_its_key():
    with pytest.raises(ConfigError) as exc:
        load_config(env={}, dotenv_paths=[], overrides=["flight_recorder.ticks_minutes=10"])
    assert "flight_recorder.ticks_minutes" in str(exc.value) and "\n" not in str(exc.value)
