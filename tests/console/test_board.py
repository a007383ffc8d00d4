"""The price board (sparkline scale, sorting, feed age, cursor), the chart renderer and the
symbol detail screen."""

from __future__ import annotations

import math
from contextlib import asynccontextmanager

import pytest
from rich.color import Color as RichColor
from textual._ansi_theme import DEFAULT_TERMINAL_THEME
from textual.app import App

from console.screens.symbol_detail import HourChart, SymbolDetailScreen
from console.widgets.chart import SPARK_CHARS, braille_chart, chart_with_axis, nice_scale, percents, sparkline
from console.widgets.price_board import (
    S_DANGER,
    S_FLAT,
    S_STALE,
    S_WARN,
    BoardRow,
    PriceBoard,
    _pct,
    fmt_age,
    sort_rows,
)
from tests.console.conftest import make_app, screen_text
from tests.helpers import path

NAN = math.nan


def row(symbol: str, *, closes=None, change_1h: float = 0.0, drop: float = 0.0, vm: float = 1.0, ref: bool = False,
        age: float = 1.0, version: int = 1, trigger: float = 10.0) -> BoardRow:
    closes = [100.0] * 60 if closes is None else closes
    return BoardRow(symbol=symbol, last=closes[-1] if closes else 100.0, change_1m=0.0, change_5m=0.0,
                    change_1h=change_1h, closes=closes, spark_version=version, volume_multiple=vm, drop_60m=drop,
                    trigger_level=trigger, reference=ref, age_s=age)


def swing(pct: float) -> list[float]:
    """An hour flat at 100, then a swing of ±pct percent: any window shown opens at 100."""
    return [100.0] * 54 + [100.0 + pct, 100.0 - pct, 100.0 + pct / 2, 100.0 - pct / 2, 100.0, 100.0]


class BoardApp(App):
    AUTO_FOCUS = None  # the tests focus the board when they want its cursor

    def __init__(self) -> None:
        super().__init__()
        self.chosen: list[str] = []

    def compose(self):
        yield PriceBoard(id="board")

    def on_price_board_symbol_chosen(self, message: PriceBoard.SymbolChosen) -> None:
        self.chosen.append(message.symbol)


@asynccontextmanager
async def board_with(rows: list[BoardRow], size=(130, 20)):  # 130: room for an hour of glyphs
    app = BoardApp()
    async with app.run_test(size=size) as pilot:
        board = app.query_one(PriceBoard)
        board.update_rows(rows)
        await pilot.pause()
        yield app, board, pilot


def line(board: PriceBoard, y: int) -> str:
    return board.render_line(y).text


def spark_of(board: PriceBoard, y: int) -> str:
    return "".join(c for c in line(board, y) if c in SPARK_CHARS)


# ---------------------------------------------------------------------- sparkline scale
@pytest.mark.parametrize("pct, scale", [(0.0, 1), (0.4, 1), (1.0, 1), (1.01, 2), (2.0, 2), (2.1, 2.5), (2.6, 5),
                                        (5.0, 5), (7.0, 10), (15.0, 20), (22.65, 25), (30.0, 50), (50.0, 50),
                                        (70.0, 100), (NAN, 1)])
def test_the_scale_is_a_nice_step_with_a_floor_of_one_percent(pct, scale):
    assert nice_scale(pct) == scale


def test_a_sparkline_is_centred_at_zero_and_spans_the_scale():
    assert sparkline([0.0, 2.0, -2.0, 1.0, -1.0, 9.0, NAN], 7, 2.0) == "▄█▁▆▂█ "
    assert sparkline([0.0, 0.1], 5, 1.0) == "   ▄▄"  # right-aligned, newest on the right
    assert percents([200.0, 210.0, 190.0]) == pytest.approx([0.0, 5.0, -5.0])


