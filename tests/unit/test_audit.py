"""Tamper evidence: build a journal, tamper with it using plain sqlite3 in each way, and
check that verify() names the first bad row; the signed chain head, its key file, and
opening a journal whose head does not verify."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from core.incident import encode

from core.breaker.state import CircuitBreakerState
from core.events import Actor, SpikeDetected, SpikeType
from core.journal import Journal, JournalError, verify
from core.journal.audit import CHAIN_COLUMNS, CHAINED_TABLES, GENESIS_HASH, canonical_json, hashed_content, row_hash
from core.journal.keys import KEY_FILE, load_or_create_key
from core.trading.orders import Fill, Order, OrderStatus, OrderType, Side

T0 = 1_700_000_000_000


def _spike(i: int) -> SpikeDetected:
    return SpikeDetected(symbol=f"S{i}USDT", spike_type=SpikeType.VOLUME_EXPLOSION, direction="pump",
                         magnitude_pct=5.0 + i, timeframe_minutes=5, volume_multiple=3.0, price_from=1.0,
                         price_to=1.05, confidence=0.7, time_ms=T0 + i, detection_latency_ms=0.8)


@pytest.fixture
async def journal(tmp_path: Path) -> Path:
    """A journal with rows in every table, some mutable columns updated. Chain order:
    1 spike1, 2 spike2, 3 order a, 4 breaker trig, 5 order a NEW, 6 fill, 7 update spike1,
    8 breaker recovering, 9 order b, 10 proposal, 11 update proposal, 12 decision,
    13 operator action, 14 order b CANCELED, 15 breaker cleared, 16 agent performance, 17 incident."""
    path = tmp_path / "journal.db"
    j = await Journal.open(path, batching=False)
    try:
        await _fill_every_table(j)
    finally:
        await j.close()
    return path


async def _fill_every_table(j: Journal) -> None:
    state = CircuitBreakerState()
    a = Order("BTCUSDT", Side.BUY, OrderType.LIMIT, 0.01, price=50_000.0, client_order_id="a")
    b = Order("ETHUSDT", Side.SELL, OrderType.MARKET, 0.5, client_order_id="b")
    s1 = await j.record_spike(_spike(1))
    await j.record_spike(_spike(2))
    await j.record_order(a, T0)
    state.trigger("BTC -16%", {"drop_percent": 16.0}, time_ms=T0 + 10, symbol="BTCUSDT", trigger_type="btc_dump")
    await j.record_breaker_change(state.history[-1], state.snapshot().to_dict())
    await j.record_order(a.with_(status=OrderStatus.NEW), T0 + 20)
    await j.record_fill(Fill("a", "BTCUSDT", Side.BUY, 0.01, 50_000.0, 0.5, "taker", T0 + 30, fill_id="f1"))
    await j.update_spike(s1, status="analyzed", risk_assessment={"risk": "low"})
    state.start_recovery(time_ms=T0 + 40)
    await j.record_breaker_change(state.history[-1], state.snapshot().to_dict())
    await j.record_order(b, T0 + 50)
    await j.record_proposal({"proposal_id": "p1", "symbol": "SOLUSDT", "side": "BUY", "quantity": 1.0,
                             "entry_type": "market", "created_ms": T0 + 60})
    await j.update_proposal("p1", status="rejected", decided_by="operator", decision_reason="too late")
    await j.record_agent_decision("guardian", "circuit_breaker_triggered", "TRIGGER", confidence=0.9)
    await j.record_operator_action("clear", "market calm", {"key": "C"})
    await j.record_order(b.with_(status=OrderStatus.CANCELED), T0 + 70)
    state.clear(100.0, actor=Actor.OPERATOR, time_ms=T0 + 80)
    await j.record_breaker_change(state.history[-1], state.snapshot().to_dict())
    await j.record_agent_performance("guardian", "daily", total_decisions=3, correct_decisions=2,
                                     incorrect_decisions=1, notes="fine", time_ms=T0 + 90)
    await j.record_incident(T0 + 10, "BTC -16%", encode({"version": 1, "trigger": {"reason": "BTC -16%"}}),
                            trigger_type="btc_dump", symbol="BTCUSDT")


def sql(path: Path, statement: str, params: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(str(path))
    try:
        rows = con.execute(statement, params).fetchall()
        con.commit()
        return rows
    finally:
        con.close()


def seq_of(path: Path, table: str, row_id: int) -> int:
    return sql(path, f"SELECT chain_seq FROM {table} WHERE id = ?", (row_id,))[0][0]


def bad(path: Path) -> dict:
    result = verify(path)
    assert not result.ok
    assert result.first_bad == result.problems[0]
    return result.first_bad


def test_an_untouched_journal_verifies(journal: Path) -> None:
    result = verify(journal)
    assert result.ok, result.problems
    assert result.rows_checked == 17 and result.first_bad is None and result.integrity == "ok"
    assert result.head["last_seq"] == 17
    assert "ok" in result.summary()


def test_hash_formula_is_the_documented_one(journal: Path) -> None:
    con = sqlite3.connect(str(journal))
    con.row_factory = sqlite3.Row
    row = dict(con.execute("SELECT * FROM spike_events WHERE chain_seq = 1").fetchone())
    con.close()
    assert row["prev_hash"] == GENESIS_HASH
    content = {k: v for k, v in row.items()
               if v is not None and k not in ("chain_seq", "prev_hash", "row_hash", "status", "context_analysis",
                                              "risk_assessment", "trade_id", "outcome", "pnl")}
    assert content == hashed_content("spike_events", row) and content["id"] == 1
    import hashlib
    expected = hashlib.sha256(f"{GENESIS_HASH}|spike_events|1|{canonical_json(content)}".encode()).hexdigest()
    assert row["row_hash"] == expected == row_hash(GENESIS_HASH, "spike_events", 1, content)


def test_an_edited_value_is_named(journal: Path) -> None:
    sql(journal, "UPDATE orders SET quantity = 5.0 WHERE id = 2")
    assert bad(journal) == {"table": "orders", "id": 2, "chain_seq": 5,
                            "problem": "row content does not match its hash: row edited"}


def test_an_edited_json_column_is_named(journal: Path) -> None:
    sql(journal, "UPDATE circuit_breaker_events SET trigger_details = '{\"drop_percent\":6.0}' WHERE id = 1")
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("circuit_breaker_events", 1, 4)


def test_a_deleted_middle_row_is_named(journal: Path) -> None:
    sql(journal, "DELETE FROM fills WHERE id = 1")
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("fills", 1, 6)
    assert "deleted" in fb["problem"]


def test_a_deleted_row_in_a_table_with_later_rows_is_named(journal: Path) -> None:
    sql(journal, "DELETE FROM orders WHERE id = 3")  # order b, chain_seq 9; order 4 follows at 14
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("orders", 3, 9)


def test_two_rows_with_swapped_content_are_named(journal: Path) -> None:
    cols = [r[1] for r in sql(journal, "PRAGMA table_info(orders)")
            if r[1] not in ("id", "chain_seq", "prev_hash", "row_hash")]
    one = sql(journal, f"SELECT {', '.join(cols)} FROM orders WHERE id = 1")[0]
    three = sql(journal, f"SELECT {', '.join(cols)} FROM orders WHERE id = 3")[0]
    sets = ", ".join(f"{c} = ?" for c in cols)
    sql(journal, f"UPDATE orders SET {sets} WHERE id = 1", three)
    sql(journal, f"UPDATE orders SET {sets} WHERE id = 3", one)
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("orders", 1, 3)
    assert "edited" in fb["problem"]
    assert [(p["table"], p["id"]) for p in verify(journal).problems] == [("orders", 1), ("orders", 3)]


def test_reordered_rows_are_named(journal: Path) -> None:
    # move order id 1 (seq 3) and order id 2 (seq 5) past each other, hashes untouched
    sql(journal, "UPDATE orders SET chain_seq = -5 WHERE id = 2")
    sql(journal, "UPDATE orders SET chain_seq = 5 WHERE id = 1")
    sql(journal, "UPDATE orders SET chain_seq = 3 WHERE id = 2")
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("orders", 2, 3)
    assert "reordered" in fb["problem"]


def test_swapping_whole_rows_including_their_hashes_is_named(journal: Path) -> None:
    # the full rows of two breaker events trade places (ids kept): linkage breaks at the first
    cols = [r[1] for r in sql(journal, "PRAGMA table_info(circuit_breaker_events)") if r[1] != "id"]
    r1 = sql(journal, f"SELECT {', '.join(cols)} FROM circuit_breaker_events WHERE id = 1")[0]
    r2 = sql(journal, f"SELECT {', '.join(cols)} FROM circuit_breaker_events WHERE id = 2")[0]
    sets = ", ".join(f"{c} = ?" for c in cols)
    sql(journal, "UPDATE circuit_breaker_events SET chain_seq = -1 WHERE id = 2")
    sql(journal, f"UPDATE circuit_breaker_events SET {sets} WHERE id = 1", r2)
    sql(journal, f"UPDATE circuit_breaker_events SET {sets} WHERE id = 2", r1)
    fb = bad(journal)
    assert (fb["table"], fb["chain_seq"]) == ("circuit_breaker_events", 4)
    assert fb["id"] == 2  # id 2 now sits at chain_seq 4, where id 1 was hashed


def test_a_mutable_column_edited_without_an_update_row_is_named(journal: Path) -> None:
    sql(journal, "UPDATE spike_events SET status = 'traded', pnl = 99.0 WHERE id = 2")  # never updated
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("spike_events", 2, 2)
    assert "without an update row" in fb["problem"]


def test_an_updated_mutable_column_edited_again_directly_is_named(journal: Path) -> None:
    sql(journal, "UPDATE spike_events SET status = 'traded' WHERE id = 1")  # its last update said 'analyzed'
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("spike_events", 1, 1)
    assert "status" in fb["problem"] and "'analyzed'" in fb["problem"]
    sql(journal, "UPDATE spike_events SET status = 'analyzed' WHERE id = 1")
    sql(journal, "UPDATE circuit_breaker_events SET user_notified = 1 WHERE id = 2")
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("circuit_breaker_events", 2, 8)
    assert "user_notified" in fb["problem"]


def test_an_edited_update_row_is_named(journal: Path) -> None:
    # forging the recorded decision as well as the column: the update row's hash breaks
    sql(journal, "UPDATE row_updates SET changes = '{\"status\":\"approved\"}' WHERE id = 2")
    sql(journal, "UPDATE proposals SET status = 'approved' WHERE proposal_id = 'p1'")
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("row_updates", 2, 11)


def test_a_truncated_chain_is_named(journal: Path) -> None:
    sql(journal, "DELETE FROM incidents WHERE id = 1")  # chain_seq 17
    sql(journal, "DELETE FROM agent_performance WHERE id = 1")  # chain_seq 16
    sql(journal, "DELETE FROM circuit_breaker_events WHERE id = 3")  # chain_seq 15
    sql(journal, "DELETE FROM orders WHERE id = 4")  # chain_seq 14
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("audit_head", 1, 14)
    assert "truncated" in fb["problem"]
    assert "orders id 4" in fb["problem"] and "circuit_breaker_events id 3" in fb["problem"]
    assert "agent_performance id 1" in fb["problem"]


def test_an_edited_head_is_named(journal: Path) -> None:
    sql(journal, "UPDATE audit_head SET last_hash = ? WHERE id = 1", ("f" * 64,))
    fb = bad(journal)
    assert (fb["table"], fb["chain_seq"]) == ("audit_head", 17)


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(journal: Path) -> None:
    con = sqlite3.connect(str(journal))
    con.row_factory = sqlite3.Row
    row = dict(con.execute("SELECT * FROM orders WHERE id = 1").fetchone())
    con.close()
    row["quantity"] = 7.0
    forged = row_hash(row["prev_hash"], "orders", row["chain_seq"], hashed_content("orders", row))
    sql(journal, "UPDATE orders SET quantity = 7.0, row_hash = ? WHERE id = 1", (forged,))
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("circuit_breaker_events", 1, 4)
    assert "does not link" in fb["problem"]


def test_a_row_inserted_behind_the_journal_is_named(journal: Path) -> None:
    sql(journal, "INSERT INTO operator_actions (id, time, actor, action, chain_seq, prev_hash, row_hash) "
                 "VALUES (2, 't', 'operator', 'forged', 18, 'x', 'y')")
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("operator_actions", 2, 18)


async def test_journal_verify_runs_while_open(journal: Path) -> None:
    j = await Journal.open(journal)
    try:
        await j.record_operator_action("note", "still fine")
        result = await j.verify()
        assert result.ok and result.rows_checked == 18
        head = await j.head()
        assert head["last_seq"] == 18 and head["last_hash"] == result.head["last_hash"]
    finally:
        await j.close()


def _edited(value: object) -> object:
    if value is None:
        return "x"
    if isinstance(value, int):
        return value + 1000
    if isinstance(value, float):
        return value * 2 + 1
    return f"{value}x"


def test_every_column_of_every_table_is_covered(journal: Path) -> None:
    """Any one stored value changed with plain SQL, in any table, is found and the row named:
    no table's rows skip the hash check and no column is left out of the evidence."""
    missed: list[str] = []
    con = sqlite3.connect(str(journal), isolation_level=None)
    try:
        con.execute("PRAGMA synchronous=OFF")  # a scratch copy: each edit is undone right after
        for table in CHAINED_TABLES:
            cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
            row_id, seq = con.execute(f"SELECT id, chain_seq FROM {table} ORDER BY id LIMIT 1").fetchone()
            for col in cols:
                old = con.execute(f'SELECT "{col}" FROM {table} WHERE id = ?', (row_id,)).fetchone()[0]
                edited_id = _edited(row_id) if col == "id" else row_id
                con.execute(f'UPDATE {table} SET "{col}" = ? WHERE id = ?', (_edited(old), row_id))
                result = verify(journal)
                con.execute(f'UPDATE {table} SET "{col}" = ? WHERE id = ?', (old, edited_id))
                named = any(p["table"] == table and (p["id"] == edited_id or p["chain_seq"] == seq)
                            for p in result.problems)
                if result.ok or (col not in CHAIN_COLUMNS and not named):
                    missed.append(f"{table}.{col}")
    finally:
        con.close()
    assert verify(journal).ok  # every edit was undone
    assert not missed, f"edits not found by verify: {missed}"


