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


# ---------------------------------------------------------------------- restarts
async def _reopen(db: Path, *overrides: str) -> Session:
    s = Session(load_config(env={}, dotenv_paths=[], overrides=list(overrides)).settings, ListFeed(), journal_path=db)
    await s.open_journal(db)
    return s


async def test_a_restart_in_triggered_cuts_a_book_the_policy_never_got_to_cut(tmp_path):
    """The trip was journaled, then the process died before the policy's sell: the restart cuts it."""
    db = tmp_path / "j.db"
    s = await _session(db, "protection_policy.enabled=false")  # stands in for the cut that never went out
    s.force_trigger("the crash")
    await _settle(s)
    await s.close()
    assert _rows(db, "SELECT count(*) FROM orders WHERE origin = 'policy'") == [(0,)]

    s = await _reopen(db)
    try:
        assert s.breaker.status.value == "TRIGGERED" and s.portfolio.quantity("ETHUSDT") == 0.2
        assert s.policy.resume_due == {"ETHUSDT"}
        s.engine.process(path("ETHUSDT", [(11, 2_900.0), (12, 2_900.0)]))
        await _settle(s)
        assert s.portfolio.quantity("ETHUSDT") == 0.0
        sells = _rows(db, "SELECT side, reduce_only, status FROM orders WHERE origin = 'policy'")
        assert ("SELL", 1, "FILLED") in sells
        actions = _rows(db, "SELECT action, details FROM operator_actions WHERE actor = 'policy'")
        assert [a[0] for a in actions] == ["policy_cut"]
        assert json.loads(actions[0][1])["baseline"] == {"ETHUSDT": 0.2}
    finally:
        await s.close()


async def test_a_restart_after_the_cut_resumes_the_baseline_and_waits_a_whole_confirmation(tmp_path):
    db = tmp_path / "j.db"
    s = await _session(db)
    s.force_trigger("the crash")
    await _settle(s)
    assert s.portfolio.quantity("ETHUSDT") == 0.0
    await s.close()

    s = await _reopen(db)
    try:
        assert s.policy.baseline == {"ETHUSDT": 0.2} and s.policy.exposure == 0.0 and not s.policy.resume_due
        ok, why = s.clear_breaker("the crash is over", override=True)
        assert ok, why
        confirm = s.settings.protection_policy.reentry.confirm_minutes
        s.engine.process(path("ETHUSDT", [(20, 3_000.0), (20 + confirm - 5, 3_000.0)], step_ms=60_000))
        await _settle(s)
        assert s.portfolio.quantity("ETHUSDT") == 0.0, "re-entry waits a whole confirmation after the restart"
        s.engine.process(path("ETHUSDT", [(20 + confirm + 1, 3_000.0), (20 + confirm + 2, 3_000.0)]))
        await _settle(s)
        assert 0.0 < s.portfolio.quantity("ETHUSDT") <= 0.2
        assert s.policy.actions[-1].kind == "reenter"
    finally:
        await s.close()


async def test_the_cut_sells_only_what_resting_exits_leave_free(tmp_path):
    """A resting take-profit holds part of the position: the policy sells the rest instead of being refused."""
    db = tmp_path / "j.db"
    s = await _session(db)
    try:
        tp = await s.gate.submit(Order(symbol="ETHUSDT", side=Side.SELL, type=OrderType.LIMIT, quantity=0.05,
                                       price=3_050.0, reduce_only=True))
        assert tp.status.is_open, tp.reason
        s.force_trigger("the crash")
        await _settle(s)
        assert abs(s.portfolio.quantity("ETHUSDT") - 0.05) < 1e-12
        sells = _rows(db, "SELECT quantity, status FROM orders WHERE origin = 'policy' AND status = 'FILLED'")
        assert sells and abs(sells[0][0] - 0.15) < 1e-12
    finally:
        await s.close()


async def test_a_coin_that_crashes_alone_is_sold_through_the_gate(tmp_path):
    """BTC and ETH stay calm, so the breaker stays SAFE; the held coin's own crash cuts it."""
    db = tmp_path / "j.db"
    s = await _session(db)
    try:
        s.engine.process(path("DOGEUSDT", [(0, 0.30), (10, 0.30)]))
        await s.gate.submit(Order(symbol="DOGEUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=1000.0))
        assert s.portfolio.quantity("DOGEUSDT") == 1000.0
        calm = [path(sym, [(10, p), (40, p)]) for sym, p in (("BTCUSDT", 100_000.0), ("ETHUSDT", 3_000.0))]
        crash = path("DOGEUSDT", [(10, 0.30), (40, 0.24)])  # 20% below its day's high
        s.engine.process(sorted([*crash, *calm[0], *calm[1]], key=lambda tick: tick.time_ms))
        await _settle(s)
        assert s.breaker.status.value == "SAFE"
        assert s.portfolio.quantity("DOGEUSDT") == 0.0 and s.portfolio.quantity("ETHUSDT") == 0.2
        sells = _rows(db, "SELECT symbol, side, reduce_only, origin FROM orders WHERE origin = 'policy'")
        assert set(sells) == {("DOGEUSDT", "SELL", 1, "policy")}
        reason = _rows(db, "SELECT reason FROM operator_actions WHERE actor = 'policy'")[0][0]
        assert reason.startswith("DOGEUSDT 15.")
    finally:
        await s.close()
