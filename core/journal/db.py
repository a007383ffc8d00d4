"""Journal: the append-only, hash-chained SQLite record of everything the engine does.

Connections and tasks
- One aiosqlite WRITE connection (autocommit mode, explicit BEGIN IMMEDIATE / COMMIT),
  owned by ONE writer task. Every write is a request on an asyncio queue; nothing else
  writes. A second aiosqlite READ connection (PRAGMA query_only) serves the read methods:
  in WAL mode it never waits for the writer and only ever sees committed rows.
- The writer takes whatever is queued (up to max_batch requests) and writes it in one
  transaction: the rows, their chain columns, the audit_head row, then COMMIT. Only after
  the COMMIT returns are the requests' futures resolved, so an acknowledged id is on disk
  (durable against a killed process; with synchronous=FULL, which the writer sets whenever
  the batch holds a breaker, order, fill or operator row, also against power loss).
  batching=False commits every request alone (the benchmark's comparison).
- If a batch fails (a duplicate fill_id, an update of a missing row, a full disk), it is
  rolled back and its requests are retried one transaction each, so one bad request fails
  alone with a JournalError and the others land.
- Before every batch, under the write lock, the writer compares the stored chain head with
  its own; if another process appended rows it reloads its counters, so two processes can
  share a journal without forking the chain.

Two ways to write
- async record_*/update_*/mark_* methods, for code on the engine's loop: they return the
  new row id after the commit.
- submit(kind, payload) and the enqueue_* helpers, for synchronous callers (the breaker's
  subscriber runs inside a transition, maybe on another thread): thread-safe, never block,
  return a concurrent.futures.Future that resolves to the row id after the commit. Off the
  loop thread they use loop.call_soon_threadsafe. The queue is unbounded: a caller is
  never blocked or refused while the journal is open.

Cancelling a task that awaits record_* does not withdraw the write; the row still lands.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import hashlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from core.events import BreakerChanged, BreakerStatus, SpikeDetected, iso_utc
from core.journal import audit
from core.journal.audit import CHAINED_TABLES, MUTABLE, hashed_content, row_hash
from core.journal.schema import GENESIS_HASH, JournalError, migrate
from core.trading.orders import Fill, Order

log = logging.getLogger("spikeguard.journal")

BREAKER_STATUS_MAP: dict[BreakerStatus, str] = {
    BreakerStatus.TRIGGERED: "triggered",
    BreakerStatus.RECOVERING: "recovering",
    BreakerStatus.SAFE: "cleared",
    BreakerStatus.WARNING: "warning",
}

# columns that hold JSON (decoded by the read methods)
JSON_COLUMNS: dict[str, tuple[str, ...]] = {
    "spike_events": ("context_analysis", "risk_assessment", "details", "audit_initial"),
    "circuit_breaker_events": ("trigger_details", "market_snapshot", "recovery_conditions_met", "breaker_record",
                               "audit_initial"),
    "agent_decisions": ("input_data", "output_data"),
    "orders": ("order_json",),
    "proposals": ("payload", "audit_initial"),
    "operator_actions": ("details",),
    "row_updates": ("changes",),
}

# a batch holding one of these is committed with synchronous=FULL
DURABLE_KINDS = frozenset({"breaker", "breaker_notified", "order", "fill", "operator_action"})

SPIKE_MUTABLE = MUTABLE["spike_events"]
PROPOSAL_MUTABLE = MUTABLE["proposals"]

_BARRIER = "barrier"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _json(obj: Any) -> str | None:
    if obj is None:
        return None
    if isinstance(obj, str):
        return obj  # already JSON (or a plain note): stored as given
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _iso(t: int | float | str | None) -> str | None:
    if t is None or isinstance(t, str):
        return t
    return iso_utc(int(t))


def _num(d: dict[str, Any] | None, *keys: str) -> Any:
    if not d:
        return None
    for k in keys:
        v = d.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v
    return None


def _affinity(decl: str) -> str:
    """SQLite's type affinity rules, for the declared types this schema uses."""
    d = (decl or "").upper()
    if "INT" in d:
        return "INTEGER"
    if "CHAR" in d or "CLOB" in d or "TEXT" in d:
        return "TEXT"
    if "REAL" in d or "FLOA" in d or "DOUB" in d:
        return "REAL"
    return "BLOB" if not d or "BLOB" in d else "NUMERIC"


