"""End to end over a real terminal: the real `spikeguard` command in tmux on a private
socket, driven with send-keys and read with capture-pane. Every wait polls the screen
(or the journal) until the expected text appears; there are no fixed sleeps."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

TIMEOUT = 30.0
REPO = Path(__file__).resolve().parents[2]


class Tmux:
    def __init__(self, tmp: Path) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed: `make test` installs it (scripts/ensure-system-deps.sh)")
        self.socket = f"sg-{uuid.uuid4().hex[:8]}"
        self.tmp = tmp

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              timeout=10).stdout

    def start(self, command: str) -> None:
        # without COLUMNS and LINES: readline in the test process exports them (80x24), and Textual
        # would take them over the terminal's real size
        env = (f"-u COLUMNS -u LINES TERM=xterm-256color HOME={self.tmp} XDG_CONFIG_HOME={self.tmp}/cfg "
               f"XDG_DATA_HOME={self.tmp}/data")
        subprocess.run(["tmux", "-L", self.socket, "new-session", "-d", "-x", "120", "-y", "36", "-c", str(REPO),
                        f"env {env} {command}; echo SPIKEGUARD-EXIT=$?; sleep 120"], check=True, timeout=10)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def unwrapped(self) -> str:
        """The screen with the lines the terminal wrapped joined again, their spaces kept."""
        return self.tmux("capture-pane", "-p", "-J")

    def wait_for(self, *texts: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(t in screen for t in texts):
                return screen
            time.sleep(0.05)  # polling interval, not a wait for an outcome
        raise AssertionError(f"timed out waiting for {texts!r}; screen was:\n{screen}")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def resize(self, width: int, height: int) -> None:
        self.tmux("resize-window", "-x", str(width), "-y", str(height))

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def term(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.kill()


def _command(data_dir: Path) -> str:
    return f"{sys.executable} -m console.cli --data-dir {data_dir} console --scenario calm"


def running(data_dir: Path) -> list[int]:
    """PIDs of console processes (python itself, not the shell around it) on this data directory."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if cmd and "python" in Path(cmd[0]).name and "console.cli" in cmd and str(data_dir) in cmd:
            found.append(proc.pid)
    return found


