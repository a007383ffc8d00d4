"""The journal: schema (every seed column), migrations, opening errors, durable writes,
the single writer under concurrency (tasks and a thread), restore reads, batching, one
process per journal, secrets masked. Faults (a full or read-only disk, a second process)
are in tests/integration/test_journal_faults.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core import redact
from core.breaker.backend import MemoryBackend
from core.breaker.machine import BreakerRecord
from core.breaker.state import CircuitBreakerState
from core.events import Actor, BreakerChanged, BreakerStatus, JournalHealth, SpikeDetected, SpikeType
from core.journal import MIGRATIONS, SCHEMA_VERSION, Journal, JournalError, verify
from core.journal import schema as journal_schema
from core.journal.lock import lock_path
from core.trading.orders import Fill, Order, OrderStatus, OrderType, Side

T0 = 1_700_000_000_000

# Written from the seed design (crewai-spike-system-status.md, "3. Database Schema Extensions").
SEED_COLUMNS = {
    "spike_events": [
        "id", "timestamp", "trading_pair", "spike_type", "direction", "magnitude_percent", "timeframe_minutes",
        "volume_multiplier", "price_from", "price_to", "confidence_score", "detection_latency_ms",
        "agent_detected_by", "status", "context_analysis", "risk_assessment", "trade_id", "outcome", "pnl",
    ],
    "circuit_breaker_events": [
        "id", "triggered_at", "cleared_at", "trigger_reason", "trigger_type", "status", "btc_price_at_trigger",
        "eth_price_at_trigger", "btc_drop_percent", "eth_drop_percent", "market_cap_drop_percent",
        "liquidations_1h", "fear_greed_index", "trigger_details", "market_snapshot", "downtime_seconds",
        "capital_saved", "orders_cancelled", "positions_affected", "recovery_time_seconds",
        "recovery_conditions_met", "user_notified", "notes",
    ],
    "agent_decisions": [
        "id", "timestamp", "agent_name", "agent_role", "decision_type", "decision", "confidence", "reasoning",
        "input_data", "output_data", "execution_time_ms", "spike_event_id", "circuit_breaker_event_id", "trade_id",
    ],
    "agent_performance": [
        "id", "timestamp", "agent_name", "period", "total_decisions", "correct_decisions", "incorrect_decisions",
        "accuracy_percent", "avg_confidence", "avg_execution_time_ms", "total_spikes_detected", "true_positives",
        "false_positives", "false_negatives", "circuit_breaker_triggers", "false_circuit_breaker_triggers", "notes",
    ],
}

# Written from the brief for spikeguard's own tables.
OWN_COLUMNS = {
    "orders": ["client_order_id", "symbol", "side", "type", "quantity", "price", "stop_price", "reduce_only",
               "origin", "proposal_id", "status", "filled_quantity", "average_price", "exchange_order_id", "reason",
               "event_time", "order_json"],
    "fills": ["fill_id", "client_order_id", "symbol", "side", "quantity", "price", "fee", "liquidity", "time"],
    "proposals": ["proposal_id", "created_at", "symbol", "side", "quantity", "entry_type", "entry_price",
                  "stop_loss", "take_profit", "status", "content_hash", "spike_event_id", "expires_at", "payload",
                  "decided_by", "decision_reason"],
    "operator_actions": ["time", "actor", "action", "reason", "details"],
    "row_updates": ["table_name", "row_id", "changes"],
}

# columns the seed asks to index: timestamps, statuses, foreign keys, agent names
INDEXED = {
    "spike_events": ["timestamp", "status", "trade_id", "agent_detected_by"],
    "circuit_breaker_events": ["triggered_at", "cleared_at", "status"],
    "agent_decisions": ["timestamp", "agent_name", "spike_event_id", "circuit_breaker_event_id", "trade_id"],
    "agent_performance": ["timestamp", "agent_name"],
    "orders": ["client_order_id"],
    "fills": ["client_order_id"],
    "proposals": ["status"],
    "operator_actions": ["time"],
}


def spike(symbol: str = "SOLUSDT", t: int = T0, mag: float = 6.5) -> SpikeDetected:
    return SpikeDetected(symbol=symbol, spike_type=SpikeType.SPOT_PRICE_SPIKE, direction="pump", magnitude_pct=mag,
                         timeframe_minutes=5, volume_multiple=4.2, price_from=100.0, price_to=106.5, confidence=0.8,
                         time_ms=t, detection_latency_ms=1.5, zscore=3.1, details={"window": "5m"})


def order(**kw) -> Order:
    base = dict(symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity=0.01, price=50_000.0, created_ms=T0)
    base.update(kw)
    return Order(**base)


def sqlite_rows(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(str(path))
    try:
        rows = con.execute(sql, params).fetchall()
        con.commit()
        return rows
    finally:
        con.close()


@contextlib.asynccontextmanager
async def opened(path: Path, **kw) -> AsyncIterator[Journal]:
    """A journal that is closed however the test ends (an open one keeps its threads alive)."""
    j = await Journal.open(path, **kw)
    try:
        yield j
    finally:
        await j.close()


async def sync_mode(j: Journal) -> str:
    """The write connection's PRAGMA synchronous, as the last commit left it."""
    cur = await j._db.execute("PRAGMA synchronous")
    return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[(await cur.fetchone())[0]]


