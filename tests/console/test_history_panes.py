"""The history panes in the console: fed live, read back from the journal after a restart,
filtered, in tabs when narrow and side by side when wide; and the positions panel."""

from __future__ import annotations

from core.config import load_config
from core.session import Session
from core.trading.orders import Order, OrderType, Side
from tests.console.conftest import Clock, dump_spike, make_app, screen_text
from tests.helpers import ListFeed, path


async def _ready(app, pilot) -> None:
    await pilot.pause()
    app.frame()
    await pilot.pause()


def pane(app, name: str):
    return app.screen.query_one(f"#history-{name}")


def prices(session: Session) -> None:
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (10, 100_000.0)]))
    session.engine.process(path("ETHUSDT", [(0, 3_000.0), (10, 3_000.0)]))


async def test_each_pane_shows_what_happened_live(session, clock):
    prices(session)
    app = make_app(session, clock)
    async with app.run_test(size=(120, 36)) as pilot:
        await _ready(app, pilot)
        await session.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.1))
        session.force_trigger("drill")
        session.pause_scanner(True)
        await _ready(app, pilot)
        breaker = "\n".join(pane(app, "breaker").shown_lines())
        assert "TRIGGERED by operator" in breaker and "drill" in breaker
        assert "breaker TRIGGERED" in "\n".join(pane(app, "alerts").shown_lines())
        orders = "\n".join(pane(app, "orders").shown_lines())
        assert "FILLED" in orders and "FILL " in orders and "BUY 0.1 ETHUSDT" in orders
        operator = "\n".join(pane(app, "operator").shown_lines())
        assert "force_trigger by operator" in operator and "pause_scanner" in operator


async def test_a_filter_narrows_a_pane_and_escape_restores_it(session, clock):
    prices(session)
    session.force_trigger("first drill")
    session.clear_breaker("all clear", override=True)
    session.force_trigger("second drill")
    app = make_app(session, clock)
    async with app.run_test(size=(120, 36)) as pilot:
        await _ready(app, pilot)
        breaker = pane(app, "breaker")
        assert len([line for line in breaker.shown_lines() if " by " in line]) == 3
        breaker.log_view.focus()
        await pilot.press("slash")
        assert app.focused is breaker.query_one("Input")
        await pilot.press(*"second")
        await _ready(app, pilot)
        shown = breaker.shown_lines()
        assert len(shown) == 1 and "second drill" in shown[0], shown
        await pilot.press("enter", "escape")
        await _ready(app, pilot)
        assert len([line for line in breaker.shown_lines() if " by " in line]) == 3
        # a new entry that does not match the filter is not appended while it is set
        breaker.query_one("Input").value = "second"
        await _ready(app, pilot)
        session.clear_breaker("later", override=True)
        await _ready(app, pilot)
        assert len(breaker.shown_lines()) == 1


async def test_a_restarted_console_reads_the_history_back_from_the_journal(tmp_path):
    db = tmp_path / "journal.db"
    settings = load_config(env={}, dotenv_paths=[]).settings
    clock = Clock()
    first = Session(settings, ListFeed(), journal_path=db, wall_clock=clock.ms)
    await first.open_journal(db)
    prices(first)
    await first.gate.submit(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.1))
    first.force_trigger("before the restart")
    await first.journal.flush()
    await first.close("test restart")

    again = Session(settings, ListFeed(), journal_path=db, wall_clock=clock.ms)
    await again.open_journal(db)
    app = make_app(again, clock)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(app, pilot)
            app.screen.query_one("#tabs").active = "tab-history-breaker"
            await _ready(app, pilot)
            breaker = pane(app, "breaker").shown_lines()
            assert any("earlier runs" in line for line in breaker), breaker
            assert any("before the restart" in line for line in breaker), breaker
            orders = "\n".join(pane(app, "orders").shown_lines())
            assert "FILL" in orders and "ETHUSDT" in orders
            # the quit's own entries (this session's close) come after the past, marked as this run
            assert "force_trigger" in "\n".join(pane(app, "operator").shown_lines())
    finally:
        await again.close("test end")


