"""End to end over a real terminal: the real `spikeguard` command in tmux on a private
socket, driven with send-keys and read with capture-pane. Every wait polls the screen
(or the journal) until the expected text appears; there are no fixed sleeps."""

from __future__ import annotations

import os
import shutil
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
        env = f"TERM=xterm-256color HOME={self.tmp} XDG_CONFIG_HOME={self.tmp}/cfg XDG_DATA_HOME={self.tmp}/data"
        subprocess.run(["tmux", "-L", self.socket, "new-session", "-d", "-x", "120", "-y", "36", "-c", str(REPO),
                        f"env {env} {command}; echo SPIKEGUARD-EXIT=$?; sleep 120"], check=True, timeout=10)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

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
    term.wait_for("TRIGGERED │ e2e drill", "new entries blocked")
    term.keys("C")
    term.wait_for("Clear the circuit breaker?")
    term.keys("all clear", "Enter")
    term.wait_for("SAFE │ all clear")
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


def test_restart_keeps_a_triggered_breaker(term, tmp_path):
    data = tmp_path / "sg"
    term.start(_command(data))
    term.wait_for("BTCUSDT", "SAFE")
    term.keys("T")
    term.wait_for("Force-TRIGGER")
    term.keys("before restart", "Enter")
    term.wait_for("TRIGGERED │ before restart")
    term.keys("q")
    term.wait_for("SPIKEGUARD-EXIT=0")
    term.kill()
    again = Tmux(tmp_path)
    try:
        again.start(_command(data))
        again.wait_for("BTCUSDT", "TRIGGERED │ before restart")
    finally:
        again.kill()
    wait_gone(data)
    assert os.path.exists(data / "journal.db")
