"""Read the files a user hands the configuration (YAML, .env) without trusting them.

Only regular files are read, and at most a size limit of them: a FIFO would block the
open (so it is opened non-blocking and refused), a device such as /dev/zero never ends.
YAML is scanned as a stream of parser events before it is loaded: aliases are refused
(a ten-line alias bomb expands to billions of nodes, a self-referencing one recurses
forever) and so is nesting deeper than any real configuration needs (the composer
recurses once per level).

Errors are `FileRefused` with a message that does not name the file: the caller knows
which file (or variable) it was and says so.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MAX_YAML_BYTES = 1 << 20  # the shipped default.yaml is about 7 KB
MAX_DOTENV_BYTES = 64 << 10  # a .env holds a few dozen short lines
MAX_YAML_DEPTH = 32  # the deepest real key is 5 levels down


class FileRefused(ValueError):
    """The file (or text) is not something the configuration reads."""


@dataclass(frozen=True)
class FileText:
    text: str
    mode: int  # st_mode of the file that was read (for permission checks)


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_regular_file(path: Path, limit: int) -> FileText:
    """The UTF-8 text of a regular file of at most `limit` bytes. Raises FileNotFoundError
    when there is no file, FileRefused for anything else that is wrong."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FileRefused(f"cannot open: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)  # of what was opened, not of what the name points to by now
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
            raise FileRefused(f"is {kind}, not a regular file")
        if info.st_size > limit:
            raise FileRefused(f"is {info.st_size:,} bytes, over the limit of {limit:,} bytes")
        data = _read_at_most(fd, limit + 1)  # the file may have grown since fstat
    except OSError as exc:
        raise FileRefused(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileRefused(f"is over the limit of {limit:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    return FileText(text.removeprefix("\ufeff"), info.st_mode)


def _read_at_most(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def load_yaml(text: str, max_depth: int = MAX_YAML_DEPTH) -> Any:
    """yaml.safe_load after a scan of the parser's events (iterative, so it cannot
    recurse): FileRefused on an alias or on nesting deeper than `max_depth`. Syntax
    errors are yaml.YAMLError, as from yaml.safe_load."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise FileRefused(f"{_where(event)}: aliases (*{event.anchor}) are not allowed")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > max_depth:
                raise FileRefused(f"{_where(event)}: nested deeper than {max_depth} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return yaml.safe_load(text)


def _where(event: yaml.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"
