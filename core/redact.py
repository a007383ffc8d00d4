"""Known secret values, masked in every message that leaves the process.

The configuration registers each secret it loads (API keys, tokens). Anything that turns
text into output (the log filter, one-line errors, journal rows, the console's notices)
passes it through `mask()`, so a key that finds its way into an exception text or a URL
never reaches a file or the screen.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret containing another is masked whole


def register(values: Iterable[str | None]) -> None:
    """Add secret values (None, blanks and values shorter than MIN_SECRET_LENGTH are ignored)."""
    global _secrets
    new = {v for v in values if isinstance(v, str) and len(v.strip()) >= MIN_SECRET_LENGTH}
    if not new:
        return
    with _lock:
        _secrets = tuple(sorted(set(_secrets) | new, key=len, reverse=True))


def known() -> tuple[str, ...]:
    return _secrets


def forget_all() -> None:
    """Tests only: start from no known secrets."""
    global _secrets
    with _lock:
        _secrets = ()


def mask(text: str) -> str:
    """`text` with every known secret replaced by MASK. Cheap when no secret is known."""
    secrets = _secrets
    if not secrets or not isinstance(text, str):
        return text
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def one_line(text: str, limit: int = 500) -> str:
    """`text` masked, on one line and at most `limit` characters: what a terminal is shown."""
    line = " ".join(mask(str(text)).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
