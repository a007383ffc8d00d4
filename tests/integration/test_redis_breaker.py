"""The shared breaker on a real redis-server (started by the fixture on a free loopback port):
the atomic writes, the history and the announcements, two breakers kept in step, and the
faults: a frozen or killed server, a restart without persistence, a killed subscriber."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio

from core.breaker.backend import BackendUnavailable, StateMissing
from core.breaker.machine import BreakerRecord, IllegalTransition
from core.breaker.redis_backend import RedisBackend
from core.breaker.redis_sync import MISSING_REASON, RedisBreakerSync
from core.breaker.state import CircuitBreakerState
from core.events import Actor, BreakerStatus
from tests.redis_server import redis_server  # noqa: F401  (the fixture)

T, S, W, R = BreakerStatus.TRIGGERED, BreakerStatus.SAFE, BreakerStatus.WARNING, BreakerStatus.RECOVERING


def backend_on(server, timeout: float = 0.25) -> RedisBackend:
    import redis as sync_redis

    client = sync_redis.Redis.from_url(server.url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                       retry_on_timeout=False)
    return RedisBackend(client, "sgtest")


def armed(server) -> RedisBackend:
    """A deployment's first start: an operator arms the breaker (SAFE, epoch 1)."""
    backend = backend_on(server)
    assert backend.write(0, BreakerRecord(status=S, reason="armed", actor=Actor.OPERATOR)) == 1
    return backend


def sync_for(breaker: CircuitBreakerState, backend: RedisBackend, server, problems: list, poll_s: float = 0.25):
    client = redis.asyncio.Redis.from_url(server.url, socket_timeout=None, socket_connect_timeout=0.25)
    return RedisBreakerSync(breaker, backend, client, poll_interval_s=poll_s, on_problem=problems.append)


async def until(predicate, timeout: float = 3.0, step: float = 0.005) -> float:
    """Seconds until `predicate()` holds (AssertionError past `timeout`)."""
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(step)
    return time.perf_counter() - started


# ---------------------------------------------------------------------- the writes
def test_a_trip_wins_over_a_stale_epoch_and_a_clear_does_not(redis_server):
    backend = armed(redis_server)
    assert backend.write(1, BreakerRecord(status=W, reason="w", actor=Actor.RULE)) == 2
    # a writer that read epoch 1 trips: TRIGGERED wins, numbered after what it did not see
    assert backend.write(1, BreakerRecord(status=T, reason="trip", actor=Actor.AGENT)) == 3
    # a second trip is refused (TRIGGERED already), whatever epoch it read
    assert backend.write(3, BreakerRecord(status=T, reason="again", actor=Actor.RULE)) is None
    # a clear from a stale view loses; from the current one it is written
    assert backend.write(2, BreakerRecord(status=S, reason="stale", actor=Actor.OPERATOR)) is None
    assert backend.write(3, BreakerRecord(status=S, reason="clear", actor=Actor.OPERATOR)) == 4
    stored = backend.load()
    assert (stored.status, stored.epoch, stored.reason) == (S, 4, "clear")
    fields = redis_server.client().hgetall("sgtest:breaker")
    assert {k.decode() for k in fields} >= {"state", "epoch", "reason", "actor", "time", "details", "record"}
    assert fields[b"state"] == b"SAFE" and fields[b"epoch"] == b"4" and fields[b"actor"] == b"operator"


def test_every_transition_is_in_the_stream_in_epoch_order_and_announced(redis_server):
    backend = armed(redis_server)
    listener = redis_server.client().pubsub()
    listener.subscribe("sgtest:breaker:events")
    listener.get_message(timeout=1)  # the subscription's own confirmation
    backend.write(1, BreakerRecord(status=T, reason="trip", actor=Actor.RULE))
    backend.write(2, BreakerRecord(status=R, reason="rebound", actor=Actor.RULE))
    history = backend.history()
    assert [(r.epoch, r.status) for r in history] == [(1, S), (2, T), (3, R)]
    heard = [json.loads(listener.get_message(timeout=1)["data"]) for _ in range(2)]
    assert [(m["epoch"], m["status"]) for m in heard] == [(2, "TRIGGERED"), (3, "RECOVERING")]


