"""A property of the shared breaker's writes under contention, on a real redis-server: many
writers, each on its own connection, mixing trips, warnings and clears from whatever they last
read. TRIGGERED wins every race, epochs never go backwards or skip, and no order passes the
gate's fence with an epoch it did not read last."""

from __future__ import annotations

import threading

import redis as sync_redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.breaker.machine import BreakerRecord
from core.breaker.redis_backend import RedisBackend
from core.breaker.state import CircuitBreakerState
from core.config import load_config
from core.events import Actor, BreakerStatus
from core.market.state import MarketState
from core.session import paper_exchange
from core.trading.gate import OrderGate
from core.trading.orders import Order, OrderType, Side
from core.trading.portfolio import Portfolio
from tests.redis_server import RedisServer

T, S, W = BreakerStatus.TRIGGERED, BreakerStatus.SAFE, BreakerStatus.WARNING
OPS = st.lists(st.sampled_from(["trip", "warn", "clear", "read"]), min_size=5, max_size=25)


def test_concurrent_writers_keep_the_breaker_s_invariants(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        _property(server)
    finally:
        server.kill()


def _property(server: RedisServer) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(OPS, min_size=2, max_size=6))
    def run(plans: list[list[str]]) -> None:
        admin = server.client()
        admin.flushdb()
        RedisBackend(admin, "p").write(0, BreakerRecord(status=S, reason="armed", actor=Actor.OPERATOR))
        writes: list[tuple[str, int, int | None, BreakerStatus]] = []  # (op, expected, written epoch, status read)
        lock = threading.Lock()
        start = threading.Barrier(len(plans))

        def writer(plan: list[str]) -> None:
            backend = RedisBackend(sync_redis.Redis.from_url(server.url, socket_timeout=2), "p")
            start.wait()
            for op in plan:
                seen = backend.load()
                if op == "read":
                    continue
                status, actor = {"trip": (T, Actor.AGENT), "warn": (W, Actor.RULE),
                                 "clear": (S, Actor.OPERATOR)}[op]
                result = backend.write(seen.epoch, BreakerRecord(status=status, reason=op, actor=actor))
                with lock:
                    writes.append((op, seen.epoch, result, seen.status))

        threads = [threading.Thread(target=writer, args=(plan,)) for plan in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        history = RedisBackend(admin, "p").history(10_000)
        epochs = [r.epoch for r in history]
        assert epochs == list(range(1, len(history) + 1)), epochs  # never backwards, never a gap
        written = sorted((w for w in writes if w[2] is not None), key=lambda w: w[2])
        assert [w[2] for w in written] == epochs[1:]  # every write that said so is in the history, once
        for op, expected, epoch, _ in written:
            if op != "trip":
                assert expected == epoch - 1, (op, expected, epoch)  # a loosening needs the latest epoch
        by_epoch = {r.epoch: r for r in history}
        for op, expected, epoch, seen_status in writes:
            if op == "trip" and epoch is None:
                # refused only because the breaker was TRIGGERED at that moment: the trip stands
                later = [r for r in history if r.epoch > expected]
                assert seen_status is T or any(r.status is T for r in later), (expected, later)
            if op == "trip" and epoch is not None:
                assert by_epoch[epoch].status is T and by_epoch[epoch - 1].status is not T
        _the_gate_refuses_a_stale_epoch(server, history[-1].epoch)

    run()


def _the_gate_refuses_a_stale_epoch(server: RedisServer, latest: int) -> None:
    settings_ = load_config(env={}, dotenv_paths=[]).settings
    breaker = CircuitBreakerState(RedisBackend(server.client(), "p"))
    market = MarketState(long_minutes=(1440,))  # the gate's falling_coin horizon
    gate = OrderGate(settings_.risk_management, breaker, market, paper_exchange(settings_, market, lambda: 0),
                     Portfolio(10_000.0))
    order = Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.01)
    for epoch_read in range(max(0, latest - 2), latest):
        decision = gate.check(order, epoch_read=epoch_read)
        assert not decision.allowed and "stale breaker epoch" in decision.reason, (epoch_read, decision)
