"""The journal under real faults: a full disk (a size-limited tmpfs as root, SQLite's
max_page_count otherwise), a filesystem that goes read-only while running (ext4's own
errors=remount-ro, on a loop device), a read-only file or filesystem and a full disk at
start-up, a second process on the same journal, a process that never closes its journal.

Linux refuses `mount -o remount,ro` while a file on the mount is open for writing (EBUSY),
so a running journal cannot be made read-only that way; the kernel's emergency read-only
remount after an error is how it happens for real, and that is what the test uses.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.breaker.state import CircuitBreakerState
from core.events import Actor, BreakerStatus, JournalHealth
from core.journal import Journal, JournalError, verify
from core.trading.orders import Fill, Side

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("journal_writer_child.py")
ROOT = os.geteuid() == 0
T0 = 1_700_000_000_000
GUARD_S = 60  # only ever reached when something hangs


# ---------------------------------------------------------------------------- mounts
def sh(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")


@contextlib.contextmanager
def mounted(target: Path, *mount_args: str) -> Iterator[Path]:
    if not target.exists():
        target.mkdir(parents=True)
    sh("mount", *mount_args, str(target))
    try:
        yield target
    finally:
        try:
            sh("umount", str(target))
        except RuntimeError:  # something left a file open there: detach it anyway, then say so
            subprocess.run(["umount", "-l", str(target)], capture_output=True)
            raise


def rows(path: Path, statement: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as con:
        return con.execute(statement).fetchall()


def fill_up(folder: Path) -> None:
    """Take every free block of the filesystem under `folder` (a file named filler)."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)


class TmpfsDisk:
    """A real 2 MB tmpfs (at 1 MB, once the schema grew a table, the WAL and the database it
    checkpoints into no longer fitted after the filler went). Full: a filler file takes the
    rest. Freed: the filler deleted, or the mount grown."""

    def __init__(self, root: Path, free_by: str) -> None:
        self.dir = root / "mnt"
        self.free_by = free_by
        self._mount = mounted(self.dir, "-t", "tmpfs", "-o", "size=2m", "tmpfs")

    def __enter__(self) -> "TmpfsDisk":
        self._mount.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mount.__exit__(*exc)

    async def fill(self, journal: Journal) -> None:
        fill_up(self.dir)

    async def free(self, journal: Journal) -> None:
        if self.free_by == "unlink":
            (self.dir / "filler").unlink()
        else:
            sh("mount", "-o", "remount,size=4m", str(self.dir))


class PageCapDisk:
    """SQLite's own SQLITE_FULL: PRAGMA max_page_count on the journal's write connection
    (works without root)."""

    def __init__(self, root: Path) -> None:
        self.dir = root

    def __enter__(self) -> "PageCapDisk":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    async def fill(self, journal: Journal) -> None:
        pages = (await (await journal._db.execute("PRAGMA page_count")).fetchone())[0]
        await journal._db.execute(f"PRAGMA max_page_count = {pages}")

    async def free(self, journal: Journal) -> None:
        if journal._db is not None:  # a closed journal's cap went with its connection
            await journal._db.execute("PRAGMA max_page_count = 4294967294")


class ReadOnlyExt4Disk:
    """ext4 on a loop device mounted errors=remount-ro: an ext4 error (triggered through
    sysfs) makes the kernel turn the filesystem read-only under the running journal, as a
    failing disk does. It stays read-only until unmounted."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "mnt"
        self.image = root / "ext4.img"

    def __enter__(self) -> "ReadOnlyExt4Disk":
        with open(self.image, "wb") as f:
            f.truncate(8 << 20)
        sh("mkfs.ext4", "-q", "-F", str(self.image))
        self._mount = mounted(self.dir, "-o", "loop,errors=remount-ro", str(self.image))
        self._mount.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mount.__exit__(*exc)

    async def fill(self, journal: Journal) -> None:
        device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(self.dir)], capture_output=True,
                                text=True, check=True).stdout.strip()
        Path(f"/sys/fs/ext4/{Path(device).name}/trigger_fs_error").write_text("spikeguard test\n")


FULL_DISKS = (["tmpfs-unlink", "tmpfs-remount"] if ROOT else []) + ["page-cap"]
BROKEN_DISKS = (["tmpfs", "ext4-read-only"] if ROOT else []) + ["page-cap"]


def make_disk(kind: str, root: Path):
    if kind.startswith("tmpfs"):
        return TmpfsDisk(root, "remount" if kind.endswith("remount") else "unlink")
    if kind == "ext4-read-only":
        return ReadOnlyExt4Disk(root)
    return PageCapDisk(root)


class Health:
    """A health listener that records every event and the thread it ran on."""

    def __init__(self) -> None:
        self.events: list[JournalHealth] = []
        self.threads: set[int] = set()
        self.failing = asyncio.Event()
        self.recovered = asyncio.Event()

    def __call__(self, event: JournalHealth) -> None:
        self.events.append(event)
        self.threads.add(threading.get_ident())
        (self.recovered if event.ok else self.failing).set()


@contextlib.asynccontextmanager
async def journal_on(disk, health: Health) -> AsyncIterator[Journal]:
    j = await Journal.open(disk.dir / "journal.db")
    j.add_health_listener(health)
    try:
        yield j
    finally:
        with contextlib.suppress(JournalError):  # a test that lost rows on purpose says so itself
            await j.close(timeout=0)


def settled(fut: concurrent.futures.Future) -> asyncio.Future:
    """An awaitable view of a journal future, only for waiting: its outcome is read from
    `fut`, so the view's exception is marked retrieved (no "never retrieved" log at GC)."""
    view = asyncio.wrap_future(fut)
    view.add_done_callback(lambda v: v.cancelled() or v.exception())
    return view