def test_with_the_key_missing_only_a_trip_or_an_operators_re_arm_writes(redis_server):
    backend = backend_on(redis_server)
    with pytest.raises(StateMissing):
        backend.load()
    assert backend.write(0, BreakerRecord(status=S, reason="rule clear", actor=Actor.RULE)) is None
    assert backend.write(0, BreakerRecord(status=W, reason="agent", actor=Actor.AGENT)) is None
    assert backend.write(5, BreakerRecord(status=T, reason="trip", actor=Actor.RULE)) == 6
    redis_server.client().delete("sgtest:breaker")
    assert backend.write(0, BreakerRecord(status=S, reason="re-armed", actor=Actor.OPERATOR)) == 1


def test_an_unreachable_server_raises_backend_unavailable_within_the_timeout(redis_server):
    backend = armed(redis_server)
    redis_server.freeze()
    try:
        started = time.perf_counter()
        with pytest.raises(BackendUnavailable):
            backend.load()
        assert time.perf_counter() - started < 1.0
    finally:
        redis_server.thaw()


# ---------------------------------------------------------------------- the breaker over it
def test_a_trip_while_redis_is_away_holds_here_and_is_written_when_it_returns(redis_server):
    backend = armed(redis_server)
    breaker = CircuitBreakerState(backend)
    redis_server.freeze()
    try:
        assert breaker.trigger("crash while Redis hangs", actor=Actor.RULE)
        assert breaker.status is T and breaker.unsynced is not None
        with pytest.raises(IllegalTransition, match="cannot be moved to SAFE"):
            breaker.clear(reason="not without Redis", actor=Actor.OPERATOR)
    finally:
        redis_server.thaw()
    assert breaker.push_unsynced() and breaker.unsynced is None
    assert backend.load().status is T


def test_a_breaker_started_without_redis_or_without_state_says_so(redis_server):
    missing = CircuitBreakerState(backend_on(redis_server))
    assert missing.backend_problem and "no breaker state" in missing.backend_problem
    redis_server.freeze()
    try:
        away = CircuitBreakerState(backend_on(redis_server))
        assert away.backend_problem and "unreachable" in away.backend_problem
    finally:
        redis_server.thaw()


# ---------------------------------------------------------------------- two breakers in step
async def test_a_trip_in_one_reaches_the_other_by_the_channel_in_milliseconds(redis_server):
    a_backend, b_backend = armed(redis_server), backend_on(redis_server)
    a, b = CircuitBreakerState(a_backend), CircuitBreakerState(b_backend)
    problems: list = []
    # a poll interval far longer than the test: only the channel can carry the trip in time
    syncs = [sync_for(a, a_backend, redis_server, problems, poll_s=30), sync_for(b, b_backend, redis_server,
                                                                                 problems, poll_s=30)]
    for sync in syncs:
        sync.start()
    try:
        await asyncio.sleep(0.2)  # both subscribed, first polls done
        halted = []
        b.add_halt_step(lambda change: halted.append(change.epoch))
        a.trigger("crash seen by A", actor=Actor.RULE)
        took = await until(lambda: b.status is T)
        assert took < 0.05, took
        assert halted == [a.epoch] and syncs[1].adopted_by_message == 1
        assert problems == []
    finally:
        for sync in syncs:
            await sync.stop()


