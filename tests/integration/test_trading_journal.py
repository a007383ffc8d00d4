"""Trading meets the journal: restart restores the breaker and the book; replays journal
their spikes and transitions; the audit command names the first bad row."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator

from core.config import load_config
from core.events import BreakerStatus
from core.journal import verify
from core.session import Session
from core.trading.orders import Order, OrderStatus, OrderType, Side
from tests.conftest import run_cli
from tests.helpers import T0, ListFeed, path


def settings():
    # a held position must survive the restart here: the de-risking policy, which would sell it at the
    # trip, is the subject of test_policy_session.py
    return load_config(env={}, dotenv_paths=[], overrides=["protection_policy.enabled=false"]).settings


@contextlib.asynccontextmanager
async def session_on(db, seen: list | None = None) -> AsyncIterator[Session]:
    """A session with its journal open (and its state restored from it, after the ticks in
    `seen`). Its journal is closed however the test ends; the test may close it first, as a
    crash would, so the next session restores what it left."""
    session = Session(settings(), ListFeed(), journal_path=db)
    try:
        if seen:
            session.engine.process(seen)
        await session.open_journal(db)
        yield session
    finally:
        if session.journal is not None:
            await session.journal.close()  # idempotent


async def test_a_triggered_breaker_and_the_paper_book_survive_a_restart(tmp_path):
    db = tmp_path / "journal.db"
    async with session_on(db) as first:
        await _trip_with_a_position_and_a_resting_bid(first)
        epoch = first.breaker.epoch
        await first.journal.flush()
        await first.journal.close()  # a crash would lose nothing acknowledged; see the kill -9 test

    async with session_on(db) as second:
        assert second.breaker.status is BreakerStatus.TRIGGERED and second.breaker.epoch == epoch
        assert second.portfolio.quantity("ETHUSDT") == first.portfolio.quantity("ETHUSDT") > 0
        assert abs(second.portfolio.cash - first.portfolio.cash) < 1e-6
        # the restored breaker still blocks entries
        second.engine.process(path("ETHUSDT", [(40, 3_000.0), (41, 3_000.0)]))
        denied = await second.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET,
                                                quantity=0.1))
        assert denied.status is OrderStatus.DENIED and "TRIGGERED" in denied.reason
        await second.close()
    assert verify(db).ok


async def _trip_with_a_position_and_a_resting_bid(first: Session) -> None:
    first.engine.process(path("BTCUSDT", [(0, 100_000.0), (10, 100_000.0)]))
    first.engine.process(path("ETHUSDT", [(0, 3_000.0), (10, 3_000.0)]))
    bought = await first.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.2))
    assert bought.status is OrderStatus.FILLED
    resting = await first.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity=0.1,
                                            price=2_990.0))
    assert resting.status is OrderStatus.NEW
    first.engine.process(path("BTCUSDT", [(10, 100_000.0), (30, 84_000.0)], start=T0))
    assert first.breaker.status is BreakerStatus.TRIGGERED
    assert first.gate.open_orders() == []  # the halt cancelled the resting bid


async def test_open_orders_come_back_after_a_restart(tmp_path):
    db = tmp_path / "journal.db"
    async with session_on(db) as first:
        first.engine.process(path("ETHUSDT", [(0, 3_000.0), (10, 3_000.0)]))
        resting = await first.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.LIMIT,
                                                quantity=0.1, price=2_990.0))
        await first.journal.flush()
    # restore re-submits the order through the gate, which needs a fresh price to allow an entry
    async with session_on(db, seen=path("ETHUSDT", [(20, 3_000.0), (21, 3_000.0)])) as second:
        assert [o.client_order_id for o in second.gate.open_orders()] == [resting.client_order_id]


def test_replay_journals_spikes_and_transitions_and_reports_protection(tmp_path, market_data):
    db = tmp_path / "replay.db"
    result = run_cli("replay", "--json", "--db", str(db), str(market_data / "BTCUSDT-1m-2021-05-19.csv"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = report["stats"]["journal_rows"]
    assert rows["circuit_breaker_events"] == len(report["breaker"]) > 0
    assert rows["spike_events"] == len(report["spikes"]) > 0
    p = report["protection"]
    for key in ("capital_saved", "max_drawdown_with_breaker_pct", "max_drawdown_without_pct",
                "equity_difference_at_end"):
        assert isinstance(p[key], float), key
    assert p["max_drawdown_with_breaker_pct"] < p["max_drawdown_without_pct"]
    assert p["capital_saved"] > 0 and p["flattened_at"]
    with sqlite3.connect(db) as con:
        statuses = [r[0] for r in con.execute("SELECT status FROM circuit_breaker_events ORDER BY id")]
    assert "triggered" in statuses
    audit = run_cli("audit", "verify", "--db", str(db))
    assert audit.returncode == 0 and "audit ok" in audit.stdout


def test_replay_without_db_leaves_no_journal_behind(tmp_path, market_data):
    result = run_cli("replay", "--json", str(market_data / "BTCUSDT-5m-2020-03-12.csv"), env={"TMPDIR": str(tmp_path)})
    report = json.loads(result.stdout)
    assert report["stats"]["journal"] is None and report["stats"]["journal_rows"]["circuit_breaker_events"] > 0
    assert list(tmp_path.iterdir()) == []


def test_db_init_and_audit_verify_name_the_first_bad_row(tmp_path, market_data):
    db = tmp_path / "j.db"
    init = run_cli("db", "init", "--db", str(db))
    assert init.returncode == 0 and "journal ready" in init.stdout and db.exists()
    run_cli("replay", "--json", "--db", str(db), str(market_data / "ETHUSDT-5m-2025-10-10-futures.csv"))
    assert run_cli("audit", "verify", "--db", str(db)).returncode == 0
    with sqlite3.connect(db) as con:
        row_id = con.execute("SELECT id FROM circuit_breaker_events ORDER BY id LIMIT 1 OFFSET 1").fetchone()[0]
        con.execute("UPDATE circuit_breaker_events SET trigger_reason = 'nothing happened' WHERE id = ?", (row_id,))
    bad = run_cli("audit", "verify", "--db", str(db))
    assert bad.returncode != 0
    assert f"table circuit_breaker_events id {row_id}" in bad.stdout


def test_db_and_audit_on_the_default_path(tmp_path):
    init = run_cli("--data-dir", str(tmp_path), "db", "init")
    assert init.returncode == 0 and str(tmp_path / "journal.db") in init.stdout
    audit = run_cli("--data-dir", str(tmp_path), "audit", "verify")
    assert audit.returncode == 0
    missing = run_cli("audit", "verify", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and "no journal here" in missing.stderr