def wait_gone(data_dir: Path, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while running(data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running(data_dir) == [], "the console outlived its terminal"


def _journal_rows(db: Path, sql: str) -> list:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute(sql).fetchall()


def test_trigger_confirm_clear_and_quit(term, tmp_path):
    data = tmp_path / "sg"
    term.start(_command(data))
    term.wait_for("BTCUSDT", "SAFE", "PAPER")
    term.keys("T")
    term.wait_for("Force-TRIGGER the circuit breaker?")
    term.keys("e2e drill", "Enter")
    # 120 columns hold the gate's and the de-risking policy's short forms beside the reason
    term.wait_for("TRIGGERED by operator", "e2e drill", "ENTRIES BLOCKED", "de-risk 0%/0%/25%")
    term.keys("C")
    term.wait_for("Clear the circuit breaker?")
    term.keys("all clear", "Enter")
    term.wait_for("SAFE by operator", "all clear")
    term.keys("q")
    term.wait_for("SPIKEGUARD-EXIT=0")
    assert running(data) == []
    rows = _journal_rows(data / "journal.db", "SELECT action, reason, actor FROM operator_actions ORDER BY id")
    assert rows[:2] == [("force_trigger", "e2e drill", "operator"), ("clear_breaker", "all clear", "operator")]
    assert rows[-1][0] == "session_end" and rows[-1][1] == "operator quit"
    statuses = _journal_rows(data / "journal.db", "SELECT status, actor FROM circuit_breaker_events ORDER BY id")
    assert statuses == [("triggered", "operator"), ("cleared", "operator")]


def test_a_dropped_terminal_ends_the_session_cleanly(term, tmp_path):
    data = tmp_path / "sg"
    term.start(_command(data))
    term.wait_for("BTCUSDT", "SAFE")
    assert running(data)
    term.kill()  # the SSH session drops: the terminal goes away
    deadline = time.monotonic() + TIMEOUT
    rows: list = []
    while time.monotonic() < deadline:
        db = data / "journal.db"
        if db.exists():
            rows = _journal_rows(db, "SELECT action, reason FROM operator_actions WHERE action = 'session_end'")
            if rows:
                break
        time.sleep(0.1)
    assert rows == [("session_end", "terminal lost (hangup)")]
    wait_gone(data)  # and the process is gone, not stuck restoring a terminal that no longer exists


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _settled_threads(pid: int, quiet_s: float = 1.5, limit_s: float = 20.0) -> int:
    """The thread count once start-up is done: unchanged for `quiet_s` (a loaded machine
    starts the crew's loader and the journal's threads later than an idle one)."""
    deadline = time.monotonic() + limit_s
    count, since = _threads(pid), time.monotonic()
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.1)
        now = _threads(pid)
        if now != count:
            count, since = now, time.monotonic()
    return count


def test_sigcont_and_sigtstp_neither_restart_nor_suspend_the_console(term, tmp_path):
    """Each SIGCONT (a closing terminal sends one) restarted Textual's input and writer threads:
    6 threads became 12 after three, and once the loop hung on the old writer's full queue with
    two input threads spinning on the dead pty (80 minutes at 130% of a core)."""
    data = tmp_path / "sg"
    term.start(_command(data))
    term.wait_for("BTCUSDT", "SAFE")
    (pid,) = running(data)
    before = _settled_threads(pid)
    for sig in (signal.SIGCONT, signal.SIGCONT, signal.SIGCONT, signal.SIGTSTP):
        os.kill(pid, sig)
        time.sleep(0.3)
    assert _threads(pid) <= before, (before, _threads(pid))
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().split()[2] != "T"  # not stopped by the SIGTSTP
    term.keys("p")
    term.wait_for("SCANNER PAUSED")  # still answering
    term.keys("q")
    term.wait_for("SPIKEGUARD-EXIT=0")


def test_restart_keeps_a_triggered_breaker(term, tmp_path):
    data = tmp_path / "sg"
    term.start(_command(data))
    term.wait_for("BTCUSDT", "SAFE")
    term.keys("T")
    term.wait_for("Force-TRIGGER")
    term.keys("before restart", "Enter")
    term.wait_for("TRIGGERED by operator", "before restart")
    term.keys("q")
    term.wait_for("SPIKEGUARD-EXIT=0")
    term.kill()
    again = Tmux(tmp_path)
    try:
        again.start(_command(data))
        again.wait_for("BTCUSDT", "TRIGGERED by operator", "before restart")
    finally:
        again.kill()
    wait_gone(data)
    assert os.path.exists(data / "journal.db")


# ---------------------------------------------------------------------------- the console never dies silently
def test_enter_typed_faster_than_the_palette_closes(term, tmp_path):
    """ctrl+p Enter Enter left a blank screen; a third Enter crashed with ScreenStackError (exit 0)."""
    data = tmp_path / "sg"
    term.start(_command(data))
    term.wait_for("BTCUSDT", "SAFE")
    term.keys("C-p", "Enter", "Enter", "Enter")  # one write: the terminal delivers them together
    term.wait_for("no pending proposal")  # the first Enter ran the palette's first command (Approve)
    term.keys("p")  # the main screen is still there and answers
    term.wait_for("SCANNER PAUSED", "BTCUSDT", "SAFE by")
    term.keys("q")
    term.wait_for("SPIKEGUARD-EXIT=0")


def test_resizing_back_and_forth_during_warning(term, tmp_path):
    """It crashed with NoMatches '#spikes' in _apply, exit 0, nothing in the log."""
    data = tmp_path / "sg"
    term.start(f"{sys.executable} -m console.cli --data-dir {data} console --scenario flash-crash --speed 120")
    term.wait_for("WARNING")
    for _ in range(10):
        term.resize(80, 24)
        term.wait_for("Spikes  Proposal", "Reasoning  Book")  # the compact layout's tabs
        term.resize(120, 36)
        term.wait_for("PnL since start")  # the book, shown beside the rest only in the wide layout
    term.keys("q")
    term.wait_for("SPIKEGUARD-EXIT=0")
    log = (data / "logs" / "spikeguard.log").read_text()
    assert "Traceback" not in log


FAULTS = {  # the real console with one fault injected, the key that sets it off, what it raises
    "a key handler": ("from console.app import SpikeguardApp\n"
                      "def broken(self):\n    raise RuntimeError('injected fault')\n"
                      "SpikeguardApp.action_help = broken\n", "?", "RuntimeError: injected fault"),
    "the engine worker": ("from core.session import Session\n"  # before it opens the journal
                          "async def broken(self, on_batch=None):\n    raise ValueError('math domain error')\n"
                          "Session.run = broken\n", None, "ValueError: math domain error"),
}


def _with_fault(tmp_path: Path, fault: str) -> str:
    script = tmp_path / "faulty_console.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(REPO)!r})\n{fault}"
                      "from console.cli import main\nmain()\n")
    return f"{sys.executable} {script}"


@pytest.mark.parametrize("where", FAULTS)
def test_an_unexpected_exception_is_one_line_and_a_failed_exit(term, tmp_path, where):
    fault, key, line = FAULTS[where]
    data = tmp_path / "sg"
    term.start(f"{_with_fault(tmp_path, fault)} --data-dir {data} console --scenario calm")
    if key:
        term.wait_for("BTCUSDT")
        term.keys(key)
    screen = term.wait_for("SPIKEGUARD-EXIT=1")
    assert f"error: the console stopped on an unexpected error: {line}" in screen
    assert "Traceback" not in screen and "╭" not in screen  # not Textual's dump
    log = (data / "logs" / "spikeguard.log").read_text()
    assert "Traceback" in log and line in log
    if key:  # the journal is open: the session's end says why
        rows = _journal_rows(data / "journal.db", "SELECT reason FROM operator_actions WHERE action = 'session_end'")
        assert rows == [(f"console crashed: {line}",)]


