"""Pilot tests: every key and flow, driven like an operator would."""

from __future__ import annotations

from core.desk.proposal import ProposalStatus
from core.events import Actor, BreakerStatus
from core.trading.orders import OrderStatus
from tests.console.conftest import dump_spike, make_app, orders_for, screen_text
from tests.helpers import T0, path

SIZE = (120, 40)


async def _ready(app, pilot) -> None:
    await pilot.pause()
    app.frame()
    await pilot.pause()


def _pending(session):
    return session.approvals.pending()


async def test_approve_flow(session, clock):
    dump_spike(session)
    [proposal] = _pending(session)
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        assert "BUY" in screen_text(app) and "SOLUSDT" in screen_text(app)
        await pilot.press("a")
        assert type(app.screen).__name__ == "ApproveScreen"
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert session.approvals.status[proposal.proposal_id] is ProposalStatus.EXECUTED
    [order] = [o for o in orders_for(session, proposal.proposal_id) if o.side.value == "BUY"]
    assert order.status is OrderStatus.FILLED and order.price == proposal.entry_price
    assert order.quantity == proposal.quantity
    # the entry filled: a protective stop went out for the filled quantity
    stops = [o for o in orders_for(session, proposal.proposal_id) if o.type.value == "STOP"]
    assert stops and stops[0].stop_price == proposal.stop_loss and stops[0].reduce_only


async def test_approve_rechecks_when_the_breaker_moved(session, clock):
    dump_spike(session)
    [proposal] = _pending(session)
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("a")
        session.breaker.set_warning("moved under the operator's feet", time_ms=T0)
        # the modal was built before: approving now re-checks against the current state
        await pilot.press("y")
        await app.workers.wait_for_complete()
    # WARNING halves the size; the approval went out at the reduced size with the change shown
    orders = [o for o in orders_for(session, proposal.proposal_id) if o.side.value == "BUY"]
    assert orders and orders[0].quantity == proposal.quantity * session.settings.risk_management.warning_size_factor


async def test_reject_with_reason(session, clock):
    dump_spike(session)
    [proposal] = _pending(session)
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("r")
        assert type(app.screen).__name__ == "ReasonScreen"
        await pilot.press(*"too thin")
        await pilot.press("enter")
        await pilot.pause()
    assert session.approvals.status[proposal.proposal_id] is ProposalStatus.REJECTED
    assert session.approvals.notes[proposal.proposal_id] == "too thin"


async def test_expiry_then_approve_is_refused(session, clock):
    dump_spike(session)
    [proposal] = _pending(session)
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("a")
        clock.t += session.settings.execution.proposal_ttl_seconds + 1
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert session.approvals.status[proposal.proposal_id] is ProposalStatus.EXPIRED
    assert not session.gate.open_orders()


async def test_changed_proposal_is_refused(session, clock):
    import asyncio

    dump_spike(session)
    [proposal] = _pending(session)
    tampered = proposal.model_copy(update={"quantity": proposal.quantity * 10})
    session.approvals.proposals[proposal.proposal_id] = tampered
    result = await session.approve(proposal.proposal_id, proposal.content_hash)
    assert not result.ok and "hash" in result.message
    await asyncio.sleep(0)


async def test_trigger_and_clear_with_confirmation(session, clock):
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (5, 100_000.0)]))
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("T")
        assert type(app.screen).__name__ == "BreakerConfirmScreen"
        await pilot.press(*"drill")
        await pilot.press("enter")
        await pilot.pause()
        assert session.breaker.status is BreakerStatus.TRIGGERED
        assert "TRIGGERED" in str(app.screen.query_one("#banner").render())
        await pilot.press("C")
        await pilot.press("enter")  # clearing needs a reason: refused, the dialog stays
        assert type(app.screen).__name__ == "BreakerConfirmScreen" and session.breaker.status is BreakerStatus.TRIGGERED
        await pilot.press(*"drill over")
        await pilot.press("enter")
        await pilot.pause()
        app.frame()
        assert session.breaker.status is BreakerStatus.SAFE
        assert "SAFE" in str(app.screen.query_one("#banner").render())
    history = list(session.breaker.history)
    assert [c.actor for c in history] == [Actor.OPERATOR, Actor.OPERATOR]


async def test_the_kill_switch_is_T_then_enter(session, clock):
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (5, 100_000.0)]))
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("T", "enter")  # no typing: a kill switch trips at once
        await pilot.pause()
    assert session.breaker.status is BreakerStatus.TRIGGERED
    assert session.breaker.history[-1].reason == "operator kill switch"
    assert session.breaker.history[-1].actor is Actor.OPERATOR


