"""The flight recorder: a record per TRIGGERED in the journal, shown and exported, and the
exported pack replays the trip at the same time, for the same reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from core.config import ConfigError, load_config
from core.events import Actor
from core.headless import run_headless
from core.incident import IncidentError, decode, encode
from core.journal import Journal, verify
from core.market.replay import ReplayFeed
from core.session import Session
from core.trading.orders import Order, OrderType, Side
from tests.conftest import MARKET_DATA, run_cli
from tests.helpers import MIN, T0, ListFeed, path

BTC_2021 = MARKET_DATA / "BTCUSDT-1m-2021-05-19.csv"
DOGE_2021 = MARKET_DATA / "DOGEUSDT-1m-2021-05-19.csv"
BTC_2020 = MARKET_DATA / "BTCUSDT-5m-2020-03-12.csv"
# circuit_breaker_events columns that differ between two journals of the same trip
_CHAIN = {"id", "chain_seq", "prev_hash", "row_hash"}


def _settings(*overrides: str, config_file: Path | None = None):
    return load_config(config_file=config_file, env={}, dotenv_paths=[], overrides=list(overrides)).settings


def _replay(settings, files, db=None) -> dict:
    return asyncio.run(run_headless(settings, ReplayFeed(files), db_path=db, journal=db is not None))[1]


def _records(db: Path) -> list[dict]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return [decode(r[0]) for r in con.execute("SELECT record FROM incidents ORDER BY id")]


def _trip_row(db: Path) -> dict:
    """The journal's row of the first TRIGGERED, without its ids and chain columns."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.row_factory = sqlite3.Row
        row = con.execute("SELECT * FROM circuit_breaker_events WHERE breaker_status = 'TRIGGERED' "
                          "ORDER BY id LIMIT 1").fetchone()
    return {k: row[k] for k in row.keys() if k not in _CHAIN}


def _sql(db: Path, statement: str, params: tuple = ()) -> None:
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute(statement, params)
        con.commit()


def _copy(db: Path, to: Path) -> Path:
    to.write_bytes(db.read_bytes())
    return to


@pytest.fixture(scope="module")
def journals(tmp_path_factory):
    """(journal, replay report) of a real crash, per data set, made once."""
    made: dict[str, tuple[Path, dict]] = {}

    def get(name: str, *files: Path) -> tuple[Path, dict]:
        if name not in made:
            db = tmp_path_factory.mktemp(f"incident-{name}") / "journal.db"
            made[name] = db, _replay(_settings(), list(files), db)
        return made[name]

    return get


@pytest.fixture
def crash_journal(journals):
    return journals("2021", BTC_2021)


# ---------------------------------------------------------------------------- the record
def test_every_trip_leaves_a_self_contained_record(crash_journal):
    db, report = crash_journal
    trips = [r for r in report["breaker"] if r["to"] == "TRIGGERED"]
    records = _records(db)
    assert len(records) == len(trips) >= 2  # the trip at 11:28 and the new low at 12:48
    rec = records[0]
    assert rec["trigger"]["time"] == trips[0]["time"] == "2021-05-19T11:28:15.000Z"
    assert rec["trigger"]["reason"] == trips[0]["reason"] and rec["trigger"]["trigger_type"] == "btc_dump_24h"
    assert rec["trigger"]["details"]["window_minutes"] == 1440  # the rule that fired, with its numbers
    tape = rec["tapes"]["BTCUSDT"]
    trip_ms, close_ms = rec["trigger"]["time_ms"], rec["closed"]["time_ms"]
    assert rec["closed"]["why"] == "after_minutes passed" and close_ms == trip_ms + 5 * MIN
    times = [t for t, _, _ in tape["ticks"]]
    assert trip_ms in times  # the crossing tick itself...
    assert times[0] >= trip_ms - 120 * MIN and times[0] % MIN == 0  # ...two hours of raw ticks before it...
    assert trip_ms < times[-1] <= close_ms  # ...and what followed, to the close
    assert not tape["truncated"] and tape["raw_from"] == "2021-05-19T09:29:00.000Z"
    bars = tape["bars"]
    assert bars and bars[-1][0] + MIN == times[0]  # whole minutes before the raw ticks, up to them
    assert times[0] - bars[0][0] <= 1440 * MIN + MIN
    assert rec["windows"]["BTCUSDT"]["1440m"]["drop_percent"] >= 16.0
    assert [t["to"] for t in rec["transitions"]] == ["WARNING", "SAFE", "WARNING", "TRIGGERED"]
    assert rec["circuit_breaker"]["slow_crash"]["horizons"]["24h"]["trigger_percent"] == 16.0
    assert any("TRIGGERED" in text for _, _, text in rec["reasoning"])
    assert rec["policy_actions"] == [] and rec["orders"] == []  # nothing was held: nothing to cut or cancel
    assert records[1]["trigger"]["reason"] == "BTCUSDT made a new low while recovering"
    assert [t["to"] for t in records[1]["transitions"]][-2:] == ["RECOVERING", "TRIGGERED"]
    assert verify(db).ok


