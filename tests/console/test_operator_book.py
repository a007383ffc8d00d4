"""The operator's hands in a crash: F flattens and X cancels in any breaker state (over any
dialog too), a trip is shown as saving… until it is on disk, and a journal that cannot write
says JOURNAL FAILING while new entries are blocked."""

from __future__ import annotations

import concurrent.futures

from core.events import BreakerStatus, JournalHealth
from core.trading.orders import Order, OrderStatus, OrderType, Side
from tests.console.conftest import dump_spike, make_app, screen_text
from tests.helpers import path

SIZE = (120, 40)


async def _ready(app, pilot) -> None:
    await pilot.pause()
    app.frame()
    await pilot.pause()


async def _position_with_stop(session):
    session.engine.process(path("ETHUSDT", [(0, 3_000.0), (10, 3_000.0)]))
    bought = await session.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.2))
    assert bought.status is OrderStatus.FILLED
    stop = await session.gate.submit(Order(symbol="ETHUSDT", side=Side.SELL, type=OrderType.STOP, quantity=0.2,
                                           stop_price=2_900.0, reduce_only=True))
    assert stop.status is OrderStatus.NEW
    return stop


async def test_f_flattens_while_triggered_and_over_the_approval_dialog(session, clock):
    await _position_with_stop(session)
    dump_spike(session)  # a pending proposal, so the approval dialog can be open
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("a")
        assert type(app.screen).__name__ == "ApproveScreen"
        session.force_trigger("crash")
        await pilot.press("F")  # a priority key: over the approval dialog
        assert type(app.screen).__name__ == "FlattenScreen"
        await pilot.press("enter")  # the only position is the default choice
        await pilot.press(*"get out", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert session.portfolio.quantity("ETHUSDT") == 0 and session.gate.open_orders() == []
    assert session.breaker.status is BreakerStatus.TRIGGERED


async def test_f_refuses_a_symbol_with_no_position(session, clock):
    await _position_with_stop(session)
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("F")
        box = app.screen.query_one("#choice")
        box.value = ""
        await pilot.press(*"BTCUSDT", "enter")
        assert type(app.screen).__name__ == "FlattenScreen"  # still asking
        await pilot.press("escape")
        await pilot.pause()
    assert session.portfolio.quantity("ETHUSDT") == 0.2


async def test_x_cancels_the_chosen_order_and_says_what_it_was(session, clock):
    stop = await _position_with_stop(session)
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("X")
        assert type(app.screen).__name__ == "CancelOrderScreen"
        assert "protective exit" in screen_text(app)
        await pilot.press("enter", "enter")  # the only order is the default
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert session.gate.open_orders() == []
    assert stop.client_order_id in [o.client_order_id for o in session.orders_seen
                                    if o.status is OrderStatus.CANCELED]


class HeldJournal:
    """A journal whose breaker rows commit when the test says so."""

    failing = False

    def __init__(self) -> None:
        self.rows: list[concurrent.futures.Future] = []

    def enqueue_breaker_change(self, change, record):
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self.rows.append(fut)
        return fut

    def _done(self, *args, **kwargs):
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_result(1)
        return fut

    enqueue_spike = enqueue_operator_action = submit = enqueue_order = enqueue_fill = _done

    async def record_order(self, order, event_time_ms=None) -> int:
        return 1

    async def close(self) -> None:
        pass


async def test_a_trip_shows_saving_until_it_is_on_disk(session, clock):
    journal = HeldJournal()
    session.attach_journal(journal, None)
    app = make_app(session, clock)
    told: list[str] = []
    notify = app.notify
    app.notify = lambda message, **kw: (told.append(message), notify(message, **kw))[1]
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("T", *"halt", "enter")
        await pilot.pause()
        app.frame()
        await pilot.pause()
        assert session.breaker.status is BreakerStatus.TRIGGERED
        assert "TRIGGERED by operator saving…" in screen_text(app)
        assert not any("TRIGGERED" in m for m in told)  # not announced as done yet
        journal.rows[-1].set_result(42)  # the row is committed
        await app.workers.wait_for_complete()
        app.frame()
        await pilot.pause()
        assert "saving…" not in screen_text(app)
        assert told[-1] == "breaker TRIGGERED (journaled)"


async def test_a_failing_journal_is_in_the_banner_and_the_status_bar_and_blocks_entries(session, clock):
    journal = HeldJournal()
    session.attach_journal(journal, None)
    dump_spike(session)
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        journal.failing = True
        session._on_journal_health(JournalHealth(False, "database or disk is full", 12, 0))
        app.frame()
        await pilot.pause()
        banner, status = banner_and_status(app)
        assert "JOURNAL FAILING: database or disk is full (12 rows held); new entries blocked" in banner
        assert "JOURNAL FAILING memory" in status
        [proposal] = session.approvals.pending()
        result = await session.approve(proposal.proposal_id, proposal.content_hash)
        assert not result.ok and "journal failing" in result.message
        journal.failing = False
        session._on_journal_health(JournalHealth(True, None, 0, 0))
        app.frame()
        await pilot.pause()
        banner, status = banner_and_status(app)
        assert "JOURNAL FAILING" not in banner and "JOURNAL FAILING" not in status


def banner_and_status(app) -> tuple[str, str]:
    """The banner's lines (the breaker state and what follows it) and the status bar's line."""
    lines = screen_text(app).splitlines()
    start = next(i for i, line in enumerate(lines) if "SAFE" in line or "WARNING" in line or "TRIGGERED" in line)
    status = next(line for line in lines if line.strip().startswith("PAPER"))
    return " ".join(lines[start:start + 2]), status