async def test_escape_cancels_the_breaker_dialog(session, clock):
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (5, 100_000.0)]))
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("T")
        await pilot.press(*"oops")
        await pilot.press("escape")
        await pilot.pause()
    assert session.breaker.status is BreakerStatus.SAFE


async def test_deep_clear_needs_the_typed_override(session, clock):
    session.engine.process(path("BTCUSDT", [(0, 100.0), (15, 100.0), (35, 75.0)]))
    assert session.breaker.status is BreakerStatus.TRIGGERED
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("C")
        screen = app.screen
        assert screen.override_note and "deep level" in screen.override_note
        await pilot.press(*"looks fine")
        await pilot.press("enter")  # moves to the override field
        await pilot.press(*"override")  # wrong case: refused
        await pilot.press("enter")
        await pilot.pause()
        assert session.breaker.status is BreakerStatus.TRIGGERED
        override = screen.query_one("#override")
        override.value = ""
        await pilot.press(*"OVERRIDE")
        await pilot.press("enter")
        await pilot.pause()
    # cleared by the operator; the 25% drop is still a warning condition, raised at once
    clear, warning = list(session.breaker.history)[-2:]
    assert clear.status is BreakerStatus.SAFE and clear.details["override"] is True
    assert warning.status is BreakerStatus.WARNING and warning.actor.value == "rule"


async def test_breaker_keys_work_while_the_approval_modal_is_open(session, clock):
    dump_spike(session)
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("a")
        assert type(app.screen).__name__ == "ApproveScreen"
        await pilot.press("T")
        assert type(app.screen).__name__ == "BreakerConfirmScreen"
        await pilot.press(*"halt now")
        await pilot.press("enter")
        await pilot.pause()
        assert session.breaker.status is BreakerStatus.TRIGGERED
        # the trip voided the pending proposal; approving it now is refused
        assert type(app.screen).__name__ == "ApproveScreen"
        await pilot.press("y")
        await app.workers.wait_for_complete()
    assert not session.gate.open_orders()
    assert all(s is not ProposalStatus.EXECUTED for s in session.approvals.status.values())


async def test_pause_scanner_and_feed(session, clock):
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("p")
        assert session.engine.scanner.paused
        await pilot.press("space")
        assert session.feed.paused
        app.frame()
        status = str(app.screen.query_one("#status").render())
        assert "SCANNER PAUSED" in status and "FEED PAUSED" in status
        await pilot.press("p", "space")
        assert not session.engine.scanner.paused and not session.feed.paused


async def test_help_and_quit(session, clock):
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.press("q")
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert app.return_value == 0


async def test_quit_asks_when_positions_are_open(session, clock):
    dump_spike(session)
    [proposal] = _pending(session)
    result = await session.approve(proposal.proposal_id, proposal.content_hash)
    assert result.ok
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("q")
        assert type(app.screen).__name__ == "QuitScreen"
        await pilot.press("n")
        assert type(app.screen).__name__ != "QuitScreen"
        await pilot.press("q", "y")
        await app.workers.wait_for_complete()
        await pilot.pause()
    # quitting cancelled the open entry order
    assert not [o for o in session.gate.open_orders() if not o.reduce_only]


async def test_every_quit_path_asks_when_orders_are_open(session, clock):
    """The palette's Quit and ctrl+q are Textual's own quit: they ask like q does."""
    dump_spike(session)
    [proposal] = _pending(session)
    assert (await session.approve(proposal.proposal_id, proposal.content_hash)).ok
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("ctrl+q")
        assert type(app.screen).__name__ == "QuitScreen"
        text = screen_text(app)
        assert "open order" in text and "1 open orders" not in text and "1 open positions" not in text
        await pilot.press("n")
        await app.run_action("quit")  # what the palette's Quit command runs
        await pilot.pause()
        assert type(app.screen).__name__ == "QuitScreen"
        await pilot.press("n")
    assert session.gate.open_orders()  # nothing was cancelled: the operator stayed


async def test_compact_layout_at_80x24(session, clock):
    dump_spike(session)
    app = make_app(session, clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot)
        assert not app.screen.wide
        app.screen.query_one("#tabs")
        await pilot.press("a")
        assert type(app.screen).__name__ == "ApproveScreen"


async def test_warning_and_trigger_ring_the_bell(session, clock, monkeypatch):
    app = make_app(session, clock)
    rings = []
    monkeypatch.setattr(app, "bell", lambda: rings.append(session.breaker.status.value))
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        session.engine.process(path("BTCUSDT", [(0, 100.0), (15, 100.0), (35, 83.0)]))
        app.frame()
        await pilot.pause()
    assert len(rings) == 2  # SAFE -> WARNING and WARNING -> TRIGGERED, once each