def _normalise(value: Any, affinity: str) -> Any:
    """The value exactly as SQLite will give it back, so the hash computed before the
    insert equals the one the verifier computes from the stored row."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and math.isnan(value):
        return None  # SQLite stores NaN as NULL
    if affinity == "REAL":
        if isinstance(value, int):
            return float(value)
    elif affinity == "INTEGER":
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            return int(value)
    elif affinity == "TEXT":
        if isinstance(value, (int, float)):
            return str(value)
    if isinstance(value, (dict, list, tuple)):
        return _json(value)
    if not isinstance(value, (int, float, str, bytes)):
        return str(value)
    return value


@dataclass
class _Req:
    kind: str
    table: str | None
    row: dict[str, Any] | None = None  # an insert: every column but id and the chain columns
    update: tuple[str, Any, dict[str, Any]] | None = None  # (table, row id or proposal_id, changes)
    meta: dict[str, Any] = field(default_factory=dict)
    fut: Any = None  # asyncio.Future or concurrent.futures.Future

    @property
    def durable(self) -> bool:
        return self.kind in DURABLE_KINDS


_STOP = object()


class Journal:
    """See the module docstring. Open with `await Journal.open(path)`, close with `await close()`."""

    def __init__(self, path: Path, batching: bool, max_batch: int) -> None:
        self.path = path
        self.batching = batching
        self.max_batch = max(1, int(max_batch))
        self.schema_version = 0
        self._db: aiosqlite.Connection | None = None
        self._rdb: aiosqlite.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._accepting = False
        self._writer_done = False
        self._fatal: BaseException | None = None
        self._columns: dict[str, list[str]] = {}
        self._affinity: dict[str, dict[str, str]] = {}
        self._insert_sql: dict[str, str] = {}
        # writer state (only the writer task touches it)
        self._seq = 0
        self._head = GENESIS_HASH
        self._next_id: dict[str, int] = {}
        self._episode: dict[str, Any] = {}
        self._sync: str | None = None
        # figures
        self.rows_written = 0
        self.batches = 0
        self.failed_requests = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    async def open(cls, path: str | Path, *, batching: bool = True, max_batch: int = 256,
                   busy_timeout_ms: int = 10_000) -> "Journal":
        p = Path(path).expanduser()
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise JournalError(f"cannot create the journal's folder {p.parent}: {e}") from None
        if p.is_dir():
            raise JournalError(f"cannot open journal {p}: it is a directory")
        self = cls(p, batching, max_batch)
        try:
            await self._open(busy_timeout_ms)
        except BaseException:
            await self._close_connections()
            raise
        return self

    async def _open(self, busy_timeout_ms: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        try:
            self._db = await aiosqlite.connect(str(self.path), isolation_level=None, timeout=busy_timeout_ms / 1000)
        except sqlite3.Error as e:
            raise JournalError(f"cannot open journal {self.path}: {e}") from None
        try:
            mode = (await (await self._db.execute("PRAGMA journal_mode=WAL")).fetchone())[0]
        except sqlite3.DatabaseError as e:
            raise JournalError(f"{self.path} is not a spikeguard journal (not a SQLite database: {e})") from None
        if str(mode).lower() != "wal":
            log.warning("journal %s: WAL mode refused (journal_mode=%s)", self.path, mode)
        await self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        await self._set_sync("NORMAL")
        self.schema_version = await migrate(self._db, str(self.path))
        for table in CHAINED_TABLES:
            cur = await self._db.execute(f'PRAGMA table_info("{table}")')
            info = await cur.fetchall()
            cols = [r[1] for r in info]
            self._columns[table] = cols
            self._affinity[table] = {r[1]: _affinity(r[2]) for r in info}
            self._insert_sql[table] = (f'INSERT INTO "{table}" ({", ".join(cols)}) '
                                       f'VALUES ({", ".join("?" for _ in cols)})')
        await self._load_state()
        self._rdb = await aiosqlite.connect(str(self.path), isolation_level=None, timeout=busy_timeout_ms / 1000)
        await self._rdb.execute("PRAGMA query_only=1")
        await self._rdb.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        self._accepting = True
        self._writer = asyncio.create_task(self._run(), name=f"journal-writer:{self.path.name}")
        self._writer.add_done_callback(self._on_writer_done)

    def _on_writer_done(self, task: asyncio.Task[None]) -> None:
        """However the writer ended (even cancelled before its first step), nobody waits forever."""
        self._writer_done = True
        self._accepting = False
        if task.cancelled() and self._fatal is None:
            self._fatal = asyncio.CancelledError("journal writer cancelled")
            self.last_error = "journal writer cancelled"
        err = JournalError(f"journal {self.path} is closed")
        while not self._queue.empty():
            it = self._queue.get_nowait()
            if it is not _STOP:
                _fail(it.fut, err)

    async def close(self) -> None:
        """Write everything queued, commit, stop the writer, close the connections."""
        if self._writer is None:
            await self._close_connections()
            return
        self._accepting = False
        self._queue.put_nowait(_STOP)
        writer, self._writer = self._writer, None
        try:
            await asyncio.wait({writer})  # the writer's own failure was logged; close anyway
        finally:
            await self._close_connections()

    async def _close_connections(self) -> None:
        for name in ("_rdb", "_db"):
            conn = getattr(self, name)
            setattr(self, name, None)
            if conn is not None:
                try:
                    await conn.close()
                except Exception:  # closing must not hide the error that got us here
                    log.exception("closing the journal connection failed")

    async def __aenter__(self) -> "Journal":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return not self._accepting

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "rows_written": self.rows_written, "batches": self.batches,
                "pending": self.pending, "failed_requests": self.failed_requests, "last_error": self.last_error,
                "chain_seq": self._seq, "batching": self.batching, "schema_version": self.schema_version}

    # ------------------------------------------------------------------ the writer's state
    async def _load_state(self) -> None:
        assert self._db is not None
        cur = await self._db.execute("SELECT last_seq, last_hash FROM audit_head WHERE id = 1")
        row = await cur.fetchone()
        if row is None:
            raise JournalError(f"journal {self.path} has no chain head (audit_head row missing): run `verify`")
        self._seq, self._head = int(row[0]), str(row[1])
        for table in CHAINED_TABLES:
            cur = await self._db.execute(f'SELECT MAX(id) FROM "{table}"')
            self._next_id[table] = int((await cur.fetchone())[0] or 0) + 1
        cur = await self._db.execute(
            "SELECT breaker_status, triggered_at, trigger_reason, event_time_ms, breaker_record "
            "FROM circuit_breaker_events ORDER BY id DESC LIMIT 1")
        last = await cur.fetchone()
        self._episode = {}
        if last is not None and last[0] in (BreakerStatus.TRIGGERED.value, BreakerStatus.RECOVERING.value):
            rec = json.loads(last[4]) if last[4] else {}
            self._episode = {
                "triggered_ms": rec.get("triggered_at_ms"), "triggered_at": last[1], "reason": last[2],
                "recovery_ms": rec.get("recovery_started_at_ms")
                if last[0] == BreakerStatus.RECOVERING.value else None,
            }
            if last[0] == BreakerStatus.RECOVERING.value and self._episode["recovery_ms"] is None:
                self._episode["recovery_ms"] = last[3]

    def _save_state(self) -> tuple[Any, ...]:
        return self._seq, self._head, dict(self._next_id), dict(self._episode)

    def _restore_state(self, state: tuple[Any, ...]) -> None:
        self._seq, self._head, next_id, episode = state
        self._next_id, self._episode = dict(next_id), dict(episode)

    async def _set_sync(self, mode: str) -> None:
        if self._sync != mode:
            assert self._db is not None
            await self._db.execute(f"PRAGMA synchronous={mode}")
            self._sync = mode

    # ------------------------------------------------------------------ the writer task
    async def _run(self) -> None:
        stopping = False
        reqs: list[_Req] = []
        try:
            while True:
                item = await self._queue.get()
                batch = [item]
                if self.batching:
                    while len(batch) < self.max_batch and not self._queue.empty():
                        batch.append(self._queue.get_nowait())
                reqs = []
                for it in batch:
                    if it is _STOP:
                        stopping = True
                    else:
                        reqs.append(it)
                if stopping:  # whatever was queued behind the stop (a thread's late submit) is written too
                    while not self._queue.empty():
                        it = self._queue.get_nowait()
                        if it is not _STOP:
                            reqs.append(it)
                for i in range(0, len(reqs), self.max_batch if self.batching else 1):
                    await self._commit_batch(reqs[i:i + (self.max_batch if self.batching else 1)])
                if stopping:
                    return
        except BaseException as e:  # a bug or a cancelled writer: never leave a caller waiting
            self._fatal = e
            self.last_error = f"journal writer stopped: {e!r}"
            if not isinstance(e, asyncio.CancelledError):
                log.exception("journal writer stopped")
            raise
        finally:
            self._writer_done = True
            self._accepting = False
            err = JournalError(f"journal {self.path} is closed")
            for it in reqs:  # in flight when the writer stopped (already-resolved ones are skipped)
                _fail(it.fut, err)
            while not self._queue.empty():
                it = self._queue.get_nowait()
                if it is not _STOP:
                    _fail(it.fut, err)

    async def _commit_batch(self, reqs: list[_Req]) -> None:
        if not reqs:
            return
        try:
            results = await self._write(reqs)
        except Exception as e:
            if len(reqs) == 1:
                self._failed(reqs[0], e)
                return
            log.warning("journal batch of %d failed (%s); writing its requests one by one", len(reqs), e)
            for r in reqs:
                try:
                    res = await self._write([r])
                except Exception as e1:
                    self._failed(r, e1)
                else:
                    _resolve(r.fut, res[0])
            return
        for r, res in zip(reqs, results):
            _resolve(r.fut, res)

    def _failed(self, req: _Req, e: BaseException) -> None:
        self.failed_requests += 1
        if not isinstance(e, JournalError):
            e = JournalError(f"journal write ({req.kind}) failed: {e}")
        self.last_error = str(e)
        _fail(req.fut, e)

    async def _write(self, reqs: list[_Req]) -> list[int | None]:
        """One transaction: the rows, their chain links, the head. Raises after a rollback."""
        db = self._db
        assert db is not None
        if all(r.kind == _BARRIER for r in reqs):
            return [None] * len(reqs)
        state = self._save_state()
        await self._set_sync("FULL" if any(r.durable for r in reqs) else "NORMAL")
        await db.execute("BEGIN IMMEDIATE")
        try:
            cur = await db.execute("SELECT last_seq, last_hash FROM audit_head WHERE id = 1")
            head = await cur.fetchone()
            if head is None or (int(head[0]), head[1]) != (self._seq, self._head):
                log.warning("journal %s: another writer appended rows; reloading the chain head", self.path)
                await self._load_state()
                state = self._save_state()
            pending: dict[str, list[tuple[Any, ...]]] = {}
            results: list[int | None] = []
            rows = 0
            for r in reqs:
                if r.kind == _BARRIER:
                    results.append(None)
                elif r.update is not None:
                    await self._flush_inserts(pending)
                    results.append(await self._apply_update(r))
                    rows += 1
                else:
                    assert r.table is not None and r.row is not None
                    row = dict(r.row)
                    if r.kind == "breaker":
                        self._complete_breaker_row(row, r.meta)
                    results.append(self._chain(r.table, row, pending))
                    rows += 1
            await self._flush_inserts(pending)
            if rows:
                last_ids = json.dumps({t: n - 1 for t, n in sorted(self._next_id.items())}, separators=(",", ":"))
                await db.execute("UPDATE audit_head SET last_seq = ?, last_hash = ?, last_ids = ?, updated_at = ? "
                                 "WHERE id = 1", (self._seq, self._head, last_ids, iso_utc(_now_ms())))
            await db.execute("COMMIT")
        except BaseException:
            self._restore_state(state)
            try:
                await db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        self.rows_written += rows
        self.batches += 1
        return results

    def _chain(self, table: str, row: dict[str, Any], pending: dict[str, list[tuple[Any, ...]]]) -> int:
        """Give a row its id and chain columns; queue it for this transaction's insert."""
        row_id = self._next_id[table]
        row["id"] = row_id
        seq = self._seq + 1
        h = row_hash(self._head, table, seq, hashed_content(table, row))
        row["chain_seq"], row["prev_hash"], row["row_hash"] = seq, self._head, h
        pending.setdefault(table, []).append(tuple(row.get(c) for c in self._columns[table]))
        self._next_id[table] = row_id + 1
        self._seq, self._head = seq, h
        return row_id

    async def _flush_inserts(self, pending: dict[str, list[tuple[Any, ...]]]) -> None:
        assert self._db is not None
        for table, params in pending.items():
            if len(params) == 1:
                await self._db.execute(self._insert_sql[table], params[0])
            else:
                await self._db.executemany(self._insert_sql[table], params)
        pending.clear()

    async def _apply_update(self, r: _Req) -> int:
        """UPDATE the mutable columns and append the chained row_updates row, same transaction.
        Returns the row_updates id."""
        db = self._db
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
        upd = self._row("row_updates", {"time": iso_utc(r.meta.get("time_ms") or _now_ms()), "table_name": table,
                                        "row_id": row_id, "changes": _json(changes)})
        pending: dict[str, list[tuple[Any, ...]]] = {}
        update_id = self._chain("row_updates", upd, pending)
        await self._flush_inserts(pending)
        return update_id

    def _complete_breaker_row(self, row: dict[str, Any], meta: dict[str, Any]) -> None:
        """Fill the episode columns (triggered_at, cleared_at, downtime, recovery time) from
        the writer's memory of the open episode, in transition order."""
        status: BreakerStatus = meta["status"]
        previous: BreakerStatus = meta["previous"]
        t = meta["time_ms"]
        rec = meta.get("record") or {}
        ep = self._episode
        aff = self._affinity["circuit_breaker_events"]
        if status is BreakerStatus.TRIGGERED:
            t0 = rec.get("triggered_at_ms")
            if t0 is None:
                t0 = ep.get("triggered_ms") if previous is BreakerStatus.RECOVERING and ep.get("triggered_ms") else t
            reason = rec.get("trigger_reason") or meta["reason"]
            self._episode = {"triggered_ms": t0, "triggered_at": _iso(t0), "reason": reason, "recovery_ms": None}
            row["triggered_at"], row["trigger_reason"] = _iso(t0), reason
        elif status is BreakerStatus.RECOVERING:
            t0 = rec.get("triggered_at_ms") or ep.get("triggered_ms")
            started = rec.get("recovery_started_at_ms") or t
            reason = rec.get("trigger_reason") or ep.get("reason")
            self._episode = {"triggered_ms": t0, "triggered_at": _iso(t0) if t0 else ep.get("triggered_at"),
                             "reason": reason, "recovery_ms": started}
            row["triggered_at"], row["trigger_reason"] = self._episode["triggered_at"], reason
        elif status is BreakerStatus.SAFE:
            row["cleared_at"] = _iso(t)
            if previous in (BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING):
                row["triggered_at"] = ep.get("triggered_at")
                row["trigger_reason"] = ep.get("reason") or row.get("trigger_reason")
                t0 = ep.get("triggered_ms")
                if row.get("downtime_seconds") is None and t0 is not None:
                    row["downtime_seconds"] = _normalise(max(0, t - t0) / 1000.0, aff["downtime_seconds"])
                if row.get("recovery_time_seconds") is None and ep.get("recovery_ms") is not None:
                    row["recovery_time_seconds"] = _normalise(max(0, t - ep["recovery_ms"]) / 1000.0,
                                                              aff["recovery_time_seconds"])
            self._episode = {}

    # ------------------------------------------------------------------ building rows (caller's thread)
    def _row(self, table: str, values: dict[str, Any]) -> dict[str, Any]:
        """A full row (every column, normalised to what SQLite stores) plus audit_initial."""
        aff = self._affinity[table]
        unknown = set(values) - set(aff)
        if unknown:
            raise JournalError(f"{table} has no column(s) {', '.join(sorted(unknown))}")
        row = {c: _normalise(values.get(c), aff[c]) for c in self._columns[table]
               if c not in ("id", "chain_seq", "prev_hash", "row_hash")}
        if table in MUTABLE:
            row["audit_initial"] = audit.canonical_json({c: row.get(c) for c in MUTABLE[table]})
        return row

    def _changes(self, table: str, changes: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
        bad = set(changes) - set(allowed)
        if bad:
            raise JournalError(f"{table}: {', '.join(sorted(bad))} cannot be changed "
                               f"(mutable columns: {', '.join(allowed)})")
        if not changes:
            raise JournalError(f"{table}: nothing to update")
        aff = self._affinity[table]
        out = {}
        for c, v in changes.items():
            if isinstance(v, (dict, list)):
                v = _json(v)
            out[c] = _normalise(v, aff[c])
        return out

    def _build(self, kind: str, payload: dict[str, Any]) -> _Req:
        builder = self._BUILDERS.get(kind)
        if builder is None:
            raise JournalError(f"unknown journal request kind {kind!r} (known: {', '.join(sorted(self._BUILDERS))})")
        return builder(self, **payload)

    def _b_spike(self, spike: SpikeDetected, agent_detected_by: str = "scanner", status: str = "detected",
                 context_analysis: Any = None, risk_assessment: Any = None, trade_id: str | None = None,
                 outcome: str | None = None, pnl: float | None = None) -> _Req:
        row = self._row("spike_events", {
            "timestamp": iso_utc(spike.time_ms), "trading_pair": spike.symbol,
            "spike_type": getattr(spike.spike_type, "value", spike.spike_type), "direction": spike.direction,
            "magnitude_percent": spike.magnitude_pct, "timeframe_minutes": spike.timeframe_minutes,
            "volume_multiplier": spike.volume_multiple, "price_from": spike.price_from, "price_to": spike.price_to,
            "confidence_score": spike.confidence, "detection_latency_ms": spike.detection_latency_ms,
            "agent_detected_by": agent_detected_by, "status": status,
            "context_analysis": _json(context_analysis), "risk_assessment": _json(risk_assessment),
            "trade_id": trade_id, "outcome": outcome, "pnl": pnl, "time_ms": spike.time_ms, "zscore": spike.zscore,
            "details": _json(spike.details or {}),
        })
        return _Req("spike", "spike_events", row)

    def _b_spike_update(self, spike_id: int, time_ms: int | None = None, **changes: Any) -> _Req:
        return _Req("spike_update", None, update=("spike_events", int(spike_id),
                                                  self._changes("spike_events", changes, SPIKE_MUTABLE)),
                    meta={"time_ms": time_ms})

    def _b_breaker(self, change: BreakerChanged, record: dict[str, Any] | None = None, user_notified: bool = False,
                   notes: str | None = None) -> _Req:
        details = dict(change.details or {})
        snap = dict(change.market_snapshot or {})
        refs = snap.get("references") if isinstance(snap.get("references"), dict) else {}
        btc = next((v for k, v in refs.items() if str(k).upper().startswith("BTC") and isinstance(v, dict)), None)
        eth = next((v for k, v in refs.items() if str(k).upper().startswith("ETH") and isinstance(v, dict)), None)
        status = BreakerStatus(change.status)
        previous = BreakerStatus(change.previous)
        rcm = details.get("recovery_conditions_met", details.get("recovery"))
        if rcm is not None and isinstance(details.get("legs"), dict):  # Guardian.assess_recovery() shape
            rcm = {"met": rcm, "legs": details["legs"]}
        row = self._row("circuit_breaker_events", {
            "trigger_reason": change.reason, "trigger_type": change.trigger_type,
            "status": BREAKER_STATUS_MAP[status],
            "btc_price_at_trigger": _num(btc, "price"), "eth_price_at_trigger": _num(eth, "price"),
            "btc_drop_percent": _num(btc, "drop_60m_percent", "drop_percent"),
            "eth_drop_percent": _num(eth, "drop_60m_percent", "drop_percent"),
            "market_cap_drop_percent": _num(details, "market_cap_drop_percent") or _num(snap, "market_cap_drop_percent"),
            "liquidations_1h": _num(details, "liquidations_1h") or _num(snap, "liquidations_1h"),
            "fear_greed_index": _num(details, "fear_greed_index") or _num(snap, "fear_greed_index"),
            "trigger_details": _json(details), "market_snapshot": _json(snap),
            "downtime_seconds": _num(details, "downtime_seconds") if status is BreakerStatus.SAFE else None,
            "capital_saved": _num(details, "capital_saved") if status is BreakerStatus.SAFE else None,
            "orders_cancelled": _num(details, "orders_cancelled"),
            "positions_affected": _num(details, "positions_affected"),
            "recovery_time_seconds": _num(details, "recovery_time_seconds") if status is BreakerStatus.SAFE else None,
            "recovery_conditions_met": _json(rcm) if rcm is not None else None,
            "user_notified": bool(user_notified), "notes": notes if notes is not None else details.get("notes"),
            "event_time": iso_utc(change.time_ms), "event_time_ms": change.time_ms, "epoch": change.epoch,
            "previous_status": previous.value, "breaker_status": status.value,
            "actor": getattr(change.actor, "value", change.actor), "symbol": change.symbol, "reason": change.reason,
            "breaker_record": _json(record) if record is not None else None,
        })
        meta = {"status": status, "previous": previous, "time_ms": change.time_ms, "reason": change.reason,
                "record": json.loads(row["breaker_record"]) if row["breaker_record"] else None}
        return _Req("breaker", "circuit_breaker_events", row, meta=meta)

    def _b_breaker_notified(self, breaker_event_id: int, notified: bool = True, time_ms: int | None = None) -> _Req:
        return _Req("breaker_notified", None,
                    update=("circuit_breaker_events", int(breaker_event_id),
                            self._changes("circuit_breaker_events", {"user_notified": bool(notified)},
                                          MUTABLE["circuit_breaker_events"])),
                    meta={"time_ms": time_ms})

    def _b_agent_decision(self, agent_name: str, decision_type: str, decision: str | None = None, *,
                          agent_role: str | None = None, confidence: float | None = None,
                          reasoning: str | None = None, input_data: Any = None, output_data: Any = None,
                          execution_time_ms: float | None = None, spike_event_id: int | None = None,
                          circuit_breaker_event_id: int | None = None, trade_id: str | None = None,
                          time_ms: int | None = None) -> _Req:
        row = self._row("agent_decisions", {
            "timestamp": iso_utc(time_ms if time_ms is not None else _now_ms()), "agent_name": agent_name,
            "agent_role": agent_role, "decision_type": decision_type, "decision": decision,
            "confidence": confidence, "reasoning": reasoning, "input_data": _json(input_data),
            "output_data": _json(output_data), "execution_time_ms": execution_time_ms,
            "spike_event_id": spike_event_id, "circuit_breaker_event_id": circuit_breaker_event_id,
            "trade_id": trade_id,
        })
        return _Req("agent_decision", "agent_decisions", row)

    def _b_agent_performance(self, agent_name: str, period: str, *, total_decisions: int = 0,
                             correct_decisions: int = 0, incorrect_decisions: int = 0,
                             accuracy_percent: float | None = None, avg_confidence: float | None = None,
                             avg_execution_time_ms: float | None = None, total_spikes_detected: int = 0,
                             true_positives: int = 0, false_positives: int = 0, false_negatives: int = 0,
                             circuit_breaker_triggers: int = 0, false_circuit_breaker_triggers: int = 0,
                             notes: str | None = None, time_ms: int | None = None) -> _Req:
        judged = (correct_decisions or 0) + (incorrect_decisions or 0)
        if accuracy_percent is None and judged:
            accuracy_percent = correct_decisions / judged * 100.0
        row = self._row("agent_performance", {
            "timestamp": iso_utc(time_ms if time_ms is not None else _now_ms()), "agent_name": agent_name,
            "period": period, "total_decisions": total_decisions, "correct_decisions": correct_decisions,
            "incorrect_decisions": incorrect_decisions, "accuracy_percent": accuracy_percent,
            "avg_confidence": avg_confidence, "avg_execution_time_ms": avg_execution_time_ms,
            "total_spikes_detected": total_spikes_detected, "true_positives": true_positives,
            "false_positives": false_positives, "false_negatives": false_negatives,
            "circuit_breaker_triggers": circuit_breaker_triggers,
            "false_circuit_breaker_triggers": false_circuit_breaker_triggers, "notes": notes,
        })
        return _Req("agent_performance", "agent_performance", row)

    def _b_order(self, order: Order, event_time_ms: int | None = None) -> _Req:
        t = event_time_ms if event_time_ms is not None else (order.created_ms or _now_ms())
        d = order.to_dict()
        row = self._row("orders", {
            "client_order_id": order.client_order_id, "symbol": order.symbol, "side": d["side"], "type": d["type"],
            "quantity": order.quantity, "price": order.price, "stop_price": order.stop_price,
            "reduce_only": order.reduce_only, "origin": d["origin"], "proposal_id": order.proposal_id,
            "status": d["status"], "filled_quantity": order.filled_quantity, "average_price": order.average_price,
            "exchange_order_id": order.exchange_order_id, "reason": order.reason, "event_time": iso_utc(t),
            "event_time_ms": t, "order_json": _json(d),
        })
        return _Req("order", "orders", row)

    def _b_fill(self, fill: Fill) -> _Req:
        row = self._row("fills", {
            "fill_id": fill.fill_id, "client_order_id": fill.client_order_id, "symbol": fill.symbol,
            "side": fill.side.value, "quantity": fill.quantity, "price": fill.price, "fee": fill.fee,
            "liquidity": fill.liquidity, "time": iso_utc(fill.time_ms), "time_ms": fill.time_ms,
        })
        return _Req("fill", "fills", row)

    def _b_proposal(self, proposal: Any = None, *, status: str = "pending", spike_event_id: int | None = None,
                    **fields: Any) -> _Req:
        """`proposal` is a TradeProposal (anything with model_dump()) or a dict; or pass the
        fields as keywords. The whole proposal is kept in `payload`."""
        if proposal is None:
            data = dict(fields)
        elif hasattr(proposal, "model_dump"):
            data = {**proposal.model_dump(mode="json"), **fields}
        else:
            data = {**dict(proposal), **fields}
        if not data.get("proposal_id"):
            raise JournalError("a proposal needs a proposal_id")
        content_hash = data.get("content_hash") or hashlib.sha256(audit.canonical_json(
            {k: data.get(k) for k in ("proposal_id", "symbol", "side", "quantity", "entry_type", "entry_price",
                                      "stop_loss", "take_profit")}).encode()).hexdigest()
        created = data.get("created_ms", data.get("created_at"))
        expires = data.get("expires_ms", data.get("expires_at"))
        row = self._row("proposals", {
            "proposal_id": data["proposal_id"], "created_at": _iso(created if created is not None else _now_ms()),
            "symbol": data.get("symbol"), "side": data.get("side"), "quantity": data.get("quantity"),
            "entry_type": data.get("entry_type"), "entry_price": data.get("entry_price"),
            "stop_loss": data.get("stop_loss"), "take_profit": data.get("take_profit"),
            "status": getattr(status, "value", status), "content_hash": content_hash,
            "spike_event_id": spike_event_id if spike_event_id is not None else data.get("spike_event_id"),
            "expires_at": _iso(expires), "payload": _json(data),
            "decided_by": data.get("decided_by"), "decision_reason": data.get("decision_reason"),
            "decided_at": _iso(data.get("decided_at")),
        })
        return _Req("proposal", "proposals", row)

    def _b_proposal_update(self, proposal_id: str, status: str | None = None, decided_by: str | None = None,
                           decision_reason: str | None = None, decided_at_ms: int | None = None,
                           time_ms: int | None = None) -> _Req:
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = getattr(status, "value", status)
        if decided_by is not None:
            changes["decided_by"] = decided_by
        if decision_reason is not None:
            changes["decision_reason"] = decision_reason
        if decided_at_ms is not None or decided_by is not None:
            changes["decided_at"] = iso_utc(decided_at_ms if decided_at_ms is not None else (time_ms or _now_ms()))
        return _Req("proposal_update", None,
                    update=("proposals", str(proposal_id), self._changes("proposals", changes, PROPOSAL_MUTABLE)),
                    meta={"time_ms": time_ms})

    def _b_operator_action(self, action: str, reason: str | None = None, details: Any = None,
                           actor: str = "operator", time_ms: int | None = None) -> _Req:
        row = self._row("operator_actions", {
            "time": iso_utc(time_ms if time_ms is not None else _now_ms()),
            "actor": getattr(actor, "value", actor), "action": action, "reason": reason, "details": _json(details),
        })
        return _Req("operator_action", "operator_actions", row)

    def _b_barrier(self) -> _Req:
        return _Req(_BARRIER, None)

    _BUILDERS: dict[str, Callable[..., _Req]] = {
        "spike": _b_spike, "spike_update": _b_spike_update, "breaker": _b_breaker,
        "breaker_notified": _b_breaker_notified, "agent_decision": _b_agent_decision,
        "agent_performance": _b_agent_performance, "order": _b_order, "fill": _b_fill, "proposal": _b_proposal,
        "proposal_update": _b_proposal_update, "operator_action": _b_operator_action, _BARRIER: _b_barrier,
    }

    # ------------------------------------------------------------------ queueing
    def _check_open(self) -> None:
        if self._fatal is not None:
            raise JournalError(f"journal {self.path} writer stopped: {self._fatal!r}")
        if not self._accepting:
            raise JournalError(f"journal {self.path} is closed")

    async def _call(self, kind: str, payload: dict[str, Any]) -> Any:
        """Queue from the loop thread and wait for the commit."""
        self._check_open()
        req = self._build(kind, payload)
        assert self._loop is not None
        req.fut = self._loop.create_future()
        self._queue.put_nowait(req)
        return await req.fut

    def _enqueue_on_loop(self, req: _Req) -> None:
        if self._writer_done:
            _fail(req.fut, JournalError(f"journal {self.path} is closed"))
        else:
            self._queue.put_nowait(req)

    def submit(self, kind: str, payload: dict[str, Any] | None = None, /, **kwargs: Any) -> concurrent.futures.Future:
        """Queue a write from any thread without blocking. The future resolves to the row id
        (None for a barrier) after the commit, or to a JournalError. The row is built from
        the arguments now (a snapshot), before this returns.

        kinds: spike, spike_update, breaker, breaker_notified, agent_decision,
        agent_performance, order, fill, proposal, proposal_update, operator_action, barrier;
        the payload holds the keyword arguments of the matching record_*/update_* method.
        """
        self._check_open()
        req = self._build(kind, {**(payload or {}), **kwargs})
        fut: concurrent.futures.Future = concurrent.futures.Future()
        req.fut = fut
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            self._enqueue_on_loop(req)
        else:
            try:
                self._loop.call_soon_threadsafe(self._enqueue_on_loop, req)
            except RuntimeError as e:  # the loop is closed
                _fail(fut, JournalError(f"journal {self.path} is closed ({e})"))
        return fut

    # enqueue_* : the thread-safe, non-blocking twins of the record_* methods
    def enqueue_spike(self, spike: SpikeDetected, agent_detected_by: str = "scanner",
                      status: str = "detected") -> concurrent.futures.Future:
        return self.submit("spike", spike=spike, agent_detected_by=agent_detected_by, status=status)

    def enqueue_breaker_change(self, change: BreakerChanged,
                               record: dict[str, Any] | None = None) -> concurrent.futures.Future:
        return self.submit("breaker", change=change, record=record)

    def enqueue_order(self, order: Order, event_time_ms: int | None = None) -> concurrent.futures.Future:
        return self.submit("order", order=order, event_time_ms=event_time_ms)

    def enqueue_fill(self, fill: Fill) -> concurrent.futures.Future:
        return self.submit("fill", fill=fill)

    def enqueue_operator_action(self, action: str, reason: str | None = None, details: Any = None,
                                actor: str = "operator") -> concurrent.futures.Future:
        return self.submit("operator_action", action=action, reason=reason, details=details, actor=actor)

    def breaker_subscriber(self, state: Any = None) -> Callable[[BreakerChanged], None]:
        """A subscriber for CircuitBreakerState.subscribe(): journals every transition with
        the breaker's record after it (state.snapshot().to_dict()), without blocking it."""

        def on_change(change: BreakerChanged) -> None:
            record = state.snapshot().to_dict() if state is not None else None
            try:
                fut = self.enqueue_breaker_change(change, record)
            except JournalError as e:
                log.error("breaker transition epoch %d not journaled: %s", change.epoch, e)
                return
            fut.add_done_callback(_log_failure(f"breaker transition epoch {change.epoch}"))

        return on_change

    # ------------------------------------------------------------------ the async write API
    async def record_spike(self, spike: SpikeDetected, agent_detected_by: str = "scanner",
                           status: str = "detected", **extra: Any) -> int:
        return await self._call("spike", {"spike": spike, "agent_detected_by": agent_detected_by,
                                          "status": status, **extra})

    async def update_spike(self, spike_id: int, **changes: Any) -> int:
        """Change mutable columns: status, context_analysis, risk_assessment, trade_id, outcome, pnl.
        Returns the id of the row_updates row that records the change (as every update method does)."""
        return await self._call("spike_update", {"spike_id": spike_id, **changes})

    async def record_breaker_change(self, change: BreakerChanged, record: dict[str, Any] | None = None, *,
                                    user_notified: bool = False, notes: str | None = None) -> int:
        return await self._call("breaker", {"change": change, "record": record, "user_notified": user_notified,
                                            "notes": notes})

    async def mark_user_notified(self, breaker_event_id: int, notified: bool = True) -> int:
        return await self._call("breaker_notified", {"breaker_event_id": breaker_event_id, "notified": notified})

    async def record_agent_decision(self, agent_name: str, decision_type: str, decision: str | None = None,
                                    **fields: Any) -> int:
        return await self._call("agent_decision", {"agent_name": agent_name, "decision_type": decision_type,
                                                   "decision": decision, **fields})

    async def record_agent_performance(self, agent_name: str, period: str, **fields: Any) -> int:
        return await self._call("agent_performance", {"agent_name": agent_name, "period": period, **fields})

    async def record_order(self, order: Order, event_time_ms: int | None = None) -> int:
        return await self._call("order", {"order": order, "event_time_ms": event_time_ms})

    async def record_fill(self, fill: Fill) -> int:
        return await self._call("fill", {"fill": fill})

    async def record_proposal(self, proposal: Any = None, *, status: str = "pending", **fields: Any) -> int:
        return await self._call("proposal", {"proposal": proposal, "status": status, **fields})

    async def update_proposal(self, proposal_id: str, status: str | None = None, decided_by: str | None = None,
                              decision_reason: str | None = None, decided_at_ms: int | None = None) -> int:
        return await self._call("proposal_update", {"proposal_id": proposal_id, "status": status,
                                                    "decided_by": decided_by, "decision_reason": decision_reason,
                                                    "decided_at_ms": decided_at_ms})

    async def record_operator_action(self, action: str, reason: str | None = None, details: Any = None,
                                     actor: str = "operator", time_ms: int | None = None) -> int:
        return await self._call("operator_action", {"action": action, "reason": reason, "details": details,
                                                    "actor": actor, "time_ms": time_ms})

    async def flush(self) -> None:
        """Wait until everything queued before this call is committed."""
        await self._call(_BARRIER, {})

    # ------------------------------------------------------------------ reads (committed rows only)
    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        if self._rdb is None:
            raise JournalError(f"journal {self.path} is closed")
        cur = await self._rdb.execute(sql, params)
        rows = await cur.fetchall()
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in rows]  # type: ignore[misc]

    async def last_breaker_record(self) -> dict[str, Any] | None:
        """The BreakerRecord dict of the newest breaker row (for BreakerRecord.from_dict at
        restart). A row written without a record gives a minimal record built from its columns."""
        rows = await self._fetch("SELECT * FROM circuit_breaker_events ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        r = rows[0]
        if r["breaker_record"]:
            return json.loads(r["breaker_record"])
        status = r["breaker_status"]
        active = status in (BreakerStatus.TRIGGERED.value, BreakerStatus.RECOVERING.value)
        return {
            "status": status, "epoch": r["epoch"], "since_ms": r["event_time_ms"], "reason": r["reason"],
            "actor": r["actor"], "symbol": r["symbol"], "trigger_type": r["trigger_type"],
            "details": json.loads(r["trigger_details"] or "{}"), "market_snapshot": json.loads(r["market_snapshot"] or "{}"),
            "triggered_at_ms": self._episode.get("triggered_ms") if active else None,
            "trigger_reason": r["trigger_reason"] if active else None,
        }

    async def latest_orders(self) -> list[Order]:
        """The latest state of every order, oldest order first."""
        rows = await self._fetch(
            "SELECT o.order_json FROM orders o JOIN (SELECT client_order_id, MAX(id) AS id FROM orders "
            "GROUP BY client_order_id) last ON o.id = last.id ORDER BY o.id")
        return [Order.from_dict(json.loads(r["order_json"])) for r in rows]

    async def open_orders(self) -> list[Order]:
        return [o for o in await self.latest_orders() if o.status.is_open]

    async def order_events(self, client_order_id: str) -> list[Order]:
        rows = await self._fetch("SELECT order_json FROM orders WHERE client_order_id = ? ORDER BY id",
                                 (client_order_id,))
        return [Order.from_dict(json.loads(r["order_json"])) for r in rows]

    async def fills(self, client_order_id: str | None = None) -> list[Fill]:
        if client_order_id is None:
            rows = await self._fetch("SELECT * FROM fills ORDER BY id")
        else:
            rows = await self._fetch("SELECT * FROM fills WHERE client_order_id = ? ORDER BY id", (client_order_id,))
        return [Fill.from_dict(r) for r in rows]

    async def proposal(self, proposal_id: str) -> dict[str, Any] | None:
        rows = await self._fetch("SELECT * FROM proposals WHERE proposal_id = ?", (proposal_id,))
        return _decode("proposals", rows[0]) if rows else None

    async def recent(self, table: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest rows of a journaled table, newest first, JSON columns decoded."""
        if table not in CHAINED_TABLES:
            raise JournalError(f"unknown journal table {table!r} (known: {', '.join(CHAINED_TABLES)})")
        rows = await self._fetch(f'SELECT * FROM "{table}" ORDER BY id DESC LIMIT ?', (int(limit),))
        return [_decode(table, r) for r in rows]

    async def counts(self) -> dict[str, int]:
        out = {}
        for table in CHAINED_TABLES:
            out[table] = (await self._fetch(f'SELECT COUNT(*) AS n FROM "{table}"'))[0]["n"]
        return out

    async def head(self) -> dict[str, Any]:
        """The stored chain head {last_seq, last_hash, updated_at}: copy it elsewhere to anchor the chain."""
        rows = await self._fetch("SELECT last_seq, last_hash, updated_at FROM audit_head WHERE id = 1")
        return rows[0] if rows else {}

    async def verify(self) -> audit.AuditResult:
        """core.journal.audit.verify on this file, in a thread (one read snapshot)."""
        return await asyncio.to_thread(audit.verify, self.path)


def _decode(table: str, row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for c in JSON_COLUMNS.get(table, ()):
        v = out.get(c)
        if isinstance(v, str):
            try:
                out[c] = json.loads(v)
            except ValueError:
                pass
    return out


def _resolve(fut: Any, value: Any) -> None:
    if fut is None or fut.done():
        return
    try:
        fut.set_result(value)
    except (asyncio.InvalidStateError, concurrent.futures.InvalidStateError):
        pass


def _fail(fut: Any, exc: BaseException) -> None:
    if fut is None or fut.done():
        return
    try:
        fut.set_exception(exc)
    except (asyncio.InvalidStateError, concurrent.futures.InvalidStateError):
        pass


def _log_failure(what: str) -> Callable[[concurrent.futures.Future], None]:
    def cb(fut: concurrent.futures.Future) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("%s not journaled: %s", what, fut.exception())
    return cb
