"""Tamper evidence for the journal: one hash chain over every journaled row, and its check.

The chain
- Every row of every table in CHAINED_TABLES carries chain_seq (one global sequence over
  all those tables: 1, 2, 3, ... with no gaps, UNIQUE per table), prev_hash (the row_hash
  of the row with chain_seq - 1, GENESIS_HASH for the first) and
      row_hash = sha256(prev_hash "|" table "|" chain_seq "|" canonical_json(content))
  where content is the row's columns minus the three chain columns, minus the table's
  MUTABLE columns, minus NULL values (so a migration that adds a NULLable column leaves old
  rows' hashes valid). The id is part of the content. canonical_json sorts keys, has no
  whitespace and escapes non-ASCII, so the same stored values always give the same text.
- audit_head (one row) holds the last chain_seq and its hash; the writer updates it in
  the same transaction as the rows it appends, so a cut-off tail is visible.
- Mutable columns (spike status/outcome/pnl/..., proposal decision, breaker user_notified)
  are not in the hash. Their inserted values are in the row's audit_initial column (JSON,
  hashed), and every later change is an appended, chained row_updates row (table_name,
  row_id, changes JSON) written in the same transaction as the UPDATE. A mutable column's
  current value must equal its last recorded change, or its inserted value.

- The head is signed (HMAC-SHA256, core.journal.head) with a key kept outside the journal;
  given the key, verify() checks the signature, so cutting the tail off and rewriting the
  head to match is found too.

What this proves and what it does not: a row edited, deleted, inserted or moved with a
plain SQLite tool, without recomputing every later hash and the head, is found, with the
first bad row named. Without the key, someone who rewrites the whole chain from the edit
onwards and the head can forge it. With it, they also need the key; an older head with its
signature, copied back with the rows after it deleted, still verifies: to catch that,
copy the head (Journal.head()) somewhere else (a log, a second machine) and compare.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.journal.head import signature_problem
from core.journal.schema import GENESIS_HASH, JournalError

CHAINED_TABLES: tuple[str, ...] = (
    "spike_events", "circuit_breaker_events", "agent_decisions", "agent_performance",
    "orders", "fills", "proposals", "operator_actions", "row_updates", "incidents",
)

CHAIN_COLUMNS: frozenset[str] = frozenset({"chain_seq", "prev_hash", "row_hash"})

# columns that may change after insert; each change is journaled as a row_updates row
MUTABLE: dict[str, tuple[str, ...]] = {
    "spike_events": ("status", "context_analysis", "risk_assessment", "trade_id", "outcome", "pnl"),
    "circuit_breaker_events": ("user_notified",),
    "proposals": ("status", "decided_by", "decision_reason", "decided_at"),
}

_MAX_PROBLEMS = 100


def _default(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(o).hex()}
    raise TypeError(f"cannot hash a {type(o).__name__}")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True,
                      default=_default)


def hashed_content(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """The part of a row its hash covers: no chain columns, no mutable columns, no NULLs."""
    skip = MUTABLE.get(table, ())
    return {k: v for k, v in row.items() if v is not None and k not in CHAIN_COLUMNS and k not in skip}


def row_hash(prev_hash: str, table: str, chain_seq: int, content: dict[str, Any]) -> str:
    blob = f"{prev_hash}|{table}|{chain_seq}|{canonical_json(content)}"
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class AuditResult:
    ok: bool
    rows_checked: int
    first_bad: dict[str, Any] | None  # {table, id, chain_seq, problem}
    problems: list[dict[str, Any]] = field(default_factory=list)  # every problem found (capped)
    head: dict[str, Any] | None = None  # {last_seq, last_hash} as stored
    integrity: str = "ok"  # PRAGMA integrity_check's answer

    def summary(self) -> str:
        if self.ok:
            return f"journal ok: {self.rows_checked} rows, chain intact, integrity ok"
        b = self.first_bad or {}
        return (f"journal FAILED: {b.get('problem')} (table {b.get('table')}, id {b.get('id')}, "
                f"chain_seq {b.get('chain_seq')}); {len(self.problems)} problem(s), {self.rows_checked} rows checked")


def _problem(table: str | None, row_id: Any, seq: Any, text: str) -> dict[str, Any]:
    return {"table": table, "id": row_id, "chain_seq": seq, "problem": text}


def _table_rows(conn: sqlite3.Connection, table: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
    cur = conn.execute(f'SELECT * FROM "{table}" ORDER BY chain_seq')
    cols = [d[0] for d in cur.description]
    for values in cur:
        row = dict(zip(cols, values))
        seq = row.get("chain_seq")
        # a non-integer chain_seq (a tamper) sorts first and is reported
        yield (seq if isinstance(seq, int) else -1, table, row)


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(16)
    return head == b"" or head == b"SQLite format 3\x00"


def read_counts(path: str | Path) -> dict[str, int]:
    """Rows per chained table, read only (no lock: it works beside the process that writes).
    Raises JournalError when the file is not a journal."""
    p = Path(path)
    if not p.is_file() or not _is_sqlite(p):
        raise JournalError(f"{p} is not a spikeguard journal")
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as e:
        raise JournalError(f"cannot read journal {p}: {e}") from None
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "audit_head" not in tables:
            raise JournalError(f"{p} is not a spikeguard journal (no audit_head table)")
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in CHAINED_TABLES if t in tables}
    except sqlite3.DatabaseError as e:
        raise JournalError(f"cannot read journal {p}: {e}") from None
    finally:
        conn.close()


def verify(path: str | Path, key: bytes | None = None) -> AuditResult:
    """Walk every chained row in chain_seq order and report the first bad one.

    Checks, in this order of precedence: PRAGMA integrity_check; the chain (a chain_seq gap
    = a deleted row, prev_hash not linking = rows reordered or rewritten, a hash mismatch =
    an edited row, ids out of order within a table, the end of the chain against the stored
    head = a truncated tail, and with `key` the head's signature); then the mutable columns
    against their recorded updates. Raises JournalError when the file is missing, not
    SQLite, or not a journal.
    """
    p = Path(path)
    if not p.is_file():
        raise JournalError(f"no journal at {p}")
    if not _is_sqlite(p):
        raise JournalError(f"{p} is not a spikeguard journal (not a SQLite database)")
    conn = sqlite3.connect(str(p), isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN")  # one read snapshot for the whole walk (a writer may be running)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as e:
            raise JournalError(f"{p} is not a spikeguard journal (not a SQLite database: {e})") from None
        if "audit_head" not in tables:
            raise JournalError(f"{p} is not a spikeguard journal (no audit_head table)")
        return _verify(conn, tables, key)
    finally:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        conn.close()


def _verify(conn: sqlite3.Connection, tables: set[str], key: bytes | None) -> AuditResult:
    integrity_rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    integrity = "ok" if integrity_rows == ["ok"] else "; ".join(str(r) for r in integrity_rows[:5])
    problems: list[dict[str, Any]] = []
    if integrity != "ok":
        problems.append(_problem(None, None, None, f"integrity_check: {integrity}"))

    cur = conn.execute("SELECT * FROM audit_head WHERE id = 1")
    head_row = cur.fetchone()
    head = dict(zip([d[0] for d in cur.description], head_row)) if head_row else None
    head_seq = head["last_seq"] if head else None
    try:  # each table's last id, kept by the writer: names rows deleted at the end of a table
        head_ids = {str(k): int(v) for k, v in json.loads((head or {}).get("last_ids") or "{}").items()}
    except (TypeError, ValueError, AttributeError):
        head_ids = {}

    streams = [_table_rows(conn, t) for t in CHAINED_TABLES if t in tables]
    structural: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []  # seq gaps, attributed to a table after the walk
    id_gaps: list[tuple[str, list[int], int, int]] = []  # (table, missing ids, seq before, seq after)
    last_in_table: dict[str, tuple[int, int]] = {}  # table -> (last id, its chain_seq)
    mutable_rows: list[tuple[int, str, dict[str, Any]]] = []
    updates: dict[tuple[str, int], list[tuple[dict[str, Any] | None, bool]]] = {}
    beyond_head_reported = False

    expected, prev, n = 1, GENESIS_HASH, 0
    for seq, table, row in heapq.merge(*streams, key=lambda item: item[0]):
        n += 1
        rid = row.get("id")
        stored_seq = row.get("chain_seq")
        computed = None
        bad: str | None = None
        if not isinstance(stored_seq, int):
            bad = f"chain_seq {stored_seq!r} is not an integer"
        else:
            if seq > expected:
                missing = f"{expected}" if seq - 1 == expected else f"{expected}..{seq - 1}"
                gaps.append({"table": None, "id": None, "chain_seq": expected,
                             "problem": f"chain_seq {missing} missing: row(s) deleted", "_seqs": (expected, seq - 1),
                             "_next": (table, rid)})
            elif seq < expected:
                bad = f"chain_seq {seq} appears twice"
            elif row.get("prev_hash") != prev:
                bad = "prev_hash does not link to the previous row: rows reordered or the chain rewritten"
            if bad is None:
                last = last_in_table.get(table, (0, 0))
                if isinstance(rid, int):
                    if rid <= last[0]:
                        bad = f"rows out of order: id {rid} comes after id {last[0]} in chain order"
                    elif rid > last[0] + 1:
                        id_gaps.append((table, list(range(last[0] + 1, rid)), last[1], seq))
            content = hashed_content(table, row)
            try:
                computed = row_hash(str(row.get("prev_hash")), table, seq, content)
            except TypeError:
                computed = None
            if bad is None and computed != row.get("row_hash"):
                bad = "row content does not match its hash: row edited"
            if head_seq is not None and seq > head_seq and not beyond_head_reported and bad is None:
                bad = f"row beyond the recorded head (head says last chain_seq {head_seq}): written outside the journal"
                beyond_head_reported = True
        if bad is not None:
            structural.append(_problem(table, rid, stored_seq, bad))
        if isinstance(rid, int) and isinstance(stored_seq, int):
            if table not in last_in_table or rid > last_in_table[table][0]:
                last_in_table[table] = (rid, stored_seq)
        # facts for the mutable-column pass
        if table == "row_updates":
            self_ok = computed is not None and computed == row.get("row_hash")
            try:
                changes = json.loads(row.get("changes") or "null")
            except (TypeError, ValueError):
                changes, self_ok = None, False
            updates.setdefault((str(row.get("table_name")), row.get("row_id")), []).append((changes, self_ok))
        elif table in MUTABLE:
            mutable_rows.append((seq, table, row))
        prev = row.get("row_hash")
        if isinstance(stored_seq, int):
            expected = max(expected, stored_seq + 1)

    # ids missing at the end of a table (the head remembers each table's last id)
    trailing: list[str] = []
    for t, last_id in head_ids.items():
        seen_id, seen_seq = last_in_table.get(t, (0, 0))
        if last_id > seen_id:
            id_gaps.append((t, list(range(seen_id + 1, last_id + 1)), seen_seq, 1 << 62))
            trailing.append(f"{t} id {seen_id + 1}" + (f"..{last_id}" if last_id > seen_id + 1 else ""))
    # attribute each seq gap to the table whose ids also have a hole there
    for g in gaps:
        lo, hi = g["_seqs"]
        cands = [(t, ids) for t, ids, before, after in id_gaps if before < lo and hi < after]
        if len({t for t, _ in cands}) == 1:
            g["table"], g["id"] = cands[0][0], cands[0][1][0]
        else:
            g["problem"] += f" (noticed before {g['_next'][0]} id {g['_next'][1]})"
        structural.append({k: v for k, v in g.items() if not k.startswith("_")})

    last_seq = expected - 1
    if head is None:
        structural.append(_problem("audit_head", 1, None, "the chain head row is missing"))
    elif head_seq > last_seq:
        structural.append(_problem(
            "audit_head", 1, last_seq + 1,
            f"chain truncated: the head records chain_seq {head_seq} but the last row is {last_seq}: "
            f"rows deleted from the end" + (f" ({', '.join(trailing)})" if trailing else "")))
    elif head_seq == last_seq and head["last_hash"] != (prev if n else GENESIS_HASH):
        structural.append(_problem("audit_head", 1, last_seq,
                                   "the head hash does not match the last row: the head or the last row was changed"))
    if head is not None and key is not None:
        unsigned_genesis = n == 0 and head_seq == 0 and not head.get("head_signature")
        bad_signature = None if unsigned_genesis else signature_problem(key, head)
        if bad_signature:
            structural.append(_problem("audit_head", 1, head_seq, bad_signature))

    structural.sort(key=lambda pr: pr["chain_seq"] if isinstance(pr["chain_seq"], int) else -1)
    problems.extend(structural)

    # mutable columns: the current value is the last recorded change, or the inserted value
    for seq, table, row in mutable_rows:
        ups = updates.get((table, row.get("id")), [])
        if not all(ok for _, ok in ups):
            continue  # a tampered update row: already reported in the chain walk
        try:
            expected_values = json.loads(row.get("audit_initial") or "{}")
        except ValueError:
            continue  # audit_initial is hashed: an edit there was reported above
        for changes, _ in ups:
            if isinstance(changes, dict):
                expected_values.update(changes)
        for col in MUTABLE[table]:
            if col not in row:
                continue
            want, have = expected_values.get(col), row[col]
            if want != have:
                problems.append(_problem(
                    table, row.get("id"), seq,
                    f"mutable column {col} is {have!r} but the journal recorded {want!r}: edited without an update row"))
        if len(problems) >= _MAX_PROBLEMS:
            break

    problems = problems[:_MAX_PROBLEMS]
    return AuditResult(ok=not problems, rows_checked=n, first_bad=problems[0] if problems else None,
                       problems=problems, head=head, integrity=integrity)


__all__ = ["AuditResult", "CHAINED_TABLES", "MUTABLE", "canonical_json", "hashed_content", "read_counts", "row_hash",
           "verify"]
