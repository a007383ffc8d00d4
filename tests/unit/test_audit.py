"""Tamper evidence: build a journal, tamper with it using plain sqlite3 in each way, and
check that verify() names the first bad row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core.breaker.state import CircuitBreakerState
from core.events import Actor, SpikeDetected, SpikeType
from core.journal import Journal, verify
from core.journal.audit import GENESIS_HASH, canonical_json, hashed_content, row_hash
from core.trading.orders import Fill, Order, OrderStatus, OrderType, Side

T0 = 1_700_000_000_000


def _spike(i: int) -> SpikeDetected:
    return SpikeDetected(symbol=f"S{i}USDT", spike_type=SpikeType.VOLUME_EXPLOSION, direction="pump",
                         magnitude_pct=5.0 + i, timeframe_minutes=5, volume_multiple=3.0, price_from=1.0,
                         price_to=1.05, confidence=0.7, time_ms=T0 + i, detection_latency_ms=0.8)


@pytest.fixture
async def journal(tmp_path: Path) -> Path:
    """A journal with rows in every table kind, some mutable columns updated. Chain order:
    1 spike1, 2 spike2, 3 order a, 4 breaker trig, 5 order a NEW, 6 fill, 7 update spike1,
    8 breaker recovering, 9 order b, 10 proposal, 11 update proposal, 12 decision,
    13 operator action, 14 order b CANCELED, 15 breaker cleared."""
    path = tmp_path / "journal.db"
    j = await Journal.open(path, batching=False)
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
    await j.close()
    return path


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
    assert result.rows_checked == 15 and result.first_bad is None and result.integrity == "ok"
    assert result.head["last_seq"] == 15
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
    sql(journal, "DELETE FROM circuit_breaker_events WHERE id = 3")  # chain_seq 15
    sql(journal, "DELETE FROM orders WHERE id = 4")  # chain_seq 14
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("audit_head", 1, 14)
    assert "truncated" in fb["problem"]
    assert "orders id 4" in fb["problem"] and "circuit_breaker_events id 3" in fb["problem"]


def test_an_edited_head_is_named(journal: Path) -> None:
    sql(journal, "UPDATE audit_head SET last_hash = ? WHERE id = 1", ("f" * 64,))
    fb = bad(journal)
    assert (fb["table"], fb["chain_seq"]) == ("audit_head", 15)


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
                 "VALUES (2, 't', 'operator', 'forged', 16, 'x', 'y')")
    fb = bad(journal)
    assert (fb["table"], fb["id"], fb["chain_seq"]) == ("operator_actions", 2, 16)


async def test_journal_verify_runs_while_open(journal: Path) -> None:
    j = await Journal.open(journal)
    try:
        await j.record_operator_action("note", "still fine")
        result = await j.verify()
        assert result.ok and result.rows_checked == 16
        head = await j.head()
        assert head["last_seq"] == 16 and head["last_hash"] == result.head["last_hash"]
    finally:
        await j.close()