async def write_until_failing(j: Journal, health: Health) -> list:
    """Write notes until the journal reports failing; returns their futures."""
    futs = []
    failing = asyncio.ensure_future(health.failing.wait())
    try:
        for i in range(5000):
            futs.append(j.submit("operator_action", {"action": "note", "reason": f"fill {i}"}))
            await asyncio.wait({settled(futs[-1]), failing}, return_when=asyncio.FIRST_COMPLETED)
            if health.failing.is_set():
                return futs
    finally:
        failing.cancel()
    pytest.fail("the journal never reported failing on a full disk")


# ---------------------------------------------------------------------------- a full disk
@pytest.mark.parametrize("kind", FULL_DISKS)
async def test_a_full_disk_holds_every_row_in_order_and_writes_them_when_space_returns(tmp_path: Path,
                                                                                     kind: str) -> None:
    """The report: on a full disk the console showed TRIGGERED, RECOVERING and an operator
    trip, and the journal kept only WARNING. Now nothing is dropped."""
    health = Health()
    fill = Fill("c1", "BTCUSDT", Side.BUY, 1.0, 10.0, 0.01, "taker", T0, fill_id="f1")
    with make_disk(kind, tmp_path) as disk:
        async with journal_on(disk, health) as j:
            state = CircuitBreakerState()
            state.subscribe(j.breaker_subscriber(state))
            state.set_warning("BTC -11%", {"drop_percent": 11.0}, time_ms=T0)
            await j.record_fill(fill)
            await disk.fill(j)
            early = await write_until_failing(j, health)
            assert j.failing and health.events[-1].ok is False and health.events[-1].error
            # rows submitted while failing: a trip, a recovery, an operator trip, notes, and a
            # duplicate fill that must fail alone once the disk takes writes again
            state.trigger("BTC -16%", {"drop_percent": 16.0}, time_ms=T0 + 1, symbol="BTCUSDT")
            state.start_recovery(time_ms=T0 + 2)
            state.trigger("operator halt", actor=Actor.OPERATOR, time_ms=T0 + 3)
            held = [j.submit("operator_action", {"action": "note", "reason": f"held {i}"}) for i in range(20)]
            dup = j.enqueue_fill(fill)
            held += [j.submit("operator_action", {"action": "note", "reason": "after the duplicate"})]
            assert j.failing and j.unwritten >= 3 + len(held) + 1 and not any(f.done() for f in held + [dup])
            with pytest.raises(JournalError, match="flush timed out"):
                await j.flush(timeout=0.2)
            assert [e.ok for e in health.events] == [False]

            await disk.free(j)
            await asyncio.wait_for(health.recovered.wait(), GUARD_S)
            await asyncio.wait_for(j.flush(), GUARD_S)
            ids = [f.result(timeout=0) for f in early + held]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            with pytest.raises(JournalError, match="UNIQUE"):
                dup.result(timeout=0)
            assert not j.failing and j.unwritten == 0
            assert [e.ok for e in health.events] == [False, True] and health.events[-1].unwritten == 0
            assert health.threads == {threading.get_ident()}  # called on the journal's loop
            record = await j.last_breaker_record()
            assert (record["status"], record["actor"], record["epoch"]) == ("TRIGGERED", "operator", 4)

        path = disk.dir / "journal.db"
        notes = [r[0] for r in rows(path, "SELECT reason FROM operator_actions WHERE action = 'note' "
                                          "ORDER BY chain_seq")]
        assert notes == [f"fill {i}" for i in range(len(early))] + [f"held {i}" for i in range(20)] + [
            "after the duplicate"]
        breaker = rows(path, "SELECT epoch, breaker_status, actor FROM circuit_breaker_events ORDER BY chain_seq")
        assert breaker == [(1, "WARNING", "rule"), (2, "TRIGGERED", "rule"), (3, "RECOVERING", "rule"),
                           (4, "TRIGGERED", "operator")]
        result = verify(path)
        assert result.ok, result.problems[:3]
        async with journal_on(disk, Health()) as again:  # a restart restores the operator trip
            assert (await again.last_breaker_record())["status"] == BreakerStatus.TRIGGERED.value


