"""Blocking agent work runs in daemon threads: quitting never waits for a CrewAI import or a
model call stuck in a read."""

from __future__ import annotations

import contextvars
import threading

import pytest

from core.agents.threads import in_daemon_thread

RUN = contextvars.ContextVar("RUN", default=None)


async def test_the_result_the_exception_and_the_context_come_back():
    RUN.set("run-7")

    def work(x: int) -> tuple[int, str | None, bool]:
        return x * 2, RUN.get(), threading.current_thread().daemon

    assert await in_daemon_thread(work, 21) == (42, "run-7", True)

    def fails() -> None:
        raise ValueError("model said no")

    with pytest.raises(ValueError, match="model said no"):
        await in_daemon_thread(fails)