async def test_every_row_shares_one_scale_stated_in_the_header():
    calm, mover = row("CALMUSDT", closes=swing(0.6)), row("MOVEUSDT", closes=swing(3.0))
    async with board_with([calm, mover]) as (app, board, pilot):
        assert board.scale_pct == 5
        assert "1h ±5%" in line(board, 0)
        assert set(spark_of(board, 1)) == {"▄"}  # ±0.6% is flat on a ±5% scale
        mover_spark = spark_of(board, 2)
        assert "▆" in mover_spark and "▂" in mover_spark  # ±3% of ±5%: most of the way up and down
        assert "█" not in mover_spark and "▁" not in mover_spark
        board.update_rows([calm])  # the mover gone: the scale falls back, the calm row is redrawn on it
        await pilot.pause()
        assert board.scale_pct == 1 and "1h ±1%" in line(board, 0)
        assert len(set(spark_of(board, 1))) > 2


async def test_calm_noise_stays_flat_on_the_floor():
    async with board_with([row("CALMUSDT", closes=swing(0.1))]) as (app, board, pilot):
        assert board.scale_pct == 1
        assert set(spark_of(board, 1)) == {"▄"}


async def test_at_80_columns_the_sparkline_has_at_least_12_cells():
    rows = [row(f"S{i:02d}USDT", closes=swing(1.5)) for i in range(30)]  # enough rows for a scrollbar
    async with board_with(rows, size=(80, 12)) as (app, board, pilot):
        assert len(spark_of(board, 1)) >= 12
        assert "m ±2%" in line(board, 0)  # fewer glyphs than an hour: the header says how many minutes


# ---------------------------------------------------------------------- sorting
ROWS = [
    row("AAA", change_1h=-1.0, drop=2.0, vm=1.0),
    row("BBB", change_1h=0.5, drop=4.0, vm=5.0),
    row("BTC", change_1h=-1.0, drop=1.0, vm=2.0, ref=True),
    row("CCC", change_1h=-3.0, drop=4.0, vm=NAN),
    row("ETH", change_1h=NAN, drop=0.5, vm=2.0, ref=True),
]


def symbols(rows) -> list[str]:
    return [r.symbol for r in rows]


def test_the_default_order_is_references_first_then_config_order():
    assert symbols(sort_rows(ROWS, "default")) == ["BTC", "ETH", "AAA", "BBB", "CCC"]


def test_each_sort_mode_and_ties_keep_the_default_order():
    assert symbols(sort_rows(ROWS, "change")) == ["CCC", "BTC", "AAA", "BBB", "ETH"]  # worst first, NaN last
    assert symbols(sort_rows(ROWS, "drop")) == ["BBB", "CCC", "AAA", "BTC", "ETH"]  # largest first
    assert symbols(sort_rows(ROWS, "volume")) == ["BBB", "BTC", "ETH", "AAA", "CCC"]  # highest first, NaN last


async def test_cycle_sort_names_the_mode_and_the_header_marks_its_column():
    async with board_with(list(ROWS)) as (app, board, pilot):
        assert "▼" not in line(board, 0)
        seen = []
        for column in ("1h%▼", "DROP▼/TRIG", "VOLx▼", None):
            seen.append(board.cycle_sort())
            assert board.sort_mode == seen[-1]
            header = line(board, 0)
            assert (column in header) if column else ("▼" not in header)
            assert line(board, 1).startswith(board.rows[0].symbol)
        assert seen == ["change", "drop", "volume", "default"]


# ---------------------------------------------------------------------- feed age
@pytest.mark.parametrize("age, text", [(0.0, "0s"), (-0.4, "0s"), (12.7, "12s"), (59.9, "59s"), (60.0, "1m"),
                                       (185.0, "3m"), (3600.0, "1h"), (2 * 86400.0, "2d"), (NAN, "-")])
def test_the_age_is_short(age, text):
    assert fmt_age(age)[0] == text


def test_the_age_turns_yellow_then_bold_red():
    assert fmt_age(5.0)[1] == S_FLAT
    assert fmt_age(5.5)[1] == S_WARN and S_WARN.color.name == "yellow"
    assert fmt_age(30.0)[1] == S_WARN
    assert fmt_age(31.0)[1] == S_STALE and S_STALE.bold
    red = RichColor.parse(S_STALE.color.name).get_truecolor(DEFAULT_TERMINAL_THEME)
    assert red.red > 1.5 * max(red.green, red.blue)  # a red


