"""The console read at every size as an operator would in a crash: nothing essential cut at
80x24, a waiting proposal said on screen, why a spike was skipped or blocked, a RECOVERING
that waits for the operator, the board's detail view, and focus that can be seen."""

from __future__ import annotations

import pytest

from core.events import BreakerStatus, SpikeDetected, SpikeStatus, SpikeType
from tests.console.conftest import dump_spike, make_app, screen_lines, screen_text
from tests.helpers import T0, path

SIZES = [(80, 24), (120, 36), (200, 50)]


async def _ready(app, pilot) -> None:
    await pilot.pause()
    app.frame()
    await pilot.pause()


def a_spike(symbol: str = "DOGEUSDT", minute: int = 30) -> SpikeDetected:
    return SpikeDetected(symbol=symbol, spike_type=SpikeType.SPOT_PRICE_SPIKE, direction="pump", magnitude_pct=6.0,
                         timeframe_minutes=5, volume_multiple=3.0, price_from=0.2, price_to=0.212, confidence=0.6,
                         time_ms=T0 + minute * 60_000, detection_latency_ms=0.1)


@pytest.mark.parametrize("size", SIZES)
async def test_the_banner_keeps_state_actor_and_policy_on_one_line_at_every_size(session, clock, size):
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (5, 100_000.0)]))
    session.force_trigger("a very long reason typed by an operator who had a great deal to say about it all")
    app = make_app(session, clock)
    async with app.run_test(size=size) as pilot:
        await _ready(app, pilot)
        banner = app.screen.query_one("#banner")
        assert banner.region.height == 1
        line = screen_lines(app)[0]
        assert "■ TRIGGERED by operator" in line and "BLOCKED" in line.upper(), line


@pytest.mark.parametrize("size", SIZES)
async def test_help_quit_and_a_waiting_proposal_are_on_screen_at_every_size(session, clock, size):
    dump_spike(session)
    app = make_app(session, clock)
    async with app.run_test(size=size) as pilot:
        await _ready(app, pilot)
        lines = screen_lines(app)
        footer, status = lines[-1], lines[-2]
        assert "? Help" in footer and "q Quit" in footer and "T Trigger" in footer, footer
        assert "▶ 1 proposal waiting: a" in status, status


async def test_the_compact_proposal_tab_counts_the_waiting_proposals(session, clock):
    app = make_app(session, clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot)
        tab = app.screen.query_one("#tabs").get_tab("tab-proposal")
        assert str(tab.label) == "Proposal"
        dump_spike(session)
        await _ready(app, pilot)
        assert str(tab.label) == "Proposal ▶1"


async def test_the_spike_queue_says_why_a_spike_was_skipped_or_blocked(session, clock):
    app = make_app(session, clock)
    async with app.run_test(size=(120, 36)) as pilot:
        await _ready(app, pilot)
        blocked, skipped = a_spike("DOGEUSDT", 30), a_spike("XRPUSDT", 31)
        session.bus.publish(SpikeStatus(blocked, "blocked", "breaker TRIGGERED"))
        session.bus.publish(SpikeStatus(skipped, "detected"))
        session.bus.publish(SpikeStatus(skipped, "skipped", "the feed is 40s stale: no entry on an old price"))
        await _ready(app, pilot)
        text = "\n".join(screen_lines(app))
        assert "blocked  breaker TRIGGERED" in text, text
        assert "skipped  the feed is 40s sta" in text, text  # cut to the column (and the panel)
        # a layout change rebuilds the queue from the app's models, reasons included
        await pilot.resize_terminal(80, 24)
        await _ready(app, pilot)
        await _ready(app, pilot)
        assert "blocked  breaker TRIGGERED" in "\n".join(screen_lines(app))


