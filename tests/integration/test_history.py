"""The operator's history (core.history): breaker transitions, alerts, orders and fills and
operator actions, fed live by the session and read back from the journal after a restart."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from core.config import load_config
from core.events import FeedHealth, FeedState
from core.history import HistoryBook, HistoryEntry, breaker_entry
from core.session import Session
from core.trading.orders import Order, OrderStatus, OrderType, Side
from tests.helpers import ListFeed, path


def settings():
    return load_config(env={}, dotenv_paths=[]).settings


@contextlib.asynccontextmanager
async def session_on(db: Path) -> AsyncIterator[Session]:
    s = Session(settings(), ListFeed(), journal_path=db, wall_clock=lambda: 1_767_225_600_000)
    try:
        await s.open_journal(db)
        yield s
    finally:
        await s.close()


def prices(s: Session) -> None:
    s.engine.process(path("BTCUSDT", [(0, 100_000.0), (10, 100_000.0)]))
    s.engine.process(path("ETHUSDT", [(0, 3_000.0), (10, 3_000.0)]))


def labels(s: Session, pane: str, query: str = "") -> list[str]:
    return [e.label for e in s.history.entries(pane, query)]


async def a_busy_first_run(db: Path) -> None:
    async with session_on(db) as s:
        prices(s)
        filled = await s.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.1))
        assert filled.status is OrderStatus.FILLED
        s.pause_scanner(True)
        s.force_trigger("operator kill switch")
        denied = await s.gate.submit(Order(symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.001))
        assert denied.status is OrderStatus.DENIED
        s.engine.process([FeedHealth("trades", FeedState.RECONNECTING, "socket closed", 0, 1, 0)])
        await s.journal.flush()


async def test_the_session_feeds_every_pane_live(tmp_path):
    db = tmp_path / "journal.db"
    async with session_on(db) as s:
        prices(s)
        await s.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.1))
        s.force_trigger("operator kill switch")
        s.engine.process([FeedHealth("trades", FeedState.STALE, "no message for 10s", 0, 0, 0)])
        s.pause_feed(True)
        assert labels(s, "breaker") == ["TRIGGERED"]
        assert "breaker TRIGGERED" in labels(s, "alerts") and "feed" in labels(s, "alerts")
        assert {"FILL", "FILLED"} <= set(labels(s, "orders")), labels(s, "orders")
        # the de-risking policy's cut (actor policy) came with the trip, before the operator's row of it
        assert labels(s, "operator") == ["policy_cut", "force_trigger", "pause_feed"]
        assert s.history.entries("operator")[0].actor == "policy"
        assert all(not e.past for pane in ("breaker", "alerts", "orders", "operator") for e in s.history.entries(pane))


async def test_a_restart_reads_every_pane_back_from_the_journal(tmp_path):
    db = tmp_path / "journal.db"
    await a_busy_first_run(db)
    async with session_on(db) as s:
        book = s.history
        assert book.loaded_from_journal > 0
        assert labels(s, "breaker") == ["TRIGGERED"], book.entries("breaker")
        breaker = book.entries("breaker")[0]
        assert breaker.past and breaker.actor == "operator" and "operator kill switch" in breaker.text
        assert "breaker TRIGGERED" in labels(s, "alerts")
        feed_alert = [e for e in book.entries("alerts") if e.label == "feed"]
        assert feed_alert and "trades reconnecting: socket closed" in feed_alert[0].text, book.entries("alerts")
        orders = labels(s, "orders")
        assert "FILLED" in orders and "FILL" in orders and "DENIED" in orders, orders
        denied = book.entries("orders", "denied")[0]
        assert "BTCUSDT" in denied.text and denied.severity == "warning"
        assert labels(s, "operator")[:3] == ["pause_scanner", "policy_cut", "force_trigger"], \
            book.entries("operator")
        # the restored TRIGGERED is the journal's row, not a second transition
        assert len(book.entries("breaker")) == 1


async def test_the_journal_is_read_back_in_the_order_the_first_run_saw(tmp_path):
    db = tmp_path / "journal.db"
    async with session_on(db) as first:
        prices(first)
        first.force_trigger("one")
        first.pause_scanner(True)
        first.clear_breaker("two", override=True)
        first.engine.process([FeedHealth("trades", FeedState.STALE, "quiet", 0, 0, 0)])
        first.force_trigger("three")
        await first.journal.flush()
        seen = {pane: [(e.label, e.text) for e in first.history.entries(pane)] for pane in ("breaker", "alerts",
                                                                                          "operator")}
    async with session_on(db) as again:
        for pane, entries in seen.items():
            read = [(e.label, e.text) for e in again.history.entries(pane) if e.past]
            assert read == entries, pane


def test_a_filter_matches_text_label_actor_symbol_and_severity():
    book = HistoryBook()
    book.add(breaker_entry("WARNING", "SAFE", "BTCUSDT down 11% in 60m", "rule", 1, 1_000, "BTCUSDT"))
    book.add(breaker_entry("TRIGGERED", "WARNING", "BTCUSDT down 15.2% in 60m", "rule", 2, 2_000, "BTCUSDT"))
    book.add(breaker_entry("SAFE", "TRIGGERED", "cleared after review", "operator", 3, 3_000, None))
    assert labels_of(book.entries("breaker", "triggered")) == ["TRIGGERED", "SAFE"]  # SAFE's text says TRIGGERED →
    assert labels_of(book.entries("breaker", "error")) == ["TRIGGERED"]
    assert labels_of(book.entries("breaker", "OPERATOR")) == ["SAFE"]
    assert labels_of(book.entries("breaker", "btcusdt")) == ["WARNING", "TRIGGERED"]
    assert labels_of(book.entries("breaker", "nothing like it")) == []
    assert labels_of(book.entries("alerts")) == ["breaker WARNING", "breaker TRIGGERED"]


def labels_of(entries: list[HistoryEntry]) -> list[str]:
    return [e.label for e in entries]


def test_panes_are_bounded_and_a_view_past_the_bound_rebuilds():
    book = HistoryBook(max_entries=3)
    for i in range(5):
        book.add(breaker_entry("WARNING", "SAFE", f"r{i}", "rule", i, i, None))
    assert [e.text.split()[0] for e in book.entries("breaker")] == ["r2", "r3", "r4"]
    bookmark, new = book.tail("breaker", 4)
    assert bookmark == 5 and [e.text for e in new] == [book.entries("breaker")[-1].text]
    assert book.tail("breaker", 0) == (5, None)  # 5 added, 3 kept: the view must rebuild
    assert book.tail("breaker", 5) == (5, [])
