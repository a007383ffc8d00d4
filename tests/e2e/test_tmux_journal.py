"""The real console and its journal in a real terminal (tmux): a trip shown as done survives
kill -9, a second console on the same journal is refused, a journal that cannot be written
is refused at start, and a disk that fills while running says JOURNAL FAILING, blocks
entries, and loses nothing once space returns.

The disk faults use real filesystems (a size-limited tmpfs, a read-only remount), which
needs root: `make test` runs as root (it installs packages), so CI does too."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.test_tmux import TIMEOUT, Tmux, running, wait_gone

ROOT = os.geteuid() == 0


def console(data: Path, *extra: str) -> str:
    return f"{sys.executable} -m console.cli --data-dir {data} console --scenario calm {' '.join(extra)}"


def wait_until(term: Tmux, ok: Callable[[str], bool], what: str, timeout: float = TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = term.screen()
        if ok(screen):
            return screen
        time.sleep(0.02)  # polling interval, not a wait for an outcome
    raise AssertionError(f"timed out waiting for {what}; screen was:\n{screen}")


def banner_and_status(screen: str) -> str:
    """The banner (the top lines) and the status bar (above the footer), not the reasoning log."""
    lines = [line for line in screen.splitlines() if line.strip()]
    return "\n".join(lines[:3] + lines[-2:-1])


def breaker_rows(db: Path) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        return con.execute("SELECT epoch, breaker_status, actor FROM circuit_breaker_events ORDER BY id").fetchall()


@contextlib.contextmanager
def tmpfs(target: Path, size: str) -> Iterator[Path]:
    if not ROOT:
        pytest.fail("the disk-fault tests need root for a real tmpfs (make test runs as root)")
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


@pytest.fixture
def term(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.kill()


def test_a_trip_shown_as_done_survives_kill_minus_9(tmp_path):
    """Killed within ~50 ms of the banner showing TRIGGERED, 0 of 5 runs kept the trip. Now
    the banner says saving… until the row is committed; once it does not, a kill keeps it."""
    for attempt in range(3):
        data = tmp_path / f"sg{attempt}"
        term = Tmux(tmp_path)
        try:
            term.start(console(data))
            term.wait_for("BTCUSDT", "SAFE", "desk")
            term.keys("T")
            term.wait_for("Force-TRIGGER")
            term.keys(f"drill {attempt}", "Enter")
            wait_until(term, lambda s: "TRIGGERED by operator" in s and f"│ drill {attempt}" in s and "saving…" not in s,
                       "the banner to show the trip as saved")
            (pid,) = running(data)
            os.kill(pid, signal.SIGKILL)
            term.wait_for("SPIKEGUARD-EXIT=137")
        finally:
            term.kill()
        assert breaker_rows(data / "journal.db")[-1] == (1, "TRIGGERED", "operator")
        again = Tmux(tmp_path)
        try:
            again.start(console(data))
            again.wait_for("BTCUSDT", "TRIGGERED by operator", f"│ drill {attempt}", "epoch 1")
            again.keys("q")
            again.wait_for("SPIKEGUARD-EXIT=0")
        finally:
            again.kill()
    wait_gone(data)


def test_a_second_console_on_the_same_journal_is_refused_naming_the_first(term, tmp_path):
    """Two consoles on one journal both ran; their breakers split and the epochs went backwards."""
    data = tmp_path / "sg"
    term.start(console(data))
    term.wait_for("BTCUSDT", "SAFE")
    (first,) = running(data)
    second = Tmux(tmp_path)
    try:
        second.start(console(data))
        second.wait_for("SPIKEGUARD-EXIT=2")
        screen = second.unwrapped()
        assert f"is in use by another spikeguard (PID {first}" in screen and "Traceback" not in screen
    finally:
        second.kill()
    assert running(data) == [first]
    term.keys("q")
    term.wait_for("SPIKEGUARD-EXIT=0")


def test_a_journal_that_cannot_be_written_is_refused_at_start(term, tmp_path):
    """A read-only journal gave a dead engine that said SAFE, epoch 0, and logged nothing."""
    data = tmp_path / "sg"
    with tmpfs(tmp_path / "ro", "4m") as mnt:
        db = mnt / "journal.db"
        init = subprocess.run([sys.executable, "-m", "console.cli", "--data-dir", str(data), "db", "init",
                               "--db", str(db)], capture_output=True, text=True, cwd=Path(__file__).parents[2])
        assert init.returncode == 0, init.stderr
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        term.start(console(data, "--db", str(db)))
        term.wait_for("SPIKEGUARD-EXIT=2")
        screen = term.unwrapped()
        assert "error: " in screen and "journal" in screen and "Read-only file system" in screen
        assert "Traceback" not in screen and "SAFE" not in screen


def test_a_disk_that_fills_while_running_says_so_blocks_entries_and_loses_nothing(term, tmp_path):
    """On a 500 KB tmpfs the screen showed TRIGGERED, RECOVERING, an operator trip; the journal
    held only a WARNING and a restart restored WARNING."""
    data = tmp_path / "sg"
    with tmpfs(tmp_path / "small", "2m") as mnt:
        db = mnt / "journal.db"
        term.start(console(data, "--db", str(db)))
        term.wait_for("BTCUSDT", "SAFE")
        filler = mnt / "filler"
        with open(filler, "wb") as f:  # take every free block
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        term.keys("T")
        term.wait_for("Force-TRIGGER")
        term.keys("disk is full", "Enter")
        wait_until(term, lambda s: "TRIGGERED by operator saving…" in s and "JOURNAL FAILING" in banner_and_status(s),
                   "the banner to say saving… and JOURNAL FAILING")
        filler.unlink()  # space returns
        wait_until(term, lambda s: "TRIGGERED by operator" in s and "│ disk is full" in s and "saving…" not in s
                   and "JOURNAL FAILING" not in banner_and_status(s), "the held rows to land")
        term.keys("q")
        term.wait_for("SPIKEGUARD-EXIT=0")
        assert (1, "TRIGGERED", "operator") in breaker_rows(db)
        again = Tmux(tmp_path)
        try:
            again.start(console(data, "--db", str(db)))
            again.wait_for("BTCUSDT", "TRIGGERED by operator", "│ disk is full", "epoch 1")
            again.keys("q")
            again.wait_for("SPIKEGUARD-EXIT=0")
        finally:
            again.kill()
