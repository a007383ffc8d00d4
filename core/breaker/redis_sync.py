"""Keeps a process's breaker in step with the shared one on Redis.

Two tasks on the process's loop:
- the poller reads the hash every `poll_interval_s`: the authority. A newer record is
  adopted (announced like any transition: a TRIGGERED one halts this process's gate first);
  a lost announcement is caught within one interval;
- the subscriber listens on the channel: a transition arrives within milliseconds and is
  adopted at once.

Failing closed: while Redis cannot be read (refused, reset, timed out), `on_problem` is told
and new entries are held (the session blocks its gate and says "breaker backend
unreachable"). A hash gone missing (Redis restarted empty) is TRIGGERED here and written
back as TRIGGERED: it stays so until an operator re-arms it. A trip made here while Redis was
away is written once it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from core.breaker.backend import BackendUnavailable, StateMissing
from core.breaker.machine import BreakerRecord, IllegalTransition
from core.breaker.redis_backend import RedisBackend, record_from_json
from core.breaker.state import CircuitBreakerState
from core.events import Actor, BreakerStatus

log = logging.getLogger("spikeguard.breaker.redis")

UNREACHABLE = "breaker backend unreachable"
MISSING_REASON = "breaker state missing from Redis (restarted empty?): TRIGGERED until an operator re-arms it"
RESUBSCRIBE_S = 0.5


class RedisBreakerSync:
    def __init__(self, breaker: CircuitBreakerState, backend: RedisBackend, async_client: Any,
                 poll_interval_s: float = 0.25, on_problem: Callable[[str | None], None] | None = None,
                 clock_ms: Callable[[], int] | None = None, timeout_s: float = 0.25) -> None:
        self.breaker = breaker
        self.backend = backend
        self.async_client = async_client
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s  # a read that takes longer is "unreachable" (a frozen server never answers)
        self.on_problem = on_problem or (lambda problem: None)
        self.clock_ms = clock_ms
        self.problem: str | None = None  # None while Redis answers
        self.polls = 0
        self.adopted_by_message = 0
        self.adopted_by_poll = 0
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll_forever(), name="breaker-redis-poll"),
                       loop.create_task(self._listen_forever(), name="breaker-redis-listen")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        try:
            await self.async_client.aclose()
        except Exception:  # closing a dead connection
            log.debug("closing the Redis client failed", exc_info=True)

    # ------------------------------------------------------------------ the authority: the hash
    async def _poll_forever(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.poll_interval_s)

    async def poll_once(self) -> None:
        """One read of the hash; every outcome is handled here (never raises)."""
        self.polls += 1
        try:
            raw = await asyncio.wait_for(self.async_client.hget(self.backend.hash_key, "record"), self.timeout_s)
        except asyncio.TimeoutError:
            self._unreachable(TimeoutError(f"no answer within {self.timeout_s * 1000:.0f} ms"))
            return
        except Exception as exc:  # refused, reset: "unknown" too
            self._unreachable(exc)
            return
        if raw is None:
            self._reachable()
            self._missing()
            return
        self._reachable()
        if self.breaker.unsynced is not None:
            self._push_unsynced()
        self._offer(record_from_json(raw), by_message=False)

    def _offer(self, record: BreakerRecord, by_message: bool) -> None:
        current_status, current_epoch = self.breaker.current()
        if record.epoch < current_epoch or (record.epoch == current_epoch and record.status is current_status):
            return
        try:
            if self.breaker.adopt(record, source="redis") is not None:
                if by_message:
                    self.adopted_by_message += 1
                else:
                    self.adopted_by_poll += 1
        except IllegalTransition as exc:
            log.warning("the shared breaker's record could not be adopted: %s", exc)

    def _missing(self) -> None:
        """No state in Redis: TRIGGERED here (a trip), and written back, so that every process
        and `breaker status` read TRIGGERED until an operator re-arms it."""
        if self.breaker.status is BreakerStatus.TRIGGERED:  # tripped already: write ours back as it is
            record = self.breaker.snapshot()
            try:
                self.backend.write(record.epoch - 1, record)
            except BackendUnavailable as exc:
                self._unreachable(exc)
            return
        try:
            self.breaker.trigger(MISSING_REASON, actor=Actor.RULE, trigger_type="backend_state_missing",
                                 time_ms=self.clock_ms() if self.clock_ms else None)
        except IllegalTransition as exc:
            log.warning("could not trip on the missing shared state: %s", exc)
        except BackendUnavailable as exc:
            self._unreachable(exc)

    def _push_unsynced(self) -> None:
        try:
            self.breaker.push_unsynced()
        except (BackendUnavailable, StateMissing) as exc:
            log.warning("the trip made while Redis was away is not written yet: %s", exc)

    # ------------------------------------------------------------------ the fast path: the channel
    async def _listen_forever(self) -> None:
        while True:
            pubsub = self.async_client.pubsub()
            try:
                await pubsub.subscribe(self.backend.channel)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        record = record_from_json(message["data"])
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning("an unreadable breaker announcement was ignored: %s", exc)
                        continue
                    self._offer(record, by_message=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection dropped (CLIENT KILL, a restart): the poller covers it
                log.info("breaker channel lost (%s); resubscribing", exc)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    log.debug("closing the breaker channel failed", exc_info=True)
            await asyncio.sleep(RESUBSCRIBE_S)

    # ------------------------------------------------------------------ the problem, said once
    def _unreachable(self, exc: BaseException) -> None:
        why = (" ".join(str(exc).split()) or type(exc).__name__).removeprefix("Redis unreachable: ")
        if self.problem is None:
            log.error("%s: %s; new entries held", UNREACHABLE, why)
            self.problem = why
            self.on_problem(f"{UNREACHABLE}: {why}")

    def held_at_start(self, problem: str) -> None:
        """The breaker could not be read when it was built: entries are held from now on, until
        the first good read."""
        self.problem = problem
        unreachable = problem.startswith("Redis unreachable: ")
        self.on_problem(f"{UNREACHABLE}: {problem.removeprefix('Redis unreachable: ')}" if unreachable
                        else f"breaker backend: {problem}")

    def _reachable(self) -> None:
        if self.problem is not None:
            log.info("breaker backend reachable again")
            self.problem = None
            self.breaker.backend_problem = None
            self.on_problem(None)


__all__ = ["MISSING_REASON", "RedisBreakerSync", "UNREACHABLE"]