def test_a_proposals_quantity_and_payload_are_evidence(journal: Path) -> None:
    sql(journal, "UPDATE proposals SET quantity = 100.0 WHERE proposal_id = 'p1'")
    assert (bad(journal)["table"], bad(journal)["id"]) == ("proposals", 1)
    sql(journal, "UPDATE proposals SET quantity = 1.0 WHERE proposal_id = 'p1'")
    assert verify(journal).ok
    payload = json.loads(sql(journal, "SELECT payload FROM proposals WHERE id = 1")[0][0])
    sql(journal, "UPDATE proposals SET payload = ? WHERE id = 1", (json.dumps({**payload, "quantity": 100.0}),))
    assert (bad(journal)["table"], bad(journal)["id"]) == ("proposals", 1)


# ---------------------------------------------------------------------------- the key file
def test_the_key_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    config = tmp_path / "config"
    key = load_or_create_key(config)
    assert len(key) == 32
    assert (os.stat(config / KEY_FILE).st_mode & 0o777) == 0o600
    assert load_or_create_key(config) == key
    assert load_or_create_key(tmp_path / "other") != key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o666])
def test_a_key_readable_by_others_is_refused_in_one_line(tmp_path: Path, mode: int) -> None:
    load_or_create_key(tmp_path)
    path = tmp_path / KEY_FILE
    path.chmod(mode)
    with pytest.raises(JournalError) as err:
        load_or_create_key(tmp_path)
    msg = str(err.value)
    assert f"chmod 600 {path}" in msg and f"{mode:04o}" in msg and "\n" not in msg


