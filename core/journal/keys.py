"""The key that signs the journal's chain head, kept outside the journal.

A key inside the journal would sign whatever someone with the file wrote. The key lives in
the configuration directory (journal.key: 32 random bytes as 64 hex digits), readable by its
owner only.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from core.journal.schema import JournalError

KEY_FILE = "journal.key"
KEY_BYTES = 32


def key_path(config_dir: Path) -> Path:
    return Path(config_dir).expanduser() / KEY_FILE


def load_or_create_key(config_dir: Path) -> bytes:
    """The journal key in `config_dir`, created (mode 0600) when there is none. Raises
    JournalError, one line, for a key file readable by group or others or not a key."""
    path = key_path(config_dir)
    try:
        try:
            return _read(path)
        except FileNotFoundError:
            pass
        try:
            return _create(path)
        except FileExistsError:  # another process created it first
            return _read(path)
    except JournalError:
        raise
    except OSError as e:
        raise JournalError(f"cannot read journal key {path}: {e.strerror}") from None


def _read(path: Path) -> bytes:
    # O_NONBLOCK: a FIFO put where the key should be must not hang the start
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise JournalError(f"journal key {path} is not a regular file")
        if st.st_mode & 0o077:
            raise JournalError(f"journal key {path} is readable by group or others "
                               f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}")
        text = os.read(fd, 4 * KEY_BYTES).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise JournalError(f"journal key {path} is not a spikeguard key ({2 * KEY_BYTES} hex digits expected)")
    return key


def _create(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # FileExistsError: someone was first
    try:
        os.write(fd, (key.hex() + "\n").encode("ascii"))
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)  # a half-written key would be refused at every start
        raise JournalError(f"cannot write journal key {path}: {e.strerror}") from None
    os.close(fd)
    return key
