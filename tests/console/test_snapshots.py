"""Snapshot tests: a seeded market, a frozen clock, a fixed terminal, no live workers.

Regenerate after an intended change with: .venv/bin/python -m pytest tests/console --snapshot-update
"""

from __future__ import annotations

import pytest

from core.config import load_config
from core.market.sim import SimFeed
from core.session import Session
from tests.console.conftest import Clock, make_app
from tests.helpers import MIN, path

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def seeded_app(scenario: str, minutes: float, clock: Clock):
    """The app over a sim market replayed synchronously up to `minutes` of event time
    (the app exists first, so it sees every event the engine publishes)."""
    settings = load_config(env={}, dotenv_paths=[]).settings
    feed = SimFeed(scenario=scenario, seed=11, tick_interval_ms=1000, duration_s=minutes * 60)
    session = Session(settings, feed, wall_clock=clock.ms)
    app = make_app(session, clock)
    events = list(feed._events())
    for i in range(0, len(events), 512):
        session.engine.process(events[i:i + 512])
    return app


def warning_app(clock: Clock):
    settings = load_config(env={}, dotenv_paths=[]).settings
    from tests.helpers import ListFeed

    session = Session(settings, ListFeed(), wall_clock=clock.ms)
    app = make_app(session, clock)
    session.engine.process(path("ETHUSDT", [(0, 3000.0), (30, 3000.0), (50, 2670.0)], step_ms=5000))
    session.engine.process(path("BTCUSDT", [(0, 90_000.0), (30, 90_000.0), (50, 85_000.0)], step_ms=5000))
    return app


SIZES = [(80, 24), (120, 36), (200, 50)]
SIZE_IDS = ["80x24", "120x36", "200x50"]
HISTORY = ("breaker", "alerts", "orders", "operator")


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_safe(snap_compare, size):
    clock = Clock()
    app = seeded_app("calm", 30, clock)
    assert app.session.breaker.status.value == "SAFE"
    assert snap_compare(app, terminal_size=size)


def test_warning(snap_compare):
    clock = Clock()
    app = warning_app(clock)
    assert app.session.breaker.status.value == "WARNING"
    assert snap_compare(app, terminal_size=(120, 36))


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_triggered(snap_compare, size):
    clock = Clock()
    app = seeded_app("flash-crash", 32, clock)
    assert app.session.breaker.status.value == "TRIGGERED"
    assert snap_compare(app, terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_approval_modal(snap_compare, size):
    clock = Clock()
    from tests.console.conftest import dump_spike
    from tests.helpers import ListFeed

    settings = load_config(env={}, dotenv_paths=[]).settings
    session = Session(settings, ListFeed(), wall_clock=clock.ms)
    app = make_app(session, clock)
    dump_spike(session)
    for p in session.approvals.pending():  # proposal ids are random: pin them for the picture
        pinned = p.model_copy(update={"proposal_id": "p-snapshot"}).sealed()
        session.approvals.proposals = {"p-snapshot": pinned}
        session.approvals.status = {"p-snapshot": session.approvals.status[p.proposal_id]}
    assert snap_compare(app, press=["a"], terminal_size=size)


def test_help(snap_compare):
    clock = Clock()
    app = seeded_app("calm", 15, clock)
    assert snap_compare(app, press=["question_mark"], terminal_size=(120, 36))


def busy_app(clock: Clock):
    """A crash with something in every history pane: the breaker's transitions and their
    alerts, a feed alert, an entry the halt denied, the operator's actions."""
    from core.events import FeedHealth, FeedState

    app = seeded_app("flash-crash", 32, clock)
    session = app.session
    session.engine.process([FeedHealth("trades", FeedState.RECONNECTING, "socket closed", 0, 1, 0)])
    session.pause_scanner(True)
    session.force_trigger("operator kill switch")
    return app


async def _a_denied_entry(pilot) -> None:
    from core.trading.orders import Order, OrderType, Side

    order = Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.1,
                  client_order_id="snapshot-entry")
    await pilot.app.session.gate.submit(order)
    await pilot.pause()


@pytest.mark.parametrize("pane", HISTORY)
@pytest.mark.parametrize("size", SIZES[:2], ids=SIZE_IDS[:2])
def test_history_pane(snap_compare, size, pane):
    clock = Clock()
    app = busy_app(clock)

    async def show(pilot) -> None:
        await _a_denied_entry(pilot)
        tabs = pilot.app.screen.query_one("#tabs" if size == (80, 24) else "#history-tabs")
        tabs.active = f"tab-history-{pane}"
        await pilot.pause()
        pilot.app.frame()
        await pilot.pause()

    assert snap_compare(app, run_before=show, terminal_size=size)


def test_history_panes_side_by_side(snap_compare):
    clock = Clock()
    app = busy_app(clock)

    async def show(pilot) -> None:
        await _a_denied_entry(pilot)
        pilot.app.frame()
        await pilot.pause()

    assert snap_compare(app, run_before=show, terminal_size=(200, 50))


def test_engine_events_are_deterministic():
    """The pictures rely on the seeded engine: the same seed gives the same breaker history."""
    a, b = Clock(), Clock()
    one = seeded_app("flash-crash", 32, a).session
    two = seeded_app("flash-crash", 32, b).session
    assert [(c.status, c.time_ms, c.reason) for c in one.breaker.history] == \
           [(c.status, c.time_ms, c.reason) for c in two.breaker.history]
    assert MIN == 60_000