def test_something_else_where_the_key_should_be_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(JournalError, match="not a spikeguard key"):
        load_or_create_key(tmp_path)
    path.unlink()
    os.mkfifo(path, 0o600)  # would block a plain open()
    with pytest.raises(JournalError, match="not a regular file"):
        load_or_create_key(tmp_path)
    not_a_folder = tmp_path / "config.yaml"
    not_a_folder.write_text("")
    with pytest.raises(JournalError, match=f"cannot read journal key {not_a_folder / KEY_FILE}: Not a directory"):
        load_or_create_key(not_a_folder)


# ---------------------------------------------------------------------------- the signed head
@pytest.fixture
def key(tmp_path: Path) -> bytes:
    return load_or_create_key(tmp_path / "config")


@pytest.fixture
async def signed(tmp_path: Path, key: bytes) -> Path:
    """The same rows as `journal`, written with the key: every commit signed the head."""
    path = tmp_path / "signed.db"
    j = await Journal.open(path, key=key, batching=False)
    try:
        await _fill_every_table(j)
    finally:
        await j.close()
    return path


async def test_a_signed_journal_verifies_with_its_key_only(signed: Path, key: bytes) -> None:
    assert verify(signed, key).ok and verify(signed).ok
    fb = bad_with(signed, b"k" * 32)
    assert (fb["table"], fb["chain_seq"]) == ("audit_head", 17) and "signature" in fb["problem"]
    j = await Journal.open(signed, key=key)  # reopened and appended to, still signed
    try:
        await j.record_operator_action("note", "again")
        assert (await j.verify()).ok
    finally:
        await j.close()
    assert verify(signed, key).ok


