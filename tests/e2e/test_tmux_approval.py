"""An operator approves a proposal at the default speed, at a human's pace: the real
`spikeguard` console in tmux on its default sim speed (the crew on, offline), a proposal
read for 2.5 s before `a`, the dialog read for 2.5 s before `y`, and the approval goes
through. The two pauses are the point of the test (a person reading), not waits for an
outcome; every outcome is polled for on the screen and in the journal."""

from __future__ import annotations

import json
import sqlite3
import sys
import time

from tests.e2e.test_tmux import REPO, Tmux, term  # noqa: F401  (the fixture)

HUMAN_READ_S = 2.5


def test_an_operator_approves_a_proposal_at_the_default_speed(term, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    term.start(f"{sys.executable} -m console.cli --data-dir {data} console --scenario pump-and-dump")
    term.wait_for("PAPER", "30x", timeout=60)
    screen = term.wait_for("proposal waiting: a", timeout=180)  # the crew's BUY on the pump's start
    assert "slowed: a proposal waits" in term.unwrapped() or "2x" in screen
    time.sleep(HUMAN_READ_S)  # the operator reads the proposal panel
    term.keys("a")
    term.wait_for("Approve proposal", "approve now", timeout=10)
    time.sleep(HUMAN_READ_S)  # and the dialog: what changed, what the gate says now
    dialog = term.screen()
    assert "would be sent" in dialog, dialog  # still approvable after a human's reading time
    term.keys("y")
    term.wait_for("entry ", timeout=15)  # the approval's answer: "entry filled (...)" or "entry new (...)"
    db = data / "journal.db"
    deadline = time.monotonic() + 15
    approvals: list = []
    while time.monotonic() < deadline and not approvals:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            approvals = con.execute("SELECT details FROM operator_actions WHERE action = 'approve'").fetchall()
        time.sleep(0.1)
    assert approvals, "the approval was journaled"
    details = json.loads(approvals[-1][0])
    assert details["ok"] is True, details
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        sent = con.execute("SELECT status FROM orders WHERE proposal_id = ? AND side = 'BUY'",
                           (details["proposal_id"],)).fetchall()
    assert {s for (s,) in sent} & {"NEW", "FILLED", "PARTIALLY_FILLED"}, sent
    term.keys("q")


assert REPO.exists()
