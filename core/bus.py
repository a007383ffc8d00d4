"""Async publish/subscribe for engine events (breaker changes, spikes, problems).

Publishing is synchronous and never blocks the engine: each subscriber has its own queue.
Events published from another thread (an agent's tool, a Redis listener) are handed to
the loop with call_soon_threadsafe, so subscribers always run on the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, AsyncIterator
from typing import Any


class EventBus:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._queues: list[asyncio.Queue[Any]] = []
        self._loop = loop
        self._loop_thread: int | None = None
        self.published = 0
        self.taps: list[Callable[[Any], None]] = []  # called with every event, on the loop (the flight recorder)

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def subscribe(self, maxsize: int = 0) -> asyncio.Queue[Any]:
        q: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self._queues.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Any]) -> None:
        if q in self._queues:
            self._queues.remove(q)

    def publish(self, event: Any) -> None:
        loop = self._loop
        if loop is not None and self._loop_thread is not None and threading.get_ident() != self._loop_thread:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._deliver, event)
            return
        self._deliver(event)

    def _deliver(self, event: Any) -> None:
        self.published += 1
        for tap in self.taps:
            tap(event)
        for q in self._queues:
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:  # a slow optional subscriber loses its oldest event, never the engine
                try:
                    q.get_nowait()
                    q.put_nowait(event)
                except (asyncio.QueueEmpty, asyncio.QueueFull):
                    pass

    async def stream(self) -> AsyncIterator[Any]:
        q = self.subscribe()
        try:
            while True:
                yield await q.get()
        finally:
            self.unsubscribe(q)
