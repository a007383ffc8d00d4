"""Journal: the append-only, hash-chained SQLite record of everything the engine does.

Opening
- One process per journal: Journal.open takes an advisory lock on journal.db.lock
  (core.journal.lock) before it writes anything, and refuses a second process, naming the
  holder's PID.
- It refuses a journal it cannot write: after the migrations it commits a real write (the
  head's updated_at, synchronous=FULL), so a read-only file or filesystem or a full disk is
  a one-line JournalError at start, not a silent engine later.
- It refuses a chain head it cannot trust (core.journal.head): the head must match the last
  chained row and, with a key, carry a valid signature. force=True opens it anyway, journals
  the forced open (an operator_actions row saying what did not verify) and appends after the
  last row, re-signed.

Connections and tasks
- One aiosqlite WRITE connection (autocommit mode, explicit BEGIN IMMEDIATE / COMMIT),
  owned by ONE writer task. Every write is a request appended to an in-memory list of
  unwritten requests; nothing else writes. A second aiosqlite READ connection (PRAGMA
  query_only) serves the read methods: in WAL mode it never waits for the writer and only
  ever sees committed rows.
- The writer takes the oldest unwritten requests (up to max_batch) and writes them in one
  transaction: the rows, their chain columns, the signed audit_head row, then COMMIT. Only
  after the COMMIT returns are the requests' futures resolved, so an acknowledged id is on
  disk (durable against a killed process; with synchronous=FULL, which the writer sets
  whenever the batch holds a breaker, order, fill or operator row, also against power
  loss). batching=False commits every request alone (the benchmark's comparison).

Failures (core.journal.faults)
- A write that fails for an environmental reason (disk full, read-only, I/O error, locked)
  loses nothing: the requests stay unwritten, in order, the journal is `failing`, health
  listeners hear it, and the writer retries with backoff (50 ms doubling to 2 s) until it
  can write; then it writes them in order and resolves their futures.
- A request that fails for its own reason (a duplicate fill_id, an update of a missing row)
  fails alone with a JournalError; the rest of its batch is written one transaction each.
- close() keeps trying for a bounded time, then fails what is left and raises JournalError
  saying how many rows were not written.

Two ways to write
- async record_*/update_*/mark_* methods, for code on the engine's loop: they return the
  new row id after the commit.
- submit(kind, payload) and the enqueue_* helpers, for synchronous callers (the breaker's
  subscriber runs inside a transition, maybe on another thread): thread-safe, never block,
  return a concurrent.futures.Future that resolves to the row id after the commit. Off the
  loop thread they use loop.call_soon_threadsafe. Nothing is bounded: a caller is never
  blocked or refused while the journal is open, also while it is failing.

Cancelling a task that awaits record_* does not withdraw the write; the row still lands.

This module holds Journal (lifecycle, the unwritten requests, the writer task's loop, the
API, reads). Rows are built in core.journal.rows; the transaction that appends them to the
chain is in core.journal.writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite

from core.events import BreakerChanged, BreakerStatus, JournalHealth, SpikeDetected
from core.journal import audit
from core.journal.audit import CHAINED_TABLES
from core.journal.faults import describe, unwritable
from core.journal.lock import JournalLock
from core.journal.rows import (
    BARRIER,
    BREAKER_STATUS_MAP,  # noqa: F401  (re-exported: core.journal imports it from here)
    Req,
    RowBuilder,
    now_ms,
)
from core.journal.schema import JournalError, migrate
from core.journal.writer import ChainWriter
from core.trading.orders import Fill, Order

log = logging.getLogger("spikeguard.journal")

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

RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0
CLOSE_TIMEOUT_S = 5.0
_STUCK_GRACE_S = 1.0  # past close's deadline, how long a writer stuck inside SQLite is waited for

FORCED_OPEN = "journal_forced_open"


class Journal:
    """See the module docstring. Open with `await Journal.open(path)`, close with `await close()`."""

    def __init__(self, path: Path, batching: bool, max_batch: int, key: bytes | None) -> None:
        self.path = path
        self.batching = batching
        self.max_batch = max(1, int(max_batch))
        self.schema_version = 0
        self._key = key
        self._lock: JournalLock | None = None
        self._db: aiosqlite.Connection | None = None
        self._rdb: aiosqlite.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._unwritten: deque[Req] = deque()  # accepted, not yet committed, oldest first
        self._unwritten_rows = 0  # the same, barriers not counted
        self._wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        self._close_deadline = 0.0
        self._writer: asyncio.Task[None] | None = None
        self._accepting = False
        self._writer_done = False
        self._fatal: BaseException | None = None
        self._failing = False
        self._abandoned = 0  # rows given up on when the writer stopped
        self._health_listeners: list[Callable[[JournalHealth], None]] = []
        self._rows = RowBuilder()
        self._chain = ChainWriter(path, self._rows, key)  # only the writer task touches it after open
        # figures
        self.rows_written = 0
        self.batches = 0
        self.failed_requests = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    async def open(cls, path: str | Path, *, key: bytes | None = None, force: bool = False, batching: bool = True,
                   max_batch: int = 256, busy_timeout_ms: int = 10_000) -> "Journal":
        """Open (create, migrate) the journal at `path`. Raises JournalError, one line, when
        another process holds it, when it cannot be written, or when its head does not
        verify (`key`: the head's signature is checked and every commit signs; `force`:
        open anyway, journaling what did not verify)."""
        p = Path(path).expanduser()
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise JournalError(f"cannot create the journal's folder {p.parent}: {e}") from None
        if p.is_dir():
            raise JournalError(f"cannot open journal {p}: it is a directory")
        self = cls(p, batching, max_batch, key)
        try:
            await self._open(busy_timeout_ms, force)
        except (sqlite3.Error, OSError) as e:
            await self._abort_open()
            raise JournalError(f"cannot open journal {p}: {describe(e)}") from None
        except BaseException:
            await self._abort_open()
            raise
        return self

    async def _open(self, busy_timeout_ms: int, force: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._lock = JournalLock.acquire(self.path)  # before anything is written
        self._db = await _connect(self.path, busy_timeout_ms)
        self._chain.db = self._db
        try:
            mode = (await (await self._db.execute("PRAGMA journal_mode=WAL")).fetchone())[0]
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorname", None) != "SQLITE_NOTADB":
                raise
            raise JournalError(f"{self.path} is not a spikeguard journal (not a SQLite database: {e})") from None
        if str(mode).lower() != "wal":
            log.warning("journal %s: WAL mode refused (journal_mode=%s)", self.path, mode)
        await self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        await self._chain.set_sync("NORMAL")
        self.schema_version = await migrate(self._db, str(self.path))
        for table in CHAINED_TABLES:
            cur = await self._db.execute(f'PRAGMA table_info("{table}")')
            self._rows.add_table(table, await cur.fetchall())
        problems = await self._chain.load_state()
        if problems and not force:
            raise JournalError(f"journal {self.path} cannot be trusted: {'; '.join(problems)}; check it with "
                               f"`spikeguard audit verify`, or open it anyway with --force (the forced open is "
                               f"journaled)")
        try:
            if problems:
                await self._record_forced_open(problems)
            else:
                await self._chain.probe()
        except (sqlite3.Error, OSError) as e:
            raise JournalError(f"cannot write journal {self.path}: {describe(e)}") from None
        self._rdb = await _connect(self.path, busy_timeout_ms)
        await self._rdb.execute("PRAGMA query_only=1")
        await self._rdb.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        self._accepting = True
        self._writer = asyncio.create_task(self._run(), name=f"journal-writer:{self.path.name}")
        self._writer.add_done_callback(self._on_writer_done)

    async def _record_forced_open(self, problems: list[str]) -> None:
        """The forced open, journaled (and signed) before anything else is appended."""
        log.warning("journal %s opened with --force: %s", self.path, "; ".join(problems))
        stored = {k: self._chain.stored_head.get(k) for k in ("last_seq", "last_hash", "last_ids")}
        end = {"last_seq": self._chain.chain_end["last_seq"], "last_hash": self._chain.chain_end["last_hash"]}
        req = self._rows.build("operator_action", {
            "action": FORCED_OPEN, "actor": "operator", "reason": "opened with --force: " + "; ".join(problems),
            "details": {"severity": "warning", "problems": problems, "stored_head": stored, "chain_end": end,
                        "signed": self._key is not None}})
        await self._chain.write([req])

    async def _abort_open(self) -> None:
        await self._close_connections()
        self._release_lock()

    def _on_writer_done(self, task: asyncio.Task[None]) -> None:
        """However the writer ended (even cancelled before its first step), nobody waits forever."""
        self._writer_done = True
        self._accepting = False
        if task.cancelled() and self._fatal is None:
            self._fatal = asyncio.CancelledError("journal writer cancelled")
            self.last_error = "journal writer cancelled"
        self._abandon(JournalError(f"journal {self.path} is closed"))

    async def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Write everything unwritten, stop the writer, close the connections, drop the lock.
        While the journal is failing, keep retrying for up to `timeout` seconds; then raise
        JournalError saying how many rows could not be written (after closing). Never hangs."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                assert self._loop is not None
                self._accepting = False
                self._close_deadline = self._loop.time() + max(0.0, timeout)
                self._closing.set()
                self._wakeup.set()
                done, _ = await asyncio.wait({writer}, timeout=max(0.0, timeout) + _STUCK_GRACE_S)
                if not done:  # stuck inside one SQLite call (a busy wait): stop waiting for it
                    log.error("journal %s: the writer did not stop within %.1fs; abandoning it", self.path, timeout)
                    writer.cancel()
                    await asyncio.wait({writer})
        finally:
            await self._close_connections()
            self._release_lock()
        abandoned, self._abandoned = self._abandoned, 0
        if abandoned:
            raise JournalError(f"journal {self.path}: {abandoned} row(s) could not be written before close"
                               + (f" ({self.last_error})" if self.last_error else ""))

    async def _close_connections(self) -> None:
        for name in ("_rdb", "_db"):
            conn = getattr(self, name)
            setattr(self, name, None)
            if conn is not None:
                try:  # a connection stuck in a busy wait is abandoned (its thread is a daemon)
                    await asyncio.wait_for(conn.close(), _STUCK_GRACE_S)
                except Exception:  # closing must not hide the error that got us here
                    log.exception("closing the journal connection failed")

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    async def __aenter__(self) -> "Journal":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return not self._accepting

    @property
    def failing(self) -> bool:
        """True from a write failing for an environmental reason until everything held is written."""
        return self._failing

    @property
    def unwritten(self) -> int:
        """Rows accepted and held in memory, not yet on disk."""
        return self._unwritten_rows

    def add_health_listener(self, fn: Callable[[JournalHealth], None]) -> None:
        """`fn(JournalHealth)` is called on the journal's loop when the journal starts failing
        (ok=False, the error, the rows held) and when it has written them all (ok=True)."""
        self._health_listeners.append(fn)

    def remove_health_listener(self, fn: Callable[[JournalHealth], None]) -> None:
        if fn in self._health_listeners:
            self._health_listeners.remove(fn)

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "rows_written": self.rows_written, "batches": self.batches,
                "unwritten": self.unwritten, "failing": self.failing, "failed_requests": self.failed_requests,
                "last_error": self.last_error, "chain_seq": self._chain.seq, "batching": self.batching,
                "schema_version": self.schema_version, "signed": self._key is not None}

    # ------------------------------------------------------------------ the writer task
    async def _run(self) -> None:
        delay = RETRY_FIRST_S
        try:
            while True:
                if not self._unwritten:
                    if self._closing.is_set():
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                batch = list(itertools.islice(self._unwritten, self.max_batch if self.batching else 1))
                caught_up = len(batch) == len(self._unwritten)
                error = await self._settle(batch)
                if error is None:
                    delay = RETRY_FIRST_S
                    if self._failing and caught_up:
                        self._set_failing(False)
                    continue
                self.last_error = describe(error)
                if not self._failing:
                    self._set_failing(True)
                if self._closing.is_set() and self._loop.time() >= self._close_deadline:  # type: ignore[union-attr]
                    return
                await self._pause(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        except BaseException as e:  # a bug or a cancelled writer: never leave a caller waiting
            self._fatal = e
            self.last_error = f"journal writer stopped: {e!r}"
            if not isinstance(e, asyncio.CancelledError):
                log.exception("journal writer stopped")
            raise
        finally:
            self._writer_done = True
            self._accepting = False
            reason = f": {self.last_error}" if self._failing else " is closed"
            self._abandon(JournalError(f"journal {self.path}{reason}"))

    async def _settle(self, batch: list[Req]) -> BaseException | None:
        """Write `batch`, the oldest unwritten requests. Returns None once every one of them
        is written or failed for its own reason, or the environmental error that stopped
        the writing; the requests not written stay unwritten, in order."""
        try:
            results = await self._write(batch)
        except Exception as e:
            if unwritable(e):
                return e
            if len(batch) == 1:
                self._take(1)
                self._failed(batch[0], e)
                return None
            log.warning("journal batch of %d failed (%s); writing its requests one by one", len(batch), e)
            for r in batch:
                try:
                    res = await self._write([r])
                except Exception as e1:
                    if unwritable(e1):
                        return e1
                    self._take(1)
                    self._failed(r, e1)
                else:
                    self._take(1)
                    _resolve(r.fut, res[0])
            return None
        self._take(len(batch))
        for r, res in zip(batch, results):
            _resolve(r.fut, res)
        return None

    def _take(self, n: int) -> None:
        for _ in range(n):
            if self._unwritten.popleft().kind != BARRIER:
                self._unwritten_rows -= 1

    def _abandon(self, err: JournalError) -> None:
        """Fail every unwritten request (the writer has stopped)."""
        self._abandoned += self._unwritten_rows
        while self._unwritten:
            _fail(self._unwritten.popleft().fut, err)
        self._unwritten_rows = 0

    async def _pause(self, delay: float) -> None:
        """The retry backoff; close() cuts it short once, then retries run to its deadline."""
        assert self._loop is not None
        if self._closing.is_set():
            await asyncio.sleep(max(0.0, min(delay, self._close_deadline - self._loop.time())))
            return
        try:
            await asyncio.wait_for(self._closing.wait(), delay)
        except asyncio.TimeoutError:
            pass

    def _set_failing(self, failing: bool) -> None:
        self._failing = failing
        if failing:
            log.error("journal %s cannot write (%s): %d row(s) held in memory, retrying", self.path,
                      self.last_error, self.unwritten)
        else:
            log.warning("journal %s writes again: every held row is on disk", self.path)
        event = JournalHealth(ok=not failing, error=self.last_error if failing else None, unwritten=self.unwritten,
                              time_ms=now_ms())
        for fn in list(self._health_listeners):
            try:
                fn(event)
            except Exception:  # a listener's bug must not stop the writer
                log.exception("journal health listener failed")

    def _failed(self, req: Req, e: BaseException) -> None:
        self.failed_requests += 1
        if not isinstance(e, JournalError):
            e = JournalError(f"journal write ({req.kind}) failed: {e}")
        self.last_error = str(e)
        _fail(req.fut, e)

    async def _write(self, reqs: list[Req]) -> list[int | None]:
        """ChainWriter.write, counted once it has committed."""
        results, rows = await self._chain.write(reqs)
        if rows:  # a transaction committed (a batch of barriers needs none)
            self.rows_written += rows
            self.batches += 1
        return results

    # ------------------------------------------------------------------ queueing
    def _check_open(self) -> None:
        if self._fatal is not None:
            raise JournalError(f"journal {self.path} writer stopped: {self._fatal!r}")
        if not self._accepting:
            raise JournalError(f"journal {self.path} is closed")

    def _append(self, req: Req) -> None:
        """On the loop: add to the unwritten requests and wake the writer."""
        if self._writer_done:
            _fail(req.fut, JournalError(f"journal {self.path} is closed"))
            return
        self._unwritten.append(req)
        if req.kind != BARRIER:
            self._unwritten_rows += 1
        self._wakeup.set()

    async def _call(self, kind: str, payload: dict[str, Any]) -> Any:
        """Queue from the loop thread and wait for the commit."""
        self._check_open()
        req = self._rows.build(kind, payload)
        assert self._loop is not None
        req.fut = self._loop.create_future()
        self._append(req)
        return await req.fut

    def submit(self, kind: str, payload: dict[str, Any] | None = None, /, **kwargs: Any) -> concurrent.futures.Future:
        """Queue a write from any thread without blocking. The future resolves to the row id
        (None for a barrier) after the commit, or to a JournalError. The row is built from
        the arguments now (a snapshot), before this returns.

        kinds: spike, spike_update, breaker, breaker_notified, agent_decision,
        agent_performance, order, fill, proposal, proposal_update, operator_action, barrier;
        the payload holds the keyword arguments of the matching record_*/update_* method.
        """
        self._check_open()
        req = self._rows.build(kind, {**(payload or {}), **kwargs})
        fut: concurrent.futures.Future = concurrent.futures.Future()
        req.fut = fut
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            self._append(req)
        else:
            try:
                self._loop.call_soon_threadsafe(self._append, req)
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
                                actor: str = "operator", time_ms: int | None = None) -> concurrent.futures.Future:
        return self.submit("operator_action", action=action, reason=reason, details=details, actor=actor,
                           time_ms=time_ms)

    def enqueue_incident(self, time_ms: int, reason: str, record: str, trigger_type: str | None = None,
                         symbol: str | None = None) -> concurrent.futures.Future:
        """A flight recorder's record (core.incident): `record` is its encoded form."""
        return self.submit("incident", time_ms=time_ms, reason=reason, record=record, trigger_type=trigger_type,
                           symbol=symbol)

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

    async def record_incident(self, time_ms: int, reason: str, record: str, trigger_type: str | None = None,
                              symbol: str | None = None) -> int:
        return await self._call("incident", {"time_ms": time_ms, "reason": reason, "record": record,
                                             "trigger_type": trigger_type, "symbol": symbol})

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued before this call is on disk. Raises JournalError when
        that takes longer than `timeout` seconds (the journal is failing, say)."""
        self._check_open()
        req = self._rows.build(BARRIER, {})
        assert self._loop is not None
        req.fut = self._loop.create_future()
        self._append(req)
        try:  # shielded: on a timeout the barrier stays queued, harmless, and its outcome unread
            await asyncio.wait_for(asyncio.shield(req.fut), timeout)
        except asyncio.TimeoutError:
            req.fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved" log
            raise JournalError(f"journal {self.path}: flush timed out after {timeout:g}s with {self.unwritten} "
                               f"row(s) not yet written" + (f" ({self.last_error})" if self.failing else "")) from None

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
            "triggered_at_ms": self._chain.episode.get("triggered_ms") if active else None,
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

    async def incidents(self) -> list[dict[str, Any]]:
        """Every flight record's row, oldest first, without the record itself."""
        return await self._fetch("SELECT id, time, trigger_type, symbol, reason, length(record) AS size "
                                 "FROM incidents ORDER BY id")

    async def incident(self, incident_id: int) -> dict[str, Any] | None:
        rows = await self._fetch("SELECT * FROM incidents WHERE id = ?", (int(incident_id),))
        return rows[0] if rows else None

    async def last_policy_action(self) -> dict[str, Any] | None:
        """The details of the de-risking policy's newest action (what a restart resumes from)."""
        rows = await self._fetch("SELECT * FROM operator_actions WHERE actor = 'policy' ORDER BY id DESC LIMIT 1")
        return _decode("operator_actions", rows[0]).get("details") if rows else None

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
        """The stored chain head {last_seq, last_hash, updated_at, head_signature}: copy it
        elsewhere to anchor the chain."""
        rows = await self._fetch("SELECT last_seq, last_hash, updated_at, head_signature FROM audit_head WHERE id = 1")
        return rows[0] if rows else {}

    async def verify(self) -> audit.AuditResult:
        """core.journal.audit.verify on this file (with this journal's key), in a thread (one read snapshot)."""
        return await asyncio.to_thread(audit.verify, self.path, self._key)


async def _connect(path: Path, busy_timeout_ms: int) -> aiosqlite.Connection:
    conn = aiosqlite.connect(str(path), isolation_level=None, timeout=busy_timeout_ms / 1000)
    conn.daemon = True  # a journal left open (or stuck) must not keep the process alive at exit
    return await conn


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
