"""Read-only reports from a journal file, for commands that run beside the console that writes it.

`agent_performance(path)`: the agent_performance table as it stands, one row per agent and
market day. The desk appends a new row each time a day's totals change (the journal is
append-only), so the newest row of each (agent, period) is the day's figure.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from core.journal.schema import JournalError


def read_only(path: str | Path, *tables: str) -> sqlite3.Connection:
    """A read-only connection to a spikeguard journal holding `tables`. Raises JournalError
    (one line) for a missing file, a file that is not a journal, or one that cannot be read."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise JournalError(f"{p}: no journal here")
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        if _busy(e):
            raise JournalError(f"cannot read journal {p}: {e} (another process holds it exclusively; try again)") \
                from None
        raise JournalError(f"{p} is not a spikeguard journal ({e})") from None
    if not {"audit_head", *tables} <= have:
        conn.close()
        raise JournalError(f"{p} is not a spikeguard journal (no {', '.join(t for t in tables if t not in have)} "
                           f"table)")
    return conn


def _busy(e: sqlite3.Error) -> bool:
    return getattr(e, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in str(e)


def agent_performance(path: str | Path) -> list[dict[str, Any]]:
    """The newest row of each (agent, market day), by day then agent."""
    conn = read_only(path, "agent_performance")
    try:
        rows = conn.execute(
            "SELECT * FROM agent_performance WHERE id IN (SELECT MAX(id) FROM agent_performance "
            "GROUP BY agent_name, period) ORDER BY period, agent_name").fetchall()
    except sqlite3.DatabaseError as e:  # locked past the timeout, or damaged
        hint = " (another process holds it exclusively; try again)" if _busy(e) else ""
        raise JournalError(f"cannot read journal {Path(path)}: {e}{hint}") from None
    finally:
        conn.close()
    out = []
    for r in rows:
        d = dict(r)
        correct, tp = d.get("correct_decisions") or 0, d.get("true_positives") or 0
        d["true_negatives"] = max(0, correct - tp)  # correct = true positives + true negatives
        out.append(d)
    return out


__all__ = ["agent_performance", "read_only"]
