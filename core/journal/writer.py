"""The write side of the journal: the hash chain's state and the one transaction per batch
that appends to it.

ChainWriter holds the chain head, the next id of every table, the open breaker episode and
the connection's synchronous mode. Only the journal's writer task calls it, so none of this
needs a lock; the task itself (the queue, batching, retries, futures) lives in core.journal.db.

The journal's lock (core.journal.lock) keeps every other spikeguard out, so the stored head
only ever moves when this writer commits. Before every batch, under SQLite's write lock, the
writer checks that it is still where this writer left it; if not, something outside
spikeguard wrote to the file, and the writer raises ChainHeadMoved rather than adopt it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from core.events import iso_utc
from core.journal import head as chain_head
from core.journal.audit import CHAINED_TABLES, hashed_content, row_hash
from core.journal.faults import ChainHeadMoved
from core.journal.rows import BARRIER, Req, RowBuilder, episode_from_last_row, now_ms
from core.journal.schema import GENESIS_HASH, JournalError

log = logging.getLogger("spikeguard.journal")

_HEAD_COLUMNS = ("last_seq", "last_hash", "last_ids", "head_signature", "updated_at")


class ChainWriter:
    """See the module docstring. `db` is the journal's write connection, set at open. With a
    `key`, every commit signs the head; without one the signature column is cleared."""

    def __init__(self, path: Path, rows: RowBuilder, key: bytes | None = None) -> None:
        self.path = path
        self.rows = rows
        self.key = key
        self.db: aiosqlite.Connection | None = None
        self.seq = 0
        self.head = GENESIS_HASH
        self.stored_head: dict[str, Any] = {}  # the audit_head row as this writer last saw or wrote it
        self.chain_end: dict[str, Any] = {}
        self.next_id: dict[str, int] = {}
        self.episode: dict[str, Any] = {}
        self.sync: str | None = None

    # ------------------------------------------------------------------ state
    async def load_state(self) -> list[str]:
        """Read the head and the end of the chain. The writer appends after the last row;
        returns why the stored head cannot be trusted (empty when it can)."""
        assert self.db is not None
        cur = await self.db.execute(f"SELECT {', '.join(_HEAD_COLUMNS)} FROM audit_head WHERE id = 1")
        row = await cur.fetchone()
        if row is None:
            raise JournalError(f"journal {self.path} has no chain head (audit_head row missing): run `verify`")
        self.stored_head = dict(zip(_HEAD_COLUMNS, row))
        self.chain_end = await chain_head.read_chain_end(self.db, CHAINED_TABLES)
        self.seq, self.head = self.chain_end["last_seq"], self.chain_end["last_hash"]
        self.next_id = {t: self.chain_end["last_ids"][t] + 1 for t in CHAINED_TABLES}
        cur = await self.db.execute(
            "SELECT breaker_status, triggered_at, trigger_reason, event_time_ms, breaker_record "
            "FROM circuit_breaker_events ORDER BY id DESC LIMIT 1")
        self.episode = episode_from_last_row(await cur.fetchone())
        return chain_head.head_problems(self.stored_head, self.chain_end, self.key)

    def _save_state(self) -> tuple[Any, ...]:
        return self.seq, self.head, dict(self.next_id), dict(self.episode)

    def _restore_state(self, state: tuple[Any, ...]) -> None:
        self.seq, self.head, next_id, episode = state
        self.next_id, self.episode = dict(next_id), dict(episode)

    async def set_sync(self, mode: str) -> None:
        if self.sync != mode:
            assert self.db is not None
            await self.db.execute(f"PRAGMA synchronous={mode}")
            self.sync = mode

    # ------------------------------------------------------------------ one transaction
    async def write(self, reqs: list[Req]) -> tuple[list[int | None], int]:
        """One transaction: the rows, their chain links, the head. Returns the results and
        the number of rows written (0: only barriers, no transaction). Raises after a rollback."""
        db = self.db
        assert db is not None
        if all(r.kind == BARRIER for r in reqs):
            return [None] * len(reqs), 0
        state = self._save_state()
        await self.set_sync("FULL" if any(r.durable for r in reqs) else "NORMAL")
        await db.execute("BEGIN IMMEDIATE")
        try:
            await self._check_head()
            pending: dict[str, list[tuple[Any, ...]]] = {}
            results: list[int | None] = []
            rows = 0
            for r in reqs:
                if r.kind == BARRIER:
                    results.append(None)
                elif r.update is not None:
                    await self._flush_inserts(pending)
                    results.append(await self._apply_update(r))
                    rows += 1
                else:
                    assert r.table is not None and r.row is not None
                    row = dict(r.row)
                    if r.kind == "breaker":
                        self.episode = self.rows.complete_breaker_row(row, r.meta, self.episode)
                    results.append(self._chain(r.table, row, pending))
                    rows += 1
            await self._flush_inserts(pending)
            if rows:
                written = await self._write_head()
            await db.execute("COMMIT")
        except BaseException:
            self._restore_state(state)
            try:
                await db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        if rows:
            self.stored_head = written
        return results, rows

    async def probe(self) -> None:
        """A real write at open, committed and synced, so a journal that cannot be written is
        refused before anything relies on it. With a key it signs the (trusted) head."""
        db = self.db
        assert db is not None
        await self.set_sync("FULL")
        await db.execute("BEGIN IMMEDIATE")
        try:
            await self._check_head()
            head = dict(self.stored_head, updated_at=iso_utc(now_ms()))
            if self.key is not None:
                head["head_signature"] = chain_head.signature(self.key, head["last_seq"], head["last_hash"],
                                                              head["last_ids"])
            await db.execute("UPDATE audit_head SET updated_at = ?, head_signature = ? WHERE id = 1",
                             (head["updated_at"], head["head_signature"]))
            await db.execute("COMMIT")
        except BaseException:
            try:
                await db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        self.stored_head = head

    async def _check_head(self) -> None:
        """Inside the transaction: the stored head is still the one this writer left."""
        assert self.db is not None
        cur = await self.db.execute("SELECT last_seq, last_hash FROM audit_head WHERE id = 1")
        now = await cur.fetchone()
        if now is None or tuple(now) != (self.stored_head.get("last_seq"), self.stored_head.get("last_hash")):
            found = "missing" if now is None else f"chain_seq {now[0]!r}"
            raise ChainHeadMoved(
                f"journal {self.path}: the chain head moved under the writer (now {found}, expected chain_seq "
                f"{self.stored_head.get('last_seq')!r}): something outside spikeguard wrote to it; "
                f"not writing (check it with `spikeguard audit verify`)")

    async def _write_head(self) -> dict[str, Any]:
        """The head after this transaction's rows, signed with the key (or unsigned without one)."""
        assert self.db is not None
        last_ids = json.dumps({t: n - 1 for t, n in sorted(self.next_id.items())}, separators=(",", ":"))
        sig = chain_head.signature(self.key, self.seq, self.head, last_ids) if self.key is not None else None
        head = {"last_seq": self.seq, "last_hash": self.head, "last_ids": last_ids, "head_signature": sig,
                "updated_at": iso_utc(now_ms())}
        await self.db.execute("UPDATE audit_head SET last_seq = ?, last_hash = ?, last_ids = ?, head_signature = ?, "
                              "updated_at = ? WHERE id = 1", tuple(head[c] for c in _HEAD_COLUMNS))
        return head

    def _chain(self, table: str, row: dict[str, Any], pending: dict[str, list[tuple[Any, ...]]]) -> int:
        """Give a row its id and chain columns; queue it for this transaction's insert."""
        row_id = self.next_id[table]
        row["id"] = row_id
        seq = self.seq + 1
        h = row_hash(self.head, table, seq, hashed_content(table, row))
        row["chain_seq"], row["prev_hash"], row["row_hash"] = seq, self.head, h
        pending.setdefault(table, []).append(tuple(row.get(c) for c in self.rows.columns[table]))
        self.next_id[table] = row_id + 1
        self.seq, self.head = seq, h
        return row_id

    async def _flush_inserts(self, pending: dict[str, list[tuple[Any, ...]]]) -> None:
        assert self.db is not None
        for table, params in pending.items():
            if len(params) == 1:
                await self.db.execute(self.rows.insert_sql[table], params[0])
            else:
                await self.db.executemany(self.rows.insert_sql[table], params)
        pending.clear()

    async def _apply_update(self, r: Req) -> int:
        """UPDATE the mutable columns and append the chained row_updates row, same transaction.
        Returns the row_updates id."""
        db = self.db
        assert db is not None and r.update is not None
        table, key, changes = r.update
        if table == "proposals":
            cur = await db.execute("SELECT id FROM proposals WHERE proposal_id = ?", (key,))
            found = await cur.fetchone()
            if found is None:
                raise JournalError(f"no proposal {key!r} in the journal")
            row_id = int(found[0])
        else:
            row_id = int(key)
        sets = ", ".join(f"{c} = ?" for c in changes)
        cur = await db.execute(f'UPDATE "{table}" SET {sets} WHERE id = ?', (*changes.values(), row_id))
        if cur.rowcount != 1:
            raise JournalError(f"no {table} row with id {row_id} in the journal")
        upd = self.rows.row_update(table, row_id, changes, r.meta.get("time_ms"))
        pending: dict[str, list[tuple[Any, ...]]] = {}
        update_id = self._chain("row_updates", upd, pending)
        await self._flush_inserts(pending)
        return update_id