async def test_a_lost_announcement_is_caught_by_the_poll(redis_server):
    backend = armed(redis_server)
    b = CircuitBreakerState(backend_on(redis_server))
    sync = sync_for(b, b.backend, redis_server, [], poll_s=0.25)
    sync._listen_forever = _never  # type: ignore[method-assign]  # no channel at all: every message lost
    sync.start()
    try:
        await asyncio.sleep(0.05)
        backend.write(1, BreakerRecord(status=T, reason="trip elsewhere", actor=Actor.RULE))
        took = await until(lambda: b.status is T, timeout=2)
        assert took <= 0.25 + 0.1, took
        assert sync.adopted_by_poll == 1
    finally:
        await sync.stop()


async def _never() -> None:
    await asyncio.Event().wait()


async def test_a_killed_subscriber_catches_up_by_polling_and_resubscribes(redis_server):
    backend = armed(redis_server)
    b = CircuitBreakerState(backend_on(redis_server))
    sync = sync_for(b, b.backend, redis_server, [], poll_s=0.25)
    sync.start()
    try:
        await asyncio.sleep(0.2)
        admin = redis_server.client()
        killed = admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1
        backend.write(1, BreakerRecord(status=T, reason="while unsubscribed", actor=Actor.RULE))
        await until(lambda: b.status is T, timeout=2)
        await asyncio.sleep(0.8)  # resubscribed by now
        backend.write(2, BreakerRecord(status=R, reason="rebound", actor=Actor.RULE))
        await until(lambda: b.status is R, timeout=0.2)  # well inside a poll: the channel is back
        assert sync.adopted_by_message >= 1
    finally:
        await sync.stop()


# ---------------------------------------------------------------------- failing closed
async def test_a_frozen_server_holds_entries_within_the_timeout_and_its_return_releases_them(redis_server):
    backend = armed(redis_server)
    breaker = CircuitBreakerState(backend_on(redis_server))
    problems: list = []
    client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=0.25, socket_connect_timeout=0.25)
    sync = RedisBreakerSync(breaker, breaker.backend, client, poll_interval_s=0.25, on_problem=problems.append)
    sync.start()
    try:
        await asyncio.sleep(0.3)
        redis_server.freeze()
        took = await until(lambda: problems, timeout=3)
        assert took < 0.25 + 0.25 + 0.2, took  # one interval, one timeout
        assert problems[0].startswith("breaker backend unreachable")
        redis_server.thaw()
        await until(lambda: problems[-1] is None, timeout=3)
    finally:
        redis_server.thaw()
        await sync.stop()
    assert backend.load().status is S


async def test_a_restart_without_persistence_is_triggered_until_an_operator_re_arms(redis_server):
    armed(redis_server)
    breaker = CircuitBreakerState(backend_on(redis_server))
    problems: list = []
    sync = sync_for(breaker, breaker.backend, redis_server, problems)
    sync.start()
    try:
        await asyncio.sleep(0.3)
        assert breaker.status is S
        redis_server.restart_empty()
        await until(lambda: breaker.status is T, timeout=5)
        assert breaker.snapshot().reason == MISSING_REASON
        assert breaker.backend.load().status is T  # written back: every process sees it
        await asyncio.sleep(0.6)
        assert breaker.status is T  # and it stays so
        with pytest.raises(IllegalTransition):
            breaker.clear(reason="a rule may not", actor=Actor.RULE)
        assert breaker.clear(reason="re-armed after the restart", actor=Actor.OPERATOR)
        await asyncio.sleep(0.6)
        assert breaker.status is S and breaker.backend.load().status is S
        # tripped already when Redis comes back empty: its TRIGGERED is written back as it is
        assert breaker.trigger("a crash", actor=Actor.RULE)
        tripped_at = breaker.epoch
        redis_server.restart_empty()
        await until(lambda: _stored(breaker) is not None, timeout=5)
        stored = _stored(breaker)
        assert (stored.status, stored.epoch, stored.reason) == (T, tripped_at, "a crash")
    finally:
        await sync.stop()


def _stored(breaker: CircuitBreakerState):
    try:
        return breaker.backend.load()
    except (StateMissing, BackendUnavailable):
        return None