def test_the_app_measures_each_symbols_age_on_the_market_clock(session, clock):
    session.engine.process(path("SOLUSDT", [(0, 100.0), (19, 100.0)], step_ms=5000))
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (20, 100_000.0)], step_ms=5000))
    ages = {r.symbol: r.age_s for r in make_app(session, clock)._board_rows()}
    assert ages == {"SOLUSDT": 60.0, "BTCUSDT": 0.0}


async def test_the_age_column_shows_on_the_board():
    async with board_with([row("SOLUSDT", age=12.0), row("BTCUSDT", age=200.0)]) as (app, board, pilot):
        assert " 12s " in line(board, 1) and " 3m " in line(board, 2)
        assert "AGE" in line(board, 0)


# ---------------------------------------------------------------------- without colour
def _grey(style) -> int:
    """What Textual's NO_COLOR greyscale makes of a style's colour."""
    c = RichColor.parse(style.color.name).get_truecolor(DEFAULT_TERMINAL_THEME)
    return round(c.red * 0.2126 + c.green * 0.7152 + c.blue * 0.0722)


def test_a_negative_is_never_dim():
    text, style = _pct(-0.3)
    assert text == "-0.30" and style != S_FLAT and _grey(style) >= 128
    assert _pct(-0.004)[0] == "0.00"  # shown flat only when it is shown as zero


async def test_the_danger_cell_and_the_cursor_are_reverse_video():
    async with board_with([row("SOLUSDT", drop=12.0), row("BTCUSDT")]) as (app, board, pilot):
        danger = [s for s in board.render_line(1) if "12.0/10%" in s.text]
        assert danger and danger[0].style.reverse and danger[0].style == S_DANGER
        assert not any(s.style and s.style.reverse for s in board.render_line(2) if s.text.strip())
        board.focus()
        await pilot.pause()
        cursor_row = [s for s in board.render_line(1) if s.text.strip()]
        assert all(s.style.reverse for s in cursor_row if "/10%" not in s.text)
        assert not [s for s in cursor_row if "12.0/10%" in s.text][0].style.reverse  # turned back, to stay apart


# ---------------------------------------------------------------------- cursor and Enter
async def test_the_cursor_moves_and_enter_chooses_the_symbol():
    rows = [row("BTCUSDT", ref=True), row("AAAUSDT"), row("BBBUSDT"), row("CCCUSDT")]
    async with board_with(rows) as (app, board, pilot):
        board.focus()
        await pilot.press("down", "down", "up")
        assert board.cursor_symbol == "AAAUSDT"
        await pilot.press("enter")
        await pilot.press("end", "enter", "home", "up", "enter")
        await pilot.pause()
        assert app.chosen == ["AAAUSDT", "CCCUSDT", "BTCUSDT"]


async def test_the_cursor_follows_its_symbol_through_a_sort():
    rows = [row("AAAUSDT", change_1h=1.0), row("BBBUSDT", change_1h=-2.0)]
    async with board_with(rows) as (app, board, pilot):
        board.focus()
        await pilot.pause()
        assert board.cursor_symbol == "AAAUSDT"
        board.cycle_sort()  # change: BBB first
        assert board.cursor == 1 and board.cursor_symbol == "AAAUSDT"


async def test_the_cursor_scrolls_into_view():
    rows = [row(f"S{i:02d}USDT") for i in range(30)]
    async with board_with(rows, size=(120, 8)) as (app, board, pilot):
        board.focus()
        await pilot.press("end")
        await pilot.pause()
        visible = [line(board, y) for y in range(1, board.size.height)]
        assert any(text.startswith("S29USDT") for text in visible)
        await pilot.press("pageup")
        assert board.cursor == 29 - (board.size.height - 2)


async def test_only_the_rows_on_screen_are_built_and_the_rest_when_scrolled_to():
    rows = [row(f"S{i:02d}USDT") for i in range(50)]
    async with board_with(rows, size=(120, 8)) as (app, board, pilot):
        board.update_rows(rows)
        built = [i for i, strip in enumerate(board._strips) if strip is not None]
        assert built == list(range(board.size.height)), built  # the header and the rows shown
        board.scroll_to(y=40, animate=False, immediate=True)
        await pilot.pause()
        assert line(board, 1).startswith("S40USDT"), line(board, 1)  # built on demand, right row
        assert all(len(line(board, y)) == board.size.width for y in range(board.size.height))


