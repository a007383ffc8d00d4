"""The fake Binance on a loop of its own, in a daemon thread: for tests that drive a real
`spikeguard` process and wait synchronously (tmux), while the server keeps answering."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from tests.fakes.binance.server import FakeBinance

T = TypeVar("T")


class ThreadedFake:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-binance", daemon=True)
        self._thread.start()
        self.server: FakeBinance = self.run(self._start())

    async def _start(self) -> FakeBinance:
        return await FakeBinance().start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call `fn` on the server's loop (its state is not thread-safe) and return its result."""
        async def on_loop() -> T:
            return fn(*args)
        return self.run(on_loop())

    def stop(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


__all__ = ["ThreadedFake"]
