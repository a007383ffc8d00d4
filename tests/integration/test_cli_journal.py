"""The journal through the real `spikeguard` command: a run whose journal cannot write
fails and says so, one process per journal, a signed head that catches a rewritten tail,
--force that opens it and journals the warning."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

from core.journal import load_or_create_key, verify
from core.journal.audit import CHAINED_TABLES
from tests.conftest import REPO, run_cli

CHAINED = CHAINED_TABLES  # every chained table, so a new one cannot hide from the forgery below


def chain_end(con: sqlite3.Connection) -> tuple[int, str]:
    """(chain_seq, table) of the last chained row."""
    return max((con.execute(f'SELECT MAX(chain_seq) FROM "{t}"').fetchone()[0] or 0, t) for t in CHAINED)


def journal_rows(db: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute(sql).fetchall()


def test_db_init_creates_a_private_key_and_audit_checks_the_signed_head(tmp_path):
    init = run_cli("--data-dir", str(tmp_path), "db", "init")
    assert init.returncode == 0, init.stderr
    key = tmp_path / "config" / "journal.key"
    assert key.is_file() and key.stat().st_mode & 0o777 == 0o600
    audit = run_cli("--data-dir", str(tmp_path), "audit", "verify")
    assert audit.returncode == 0 and "signed head verified" in audit.stdout


def test_a_deleted_tail_with_a_copied_head_is_caught_and_refused(tmp_path, market_data):
    db = tmp_path / "j.db"
    base = ("--data-dir", str(tmp_path))
    run = run_cli(*base, "replay", "--json", "--db", str(db), str(market_data / "ETHUSDT-5m-2025-10-10-futures.csv"))
    assert run.returncode == 0, run.stderr
    assert run_cli(*base, "audit", "verify", "--db", str(db)).returncode == 0
    # delete the last two rows and copy the new last hash into audit_head, with plain SQL
    with contextlib.closing(sqlite3.connect(db)) as con:
        for _ in range(2):
            seq, table = chain_end(con)
            con.execute(f'DELETE FROM "{table}" WHERE chain_seq = ?', (seq,))
        seq, table = chain_end(con)
        (h,) = con.execute(f'SELECT row_hash FROM "{table}" WHERE chain_seq = ?', (seq,)).fetchone()
        ids = {t: con.execute(f'SELECT COALESCE(MAX(id), 0) FROM "{t}"').fetchone()[0] for t in sorted(CHAINED)}
        con.execute("UPDATE audit_head SET last_seq = ?, last_hash = ?, last_ids = ?",
                    (seq, h, json.dumps(ids, separators=(",", ":"))))
        con.commit()
    # only the signature can tell: without the key the chain is consistent again
    assert verify(db).ok
    assert not verify(db, load_or_create_key(tmp_path / "config")).ok
    audit = run_cli(*base, "audit", "verify", "--db", str(db))
    assert audit.returncode == 1 and "audit FAILED" in audit.stdout and "signature" in audit.stdout
    refused = run_cli(*base, "replay", "--json", "--db", str(db), str(market_data / "BTCUSDT-5m-2020-03-12.csv"))
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "--force" in refused.stderr and "Traceback" not in refused.stderr
    forced = run_cli(*base, "replay", "--json", "--force", "--db", str(db),
                     str(market_data / "BTCUSDT-5m-2020-03-12.csv"))
    assert forced.returncode == 0, forced.stderr
    (action,) = journal_rows(db, "SELECT action FROM operator_actions WHERE action = 'journal_forced_open'")
    assert action == ("journal_forced_open",)


def test_a_second_process_on_a_journal_is_refused_naming_the_first(tmp_path):
    db = tmp_path / "j.db"
    assert run_cli("--data-dir", str(tmp_path), "db", "init", "--db", str(db)).returncode == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import asyncio, sys\nfrom core.journal import Journal\n"
         "async def main():\n    j = await Journal.open(sys.argv[1])\n    print('open', flush=True)\n"
         "    sys.stdin.readline()\n    await j.close()\nasyncio.run(main())\n", str(db)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        second = run_cli("--data-dir", str(tmp_path), "db", "init", "--db", str(db))
        assert second.returncode == 2 and f"PID {holder.pid}" in second.stderr
        stats = run_cli("--data-dir", str(tmp_path), "db", "stats", "--db", str(db))  # read only: allowed
        assert stats.returncode == 0 and "circuit_breaker_events" in stats.stdout
    finally:
        holder.communicate("\n", timeout=30)


def test_a_replay_whose_disk_fills_fails_and_says_so(tmp_path, market_data):
    """The file size limit makes the kernel refuse the journal's writes past 400 KB (EFBIG,
    which SQLite reports as a write error): the same failure as a full disk, root or not."""
    db = tmp_path / "j.db"
    limit = 400_000

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [sys.executable, "-m", "console.cli", "--data-dir", str(tmp_path), "replay", "--json", "--db", str(db),
         "--agents", "--auto-approve-paper", str(market_data / "BTCUSDT-1m-2021-05-19.csv"),
         str(market_data / "DOGEUSDT-1m-2021-05-19.csv")],
        cwd=REPO, capture_output=True, text=True, preexec_fn=small_files, timeout=300,
        env={**os.environ, "CREWAI_STORAGE_DIR": str(tmp_path / "crewai"), "HOME": str(tmp_path)})
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert done.stderr.startswith("error: the run's journal is incomplete:") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    stats = report["stats"]
    assert stats["journal_error"] and stats["journal_unwritten"] > 0
    assert stats["journal_rows"]["circuit_breaker_events"] < len(report["breaker"])  # some never reached the disk
    audit = run_cli("--data-dir", str(tmp_path), "audit", "verify", "--db", str(db))
    assert audit.returncode == 0, audit.stdout  # what did land is an intact, signed chain
