"""A session on the shared breaker: Redis frozen or killed holds new entries (said in the
banner), exits and cancels still go out, nothing crashes; a trip in one session halts another's
gate."""

from __future__ import annotations

import asyncio

from core.config import load_config
from core.events import BreakerStatus
from core.trading.orders import Order, OrderStatus, OrderType, Side
from core.wiring import build_session
from tests.helpers import ListFeed, path
from tests.integration.test_redis_breaker import armed, until
from tests.redis_server import redis_server  # noqa: F401  (the fixture)


def settings_for(server):
    return load_config(env={}, dotenv_paths=[], overrides=[
        "redis.enabled=true", f"redis.url={server.url}", "redis.key_prefix=sgtest", "redis.poll_interval_ms=100",
        "redis.timeout_ms=200"]).settings


def prices(session) -> None:
    session.engine.process(path("ETHUSDT", [(0, 3_000.0), (10, 3_000.0)]))


def buy(qty: float, **kw) -> Order:
    return Order(symbol="ETHUSDT", side=Side.BUY, type=kw.pop("type", OrderType.MARKET), quantity=qty, **kw)


async def running(session) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(session.run())
    await asyncio.sleep(0.3)  # the sync's first poll
    return task


async def test_redis_frozen_or_killed_holds_entries_while_exits_and_cancels_go_out(redis_server):
    armed(redis_server)
    session = build_session(settings_for(redis_server), ListFeed())
    prices(session)
    task = await running(session)
    try:
        assert (await session.gate.submit(buy(0.2))).status is OrderStatus.FILLED
        resting = await session.gate.submit(buy(0.1, type=OrderType.LIMIT, price=2_950.0))
        assert resting.status is OrderStatus.NEW
        for fault in (redis_server.freeze, redis_server.kill):
            fault()
            await until(lambda: session.breaker_backend_problem is not None, timeout=2)
            assert session.breaker_backend_problem.startswith("breaker backend unreachable")
            denied = await session.gate.submit(buy(0.1))
            assert denied.status is OrderStatus.DENIED and "breaker backend unreachable" in denied.reason
            sold = await session.gate.submit(Order(symbol="ETHUSDT", side=Side.SELL, type=OrderType.MARKET,
                                                   quantity=0.05, reduce_only=True))
            assert sold.status is OrderStatus.FILLED  # an exit always goes out
            if fault is redis_server.freeze:
                redis_server.thaw()
                await until(lambda: session.breaker_backend_problem is None, timeout=3)
                assert (await session.gate.submit(buy(0.01))).status is OrderStatus.FILLED
        cancelled = await session.gate.cancel(resting.client_order_id, "operator")
        assert cancelled.status is OrderStatus.CANCELED  # a cancel too, with Redis dead
        assert "breaker backend" in {e.label for e in session.history.entries("alerts")}
        assert not task.done() or task.exception() is None  # nothing crashed (the list feed may have ended)
    finally:
        await session.close("test end")
        task.cancel()


async def test_a_trip_in_one_session_halts_the_other(redis_server):
    armed(redis_server)
    one, two = (build_session(settings_for(redis_server), ListFeed()) for _ in range(2))
    for s in (one, two):
        prices(s)
    tasks = [await running(s) for s in (one, two)]
    try:
        resting = await two.gate.submit(buy(0.1, type=OrderType.LIMIT, price=2_950.0))
        one.force_trigger("the desk lead's kill switch")
        await until(lambda: two.breaker.status is BreakerStatus.TRIGGERED, timeout=1)
        assert two.gate.open_orders() == [] or all(o.reduce_only for o in two.gate.open_orders())
        assert (await two.gate.submit(buy(0.1))).status is OrderStatus.DENIED
        ok, message = two.clear_breaker("reviewed", override=True)
        assert ok, message
        await until(lambda: one.breaker.status is BreakerStatus.SAFE, timeout=1)
        assert resting.client_order_id
    finally:
        for s in (one, two):
            await s.close("test end")
        for t in tasks:
            t.cancel()


def _secured(server, **extra):
    overrides = ["redis.enabled=true", f"redis.url={server.url}", "redis.key_prefix=sgtest",
                 "redis.poll_interval_ms=100", "redis.timeout_ms=500"] + [f"{k}={v}" for k, v in extra.items()]
    env = {"REDIS_PASSWORD": server.password} if server.password else {}
    return load_config(env=env, dotenv_paths=[], overrides=overrides).settings


async def test_a_password_and_tls_are_honoured_and_a_wrong_password_fails_closed(tmp_path):
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path / "tls", password="s3cret-for-tests", tls=True).start()
    try:
        settings = _secured(server, **{"redis.tls_ca_file": str(server.ca_file)})
        armed_here = build_session(settings, ListFeed())
        assert armed_here.breaker.backend_problem and "no breaker state" in armed_here.breaker.backend_problem
        task = await running(armed_here)  # its first read: no state, so TRIGGERED, written back over TLS
        try:
            await until(lambda: armed_here.breaker.status is BreakerStatus.TRIGGERED, timeout=3)
            assert server.client().hget("sgtest:breaker", "state") == b"TRIGGERED"
            ok, message = armed_here.clear_breaker("armed over TLS", override=True)
            assert ok, message
            assert server.client().hget("sgtest:breaker", "state") == b"SAFE"
        finally:
            await armed_here.close("test end")
            task.cancel()
        wrong = server.password
        server.password = "not-it"
        try:
            refused = build_session(_secured(server, **{"redis.tls_ca_file": str(server.ca_file)}), ListFeed())
        finally:
            server.password = wrong
        assert refused.breaker.backend_problem and "unreachable" in refused.breaker.backend_problem
        assert "not-it" not in refused.breaker.backend_problem
        assert (await refused.gate.submit(buy(0.01))).status is OrderStatus.DENIED  # held from the start
    finally:
        server.kill()


async def test_a_shared_breaker_is_not_restored_from_the_process_s_own_journal(redis_server, tmp_path):
    """The journal's last TRIGGERED is this process's past; the deployment's state is Redis's."""
    from core.session import Session

    db = tmp_path / "journal.db"
    alone = Session(load_config(env={}, dotenv_paths=[]).settings, ListFeed(), journal_path=db)
    await alone.open_journal(db)
    alone.force_trigger("an old halt, on this machine only")
    await alone.journal.flush()
    await alone.close("test")
    armed(redis_server)
    shared = build_session(settings_for(redis_server), ListFeed())
    await shared.open_journal(db)
    try:
        assert shared.breaker.status is BreakerStatus.SAFE and shared.breaker.epoch == 1
        assert shared.breaker.backend.load().status is BreakerStatus.SAFE  # nothing pushed into Redis
    finally:
        await shared.close("test end")