async def test_a_recovering_that_waits_for_the_operator_says_so_in_the_banner(session, clock):
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (30, 100_000.0), (50, 70_000.0), (90, 72_000.0)]))
    assert session.breaker.status in (BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING)
    if session.breaker.status is BreakerStatus.TRIGGERED:
        session.breaker.start_recovery("prices stabilising", time_ms=session.engine.now_ms())
    assert session.engine.clear_needs_override() is not None
    app = make_app(session, clock)
    async with app.run_test(size=(120, 36)) as pilot:
        await _ready(app, pilot)
        await _ready(app, pilot)
        line = screen_lines(app)[0]
        assert "RECOVERING" in line and "waiting for the operator (C to clear)" in line, line


async def test_enter_on_a_board_row_opens_its_detail_with_a_chart(session, clock):
    dump_spike(session)
    app = make_app(session, clock)
    async with app.run_test(size=(120, 36)) as pilot:
        await _ready(app, pilot)
        board = app.screen.query_one("#board")
        board.focus()
        await pilot.press("down")  # BTCUSDT is first, SOLUSDT next
        await pilot.press("enter")
        await pilot.pause()
        assert type(app.screen).__name__ == "SymbolDetailScreen"
        text = screen_text(app)
        assert "SOLUSDT" in text and any(ch in text for ch in "⣀⣤⣶⣿⠉⠛⠿⡇"), text
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "MainScreen"


async def test_o_cycles_the_board_sort(session, clock):
    dump_spike(session)
    app = make_app(session, clock)
    async with app.run_test(size=(120, 36)) as pilot:
        await _ready(app, pilot)
        board = app.screen.query_one("#board")
        modes = []
        for _ in range(4):
            await pilot.press("o")
            await _ready(app, pilot)
            modes.append(board.sort_mode)
        assert modes[-1] == "default" and len(set(modes)) == 4


async def test_the_focused_panel_is_marked(session, clock):
    app = make_app(session, clock)
    async with app.run_test(size=(120, 36)) as pilot:
        await _ready(app, pilot)
        spikes = app.screen.query_one("#spikes")
        spikes.focus()
        await pilot.pause()
        assert spikes.styles.border_left[0] == "thick"
        app.screen.query_one("#board").focus()
        await pilot.pause()
        assert spikes.styles.border_left[0] in ("", "none")


def test_a_veto_is_told_by_its_agent_tag_with_the_decision_first():
    from console.widgets.spike_queue import short_why

    assert short_why("Context Analyzer DISAGREE (veto): market-wide dump, no entry") == \
        "CTX DISAGREE: market-wide dump, no entry"
    assert short_why("Market Scanner DISMISS (veto): a basis blip") == "SCN DISMISS: a basis blip"
    assert short_why("breaker TRIGGERED") == "breaker TRIGGERED"


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_toasts_stay_above_the_status_bar_and_the_footer(session, clock, size):
    from textual.widgets._toast import Toast

    app = make_app(session, clock)
    async with app.run_test(size=size, notifications=True) as pilot:
        await _ready(app, pilot)
        for i in range(4):
            app.notify(f"notice {i}", timeout=30)
        await pilot.pause()
        await pilot.pause()
        status_top = app.screen.query_one("#status").region.y
        toasts = list(app.screen.query(Toast))
        assert toasts and all(t.region.bottom <= status_top for t in toasts), \
            [(t.region, status_top) for t in toasts]


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_a_held_breaker_backend_says_entries_blocked_whatever_the_state(session, clock, size):
    app = make_app(session, clock)
    async with app.run_test(size=size) as pilot:
        await _ready(app, pilot)
        session.on_breaker_backend_problem("breaker backend unreachable: Error 111 connecting to 127.0.0.1:6379")
        await _ready(app, pilot)
        line = screen_lines(app)[0]
        assert "● SAFE by rule" in line and "orders allowed" not in line, line
        assert "BLOCKED" in line.upper() and "breaker backend unreachable" in line, line
        session.on_breaker_backend_problem(None)
        await _ready(app, pilot)
        assert "orders allowed" in screen_lines(app)[0]
