"""The console never dies silently: keys typed faster than a screen closes, layout changes
while events flow, huge pastes, unexpected exceptions anywhere, and the way out."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap

import pytest
from textual import events
from textual.command import CommandPalette
from textual.geometry import Size

from core.desk.proposal import ProposalStatus
from core.events import BreakerStatus
from tests.console.conftest import dump_spike, make_app, screen_text
from tests.helpers import path

SIZE = (120, 40)
WIDE, COMPACT = (120, 36), (80, 24)


async def _ready(app, pilot) -> None:
    await pilot.pause()
    app.frame()
    await pilot.pause()


async def burst(app, pilot, *keys: tuple[str, str | None]) -> None:
    """Keys that arrive together, as a terminal delivers them when typed (or sent) faster than a
    screen closes: every one is queued before the first is handled."""
    for key, char in keys:
        app.post_message(events.Key(key, char))
    await pilot.pause()
    await pilot.pause()


ENTER = ("enter", "\r")


def _stack(app) -> list[str]:
    return [type(s).__name__ for s in app.screen_stack]


# ---------------------------------------------------------------------------- keys faster than a screen closes
@pytest.mark.parametrize("enters", [2, 3])
async def test_palette_survives_enter_typed_faster_than_it_closes(session, clock, enters):
    """ctrl+p Enter Enter left a blank screen, a third Enter raised ScreenStackError: each queued
    Enter dismissed again, popping the main screen, and ran the command again."""
    app = make_app(session, clock)
    helps = []
    app.action_help = lambda: helps.append(1)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"Help")
        await pilot.pause()
        assert CommandPalette.is_open(app)
        await burst(app, pilot, *[ENTER] * enters)  # the first runs the command; the rest arrive before it closed
        assert _stack(app) == ["Screen", "MainScreen"]
        assert "SAFE" in screen_text(app)
    assert helps == [1]


async def test_a_dialog_acts_once_on_keys_typed_faster_than_it_closes(session, clock):
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (5, 100_000.0)]))
    app = make_app(session, clock)
    trips = []
    real_trigger = session.force_trigger
    session.force_trigger = lambda reason: trips.append(reason) or real_trigger(reason)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("T")
        await pilot.press(*"drill")
        await burst(app, pilot, ENTER, ENTER, ENTER)
        assert _stack(app) == ["Screen", "MainScreen"]
    assert trips == ["drill"]
    assert session.breaker.status is BreakerStatus.TRIGGERED


async def test_a_double_enter_in_a_dialog_leaves_the_dialog_below_it_open(session, clock):
    """T over the approval dialog: the second Enter dismissed again, closing the approval dialog."""
    dump_spike(session)
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("a")
        await pilot.press("T")
        await pilot.press(*"halt")
        await burst(app, pilot, ENTER, ENTER)
        assert _stack(app) == ["Screen", "MainScreen", "ApproveScreen"]
    assert session.breaker.status is BreakerStatus.TRIGGERED


async def test_reject_acts_once_on_a_double_enter(session, clock):
    dump_spike(session)
    [proposal] = session.approvals.pending()
    app = make_app(session, clock)
    rejects = []
    real_reject = session.reject
    session.reject = lambda pid, reason: rejects.append(pid) or real_reject(pid, reason)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await pilot.press("r")
        await burst(app, pilot, ENTER, ENTER)
        assert _stack(app) == ["Screen", "MainScreen"]
    assert rejects == [proposal.proposal_id]
    assert session.approvals.status[proposal.proposal_id] is ProposalStatus.REJECTED


async def test_the_main_screen_is_never_popped(session, clock):
    """The last line of defence for screens that are not ours (Textual's theme picker is a
    palette too): whatever dismisses twice, the main screen stays."""
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        await app.pop_screen()
        await pilot.pause()
        assert _stack(app) == ["Screen", "MainScreen"]


# ---------------------------------------------------------------------------- layout changes while events flow
async def test_resizing_back_and_forth_during_warning_keeps_every_panel(session, clock):
    """A resize across the layouts recomposes the main screen; the frame ran while the recompose
    had removed the panels (NoMatches '#spikes' in _apply), and a second recompose started while
    the first one's tabs were still mounting. Views are rebuilt from the app's models after."""
    dump_spike(session)
    session.engine.process(path("ETHUSDT", [(21, 3_000.0), (22, 3_000.0), (26, 2_800.0)], step_ms=5000))
    app = make_app(session, clock)
    async with app.run_test(size=WIDE) as pilot:
        await _ready(app, pilot)
        for i in range(8):
            size = Size(*(COMPACT if i % 2 == 0 else WIDE))
            app._driver._size = size  # what the headless terminal reports from now on (as Pilot.resize_terminal)
            app.post_message(events.Resize(size, size))
            for k in range(200):  # frames and events keep coming while the recompose runs
                if k % 20 == 0:
                    session.reason("desk", "reason", f"resize {i} line {k}")
                app.frame()
                await asyncio.sleep(0)
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.frame()
        await pilot.pause()
        assert app.screen.wide
        assert "SOLUSDT" in screen_text(app) and "resize 7 line 180" in screen_text(app)
        assert session.breaker.status is not BreakerStatus.SAFE


async def test_views_are_rebuilt_from_the_models_after_a_layout_change(session, clock):
    dump_spike(session)
    app = make_app(session, clock)
    async with app.run_test(size=WIDE) as pilot:
        await _ready(app, pilot)
        await pilot.resize_terminal(*COMPACT)
        session.reason("desk", "reason", "said while compact")
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.frame()
        await pilot.resize_terminal(*WIDE)
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.frame()
        await pilot.pause()
        text = screen_text(app)
        assert app.screen.wide and "said while compact" in text and "SOLUSDT" in text


@pytest.mark.parametrize("when", ["the first screen", "a layout change"])
async def test_a_frame_while_the_panels_mount_waits_for_them(session, clock, monkeypatch, when):
    """A panel can be in the DOM before it is mounted (the spike queue adds its columns on
    mount): a frame that filled it then would leave a row without cells."""
    from console.widgets.spike_queue import SpikeQueue

    app = make_app(session, clock)
    dump_spike(session)  # after the app subscribed to the bus: the spike reaches its model
    mount = SpikeQueue.on_mount

    def frame_first(self) -> None:
        self.app.frame()
        mount(self)

    if when == "the first screen":
        monkeypatch.setattr(SpikeQueue, "on_mount", frame_first)
    async with app.run_test(size=WIDE) as pilot:
        await _ready(app, pilot)
        if when == "a layout change":
            monkeypatch.setattr(SpikeQueue, "on_mount", frame_first)
            await pilot.resize_terminal(*COMPACT)
        await pilot.pause()
        app.frame()
        await pilot.pause()
        spikes = app.screen.query_one("#spikes", SpikeQueue)
        assert spikes.row_count == 1 and "SOLUSDT" in [str(cell) for cell in spikes.get_row_at(0)]


async def test_a_resize_under_a_dialog_changes_the_layout_behind_it(session, clock):
    app = make_app(session, clock)
    async with app.run_test(size=WIDE) as pilot:
        await _ready(app, pilot)
        await pilot.press("question_mark")
        await pilot.resize_terminal(*COMPACT)
        await app.workers.wait_for_complete()
        await pilot.press("escape")
        await pilot.pause()
        assert not app.screen.wide
        app.screen.query_one("#tabs")


# ---------------------------------------------------------------------------- reason fields
async def _open(app, pilot, key: str):
    await pilot.press(key)
    await pilot.pause()
    return app.screen.query_one("#reason")


@pytest.mark.parametrize("key", ["T", "r"])
async def test_a_huge_paste_into_a_reason_field_is_cut_to_its_limit(session, clock, key):
    from console.screens.confirm import REASON_MAX_CHARS

    dump_spike(session)
    app = make_app(session, clock)
    bells = []
    app.bell = lambda: bells.append(1)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        field = await _open(app, pilot, key)
        await pilot.press(*"why: ")
        app.post_message(events.Paste("x" * 10_000))  # bracketed paste: one event
        await pilot.pause()
        assert field.value == "why: " + "x" * (REASON_MAX_CHARS - 5) and bells == [1]
        await pilot.press(*"yz")  # typing on at the limit changes nothing
        assert len(field.value) == REASON_MAX_CHARS and bells == [1]


async def test_a_paste_typed_key_by_key_stops_at_the_limit(session, clock):
    """A terminal without bracketed paste delivers a paste as keys: each one past the limit is refused."""
    from console.screens.confirm import REASON_MAX_CHARS

    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (5, 100_000.0)]))
    app = make_app(session, clock)
    bells = []
    app.bell = lambda: bells.append(1)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        field = await _open(app, pilot, "T")
        await burst(app, pilot, *[("x", "x")] * (REASON_MAX_CHARS + 50))
        assert field.value == "x" * REASON_MAX_CHARS
        assert bells == [1]  # one bell for the refused rest, not fifty
        await pilot.press("backspace", "y", "z")
        assert field.value.endswith("xy") and bells == [1, 1]  # full again: it rings again
        await pilot.press("enter")
        await pilot.pause()
    assert session.breaker.history[-1].reason == "x" * (REASON_MAX_CHARS - 1) + "y"


# ---------------------------------------------------------------------------- unexpected exceptions
def _crash_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "spikeguard.console" and r.exc_info]


async def test_an_exception_in_a_key_handler_is_logged_and_ends_the_app_with_an_error(session, clock, caplog,
                                                                                       capfd):
    app = make_app(session, clock)

    def broken_help() -> None:
        raise RuntimeError("help is broken")

    app.action_help = broken_help
    with pytest.raises(RuntimeError, match="help is broken"):  # the pilot re-raises what ended the app
        async with app.run_test(size=SIZE) as pilot:
            await _ready(app, pilot)
            await pilot.press("question_mark")
            await pilot.pause()
    assert app.return_code == 1
    assert app.crash == "RuntimeError: help is broken"
    [record] = _crash_records(caplog)
    assert record.exc_info[1].args == ("help is broken",) and "broken_help" in caplog.text
    assert "Traceback" not in capfd.readouterr().err  # no dump of Textual's on the terminal


async def test_the_engine_worker_failing_ends_the_app_with_an_error(session, clock, caplog):
    """It used to end quietly: the status bar said "ended" as if the feed had run out."""
    async def broken_run(on_batch=None) -> None:
        raise ValueError("math domain error")

    session.run = broken_run
    app = make_app(session, clock, live=True)
    app.watchdog = False
    with pytest.raises(Exception):
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
    assert app.return_code == 1
    assert app.crash == "ValueError: math domain error"
    [record] = _crash_records(caplog)
    assert isinstance(record.exc_info[1], ValueError) and "broken_run" in caplog.text


async def test_an_exception_in_a_timer_is_logged_and_ends_the_app_with_an_error(session, clock, caplog):
    app = make_app(session, clock)
    with pytest.raises(ZeroDivisionError):
        async with app.run_test(size=SIZE) as pilot:
            await _ready(app, pilot)
            fired = asyncio.Event()

            def tick() -> None:
                fired.set()
                1 / 0

            app.set_interval(0.01, tick)
            await fired.wait()
            await pilot.pause()
    assert app.return_code == 1 and app.crash == "ZeroDivisionError: division by zero"
    assert len(_crash_records(caplog)) == 1


async def test_quit_closes_the_session_even_when_the_app_crashed(session, clock):
    app = make_app(session, clock)
    closed = []
    real_close = session.close

    async def close(reason: str = "") -> None:
        closed.append(reason)
        await real_close(reason)

    session.close = close

    def broken_help() -> None:
        raise RuntimeError("boom")

    app.action_help = broken_help
    with pytest.raises(RuntimeError):
        async with app.run_test(size=SIZE) as pilot:
            await _ready(app, pilot)
            await pilot.press("question_mark")
            await pilot.pause()
    assert closed == ["console crashed: RuntimeError: boom"]


# ---------------------------------------------------------------------------- the way out
def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))


def test_the_exit_deadline_ends_a_process_a_library_thread_would_keep_alive():
    result = _run_python("""
        import threading, time
        from console.launch import leave_by
        threading.Thread(target=threading.Event().wait, name="stuck-library-thread").start()
        leave_by(time.monotonic() + 0.2, 3)
        print("returned")  # interpreter shutdown would now join the stuck thread forever
    """)
    assert result.returncode == 3 and "returned" not in result.stdout


def test_a_daemon_thread_still_running_is_left_without_the_interpreter_shutdown():
    """Shutdown ends a running daemon thread with pthread_exit: inside C++ code (CrewAI's native
    imports) that aborts the process with exit 134. The process ends with its own code instead."""
    result = _run_python("""
        import threading, time
        from console.launch import leave_by
        threading.Thread(target=threading.Event().wait, name="importing-crewai", daemon=True).start()
        leave_by(time.monotonic() + 30, 3)
        print("returned")
    """)
    assert result.returncode == 3 and "returned" not in result.stdout


def test_the_exit_deadline_lets_a_clean_process_end_normally():
    result = _run_python("""
        import threading, time
        from console.launch import leave_by
        t = threading.Thread(target=time.sleep, args=(0.05,), name="finishing")
        t.start()
        leave_by(time.monotonic() + 30, 3)
        print("returned", t.is_alive())
    """)
    assert result.returncode == 0 and result.stdout.strip() == "returned False"


def test_the_console_freezes_its_start_up_heap_only_when_asked():
    """A full collection over the libraries and the session paused the console 160-200 ms; the
    real console freezes what exists at start-up. A test's app leaves its heap collectable."""
    result = _run_python("""
        import asyncio, gc
        from console.app import SpikeguardApp
        from core.config import load_config
        from core.session import Session
        from tests.helpers import ListFeed

        async def main(freeze):
            gc.unfreeze()
            app = SpikeguardApp(Session(load_config(env={}, dotenv_paths=[]).settings, ListFeed()), live=False,
                                watchdog=False, freeze_gc=freeze)
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.pause()
                await pilot.pause()
                return gc.get_freeze_count()

        print(asyncio.run(main(False)), asyncio.run(main(True)) > 10_000)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "True"], result.stdout
