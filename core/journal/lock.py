"""One process per journal: an advisory lock on a side file next to it (journal.db.lock).

SQLite lets two processes append to one file in turn, so two consoles on one journal would
keep two breakers and interleave their epochs. An flock on a side file (the database's own
locks belong to SQLite) refuses the second. The OS drops the lock when its holder dies, so a
killed console leaves no stale lock. The file is never deleted (unlinking a lock file races
with the next opener); it holds the holder's PID and command line, one per line, for the
refusal message.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from core.journal.schema import JournalError
from core.redact import mask


def lock_path(journal: Path) -> Path:
    return journal.with_name(journal.name + ".lock")


class JournalLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, journal: Path) -> "JournalLock":
        """Take the journal's lock, or raise JournalError naming the process that holds it."""
        path = lock_path(journal)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise JournalError(f"cannot write journal {journal}: {e.strerror} (lock file {path})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise JournalError(f"journal {journal} is in use by another spikeguard ({holder}): "
                               f"one process per journal; stop that one first") from None
        except OSError as e:
            os.close(fd)
            raise JournalError(f"cannot lock journal {journal}: {e.strerror} (lock file {path})") from None
        try:
            # overwrite in place, then cut: no new block is needed, so this works on a full disk too
            note = f"{os.getpid()}\n{_command_line()}\n".encode()
            os.pwrite(fd, note, 0)
            os.ftruncate(fd, len(note))
        except OSError as e:
            os.close(fd)
            raise JournalError(f"cannot write journal {journal}: {e.strerror} (lock file {path})") from None
        return cls(path, fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    @property
    def held(self) -> bool:
        return self._fd is not None


def _command_line() -> str:
    return mask(" ".join(getattr(sys, "orig_argv", sys.argv)).replace("\n", " "))


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        text = ""
    pid, _, cmd = text.partition("\n")
    if not pid.strip().isdigit():
        return "PID unknown"
    cmd = cmd.strip()
    return f"PID {pid.strip()}: {cmd}" if cmd else f"PID {pid.strip()}"