async def test_the_layouts_put_the_panes_in_tabs_or_side_by_side(session, clock):
    app = make_app(session, clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot)
        tabs = app.screen.query_one("#tabs")
        for name in ("breaker", "alerts", "orders", "operator"):
            tabs.active = f"tab-history-{name}"
            await _ready(app, pilot)
            assert pane(app, name).region.height > 3, name
        await pilot.resize_terminal(120, 36)
        await _ready(app, pilot)
        await _ready(app, pilot)
        assert app.screen.layout_name == "wide" and app.screen.query("#history-tabs")
        await pilot.resize_terminal(200, 50)
        await _ready(app, pilot)
        await _ready(app, pilot)
        assert app.screen.layout_name == "widest" and not app.screen.query("#history-tabs")
        widths = [pane(app, name).region.width for name in ("breaker", "alerts", "orders", "operator")]
        assert all(w >= 45 for w in widths) and pane(app, "breaker").region.y < pane(app, "alerts").region.bottom


async def test_the_positions_panel_shows_stop_target_distances_exposure_and_equity(session, clock):
    dump_spike(session)
    [proposal] = session.approvals.pending()
    app = make_app(session, clock)
    async with app.run_test(size=(120, 36)) as pilot:
        await _ready(app, pilot)
        result = await session.approve(proposal.proposal_id, proposal.content_hash)
        assert result.ok, result.message
        await app.workers.wait_for_complete()
        await _ready(app, pilot)
        clock.t += 1
        await _ready(app, pilot)
        text = screen_text(app)
        [view] = session.book_view()[0]
        assert view.stop == proposal.stop_loss and view.target == proposal.take_profit
        assert f"{proposal.stop_loss:g} ({view.stop_distance_pct:+.1f}%)" in text, text
        assert f"{proposal.take_profit:g} ({view.target_distance_pct:+.1f}%)" in text, text
        assert f"{view.exposure_usd:,.0f}" in text
        assert "PnL since start" in text and "fees" in text


def test_text_wraps_at_spaces_into_rows_and_is_cut_past_the_limit():
    from console.widgets.history import wrap_spans

    assert wrap_spans("short", 10, 3) == ([(0, 5)], False)
    spans, cut = wrap_spans("market-wide: 5 of 8 symbols down", 12, 3)
    assert [("market-wide: 5 of 8 symbols down"[a:b]) for a, b in spans] == ["market-wide:", "5 of 8", "symbols down"]
    assert not cut
    spans, cut = wrap_spans("a" * 50, 10, 3)  # no space: hard breaks, and cut at three rows
    assert spans == [(0, 10), (10, 20), (20, 30)] and cut


async def test_a_narrow_pane_puts_the_text_under_its_head(session, clock):
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (5, 100_000.0)]))
    session.force_trigger("a reason long enough that a narrow pane cannot hold it beside its head at all")
    app = make_app(session, clock)
    async with app.run_test(size=(200, 50)) as pilot:  # four panes side by side: about 48 columns each
        await _ready(app, pilot)
        log = pane(app, "breaker").log_view
        rows = [log.render_line(y).text.rstrip() for y in range(4)]
        assert "TRIGGERED by operator" in rows[0] and "a reason" not in rows[0], rows
        assert rows[1].startswith("    a reason long enough"), rows
        assert "epoch 1" in " ".join(rows[1:]), rows


async def test_appending_lays_out_only_the_new_rows_and_matches_a_full_layout(session, clock):
    app = make_app(session, clock)
    async with app.run_test(size=(200, 50)) as pilot:
        await _ready(app, pilot)
        for i in range(30):
            session.alert("test", f"alert {i} " + "word " * (i % 25), "warning")
            await _ready(app, pilot)
        log = pane(app, "alerts").log_view
        incremental = [(id(item[0]), row) for item, row in log._rows]
        log._layout()
        assert [(id(item[0]), row) for item, row in log._rows] == incremental
        assert log.virtual_size.height == len(incremental) > 30  # some entries took two rows


def test_a_loss_stays_readable_without_colour():
    from console.widgets.positions import signed

    loss, gain = signed(-12.5), signed(3.0)
    assert loss.plain == "-12.50" and "bold" in str(loss.style)  # the sign and the weight carry it
    assert gain.plain == "+3.00" and "bold" not in str(gain.style)