def test_the_journal_reads_its_incidents(crash_journal, tmp_path):
    db, _ = crash_journal

    async def read():
        j = await Journal.open(_copy(db, tmp_path / "j.db"))
        try:
            return await j.incidents(), await j.incident(1), await j.incident(99)
        finally:
            await j.close()

    listed, one, missing = asyncio.run(read())
    assert [r["id"] for r in listed] == [1, 2] and listed[0]["trigger_type"] == "btc_dump_24h"
    assert "record" not in listed[0] and listed[0]["size"] > 1000
    assert decode(one["record"])["trigger"]["time"] == one["time"] and missing is None


async def test_the_record_holds_the_policy_s_sells_and_the_halt_s_cancels(tmp_path):
    db = tmp_path / "j.db"
    s = Session(_settings(), ListFeed(), journal_path=db)
    await s.open_journal(db)
    try:
        s.engine.process(path("BTCUSDT", [(0, 100_000.0), (10, 100_000.0)]))
        s.engine.process(path("ETHUSDT", [(0, 3_000.0), (10, 3_000.0)]))
        await s.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.2))
        early = await s.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity=0.1,
                                          price=2_980.0))
        await s.gate.cancel(early.client_order_id, "the operator changed their mind")  # before the trip: not in it
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
    shown = run_cli("incident", "show", "1", "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    assert "orders cancelled: 1" in shown.stdout and "ETHUSDT BUY LIMIT 0.1 @ 2950" in shown.stdout
    assert "policy actions: 1" in shown.stdout and "policy orders: 1" in shown.stdout


def test_ticks_older_than_two_hours_become_minute_bars_and_nothing_is_lost():
    s = Session(_settings("circuit_breaker.slow_crash.enabled=false"), ListFeed())
    ticks = path("BTCUSDT", [(0, 100.0), (27 * 60, 100.0)], step_ms=20_000)  # 27 hours, a tick each 20 s
    s.engine.process(ticks)
    s.force_trigger("look")
    s.recorder.close("test", s.engine.now_ms()).result(timeout=60)
    tape = decode(s.incidents_unjournaled[0])["tapes"]["BTCUSDT"]
    trip, first = ticks[-1].time_ms, tape["ticks"][0][0]
    assert trip - 120 * MIN <= first < trip - 119 * MIN and first % MIN == 0 and tape["ticks"][-1][0] == trip
    assert tape["bars"][-1][0] == first - MIN and len(tape["bars"]) == 1441  # a day of minutes before them
    kept = [t for t in ticks if t.time_ms >= tape["bars"][0][0]]
    assert sum(b[5] for b in tape["bars"]) + sum(q for _, _, q in tape["ticks"]) == pytest.approx(
        sum(t.qty for t in kept))


def test_the_tick_cap_bounds_memory_and_says_so():
    s = Session(_settings("flight_recorder.max_ticks_per_symbol=1000"), ListFeed())
    s.engine.process(path("BTCUSDT", [(0, 100.0), (60, 100.0), (70, 84.0)], step_ms=500))  # 8,400 ticks
    assert s.breaker.status.value == "TRIGGERED"
    s.recorder.close("test", s.engine.now_ms()).result(timeout=60)
    tape = decode(s.incidents_unjournaled[0])["tapes"]["BTCUSDT"]
    assert tape["truncated"] and len(tape["ticks"]) <= 1000
    assert tape["raw_from"] > "2023-11-14T22:13:20.000Z"  # the raw ticks start later than two hours before
    assert tape["bars"][-1][0] < tape["ticks"][0][0]  # the ticks the cap pushed out are minute bars, not gone
    assert len(s.recorder.tapes["BTCUSDT"].ticks) <= 1000


def test_the_record_is_written_off_the_tick_path():
    threads = []
    s = Session(_settings(), ListFeed())
    s.recorder.write = lambda record, text: threads.append(threading.get_ident())
    s.engine.process(path("BTCUSDT", [(0, 100.0), (60, 100.0), (70, 84.0)]))
    assert s.recorder.open is not None and s.recorder.open.record.get("tapes") is None  # the trip copied no ticks
    done = s.recorder.close("test", s.engine.now_ms())
    done.result(timeout=60)
    assert threads and threads[0] != threading.get_ident()


def test_a_trip_from_another_thread_while_ticks_flow_is_recorded():
    """An agent escalates from the crew's thread while the loop keeps ticking."""
    s = Session(_settings(), ListFeed())
    ticks = path("BTCUSDT", [(0, 100.0), (240, 100.0)], step_ms=250)
    s.engine.process(ticks[:len(ticks) // 2])
    crew = threading.Thread(target=lambda: s.engine.force_trigger("the guardian crew saw it", actor=Actor.AGENT))
    crew.start()
    s.engine.process(ticks[len(ticks) // 2:])
    crew.join()
    s.recorder.close("test", s.engine.now_ms())  # closed already, five minutes after
    asyncio.run(s.recorder.flushed())
    rec = decode(s.incidents_unjournaled[0])
    assert rec["trigger"]["actor"] == "agent" and rec["tapes"]["BTCUSDT"]["ticks"]


def test_records_compress_and_a_damaged_one_is_refused_on_one_line():
    rec = {"version": 1, "trigger": {}, "transitions": [], "circuit_breaker": {},
           "tapes": {"BTCUSDT": {"ticks": [[i * 1000, 100.0 + i % 7, 0.5] for i in range(50_000)], "bars": []},
                     "ETHUSDT": {"ticks": [], "bars": [[0, 1.0, 2.0, 0.5, 1.5, 10.0]]}}}
    text = encode(rec)
    assert decode(text) == rec and len(text) < len(json.dumps(rec)) / 3
    for bad in ("not base64!", encode({"version": 99}), "aGVsbG8=", encode({"version": 1, "trigger": {}}), 42):
        with pytest.raises(IncidentError) as exc:
            decode(bad)
        assert "\n" not in str(exc.value)


def test_a_tampered_record_breaks_the_chain(crash_journal, tmp_path):
    db, _ = crash_journal
    copy = _copy(db, tmp_path / "copy.db")
    _sql(copy, "UPDATE incidents SET record = ? WHERE id = 1", (encode({"version": 1, "forged": True}),))
    result = verify(copy)
    assert not result.ok and result.first_bad["table"] == "incidents" and result.first_bad["id"] == 1
    copy = _copy(db, tmp_path / "copy2.db")
    _sql(copy, "UPDATE incidents SET reason = 'nothing happened' WHERE id = 2")
    assert verify(copy).first_bad["table"] == "incidents"
    audit = run_cli("audit", "verify", "--db", str(copy))
    assert audit.returncode == 1 and "incidents" in audit.stdout + audit.stderr


def test_a_session_without_the_recorder_records_nothing(tmp_path):
    db = tmp_path / "j.db"
    _replay(_settings("flight_recorder.enabled=false"), [BTC_2021], db)
    assert _records(db) == []
    s = Session(_settings("flight_recorder.enabled=false"), ListFeed())
    assert s.recorder is None and len(s.engine.tick_listeners) == 1  # the session's own


# ---------------------------------------------------------------------------- the pack
@pytest.mark.parametrize("data", ["2021", "2020"])
def test_the_exported_pack_replays_the_trip_bit_for_bit(journals, tmp_path, data):
    db, report = journals(data, BTC_2021 if data == "2021" else BTC_2020)
    out = tmp_path / "pack"
    run = run_cli("incident", "export", "1", "--db", str(db), "--out", str(out))
    assert run.returncode == 0, run.stderr
    files = sorted(out.glob("*.csv"))
    assert {f.name for f in files} == {"BTCUSDT-1m-before.csv", "BTCUSDT-aggTrades-incident.csv"}
    assert files[1].read_text().splitlines()[0] == \
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
    meta = json.loads((out / "incident.json").read_text())
    assert meta["trigger"]["reason"] == next(r for r in report["breaker"] if r["to"] == "TRIGGERED")["reason"]
    again_db = tmp_path / "again.db"
    again = _replay(_settings(config_file=out / "config.yaml"), files, again_db)
    assert again["stats"]["bad_rows"] == 0 and not again["stats"]["bad_row_examples"]
    upto = next(i for i, r in enumerate(report["breaker"]) if r["to"] == "TRIGGERED") + 1
    assert again["breaker"][upto - 1] == report["breaker"][upto - 1]  # the trip: time, reason, type, epoch
    assert _trip_row(again_db) == _trip_row(db)  # and the journal's row of it, column for column
    raw_from = _records(db)[0]["tapes"]["BTCUSDT"]["raw_from"]
    for a, b in zip(again["breaker"][:upto], report["breaker"][:upto], strict=True):
        if b["time"] >= raw_from or data == "2021":  # in the raw ticks (or from 1m candles): exact
            assert a == b
        else:  # in the minute bars of older data (5m candles): the same move, within its minute
            assert {**a, "time": b["time"]} == b and a["time"][:16] == b["time"][:16]


def test_replay_reads_the_pack_from_the_command_line(crash_journal, tmp_path):
    db, report = crash_journal
    out = tmp_path / "pack"
    assert run_cli("incident", "export", "1", "--db", str(db), "--out", str(out)).returncode == 0
    run = run_cli("replay", "--json", "--config", str(out / "config.yaml"), *map(str, sorted(out.glob("*.csv"))))
    assert run.returncode == 0, run.stderr
    first = next(r for r in json.loads(run.stdout)["breaker"] if r["to"] == "TRIGGERED")
    assert first == next(r for r in report["breaker"] if r["to"] == "TRIGGERED")


def test_the_breadth_set_is_recorded_and_replays_too(journals, tmp_path):
    db, report = journals("breadth", BTC_2021, DOGE_2021)
    rec = _records(db)[0]
    assert set(rec["tapes"]) == set(rec["windows"]) == {"BTCUSDT", "DOGEUSDT"}
    out = tmp_path / "pack"
    assert run_cli("incident", "export", "1", "--db", str(db), "--out", str(out)).returncode == 0
    files = sorted(out.glob("*.csv"))
    assert len(files) == 4
    again = _replay(_settings(config_file=out / "config.yaml"), files)
    trip = next(r for r in report["breaker"] if r["to"] == "TRIGGERED")
    assert next(r for r in again["breaker"] if r["to"] == "TRIGGERED") == trip


# ---------------------------------------------------------------------------- the commands
def test_show_and_list_tell_it_with_a_chart(crash_journal):
    db, _ = crash_journal
    listed = run_cli("incident", "list", "--db", str(db))
    assert listed.returncode == 0, listed.stderr
    first, second = listed.stdout.splitlines()
    assert first.startswith("   1  2021-05-19T11:28:15.000Z  btc_dump_24h") and "max drop 16.05%" in first
    assert "ticks" in first and second.startswith("   2  2021-05-19T12:48:30.000Z")
    shown = run_cli("incident", "show", "1", "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "TRIGGERED 2021-05-19T11:28:15.000Z by rule (btc_dump_24h)" in text and "windows at the trip:" in text
    assert "rule: " in text and "window_minutes=1440" in text and "1440m 16.05%" in text
    assert "policy actions: 0" in text and "orders cancelled: 0" in text and "reasoning (" in text
    assert "drawdown from its running high, 2021-05-19 09:29:00 to 2021-05-19 11:33:15" in text and "█" in text
    assert "earlier: 05-18 14:40 SAFE->WARNING" in text  # transitions before the two hours, in words
    lines = text.splitlines()
    marks = lines[-2].split("W warning")[0]
    assert marks.strip() == "T" and lines[-1].split() == ["09:29", "11:33"]  # the trip on the time axis
    assert "high 45341.84 at 2021-05-18 12:00:00" in text  # the day before, as minute bars


def test_incident_list_on_a_journal_without_incidents(tmp_path):
    db = tmp_path / "calm.db"
    _replay(_settings(), [MARKET_DATA / "BTCUSDT-1m-2023-04-06-calm.csv"], db)
    run = run_cli("incident", "list", "--db", str(db))
    assert run.returncode == 0 and "no incidents" in run.stdout


@pytest.mark.parametrize("args, words", [
    (["show"], "needs an ID"),
    (["export", "1"], "needs --out"),
    (["show", "99"], "no incident 99"),
    (["export", "99", "--out", "/tmp/never-made"], "no incident 99"),
    (["list", "3"], "takes no ID"),
])
def test_incident_commands_refuse_bad_input_on_one_line(crash_journal, args, words):
    db, _ = crash_journal
    run = run_cli("incident", *args, "--db", str(db))
    assert run.returncode == 2 and words in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not Path("/tmp/never-made").exists()


def _refused(*args: str) -> str:
    run = run_cli("incident", *args)
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    return run.stderr


def test_incident_commands_on_missing_or_foreign_journals(tmp_path):
    assert "no journal here" in _refused("list", "--db", str(tmp_path / "nope.db"))
    text = tmp_path / "notes.db"
    text.write_text("not a database\n" * 100)
    assert "cannot read the journal" in _refused("show", "1", "--db", str(text))


def test_incident_export_refuses_a_full_folder_a_file_and_an_unwritable_place(crash_journal, tmp_path):
    db, _ = crash_journal
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("mine")
    assert "not an empty folder" in _refused("export", "1", "--db", str(db), "--out", str(full))
    assert (full / "x").read_text() == "mine" and len(list(full.iterdir())) == 1
    assert "not an empty folder" in _refused("export", "1", "--db", str(db), "--out", str(full / "x"))
    assert "cannot write the pack" in _refused("export", "1", "--db", str(db), "--out", str(full / "x" / "pack"))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "cannot write the pack" in _refused("export", "1", "--db", str(db), "--out", str(locked / "pack"))


@pytest.mark.parametrize("record", ["garbage", encode({"version": 1, "trigger": {}}),
                                    encode({"version": 1, "trigger": {}, "tapes": {}, "transitions": [],
                                            "circuit_breaker": {}})],
                         ids=["not-base64", "missing-fields", "empty-fields"])
def test_a_damaged_record_is_one_line_for_every_command(crash_journal, tmp_path, record):
    db, _ = crash_journal
    broken = _copy(db, tmp_path / "broken.db")
    _sql(broken, "UPDATE incidents SET record = ? WHERE id = 1", (record,))
    assert "damaged" in _refused("show", "1", "--db", str(broken))
    assert "damaged" in _refused("export", "1", "--db", str(broken), "--out", str(tmp_path / "out"))
    listed = run_cli("incident", "list", "--db", str(broken))  # the others still listed
    assert listed.returncode == 0 and "damaged" in listed.stdout.splitlines()[0]
    assert "2021-05-19T12:48:30" in listed.stdout.splitlines()[1]


async def test_a_journal_from_before_the_recorder_migrates_and_still_verifies(tmp_path):
    db = tmp_path / "old.db"
    s = Session(_settings("flight_recorder.enabled=false"), ListFeed(), journal_path=db)
    await s.open_journal(db)
    s.engine.process(path("BTCUSDT", [(0, 100.0), (60, 100.0), (70, 84.0)]))  # a trip in it
    await s.close()
    # as version 2 left it: the migration to 3 only adds the table (and its index)
    _sql(db, "DROP TABLE incidents")
    _sql(db, "DELETE FROM schema_version WHERE version = 3")
    assert "no incidents table" in _refused("list", "--db", str(db))
    assert verify(db).ok
    j = await Journal.open(db)
    try:
        assert j.schema_version == 3
        await j.record_incident(T0, "later trip", encode({"version": 1}), trigger_type="operator")
    finally:
        await j.close()
    result = verify(db)
    assert result.ok, result.problems
    assert run_cli("incident", "list", "--db", str(db)).returncode == 0


# ---------------------------------------------------------------------------- settings
@pytest.mark.parametrize("setting, words", [
    ("flight_recorder.ticks_minutes=10", "greater than or equal to 60"),
    ("flight_recorder.ticks_minutes=nan", "flight_recorder.ticks_minutes"),
    ("flight_recorder.after_minutes=-1", "greater than or equal to 0"),
    ("flight_recorder.after_minutes=1e300", "less than or equal to 240"),
    ("flight_recorder.max_ticks_per_symbol=0", "greater than or equal to 1000"),
    ("flight_recorder.max_ticks_per_symbol=lots", "valid integer"),
    ("flight_recorder.bars_minutes=1e9", "flight_recorder.bars_minutes"),
    ("flight_recorder.enabled=maybe", "valid boolean"),
    ("flight_recorder.ticks=120", "unknown key"),
])
def test_a_bad_recorder_setting_names_its_key(setting, words):
    key = setting.split("=")[0]
    with pytest.raises(ConfigError) as exc:
        load_config(env={}, dotenv_paths=[], overrides=[setting])
    message = str(exc.value)
    assert message.startswith(f"--set {key}: {key}") and words in message and "\n" not in message, message
