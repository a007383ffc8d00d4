"""Why a journal write failed: the environment (held and retried) or the request (failed alone).

A full disk, a read-only or failing filesystem, a lock held by someone else: none of these
is the fault of the rows being written, and dropping them would lose a trip. They are held
in memory and retried. A duplicate fill_id, an update of a missing row or a value SQLite
refuses is the request's own fault: it fails alone, and the rows behind it are written.
"""

from __future__ import annotations

import sqlite3

from core.journal.schema import JournalError

# sqlite3.Error.sqlite_errorname values (and their extended forms, e.g. SQLITE_IOERR_WRITE)
# that say the file or the disk cannot take a write now
_UNWRITABLE_CODES = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_BUSY",
                     "SQLITE_LOCKED", "SQLITE_NOMEM", "SQLITE_PROTOCOL", "SQLITE_CORRUPT", "SQLITE_NOTADB")


class ChainHeadMoved(JournalError):
    """The stored chain head is not the one this writer left: something outside spikeguard
    wrote to the journal. Appending would fork or hide that, so the writer holds its rows."""


def unwritable(exc: BaseException) -> bool:
    """True when `exc` says the journal cannot be written now, whatever the rows are."""
    if isinstance(exc, (OSError, MemoryError, ChainHeadMoved)):
        return True
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", None) or ""
        return any(name == code or name.startswith(code + "_") for code in _UNWRITABLE_CODES)
    return False


def describe(exc: BaseException) -> str:
    """One line for the operator: SQLite's message and its result code name."""
    name = getattr(exc, "sqlite_errorname", None)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{text} ({name})" if name and name not in text else text
