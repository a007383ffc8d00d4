"""spikeguard's engine: pure asyncio, no Textual imports, testable headless."""

from core import compiled as _compiled

__version__ = "0.1.0"

_compiled.install()  # before any hot module is imported: a stale or unwanted build must not load