def bad_with(path: Path, key: bytes) -> dict:
    result = verify(path, key)
    assert not result.ok
    return result.first_bad


def _cut_the_tail_and_rewrite_the_head(path: Path, keep: int) -> None:
    """The attack from the report: delete the last rows, then copy the new last row's hash
    (and each table's last id) into audit_head with plain SQL."""
    con = sqlite3.connect(str(path))
    try:
        for table in CHAINED_TABLES:
            con.execute(f"DELETE FROM {table} WHERE chain_seq > ?", (keep,))
        last = next(h for t in CHAINED_TABLES for (h,) in
                    con.execute(f"SELECT row_hash FROM {t} WHERE chain_seq = ?", (keep,)))
        ids = {t: con.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t}").fetchone()[0] for t in CHAINED_TABLES}
        con.execute("UPDATE audit_head SET last_seq = ?, last_hash = ?, last_ids = ?",
                    (keep, last, json.dumps(ids, separators=(",", ":"))))
        con.commit()
    finally:
        con.close()


async def test_a_cut_tail_with_a_rewritten_head_is_found_with_the_key(signed: Path, key: bytes) -> None:
    _cut_the_tail_and_rewrite_the_head(signed, keep=13)  # the clear, the cancel and the stats are gone
    assert verify(signed).ok  # the chain alone cannot tell: that is what the signature is for
    fb = bad_with(signed, key)
    assert (fb["table"], fb["chain_seq"]) == ("audit_head", 13) and "signature does not verify" in fb["problem"]
    with pytest.raises(JournalError) as err:
        await Journal.open(signed, key=key)
    msg = str(err.value)
    assert "signature does not verify" in msg and "--force" in msg and str(signed) in msg and "\n" not in msg
    assert sql(signed, "SELECT MAX(chain_seq) FROM operator_actions")[0][0] == 13  # refused: nothing appended