async def test_no_color_is_honoured(session, clock, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        assert app.no_color
        assert "SAFE" in screen_text(app)  # the state is spelled out, not colour only
        banner = app.screen.query_one("#banner")
        looks = {}
        for status, act in (("SAFE", None), ("WARNING", lambda: session.breaker.set_warning("w", time_ms=T0)),
                            ("TRIGGERED", lambda: session.force_trigger("halt"))):
            if act is not None:
                act()
            await _ready(app, pilot)
            looks[status] = (str(banner.styles.text_style), banner.styles.border_left)
        assert len(set(looks.values())) == 3, looks  # three states, three looks without colour


def test_binance_feed_refuses_a_replay_speed():
    from tests.conftest import run_cli

    result = run_cli("console", "--feed", "binance", "--speed", "5")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --speed is not for --feed binance: live data runs at the market's pace"


def test_console_without_a_terminal_says_so():
    from tests.conftest import run_cli

    result = run_cli("console", "--scenario", "calm")
    assert result.returncode == 2 and "needs a terminal" in result.stderr


async def test_every_command_is_in_the_palette(session, clock):
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for wanted in ("Approve proposal", "Reject proposal", "Trigger breaker", "Clear breaker",
                       "Pause/resume scanner", "Pause/resume feed", "Help"):
            assert wanted in titles
        await pilot.press("ctrl+p")
        await pilot.press(*"Trigger breaker")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert type(app.screen).__name__ == "BreakerConfirmScreen"


async def test_an_exchange_alarm_is_told_at_once(session, clock):
    from core.events import VenueAlarm

    app = make_app(session, clock)
    told: list[tuple[str, str]] = []
    notify = app.notify
    app.notify = lambda message, **kw: (told.append((message, kw.get("severity"))), notify(message, **kw))[1]
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        session.bus.publish(VenueAlarm("halt_incomplete", "1 of 2 orders still open on Binance after the halt",
                                       "error", T0))
        await _ready(app, pilot)
    assert ("Binance halt incomplete: 1 of 2 orders still open on Binance after the halt", "error") in told


async def test_the_approval_dialog_refreshes_and_says_what_approving_would_do(session, clock):
    dump_spike(session)
    [proposal] = _pending(session)
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("a")
        live = lambda: screen_text(app)  # noqa: E731
        assert "would be sent" in live()
        session.force_trigger("crash while the operator reads")  # the verdict changes under the dialog
        await pilot.pause(0.7)
        assert "refused" in live() and "would be sent" not in live()
        await pilot.press("n")
    assert session.approvals.status[proposal.proposal_id] is not ProposalStatus.EXECUTED


async def test_a_new_spike_never_takes_the_selection_from_a_proposal(session, clock):
    from console.widgets.spike_queue import SpikeQueue
    from core.events import SpikeDetected, SpikeType

    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        dump_spike(session)
        await _ready(app, pilot)
        [proposal] = _pending(session)
        queue = app.screen.query_one(SpikeQueue)
        [row] = [k for k, pid in queue.proposal_by_row.items() if pid == proposal.proposal_id]
        queue.move_cursor(row=queue.get_row_index(row))  # the operator is reading the proposal
        assert queue.selected_proposal() == proposal.proposal_id
        later = SpikeDetected(symbol="DOGEUSDT", spike_type=SpikeType.SPOT_PRICE_SPIKE, direction="pump",
                              magnitude_pct=6.0, timeframe_minutes=5, volume_multiple=3.0, price_from=0.2,
                              price_to=0.212, confidence=0.6, time_ms=T0 + 30 * 60_000, detection_latency_ms=0.1)
        queue.add_spike(later, "detected")  # it arrives while the operator reads the proposal
        await pilot.pause()
        assert queue.selected_proposal() == proposal.proposal_id


async def test_the_spike_queue_dates_a_replays_spikes(session, clock):
    from core.events import SpikeDetected, SpikeStatus, SpikeType

    old = SpikeDetected(symbol="DOGEUSDT", spike_type=SpikeType.SPOT_PRICE_SPIKE, direction="pump", magnitude_pct=6.0,
                        timeframe_minutes=5, volume_multiple=3.0, price_from=0.2, price_to=0.212, confidence=0.6,
                        time_ms=1_618_553_010_000, detection_latency_ms=0.1)  # 2021-04-16: a replay's
    session.feed.name = "replay"
    app = make_app(session, clock)
    async with app.run_test(size=(200, 50)) as pilot:
        await _ready(app, pilot)
        session.bus.publish(SpikeStatus(old, "detected"))
        await _ready(app, pilot)
        text = screen_text(app)
    assert "2021-04-16 06:03:30" in text