def test_quit_while_the_crew_is_still_loading_ends_the_process(term, tmp_path):
    """Once the process stayed alive for 40 minutes after such a quit: interpreter shutdown joins
    the thread that imports CrewAI, and the input thread span on the closed pty."""
    import psutil

    data = tmp_path / "sg"
    term.start(_command(data))
    term.wait_for("BTCUSDT", "desk rules (crew")  # painted; CrewAI still loading in its thread
    [pid] = running(data)
    children = psutil.Process(pid).children(recursive=True)
    term.keys("q")
    term.wait_for("SPIKEGUARD-EXIT=0")
    wait_gone(data)
    assert not [c for c in children if c.is_running()]
    rows = _journal_rows(data / "journal.db", "SELECT reason FROM operator_actions WHERE action = 'session_end'")
    assert rows == [("operator quit",)]


STUCK = {  # a library's thread that never ends, and the name it runs under
    "a thread of its own": ("import threading\n"
                            "threading.Thread(target=threading.Event().wait, name='stuck-library').start()\n",
                            "stuck-library"),
    "a job in the loop's executor": ("import asyncio, threading\nfrom core.session import Session\n"
                                     "real_run = Session.run\n"
                                     "async def run(self, on_batch=None):\n"
                                     "    asyncio.get_running_loop().run_in_executor(None, threading.Event().wait)\n"
                                     "    await real_run(self, on_batch=on_batch)\n"
                                     "Session.run = run\n", "asyncio_0"),
}


@pytest.mark.parametrize("where", STUCK)
def test_quit_ends_the_process_even_when_a_library_thread_never_ends(term, tmp_path, where):
    """As CrewAI's import does for seconds, forever: the exit deadline ends the process."""
    fault, name = STUCK[where]
    data = tmp_path / "sg"
    term.start(f"{_with_fault(tmp_path, fault)} --data-dir {data} console --scenario calm")
    term.wait_for("BTCUSDT", "SAFE")
    term.keys("q")
    term.wait_for("SPIKEGUARD-EXIT=0")  # the shell only gets here once the process is gone
    assert f"threads still running: {name}" in (data / "logs" / "spikeguard.log").read_text()


def test_a_terminal_closing_after_quit_does_not_restart_the_console(term, tmp_path):
    """The 40-minute case: closing the terminal sends SIGCONT, and Textual's driver, whose handler
    outlived the app, started its input thread again on the closed terminal."""
    sigcont_at_exit = ("import os, signal\nimport console.launch as launch\nreal_leave_by = launch.leave_by\n"
                       "def leave_by(deadline, code):\n    os.kill(os.getpid(), signal.SIGCONT)\n"
                       "    real_leave_by(deadline, code)\n"
                       "launch.leave_by = leave_by\n")
    data = tmp_path / "sg"
    term.start(f"{_with_fault(tmp_path, sigcont_at_exit)} --data-dir {data} console --scenario calm")
    term.wait_for("BTCUSDT", "SAFE")
    term.keys("q")
    screen = term.wait_for("SPIKEGUARD-EXIT=")
    # a one-line error would start a line ("error: ..."); the console's last frame may still be
    # on screen, and its history filter's placeholder says "error…"
    assert "SPIKEGUARD-EXIT=0" in screen and not any(line.startswith("error") for line in screen.splitlines())
    assert "Traceback" not in screen


def test_quit_ends_the_process_even_when_the_journal_never_closes(term, tmp_path):
    hang = ("import asyncio\nfrom core.session import Session\n"
            "async def close(self, reason=''):\n    await asyncio.Event().wait()\n"
            "Session.close = close\n")
    data = tmp_path / "sg"
    term.start(f"{_with_fault(tmp_path, hang)} --data-dir {data} console --scenario calm")
    term.wait_for("BTCUSDT", "SAFE")
    term.keys("q")
    screen = term.wait_for("SPIKEGUARD-EXIT=1")
    assert "error: the session did not close cleanly; its journal may miss the last rows" in screen


def test_quit_while_a_crew_waits_on_a_hung_provider_ends_the_process_in_seconds(term, tmp_path):
    """A model that never answers: the crew's threads sit in an HTTP read; quitting still ends
    the process within the exit deadline (they were 200 s and counting)."""
    from tests.fakes.openai_stub import OpenAIStub, Reply, Script

    data = tmp_path / "sg"
    with OpenAIStub(Script({}, default=Reply(content="never", delay_s=3600))) as stub:
        term.start(f"env OPENAI_API_KEY=test {sys.executable} -m console.cli --data-dir {data} "
                   f"--set crew.llm_provider=openai --set crew.llm_model=gpt-4o-mini "
                   f"--set crew.llm_base_url={stub.base_url} console --scenario pump-and-dump --speed 120")
        term.wait_for("crew (openai/gpt-4o-mini)", timeout=60)  # the status bar: the crew answers
        deadline = time.monotonic() + TIMEOUT
        while not stub.requests and time.monotonic() < deadline:  # a crew is waiting on the model
            time.sleep(0.05)
        assert stub.requests, "no crew run reached the model"
        started = time.monotonic()
        term.keys("q")
        term.wait_for("SPIKEGUARD-EXIT=")
        took = time.monotonic() - started
    wait_gone(data)
    assert took < 5.0, f"the process took {took:.1f}s to end after quit"