async def test_force_opens_it_journals_what_did_not_verify_and_re_signs(signed: Path, key: bytes) -> None:
    _cut_the_tail_and_rewrite_the_head(signed, keep=13)
    j = await Journal.open(signed, key=key, force=True)
    try:
        forced = (await j.recent("operator_actions", 1))[0]
        assert (forced["action"], forced["actor"], forced["chain_seq"]) == ("journal_forced_open", "operator", 14)
        assert forced["details"]["severity"] == "warning"
        assert any("signature does not verify" in p for p in forced["details"]["problems"])
        assert "--force" in forced["reason"]
        await j.record_operator_action("note", "after the forced open")
    finally:
        await j.close()
    assert verify(signed, key).ok
    j = await Journal.open(signed, key=key)  # signed again: no force needed
    await j.close()


async def test_a_corrupt_head_is_refused_without_a_key_too(journal: Path) -> None:
    sql(journal, "UPDATE audit_head SET last_hash = ? WHERE id = 1", ("f" * 64,))
    before = sql(journal, "SELECT * FROM audit_head")
    with pytest.raises(JournalError) as err:
        await Journal.open(journal)
    msg = str(err.value)
    assert "chain head says chain_seq 17" in msg and "--force" in msg and "\n" not in msg
    assert sql(journal, "SELECT * FROM audit_head") == before  # not appended to
    j = await Journal.open(journal, force=True)
    try:
        forced = (await j.recent("operator_actions", 1))[0]
        assert forced["action"] == "journal_forced_open" and forced["prev_hash"] == sql(
            journal, "SELECT row_hash FROM incidents WHERE id = 1")[0][0]  # appended after the real last row
    finally:
        await j.close()
    assert verify(journal).ok


async def test_a_head_behind_its_rows_or_with_wrong_ids_is_refused(journal: Path) -> None:
    sql(journal, "UPDATE audit_head SET last_ids = ? WHERE id = 1", ('{"orders":9}',))
    with pytest.raises(JournalError, match="last ids do not match the tables"):
        await Journal.open(journal)
    sql(journal, "DELETE FROM incidents")  # the last row gone, the head left as it was
    with pytest.raises(JournalError, match="the last row is chain_seq 16"):
        await Journal.open(journal)


async def test_a_keyless_writer_leaves_the_head_unsigned(signed: Path, key: bytes) -> None:
    j = await Journal.open(signed)  # library use: no key, no check
    try:
        await j.record_operator_action("note", "written without the key")
    finally:
        await j.close()
    assert sql(signed, "SELECT head_signature FROM audit_head")[0][0] is None
    assert "not signed" in bad_with(signed, key)["problem"]
    with pytest.raises(JournalError, match="the chain head is not signed.*--force"):
        await Journal.open(signed, key=key)


async def test_a_new_journal_is_signed_from_its_first_open(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "new.db"
    j = await Journal.open(path)  # created without a key (db init before the key existed)
    await j.close()
    j = await Journal.open(path, key=key)  # an empty genesis head has nothing to hide
    await j.close()
    assert sql(path, "SELECT head_signature FROM audit_head")[0][0] is not None
    assert verify(path, key).ok