# ---------------------------------------------------------------------- the chart renderer
def test_the_chart_has_its_shape_and_climbs_left_to_right():
    lines = braille_chart([float(i) for i in range(30)], 20, 4)
    assert len(lines) == 4 and all(len(text) == 20 for text in lines)
    assert all(c == " " or 0x2800 < ord(c) <= 0x28FF for text in lines for c in text)
    assert lines[3][0] != " " and lines[0][0] == " "  # starts at the bottom
    assert lines[0][-1] != " " and lines[3][-1] == " "  # ends at the top


def test_a_constant_series_is_a_flat_line_across_the_middle():
    lines = braille_chart([5.0] * 10, 10, 5)
    drawn = [i for i, text in enumerate(lines) if text.strip()]
    assert drawn == [2] and " " not in lines[2]


def test_nan_leaves_a_gap_and_all_nan_draws_nothing():
    lines = braille_chart([1.0] * 5 + [NAN] * 10 + [2.0] * 5, 20, 2)
    columns = ["".join(text[x] for text in lines) for x in range(20)]
    assert columns[0].strip() and columns[-1].strip()
    assert not "".join(columns[7:13]).strip()
    assert braille_chart([NAN, NAN], 6, 2) == [" " * 6] * 2


def test_the_axis_labels_the_max_min_and_last_in_price_and_percent():
    values = [100.0, 95.0, 110.0, 104.0]
    lines = chart_with_axis(values, 60, 6)
    assert len(lines) == 6 and all(len(text) == 60 for text in lines)
    assert "max 110.0000 +10.00%" in lines[0]
    assert "min 95.0000 -5.00%" in lines[-1]
    last = [i for i, text in enumerate(lines) if "last 104.0000 +4.00%" in text]
    assert last == [2]  # 104 is 6/15 of the way down from 110 to 95
    assert len({text.index(word) for text, word in zip((lines[0], lines[-1]), ("max", "min"))}) == 1  # one label column
    flat = chart_with_axis([5.0] * 4, 40, 3)
    assert "last 5.0000 +0.00%" in flat[1] and "max" not in "".join(flat)


# ---------------------------------------------------------------------- the detail screen
SPIKES = [(1_767_225_600_000, "dump", 4.2, "proposed")]
ORDERS = [(1_767_225_601_000, "BUY", 1.5, 96.0, "FILLED"), (1_767_225_700_000, "SELL", 1.5, 0.0, "NEW")]


async def test_the_detail_screen_shows_the_hour_and_escape_closes_it():
    app = App()
    async with app.run_test(size=(110, 40)) as pilot:
        app.push_screen(SymbolDetailScreen("SOLUSDT", swing(2.0), SPIKES, ORDERS))
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SymbolDetailScreen)
        chart = str(screen.query_one(HourChart).render())
        assert "max 102.0000 +2.00%" in chart and "min 98.0000 -2.00%" in chart and "last 100.0000" in chart
        assert any(0x2800 < ord(c) <= 0x28FF for c in chart)
        text = "\n".join(str(w.render()) for w in screen.query("Label"))
        assert "SOLUSDT" in text and "1 spike" in text and "2 trades" in text and "60 one-minute closes" in text
        shown = screen_text(app)
        assert "4.2% dump" in shown and "96.0000" in shown and "market" in shown
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, SymbolDetailScreen) and len(app.screen_stack) == 1


async def test_the_detail_screen_closes_once():
    app = App()
    async with app.run_test(size=(110, 40)) as pilot:
        screen = SymbolDetailScreen("SOLUSDT", swing(2.0), [], [])
        app.push_screen(screen)
        await pilot.pause()
        screen.action_close()
        screen.action_close()  # two Escapes handled before the screen is gone
        await pilot.pause()
        assert len(app.screen_stack) == 1


async def test_the_detail_screen_without_history():
    app = App()
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(SymbolDetailScreen("NEWUSDT", [], [], []))
        await pilot.pause()
        assert "no closed minute yet" in str(app.screen.query_one(HourChart).render())
        text = "\n".join(str(w.render()) for w in app.screen.query("Label"))
        assert "0 spikes" in text and "0 trades" in text