@pytest.mark.parametrize("kind", BROKEN_DISKS)
async def test_close_on_a_disk_that_stays_broken_is_bounded_and_counts_the_lost_rows(
        tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    health = Health()
    with make_disk(kind, tmp_path) as disk:
        j = await Journal.open(disk.dir / "journal.db")
        try:
            j.add_health_listener(health)
            await j.record_operator_action("note", "on disk")
            await disk.fill(j)
            early = await write_until_failing(j, health)
            held = [j.enqueue_operator_action("note", f"held {i}") for i in range(5)]
            with pytest.raises(JournalError, match="flush timed out"):
                await j.flush(timeout=0.05)  # its barrier is abandoned at close, and nobody reads it
            lost = j.unwritten
            assert lost >= 6 and health.events[-1].unwritten >= 1
        finally:
            with pytest.raises(JournalError) as err:
                await asyncio.wait_for(j.close(timeout=0.3), GUARD_S)
        assert f"{lost} row(s) could not be written" in str(err.value) and "\n" not in str(err.value)
        for f in held:
            with pytest.raises(JournalError):
                f.result(timeout=0)
        assert j._db is None and j._rdb is None  # connections closed, nothing left running
        gc.collect()
        assert "never retrieved" not in caplog.text
        if kind == "ext4-read-only":
            return  # the kernel keeps it read-only until it is unmounted
        await disk.free(j)
        reopened = await Journal.open(disk.dir / "journal.db")  # the lock went with the close
        try:
            notes = [r["reason"] for r in reversed(await reopened.recent("operator_actions", 10_000))]
        finally:
            await reopened.close()
        assert notes[0] == "on disk" and not any(n.startswith("held") for n in notes)
        assert len(notes) == 1 + sum(1 for f in early if f.done() and not f.exception())
        assert verify(disk.dir / "journal.db").ok


# ---------------------------------------------------------------------------- start-up
@contextlib.contextmanager
def read_only_file(path: Path) -> Iterator[None]:
    """The journal file alone made read-only: a read-only bind mount over it as root (root
    ignores file modes), chmod otherwise. Its folder stays writable."""
    if ROOT:
        with mounted(path, "--bind", str(path)):
            sh("mount", "-o", "remount,bind,ro", str(path))
            yield
    else:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)


@contextlib.asynccontextmanager
async def start_up_fault(kind: str, root: Path) -> AsyncIterator[Path]:
    """A journal with rows, closed, then made unwritable in one way; yields its path."""
    disk = root / "mnt"
    with contextlib.ExitStack() as stack:
        if kind != "read-only-file":
            stack.enter_context(mounted(disk, "-t", "tmpfs", "-o", "size=1m", "tmpfs"))
        path = disk / "journal.db"
        j = await Journal.open(path)
        try:
            await j.record_operator_action("note", "before")
            if kind == "full-disk":  # a reader keeps the WAL, so only a real write can find the disk full
                reader = stack.enter_context(contextlib.closing(sqlite3.connect(path)))
                reader.execute("SELECT last_seq FROM audit_head").fetchall()
        finally:
            await j.close()
        if kind == "read-only-filesystem":
            sh("mount", "-o", "remount,ro", str(disk))
        elif kind == "read-only-file":
            stack.enter_context(read_only_file(path))
        elif kind == "full-disk":
            fill_up(disk)
        yield path
        if kind == "full-disk":
            (disk / "filler").unlink()


STARTUP_FAULTS = {"read-only-filesystem": "Read-only file system", "read-only-file": "SQLITE_READONLY",
                  "full-disk": "SQLITE_FULL"}


@pytest.mark.parametrize("kind", list(STARTUP_FAULTS) if ROOT else ["read-only-file"])
async def test_start_up_refuses_a_journal_it_cannot_write_in_one_line(tmp_path: Path, kind: str) -> None:
    async with start_up_fault(kind, tmp_path) as path:
        before = path.read_bytes()
        with pytest.raises(JournalError) as err:
            await Journal.open(path)
        msg = str(err.value)
        assert msg.startswith(f"cannot write journal {path}: ") and STARTUP_FAULTS[kind] in msg and "\n" not in msg
        assert path.read_bytes() == before  # refused before anything was written


# ---------------------------------------------------------------------------- processes
def _child(db: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CHILD), str(db), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)


def _wait_ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    assert line == b"ready\n", f"child said {line!r}: {proc.stderr.read().decode()[-2000:]}"


def _reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=GUARD_S)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        stream.close()


async def test_a_second_process_is_refused_naming_the_holders_pid(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    holder = _child(db, "--hold")
    try:
        _wait_ready(holder)
        for _ in range(2):
            with pytest.raises(JournalError) as err:
                await Journal.open(db)
            msg = str(err.value)
            assert f"PID {holder.pid}: " in msg and "journal_writer_child.py" in msg and "\n" not in msg
        holder.kill()  # kill -9: the OS drops the lock with the process
        holder.wait(timeout=GUARD_S)
        j = await Journal.open(db)
        await j.close()
    finally:
        _reap(holder)
    assert verify(db).ok


def test_a_journal_left_open_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    """A test that failed before its close used to leave pytest hanging after "1 failed"."""
    proc = _child(tmp_path / "journal.db", "--leave-open")
    try:
        _wait_ready(proc)
        proc.stdin.close()
        assert proc.wait(timeout=GUARD_S) == 0
    finally:
        _reap(proc)
