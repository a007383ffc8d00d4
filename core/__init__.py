"""spikeguard's engine: pure asyncio, no Textual imports, testable headless."""

__version__ = "0.1.0"
