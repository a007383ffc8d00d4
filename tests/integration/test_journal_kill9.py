"""kill -9 the journal's writer process over and over: every acknowledged id survives, the
database is intact, the hash chain verifies and the breaker's epochs stay consecutive.
(Each killed writer's lock goes with it: the next round opens the journal again.) Write
rates are in bench/journal.py."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.journal import verify

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("journal_writer_child.py")
ROUNDS = 8


def _run_round(db: Path, kill_after: float, wait_ready: bool, log: Path) -> tuple[list[str], bool]:
    """Start the child, SIGKILL it `kill_after` seconds after it is ready (or after start),
    return the complete lines it printed and whether it got ready."""
    with open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, str(CHILD), str(db)], stdout=subprocess.PIPE, stderr=err,
                                cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    chunks: list[bytes] = []
    ready = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # a line cut by the kill has no newline and is dropped below
            chunks.append(line)
            if line == b"ready\n":
                ready.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    try:
        if wait_ready and not ready.wait(timeout=15):
            pytest.fail(f"journal child never got ready; stderr in {log}: {log.read_text()[-2000:]}")
        time.sleep(kill_after)
        assert proc.poll() is None, f"journal child exited by itself: {log.read_text()[-2000:]}"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        th.join(timeout=10)
    lines = [c.decode().rstrip("\n") for c in chunks if c.endswith(b"\n")]
    return lines, ready.is_set()


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    log = tmp_path / "child-stderr.log"
    rng = random.Random(int(os.environ.get("JOURNAL_KILL_SEED", "20240501")))
    acked: set[tuple[str, int]] = set()
    for i in range(ROUNDS):
        # round 1 is killed early, usually while importing or opening (migration); the rest mid-write
        early = i == 1
        lines, _ = _run_round(db, rng.uniform(0.0, 0.25) if early else rng.uniform(0.2, 1.0), not early, log)
        for line in lines:
            if line.startswith("ack "):
                _, table, row_id = line.split()
                acked.add((table, int(row_id)))
    tables = {t for t, _ in acked}
    assert {"circuit_breaker_events", "orders", "fills", "spike_events", "row_updates", "operator_actions"} <= tables
    assert len(acked) > 200

    con = sqlite3.connect(str(db))
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        missing = [(t, n) for t, n in sorted(acked)
                   if con.execute(f"SELECT 1 FROM {t} WHERE id = ?", (n,)).fetchone() is None]
        assert not missing, f"{len(missing)} acknowledged rows lost, e.g. {missing[:5]}"
        # the breaker was restored from the journal after every kill: epochs consecutive,
        # each row's previous status is the status of the row before
        rows = con.execute("SELECT epoch, previous_status, breaker_status FROM circuit_breaker_events "
                           "ORDER BY id").fetchall()
        assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
        assert all(rows[k][1] == rows[k - 1][2] for k in range(1, len(rows)))
    finally:
        con.close()
    result = verify(db)
    assert result.ok, result.problems[:3]
    assert result.rows_checked >= len(acked)
