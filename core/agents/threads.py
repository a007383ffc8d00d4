"""Blocking agent work (CrewAI's import, a crew's sync kickoff) in daemon threads.

asyncio.to_thread uses the loop's executor, whose threads interpreter shutdown joins: an
import still running, or a model call stuck in an HTTP read, would keep the process alive
after the operator quit. A daemon thread never does; the caller awaits its result as usual.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_daemon_thread(fn: Callable[..., T], *args: Any, name: str = "spikeguard-agents") -> T:
    """Run fn(*args) in a new daemon thread, with this task's context variables; await its
    result (or its exception). Cancelling the awaiting task abandons the thread's result."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        if not done.done():
            setter(value)

    def target() -> None:
        try:
            result = context.run(fn, *args)
        except BaseException as exc:  # handed to the awaiting task
            outcome: tuple[Callable[[Any], None], Any] = (done.set_exception, exc)
        else:
            outcome = (done.set_result, result)
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:  # the loop is gone (the app quit): nobody is waiting
            pass

    threading.Thread(target=target, name=name, daemon=True).start()
    return await done
