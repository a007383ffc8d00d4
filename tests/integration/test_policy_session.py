"""The de-risking policy in a session: its cuts go through the order gate as reduce-only
orders, they and its decisions are journaled (origin and actor "policy"), and it stays out
of a session whose settings turn it off."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path

from core.config import load_config
from core.session import Session
from core.trading.orders import Order, OrderType, Side
from tests.helpers import ListFeed, path


async def _session(db: Path, *overrides: str) -> Session:
    s = Session(load_config(env={}, dotenv_paths=[], overrides=list(overrides)).settings, ListFeed(), journal_path=db)
    await s.open_journal(db)
    s.engine.process(path("BTCUSDT", [(0, 100_000.0), (10, 100_000.0)]))
    s.engine.process(path("ETHUSDT", [(0, 3_000.0), (10, 3_000.0)]))
    await s.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.2))
    assert s.portfolio.quantity("ETHUSDT") == 0.2
    return s


async def _settle(s: Session) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    await s.settle()
    await s.journal.flush()


def _rows(db: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute(sql).fetchall()


async def test_a_trip_flattens_through_the_gate_reduce_only_and_journals_the_policy(tmp_path):
    db = tmp_path / "j.db"
    s = await _session(db)
    try:
        assert s.policy_line().startswith("de-risking: WARNING keep 0%")
        assert s.force_trigger("operator saw the crash coming")
        await _settle(s)
        assert s.portfolio.quantity("ETHUSDT") == 0.0
        assert "holding 0%" in s.policy_line()
        sells = _rows(db, "SELECT side, reduce_only, origin, status FROM orders WHERE origin = 'policy'")
        assert sells and {r[:3] for r in sells} == {("SELL", 1, "policy")}
        assert any(r[3] == "FILLED" for r in sells)
        actions = _rows(db, "SELECT actor, action, details FROM operator_actions WHERE actor = 'policy'")
        assert [a[1] for a in actions] == ["policy_cut"]
        details = json.loads(actions[0][2])
        assert details["status"] == "TRIGGERED" and details["exposure_to"] == 0
    finally:
        await s.close()


async def test_a_policy_turned_off_leaves_the_position_alone(tmp_path):
    db = tmp_path / "j.db"
    s = await _session(db, "protection_policy.enabled=false")
    try:
        assert s.policy is None and s.policy_line() == "de-risking off"
        s.force_trigger("operator halt")
        await _settle(s)
        assert s.portfolio.quantity("ETHUSDT") == 0.2
        assert _rows(db, "SELECT count(*) FROM orders WHERE origin = 'policy'") == [(0,)]
    finally:
        await s.close()
