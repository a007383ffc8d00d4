"""The session's safety commands and its restart, over a real journal: restore goes through
the gate, the operator can always flatten and cancel, quitting keeps protective stops, a
breaker transition is reported durable only once it is on disk."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from core.breaker.machine import BreakerRecord
from core.config import load_config
from core.events import Actor, BreakerChanged, BreakerStatus
from core.journal import verify
from core.session import Session
from core.trading.orders import Order, OrderStatus, OrderType, Side
from core.trading.paper import PaperExchange
from tests.helpers import T0, ListFeed, path


def settings():
    return load_config(env={}, dotenv_paths=[]).settings


@contextlib.asynccontextmanager
async def session_on(db: Path) -> AsyncIterator[Session]:
    s = Session(settings(), ListFeed(), journal_path=db)
    try:
        await s.open_journal(db)
        yield s
    finally:
        await s.close()


def prices(s: Session, minutes: tuple[float, float] = (0, 10)) -> None:
    s.engine.process(path("BTCUSDT", [(minutes[0], 100_000.0), (minutes[1], 100_000.0)]))
    s.engine.process(path("ETHUSDT", [(minutes[0], 3_000.0), (minutes[1], 3_000.0)]))


def stop_for(qty: float, symbol: str = "ETHUSDT", stop: float = 2_900.0) -> Order:
    return Order(symbol=symbol, side=Side.SELL, type=OrderType.STOP, quantity=qty, stop_price=stop, reduce_only=True)


def buy(qty: float, symbol: str = "ETHUSDT", **kw) -> Order:
    return Order(symbol=symbol, side=Side.BUY, type=kw.pop("type", OrderType.MARKET), quantity=qty, **kw)


def breaker_rows(db: Path) -> list[tuple[int, str]]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute("SELECT epoch, breaker_status FROM circuit_breaker_events ORDER BY id").fetchall()


def order_rows(db: Path, client_order_id: str) -> list[tuple[str, str | None]]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute("SELECT status, reason FROM orders WHERE client_order_id = ? ORDER BY id",
                           (client_order_id,)).fetchall()


# ---------------------------------------------------------------------- restart
async def test_a_restart_under_triggered_cancels_entries_through_the_gate_and_keeps_stops(tmp_path):
    db = tmp_path / "journal.db"
    async with session_on(db) as first:
        prices(first)
        assert (await first.gate.submit(buy(0.2))).status is OrderStatus.FILLED
        stop = await first.gate.submit(stop_for(0.2))
        bid = await first.gate.submit(buy(0.1, type=OrderType.LIMIT, price=2_990.0))
        assert stop.status is OrderStatus.NEW and bid.status is OrderStatus.NEW
        first.breaker.trigger("operator test", actor=Actor.OPERATOR, time_ms=T0 + 600_000)
        epoch = first.breaker.epoch
        # a crash, not a quit: the bid the halt cancelled must not come back, and the stop stays
        await first.journal.flush()
    async with session_on(db) as second:
        assert second.breaker.status is BreakerStatus.TRIGGERED and second.breaker.epoch == epoch
        assert [o.client_order_id for o in second.gate.open_orders()] == [stop.client_order_id]
        assert second.portfolio.quantity("ETHUSDT") > 0
    assert [e for e, _ in breaker_rows(db)].count(epoch) == 1, "the restored transition was journaled again"
    assert verify(db).ok


async def _crashed_with_a_resting_bid(db: Path, trip_row: bool) -> Order:
    """A session that rests a bid and dies without cancelling it; with `trip_row`, its last
    journal row is a TRIGGERED transition whose halt never ran (killed in between)."""
    first = Session(settings(), ListFeed(), journal_path=db)
    await first.open_journal(db)
    prices(first)
    bid = await first.gate.submit(buy(0.1, type=OrderType.LIMIT, price=2_990.0))
    assert bid.status is OrderStatus.NEW
    if trip_row:
        record = BreakerRecord(status=BreakerStatus.TRIGGERED, epoch=1, since_ms=T0, reason="crash",
                               actor=Actor.RULE, trigger_type="eth_dump", triggered_at_ms=T0)
        change = BreakerChanged(epoch=1, previous=BreakerStatus.SAFE, status=BreakerStatus.TRIGGERED,
                                reason="crash", actor=Actor.RULE, time_ms=T0)
        first.journal.enqueue_breaker_change(change, record.to_dict())
    await first.journal.flush()
    await first.journal.close()  # no session close: nothing cancels the bid
    return bid


async def test_a_restart_under_triggered_cancels_a_journaled_entry_through_the_gate(tmp_path):
    db = tmp_path / "journal.db"
    bid = await _crashed_with_a_resting_bid(db, trip_row=True)
    async with session_on(db) as second:
        assert second.breaker.status is BreakerStatus.TRIGGERED
        assert second.gate.open_orders() == []
        second.engine.process(path("ETHUSDT", [(20, 2_985.0), (30, 2_980.0)]))  # it would have filled
        assert second.portfolio.quantity("ETHUSDT") == 0
    status, reason = order_rows(db, bid.client_order_id)[-1]
    assert status == "CANCELED" and reason.startswith("restore: circuit breaker TRIGGERED")


async def test_a_restart_in_safe_re_checks_entries_and_cancels_them_without_fresh_prices(tmp_path):
    db = tmp_path / "journal.db"
    bid = await _crashed_with_a_resting_bid(db, trip_row=False)
    async with session_on(db) as second:
        assert second.breaker.status is BreakerStatus.SAFE and second.gate.open_orders() == []
    status, reason = order_rows(db, bid.client_order_id)[-1]
    assert status == "CANCELED" and reason == "restore: no reference price for ETHUSDT"


async def test_a_restart_in_recovering_stays_recovering(tmp_path):
    db = tmp_path / "journal.db"
    async with session_on(db) as first:
        first.breaker.trigger("crash", time_ms=T0)
        first.breaker.start_recovery(time_ms=T0 + 60_000)
        epoch = first.breaker.epoch
    async with session_on(db) as second:
        assert second.breaker.status is BreakerStatus.RECOVERING and second.breaker.epoch == epoch
        second.engine.process(path("ETHUSDT", [(0, 3_000.0), (1, 3_000.0)]))
        d = second.gate.check(buy(0.1))
        assert d.allowed and d.quantity == 0.025  # recovering_size_factor 0.25


async def test_an_unreadable_breaker_record_restores_as_triggered(tmp_path):
    db = tmp_path / "journal.db"
    async with session_on(db) as first:
        first.breaker.set_warning("wobble", time_ms=T0)
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("UPDATE circuit_breaker_events SET breaker_record = '{\"status\": \"MOSTLY_FINE\"}'")
        con.commit()
    async with session_on(db) as second:
        assert second.breaker.status is BreakerStatus.TRIGGERED and second.breaker.epoch == 2
        assert "could not be read" in second.breaker.snapshot().reason


# ---------------------------------------------------------------------- the operator's commands
async def test_flatten_cancels_the_stop_sells_the_position_and_is_journaled(tmp_path):
    db = tmp_path / "journal.db"
    async with session_on(db) as s:
        prices(s)
        assert (await s.gate.submit(buy(0.2))).status is OrderStatus.FILLED
        assert (await s.gate.submit(stop_for(0.2))).status is OrderStatus.NEW
        s.force_trigger("crash")
        lines = await s.flatten(None, "get me out")
        assert lines == ["ETHUSDT: sell 0.2 filled"], lines
        assert s.portfolio.quantity("ETHUSDT") == 0 and s.gate.open_orders() == []
        await s.journal.flush()
    with contextlib.closing(sqlite3.connect(db)) as con:
        actions = [r[0] for r in con.execute("SELECT action FROM operator_actions ORDER BY id")]
    assert "flatten" in actions


class RefusesMarketSells(PaperExchange):
    """An exchange that refuses market sells (as Binance does in a halted market)."""

    def place_now(self, order: Order) -> Order:
        if order.type is OrderType.MARKET and order.side is Side.SELL:
            refused = order.with_(status=OrderStatus.REJECTED, reason="market orders are suspended")
            self._emit_order(refused)
            return refused
        return super().place_now(order)


async def test_a_refused_flatten_puts_the_protective_stop_back(tmp_path):
    s = Session(settings(), ListFeed(), exchange_factory=lambda st, market, clock: RefusesMarketSells(
        st.execution.paper, market, clock))
    try:
        prices(s)
        assert (await s.gate.submit(buy(0.2))).status is OrderStatus.FILLED
        old_stop = await s.gate.submit(stop_for(0.2))
        lines = await s.flatten("ETHUSDT", "try")
        assert lines == ["ETHUSDT: sell rejected: market orders are suspended"], lines
        (stop,) = s.gate.open_orders()
        assert stop.type is OrderType.STOP and stop.reduce_only and stop.quantity == 0.2
        assert stop.stop_price == old_stop.stop_price and stop.client_order_id != old_stop.client_order_id
    finally:
        await s.close()


async def test_cancel_one_order_is_allowed_while_triggered_and_journaled(tmp_path):
    db = tmp_path / "journal.db"
    async with session_on(db) as s:
        prices(s)
        assert (await s.gate.submit(buy(0.2))).status is OrderStatus.FILLED
        stop = await s.gate.submit(stop_for(0.2))
        s.force_trigger("crash")
        done = await s.cancel_order(stop.client_order_id, "moving it")
        assert done.status is OrderStatus.CANCELED
        await s.journal.flush()
    assert order_rows(db, stop.client_order_id)[-1] == ("CANCELED", "operator: moving it")


async def test_quitting_cancels_entries_and_keeps_protective_stops(tmp_path):
    db = tmp_path / "journal.db"
    s = Session(settings(), ListFeed(), journal_path=db)
    await s.open_journal(db)
    prices(s)
    assert (await s.gate.submit(buy(0.2))).status is OrderStatus.FILLED
    stop = await s.gate.submit(stop_for(0.2))
    bid = await s.gate.submit(buy(0.1, type=OrderType.LIMIT, price=2_990.0))
    await s.close("operator quit")
    assert order_rows(db, stop.client_order_id)[-1][0] == "NEW"
    assert order_rows(db, bid.client_order_id)[-1][0] == "CANCELED"


# ---------------------------------------------------------------------- durable before shown
async def test_a_trip_is_reported_saved_only_once_its_row_is_on_disk(tmp_path):
    db = tmp_path / "journal.db"
    async with session_on(db) as s:
        s.force_trigger("operator test")
        epoch = s.breaker.epoch
        saved_at_once = s.breaker_saved(epoch)
        await s.wait_saved(epoch)
        assert s.breaker_saved(epoch)
        assert (epoch, "TRIGGERED") in breaker_rows(db)  # readable by another connection: committed
    assert saved_at_once is False  # the writer task had not run yet when the trip returned


async def test_without_a_journal_nothing_is_waited_for():
    s = Session(settings(), ListFeed())
    s.force_trigger("x")
    assert s.breaker_saved()
    await s.close()
