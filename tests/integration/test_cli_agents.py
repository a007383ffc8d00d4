"""`spikeguard agents report` and `spikeguard agents replay`, as the operator runs them.

A journal from a real `replay --agents` (the first two hours of the DOGE pump, written to a
temporary file); both commands read it only, so they work beside the console that holds it.
Bad input is one line and exit 2, never a traceback."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_cli

PUMP = "DOGEUSDT-1m-2021-04-16-pump.csv"


@pytest.fixture(scope="module")
def replayed(market_data, tmp_path_factory):
    """(data dir, journal, the replay's JSON, env) for a crew replay of the pump's first 120 candles."""
    root = tmp_path_factory.mktemp("cli-agents")
    head = (market_data / PUMP).read_text().splitlines()[:121]
    csv = root / "DOGEUSDT-1m-2021-04-16-head.csv"  # a temporary slice, never in the repository
    csv.write_text("\n".join(head) + "\n")
    env = {"HOME": str(root / "home"), "XDG_CONFIG_HOME": str(root / "xdg")}
    db = root / "journal.db"
    out = run_cli("--data-dir", str(root / "data"), "replay", "--agents", "--json", "--db", str(db), str(csv),
                  env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return root / "data", db, json.loads(out.stdout), env


def _agents(replayed, *args, timeout=120):
    data, db, _report, env = replayed
    return run_cli("--data-dir", str(data), "agents", *args, env=env, timeout=timeout)


def _one_line_error(out):
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def test_report_prints_agent_performance_per_market_day(replayed):
    _data, db, report, _env = replayed
    out = _agents(replayed, "report", "--db", str(db))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("period"))
    assert lines[header].split() == ["period", "agent", "decisions", "TP", "FP", "FN", "TN", "accuracy", "avg", "conf"]
    table = {(ln.split()[0], ln.split()[1]): ln.split()[2:] for ln in lines[header + 1:]}
    want = {(r["period"], r["agent"]): r for r in report["agent_performance"]}
    assert ("2021-04-16", "desk") in table and set(table) == set(want)
    for key, cells in table.items():
        r = want[key]
        assert [int(c) for c in cells[:5]] == [r["decisions"], r["true_positives"], r["false_positives"],
                                               r["false_negatives"], r["true_negatives"]], key
        acc = r["accuracy_percent"]
        assert cells[5] == (f"{acc:.1f}%" if acc is not None else "-"), key
    # the desk's row matches the outcomes of the replay
    desk = want[("2021-04-16", "desk")]
    measured = [o for o in report["outcomes"] if o["outcome"] in ("profitable", "unprofitable")]
    assert desk["true_positives"] == sum(o["decision"] == "proposed" and o["outcome"] == "profitable" for o in measured)
    assert desk["false_negatives"] == sum(o["decision"] == "skipped" and o["outcome"] == "profitable" for o in measured)


def test_replay_of_a_journaled_decision_decides_the_same_offline(replayed):
    _data, db, _report, _env = replayed
    conn = sqlite3.connect(db)
    [(decision_id,)] = conn.execute("SELECT id FROM agent_decisions WHERE agent_name = 'strategy_executor' "
                                    "ORDER BY id LIMIT 1").fetchall()
    conn.close()
    out = _agents(replayed, "replay", str(decision_id), "--db", str(db))  # --llm rules by default: no network
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert f"decision {decision_id}: run" in out.stdout and "replayed with rules" in out.stdout
    assert "same decision: 5 of 5 agents agree" in out.stdout and "DIFFERENT" not in out.stdout


def test_bad_input_is_one_line_and_exit_2(replayed, tmp_path):
    _data, db, _report, _env = replayed
    assert "no agent decision 999999" in _one_line_error(_agents(replayed, "replay", "999999", "--db", str(db)))
    assert "DECISION_ID is a number" in _one_line_error(_agents(replayed, "replay", "abc", "--db", str(db)))
    assert "no journal here" in _one_line_error(_agents(replayed, "report", "--db", str(tmp_path / "none.db")))
    foreign = tmp_path / "notes.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    assert "not a spikeguard journal" in _one_line_error(_agents(replayed, "report", "--db", str(foreign)))
    assert "not a spikeguard journal" in _one_line_error(_agents(replayed, "replay", "1", "--db", str(foreign)))
    text = tmp_path / "text.db"
    text.write_text("not a database at all\n" * 100)
    assert "not a spikeguard journal" in _one_line_error(_agents(replayed, "report", "--db", str(text)))


def test_a_journal_locked_exclusively_is_one_line(replayed):
    _data, db, _report, _env = replayed
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("UPDATE audit_head SET updated_at = updated_at")  # takes the lock
        line = _one_line_error(_agents(replayed, "report", "--db", str(db)))
        assert "locked" in line
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_report_works_beside_a_running_console(replayed):
    """A process holding the journal open for writing (its lock taken), as the console does."""
    _data, db, _report, env = replayed
    holder = subprocess.Popen(
        [sys.executable, "-c", "import asyncio, sys\n"
         "from core.journal import Journal\n"
         "async def main():\n"
         "    j = await Journal.open(sys.argv[1])\n"
         "    print('open', flush=True)\n"
         "    sys.stdin.readline()\n"
         "    await j.close()\n"
         "asyncio.run(main())\n", str(db)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        out = _agents(replayed, "report", "--db", str(db))
        assert out.returncode == 0 and "desk" in out.stdout, out.stderr
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
