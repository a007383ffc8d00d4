"""Logging to a rotating file only: the terminal belongs to the console (or to --json).

Every record passes core.redact, so a registered secret that finds its way into a message
(an exception text, a URL) never reaches the file. Until the file is set up, records wait
in memory (`hold_early_records`): Python's fallback handlers would print them, and
tracebacks of threads and destructors, on the terminal. A crash before the file exists
still gets its traceback written somewhere (`write_crash`).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import tempfile
import threading
import traceback
from collections import deque
from pathlib import Path

from core import redact

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
log = logging.getLogger("spikeguard")


class RedactSecrets(logging.Filter):
    """Masks every secret known to core.redact in the message and the traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not redact.known():
            return True
        message = record.getMessage()
        masked = redact.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = redact.mask(record.stack_info)
        return True


class _EarlyRecords(logging.Handler):
    """Keeps the last records in memory until setup_logging replays them into the file."""

    def __init__(self, capacity: int = 1000) -> None:
        super().__init__()
        self.records: deque[logging.LogRecord] = deque(maxlen=capacity)
        self.addFilter(RedactSecrets())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def hold_early_records() -> None:
    """From process start: no log record, logging error or uncaught exception of a thread
    or a destructor may reach the terminal. Records wait in memory for setup_logging."""
    root = logging.getLogger()
    if not any(isinstance(h, _EarlyRecords) for h in root.handlers):
        early = _EarlyRecords()
        root.addHandler(early)
        logging.lastResort = early  # for loggers that do not propagate to the root
    logging.raiseExceptions = False  # a failing handler (disk full) would print a traceback to stderr
    threading.excepthook = _log_thread_exception
    sys.unraisablehook = _log_unraisable


def setup_logging(log_file: Path, level: str = "INFO", max_bytes: int = 5_000_000,
                  backups: int = 5) -> logging.Handler:
    """The rotating file as the only handler; records held since start-up are written first.
    OSError when the file cannot be opened."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=max_bytes, backupCount=backups,
                                                   encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    held = [r for h in root.handlers if isinstance(h, _EarlyRecords) for r in h.records]
    for old in list(root.handlers):  # no stray stream handler may write to the terminal
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.lastResort = handler
    logging.raiseExceptions = False
    logging.captureWarnings(True)
    for record in held:
        if record.levelno >= root.level:
            handler.handle(record)
    return handler


class _DropLibraries(logging.Filter):
    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = frozenset(names)
        self.children = tuple(f"{n}." for n in names)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name not in self.names and not record.name.startswith(self.children)


def drop_library_records(names: tuple[str, ...]) -> None:
    """From now on, records of these loggers (and their children) reach no handler."""
    drop = _DropLibraries(names)
    for handler in logging.getLogger().handlers:
        handler.addFilter(drop)


def write_crash(exc: BaseException, log_file: Path | None = None) -> Path | None:
    """Write `exc` with its traceback to the log: through the log file when logging is set
    up; before that, appended to `log_file`, else to a new private file in the temp
    directory (with the records held so far). Returns the file, or None if none could be written."""
    handler = _file_handler()
    if handler is not None:
        log.critical("unexpected error", exc_info=exc)
        return Path(handler.baseFilename)
    text = redact.mask(_early_text() + "".join(traceback.format_exception(exc)))
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(text)
            return log_file
        except OSError:
            pass  # the log's own place is the problem: the temp directory is next
    try:
        fd, name = tempfile.mkstemp(prefix="spikeguard-crash-", suffix=".log")  # mode 0600, a new file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return Path(name)
    except OSError:
        return None


def _file_handler() -> logging.FileHandler | None:
    return next((h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)), None)


def _early_text() -> str:
    formatter = logging.Formatter(_FORMAT)
    return "".join(formatter.format(r) + "\n" for h in logging.getLogger().handlers
                   if isinstance(h, _EarlyRecords) for r in h.records)


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    log.error("uncaught exception in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    try:
        where = repr(unraisable.object)
    except Exception:
        where = "an object"
    info = (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
    log.warning("%s %s", unraisable.err_msg or "exception ignored in", where,
                exc_info=info if unraisable.exc_value is not None else None)