@pytest.fixture
def jpath(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "journal.db"


# ---------------------------------------------------------------------------- schema
async def test_schema_has_every_seed_column_and_index(jpath: Path) -> None:
    async with opened(jpath):
        pass
    for table, cols in {**SEED_COLUMNS, **OWN_COLUMNS}.items():
        have = {r[1] for r in sqlite_rows(jpath, f"PRAGMA table_info({table})")}
        missing = [c for c in cols if c not in have]
        assert not missing, f"{table} lacks {missing}"
        assert {"chain_seq", "prev_hash", "row_hash"} <= have, table
    pk = {r[1]: r[5] for r in sqlite_rows(jpath, "PRAGMA table_info(spike_events)")}
    assert pk["id"] == 1
    for table, cols in INDEXED.items():
        first_cols = set()
        for idx in sqlite_rows(jpath, f"PRAGMA index_list({table})"):
            info = sqlite_rows(jpath, f"PRAGMA index_info({idx[1]})")
            first_cols.add(info[0][2])
        assert set(cols) <= first_cols, f"{table}: not indexed {set(cols) - first_cols}"
    # fill_id and proposal_id are unique, chain_seq unique everywhere
    con = sqlite3.connect(str(jpath))
    try:
        with pytest.raises(sqlite3.IntegrityError):
            for _ in range(2):
                con.execute("INSERT INTO fills (fill_id, client_order_id, symbol, side, quantity, price, time, "
                            "time_ms, chain_seq, prev_hash, row_hash) "
                            "VALUES ('f', 'c', 'S', 'BUY', 1, 1, 't', 0, ?, '', '')", (10_000 + _,))
    finally:
        con.close()


async def test_wal_mode_and_parent_dirs_created(jpath: Path) -> None:
    assert not jpath.parent.exists()
    async with opened(jpath):
        assert jpath.exists()
        assert sqlite_rows(jpath, "PRAGMA journal_mode")[0][0] == "wal"


async def test_migrations_apply_once_and_reopen_is_idempotent(jpath: Path) -> None:
    async with opened(jpath) as j:
        assert j.schema_version == SCHEMA_VERSION == MIGRATIONS[-1][0]
        await j.record_order(order(), T0)
    for _ in range(2):
        async with opened(jpath):
            pass
    assert [r[0] for r in sqlite_rows(jpath, "SELECT version FROM schema_version ORDER BY version")] == [
        v for v, _ in MIGRATIONS]
    assert sqlite_rows(jpath, "SELECT COUNT(*) FROM orders")[0][0] == 1
    assert sqlite_rows(jpath, "SELECT COUNT(*) FROM audit_head")[0][0] == 1


async def test_a_new_migration_is_applied_once_and_old_rows_still_verify(jpath: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    async with opened(jpath) as j:
        await j.record_order(order(), T0)
    v2 = SCHEMA_VERSION + 1
    monkeypatch.setattr(journal_schema, "MIGRATIONS", [*MIGRATIONS, (v2, ["ALTER TABLE orders ADD COLUMN venue TEXT"])])
    monkeypatch.setattr(journal_schema, "SCHEMA_VERSION", v2)
    for _ in range(2):
        async with opened(jpath) as j:
            assert j.schema_version == v2
            await j.record_order(order(), T0 + 1)
    assert "venue" in {r[1] for r in sqlite_rows(jpath, "PRAGMA table_info(orders)")}
    assert [r[0] for r in sqlite_rows(jpath, "SELECT version FROM schema_version ORDER BY version")] == [
        *(v for v, _ in MIGRATIONS), v2]
    assert verify(jpath).ok  # the NULL column is outside the old rows' hashes


async def test_a_failing_migration_is_rolled_back(jpath: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with opened(jpath):
        pass
    v2 = SCHEMA_VERSION + 1
    monkeypatch.setattr(journal_schema, "MIGRATIONS",
                        [*MIGRATIONS, (v2, ["CREATE TABLE half_done (a INTEGER)", "THIS IS NOT SQL"])])
    monkeypatch.setattr(journal_schema, "SCHEMA_VERSION", v2)
    with pytest.raises(JournalError, match=f"journal migration {v2} failed"):
        await Journal.open(jpath)
    assert sqlite_rows(jpath, "SELECT MAX(version) FROM schema_version")[0][0] == SCHEMA_VERSION
    assert not sqlite_rows(jpath, "SELECT name FROM sqlite_master WHERE name = 'half_done'")


async def test_a_newer_schema_is_refused_clearly(jpath: Path) -> None:
    async with opened(jpath):
        pass
    sqlite_rows(jpath, "INSERT INTO schema_version (version, applied_at) VALUES (9, 'later')")
    with pytest.raises(JournalError) as err:
        await Journal.open(jpath)
    assert str(err.value) == (f"journal schema version 9 is newer than this spikeguard (knows {SCHEMA_VERSION}): "
                              f"upgrade spikeguard")


async def test_a_file_that_is_not_sqlite_is_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "notes.db"
    bad.write_bytes(b"this is a text file, not a database\n" * 200)
    with pytest.raises(JournalError) as err:
        await Journal.open(bad)
    msg = str(err.value)
    assert str(bad) in msg and "\n" not in msg and "not a SQLite database" in msg
    with pytest.raises(JournalError, match="not a SQLite database"):
        verify(bad)


async def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite_rows(other, "CREATE TABLE customers (id INTEGER)")
    with pytest.raises(JournalError, match="not a spikeguard journal"):
        await Journal.open(other)


# ---------------------------------------------------------------------------- writes
async def test_acknowledged_writes_survive_close_and_reopen(jpath: Path) -> None:
    async with opened(jpath) as j:
        sid = await j.record_spike(spike())
        await j.update_spike(sid, status="analyzed", context_analysis={"news": "none"}, pnl=12)
        did = await j.record_agent_decision("risk_manager", "risk_assessed", "APPROVE", agent_role="risk",
                                            confidence=0.7, reasoning="ok", input_data={"spike": sid},
                                            output_data={"size": 1}, execution_time_ms=12.5, spike_event_id=sid)
        pid = await j.record_agent_performance("risk_manager", "daily", total_decisions=10, correct_decisions=7,
                                               incorrect_decisions=3, avg_confidence=0.6)
        oid = await j.record_operator_action("force_trigger", "manual halt", {"keys": "T"})
        await j.record_proposal({"proposal_id": "p1", "created_ms": T0, "expires_ms": T0 + 60_000,
                                 "symbol": "SOLUSDT", "side": "BUY", "quantity": 1.0, "entry_type": "market",
                                 "stop_loss": 95.0, "take_profit": 110.0, "content_hash": "abc"}, spike_event_id=sid)
        await j.update_proposal("p1", status="approved", decided_by="operator", decision_reason="looks right")

    j = await Journal.open(jpath)
    try:
        assert (await j.counts())["spike_events"] == 1
        s = (await j.recent("spike_events", 5))[0]
        assert (s["id"], s["status"], s["context_analysis"], s["pnl"]) == (sid, "analyzed", {"news": "none"}, 12.0)
        assert (s["trading_pair"], s["spike_type"], s["magnitude_percent"], s["agent_detected_by"]) == (
            "SOLUSDT", "spot_price_spike", 6.5, "scanner")
        assert s["timestamp"] == "2023-11-14T22:13:20.000Z"
        d = (await j.recent("agent_decisions", 1))[0]
        assert (d["id"], d["decision"], d["input_data"], d["spike_event_id"]) == (did, "APPROVE", {"spike": sid}, sid)
        perf = (await j.recent("agent_performance", 1))[0]
        assert perf["id"] == pid and perf["accuracy_percent"] == pytest.approx(70.0)
        assert (await j.recent("operator_actions", 1))[0]["id"] == oid
        p = await j.proposal("p1")
        assert p is not None and (p["status"], p["decided_by"], p["spike_event_id"], p["content_hash"]) == (
            "approved", "operator", sid, "abc")
        assert p["payload"]["take_profit"] == 110.0 and p["decided_at"] is not None
        upd = await j.recent("row_updates", 10)
        assert [(u["table_name"], u["row_id"]) for u in upd] == [("proposals", 1), ("spike_events", sid)]
    finally:
        await j.close()
    assert verify(jpath).ok


async def test_concurrent_tasks_and_a_thread_all_land_on_a_gap_free_chain(jpath: Path) -> None:
    async with opened(jpath) as j:
        results, thread_ids = await _write_from_tasks_and_a_thread(j)
    n_tasks, per_task, per_thread = 16, 20, 150
    acked = [r for rs in results for r in rs] + thread_ids
    assert len(acked) == len(set(acked)) == n_tasks * per_task + per_thread
    for table, row_id in acked:
        assert sqlite_rows(jpath, f"SELECT COUNT(*) FROM {table} WHERE id = ?", (row_id,))[0][0] == 1
    seqs = sorted(r[0] for t in ("spike_events", "orders", "agent_decisions", "operator_actions")
                  for r in sqlite_rows(jpath, f"SELECT chain_seq FROM {t}"))
    assert seqs == list(range(1, len(acked) + 1))
    assert sqlite_rows(jpath, "SELECT last_seq FROM audit_head")[0][0] == len(acked)
    result = verify(jpath)
    assert result.ok and result.rows_checked == len(acked), result.first_bad


async def _write_from_tasks_and_a_thread(j: Journal) -> tuple[list, list]:
    n_tasks, per_task, per_thread = 16, 20, 150

    async def worker(k: int) -> list[tuple[str, int]]:
        out = []
        for i in range(per_task):
            if i % 3 == 0:
                out.append(("spike_events", await j.record_spike(spike(t=T0 + k * 1000 + i))))
            elif i % 3 == 1:
                out.append(("orders", await j.record_order(order(), T0 + i)))
            else:
                out.append(("agent_decisions", await j.record_agent_decision(f"agent{k}", "spike_detected", "GO")))
        return out

    thread_futs = []

    def thread_writer() -> None:
        for i in range(per_thread):
            if i % 2:
                thread_futs.append(("orders", j.enqueue_order(order(side=Side.SELL), T0 + i)))
            else:
                thread_futs.append(("operator_actions", j.submit("operator_action", {"action": "note",
                                                                                     "reason": f"n{i}"})))

    th = threading.Thread(target=thread_writer)
    th.start()
    try:
        results = await asyncio.gather(*(worker(k) for k in range(n_tasks)))
    finally:
        await asyncio.to_thread(th.join)
    thread_ids = [(t, await asyncio.wrap_future(f)) for t, f in thread_futs]
    return results, thread_ids


async def test_batching_on_and_off_both_write_everything(tmp_path: Path) -> None:
    for batching in (True, False):
        path = tmp_path / f"b{batching}.db"
        async with opened(path, batching=batching) as j:
            ids = await asyncio.gather(*(j.record_order(order(), T0 + i) for i in range(60)))
            assert sorted(ids) == list(range(1, 61))
            stats = j.stats()
        if batching:
            assert stats["batches"] < 60  # requests queued together share a commit
        else:
            assert stats["batches"] == 60
        assert stats["rows_written"] == 60
        assert verify(path).ok


async def test_synchronous_full_only_for_critical_batches(jpath: Path) -> None:
    """Order intents, order events, fills, breaker rows (and their notified flag) and
    operator actions survive a power cut: their commits run at synchronous=FULL."""
    change = BreakerChanged(epoch=1, previous=BreakerStatus.SAFE, status=BreakerStatus.TRIGGERED, reason="halt",
                            actor=Actor.OPERATOR, time_ms=T0)
    intent = order()
    assert intent.status is OrderStatus.INTENT
    async with opened(jpath) as j:
        durable = [
            lambda: j.record_order(intent, T0),
            lambda: j.record_order(intent.with_(status=OrderStatus.NEW), T0 + 1),
            lambda: j.record_fill(Fill("c1", "BTCUSDT", Side.BUY, 1.0, 10.0, 0.01, "taker", T0)),
            lambda: j.record_breaker_change(change),
            lambda: j.mark_user_notified(1),
            lambda: j.record_operator_action("force_trigger", "halt"),
        ]
        for k, write in enumerate(durable):
            await j.record_spike(spike())
            assert await sync_mode(j) == "NORMAL"
            await write()
            assert await sync_mode(j) == "FULL", f"durable write {k} committed at NORMAL"
        await j.record_agent_decision("a", "x")
        assert await sync_mode(j) == "NORMAL"


async def test_a_bad_request_fails_alone_and_the_rest_of_its_batch_lands(jpath: Path) -> None:
    async with opened(jpath) as j:
        fill = Fill("c1", "BTCUSDT", Side.BUY, 1.0, 10.0, 0.01, "taker", T0, fill_id="dup")
        await j.record_fill(fill)
        results = await asyncio.gather(j.record_order(order(), T0), j.record_fill(fill),
                                       j.update_spike(99, status="x"), j.record_spike(spike()),
                                       j.record_agent_decision("a", "x", spike_event_id=2**70), j.record_spike(spike()),
                                       return_exceptions=True)
        assert isinstance(results[0], int) and isinstance(results[3], int) and isinstance(results[5], int)
        assert isinstance(results[1], JournalError) and "UNIQUE" in str(results[1])
        assert isinstance(results[2], JournalError) and "no spike_events row with id 99" in str(results[2])
        assert isinstance(results[4], JournalError) and "too large" in str(results[4])  # SQLite cannot store it
        assert j.stats()["failed_requests"] == 3 and not j.failing
        # refused as it is built, before it is queued
        with pytest.raises(JournalError, match="cannot be changed"):
            await j.update_spike(1, trading_pair="XRPUSDT")
        with pytest.raises(JournalError, match="refused"):
            await j.record_order(order(quantity=10**400), T0)
        with pytest.raises(JournalError, match="refused"):
            await j.record_order(order(), 2**70)
    assert verify(jpath).ok
    assert sqlite_rows(jpath, "SELECT COUNT(*) FROM fills")[0][0] == 1


async def test_closed_journal_refuses_writes(jpath: Path) -> None:
    async with opened(jpath) as j:
        fut = j.enqueue_order(order(), T0)  # queued before close: written by close
    assert fut.result(timeout=1) == 1
    with pytest.raises(JournalError, match="closed"):
        await j.record_order(order(), T0)
    with pytest.raises(JournalError, match="closed"):
        j.submit("order", order=order())


async def test_unknown_kind_and_column_are_errors(jpath: Path) -> None:
    j = await Journal.open(jpath)
    try:
        with pytest.raises(JournalError, match="unknown journal request kind"):
            j.submit("trade", {})
        with pytest.raises(JournalError, match="unknown journal table"):
            await j.recent("sqlite_master")
    finally:
        await j.close()


# ---------------------------------------------------------------------------- restore reads
async def test_breaker_rows_and_restore_after_restart(jpath: Path) -> None:
    state = CircuitBreakerState()
    async with opened(jpath) as j:
        await _journal_an_episode(j, state)

    async with opened(jpath) as j:
        record = await j.last_breaker_record()
        assert record == state.snapshot().to_dict()
        restored = CircuitBreakerState(MemoryBackend(BreakerRecord.from_dict(record)))
        assert restored.status is BreakerStatus.TRIGGERED and restored.epoch == 5
        # the episode survives the restart: clearing after reopen still gets triggered_at/downtime
        restored.subscribe(j.breaker_subscriber(restored))
        restored.clear(0.0, time_ms=T0 + 1_060_000)
        await j.flush()
        last = (await j.recent("circuit_breaker_events", 1))[0]
        assert (last["status"], last["triggered_at"], last["downtime_seconds"]) == (
            "cleared", "2023-11-14T22:30:00.000Z", 60.0)
        assert (await j.recent("circuit_breaker_events", 5))[-2]["user_notified"] == 0
    assert verify(jpath).ok


async def _journal_an_episode(j: Journal, state: CircuitBreakerState) -> None:
    state.subscribe(j.breaker_subscriber(state))  # the synchronous hot-path subscriber
    snap = {"references": {"BTCUSDT": {"price": 42_150.0, "drop_60m_percent": 17.3, "drop_5m_percent": 4.0},
                           "ETHUSDT": {"price": 2_100.0, "drop_60m_percent": 15.1, "drop_5m_percent": 3.0}}}
    state.set_warning("BTC down 11%", {"drop_percent": 11.0}, time_ms=T0)
    state.trigger("BTC dropped 17.3% in 52 minutes", {"drop_percent": 17.3, "liquidations_1h": 2.5e8}, snap,
                  time_ms=T0 + 60_000, symbol="BTCUSDT", trigger_type="btc_dump")
    legs = {"BTCUSDT": {"met": True, "rebound_percent": 3.1}}
    state.start_recovery(details={"recovery_conditions_met": True, "legs": legs}, time_ms=T0 + 600_000)
    state.clear(1234.5, actor=Actor.OPERATOR, reason="operator clear", time_ms=T0 + 900_000)
    state.trigger("operator halt", actor=Actor.OPERATOR, time_ms=T0 + 1_000_000)
    await j.flush()
    rows = sorted(await j.recent("circuit_breaker_events", 10), key=lambda r: r["id"])
    assert [r["status"] for r in rows] == ["warning", "triggered", "recovering", "cleared", "triggered"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    warn, trig, rec, clr, trig2 = rows
    assert warn["triggered_at"] is None and warn["actor"] == "rule"
    assert trig["triggered_at"] == rec["triggered_at"] == clr["triggered_at"] == "2023-11-14T22:14:20.000Z"
    assert trig["trigger_reason"] == rec["trigger_reason"] == clr["trigger_reason"] == "BTC dropped 17.3% in 52 minutes"
    assert (trig["btc_price_at_trigger"], trig["btc_drop_percent"]) == (42_150.0, 17.3)
    assert (trig["eth_price_at_trigger"], trig["eth_drop_percent"]) == (2_100.0, 15.1)
    assert trig["liquidations_1h"] == 2.5e8 and trig["trigger_type"] == "btc_dump"
    assert trig["trigger_details"]["drop_percent"] == 17.3 and trig["market_snapshot"] == snap
    assert rec["recovery_conditions_met"] == {"met": True, "legs": legs}
    assert clr["cleared_at"] == "2023-11-14T22:28:20.000Z" and clr["capital_saved"] == 1234.5
    assert clr["downtime_seconds"] == 840.0 and clr["recovery_time_seconds"] == 300.0
    assert clr["actor"] == "operator" and trig2["triggered_at"] == "2023-11-14T22:30:00.000Z"
    await j.mark_user_notified(trig["id"])


async def test_last_breaker_record_without_a_stored_record(jpath: Path) -> None:
    j = await Journal.open(jpath)
    try:
        assert await j.last_breaker_record() is None
        change = BreakerChanged(epoch=7, previous=BreakerStatus.SAFE, status=BreakerStatus.TRIGGERED,
                                reason="stale data", actor=Actor.RULE, time_ms=T0, trigger_type="stale_data")
        await j.record_breaker_change(change)
        rec = BreakerRecord.from_dict(await j.last_breaker_record())
        assert (rec.status, rec.epoch, rec.triggered_at_ms, rec.trigger_type) == (
            BreakerStatus.TRIGGERED, 7, T0, "stale_data")
    finally:
        await j.close()


async def test_latest_and_open_orders_and_fills(jpath: Path) -> None:
    a = order(client_order_id="a")
    b = order(client_order_id="b", side=Side.SELL, type=OrderType.STOP, price=None, stop_price=40_000.0,
              reduce_only=True)
    c = order(client_order_id="c")
    f1 = Fill("a", "BTCUSDT", Side.BUY, 0.004, 50_000.0, 0.2, "maker", T0 + 6)
    async with opened(jpath) as j:
        await j.record_order(a, T0)
        await j.record_order(b, T0 + 1)
        await j.record_order(a.with_(status=OrderStatus.NEW, exchange_order_id="x1"), T0 + 2)
        await j.record_order(c, T0 + 3)
        await j.record_order(c.with_(status=OrderStatus.DENIED, reason="breaker TRIGGERED"), T0 + 4)
        await j.record_order(b.with_(status=OrderStatus.UNKNOWN), T0 + 5)
        await j.record_fill(f1)
        await j.record_order(a.with_(status=OrderStatus.PARTIALLY_FILLED, filled_quantity=0.004,
                                     average_price=50_000.0, exchange_order_id="x1"), T0 + 6)

    j = await Journal.open(jpath)
    try:
        latest = await j.latest_orders()
        assert [(o.client_order_id, o.status) for o in latest] == [
            ("c", OrderStatus.DENIED), ("b", OrderStatus.UNKNOWN), ("a", OrderStatus.PARTIALLY_FILLED)]
        still_open = {o.client_order_id: o for o in await j.open_orders()}
        assert set(still_open) == {"a", "b"}
        assert still_open["b"].stop_price == 40_000.0 and still_open["b"].reduce_only
        assert still_open["b"].type is OrderType.STOP
        assert still_open["a"].filled_quantity == 0.004 and still_open["a"].exchange_order_id == "x1"
        assert [o.status for o in await j.order_events("a")] == [
            OrderStatus.INTENT, OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED]
        assert await j.fills() == [f1] and await j.fills("a") == [f1] and await j.fills("b") == []
        raw = (await j.recent("orders", 1))[0]
        assert (raw["event_time"], raw["reduce_only"], raw["type"]) == ("2023-11-14T22:13:20.006Z", 0, "LIMIT")
    finally:
        await j.close()


# ---------------------------------------------------------------------------- one process per journal
async def test_a_second_open_of_one_journal_is_refused_naming_the_holder(jpath: Path) -> None:
    """(A second process is refused the same way: tests/integration/test_journal_faults.py.)"""
    async with opened(jpath) as j:
        await j.record_order(order(), T0)
        with pytest.raises(JournalError) as err:
            await Journal.open(jpath)
        msg = str(err.value)
        assert f"PID {os.getpid()}" in msg and str(jpath) in msg and "\n" not in msg
        assert lock_path(jpath).read_text().splitlines()[0] == str(os.getpid())
        assert await j.record_order(order(), T0 + 1) == 2  # the holder is untouched
    async with opened(jpath) as j:  # closing released the lock
        assert (await j.counts())["orders"] == 2
    assert verify(jpath).ok


async def test_a_refused_open_touches_nothing(jpath: Path) -> None:
    async with opened(jpath) as j:
        await j.record_order(order(), T0)
        await j.flush()
        before = sqlite_rows(jpath, "SELECT last_seq, last_hash, updated_at FROM audit_head")
        for _ in range(3):
            with pytest.raises(JournalError, match="in use"):
                await Journal.open(jpath)
        assert sqlite_rows(jpath, "SELECT last_seq, last_hash, updated_at FROM audit_head") == before


async def test_rows_written_behind_the_journal_stop_it_instead_of_being_adopted(jpath: Path) -> None:
    """With every other spikeguard locked out, a head that moves is a write from outside:
    the journal fails closed (holds its rows, says why) rather than chain onto it."""
    events: list[JournalHealth] = []
    failing = asyncio.Event()
    j = await Journal.open(jpath)
    try:
        j.add_health_listener(lambda e: (events.append(e), failing.set()))
        await j.record_order(order(), T0)
        await j.flush()
        sqlite_rows(jpath, "INSERT INTO operator_actions (id, time, actor, action, chain_seq, prev_hash, row_hash) "
                           "VALUES (1, 't', 'someone', 'forged', 2, 'x', 'y')")
        sqlite_rows(jpath, "UPDATE audit_head SET last_seq = 2, last_hash = 'y'")
        held = j.enqueue_order(order(), T0 + 1)
        await asyncio.wait_for(failing.wait(), 30)
        assert j.failing and j.unwritten == 1 and not held.done()
        assert [e.ok for e in events] == [False] and "moved under the writer" in events[0].error
        assert events[0].unwritten == 1
    finally:
        with pytest.raises(JournalError, match="1 row"):
            await j.close(timeout=0)
    with pytest.raises(JournalError, match="moved under the writer"):
        held.result(timeout=1)
    assert sqlite_rows(jpath, "SELECT COUNT(*) FROM orders")[0][0] == 1


# ---------------------------------------------------------------------------- secrets
async def test_known_secrets_never_reach_the_journal(jpath: Path) -> None:
    secret = "sk-live-4f9a8b7c6d5e4f3a2b1c"
    redact.register([secret])
    try:
        async with opened(jpath) as j:
            await j.record_operator_action("note", f"pasted {secret} by mistake", {"url": f"https://x/?k={secret}"})
            await j.record_spike(spike(), context_analysis={"news": f"token {secret}"})
            await j.record_order(order(reason=f"rejected: bad key {secret}"), T0)
            await j.record_agent_decision("a", "x", reasoning=secret, input_data=[secret])
            sid = await j.record_spike(spike())
            await j.update_spike(sid, outcome=f"the key {secret}")
            rows = [r for t in ("operator_actions", "spike_events", "orders", "agent_decisions", "row_updates")
                    for r in await j.recent(t)]
        assert rows and secret not in repr(rows) and "***" in repr(rows)
        assert secret.encode() not in b"".join(p.read_bytes() for p in jpath.parent.iterdir() if p.is_file())
        assert verify(jpath).ok
    finally:
        redact.forget_all()


async def test_a_dead_writer_fails_waiters_instead_of_hanging(jpath: Path) -> None:
    j = await Journal.open(jpath)
    try:
        futs = [j.enqueue_order(order(), T0) for _ in range(3)]
        writer = j._writer
        writer.cancel()  # the writer dies before it runs a step
        await asyncio.wait({writer})
        for f in futs:
            with pytest.raises(JournalError, match="closed"):
                f.result(timeout=1)
        with pytest.raises(JournalError, match="writer stopped"):
            await j.record_order(order(), T0)
    finally:
        with pytest.raises(JournalError, match="3 row"):
            await j.close()
    await j.close()  # idempotent, and says it once
