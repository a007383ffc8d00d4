"""bench/bench_trading: the order gate, the halt and the durability of a trip. Prints figures,
asserts nothing.

- gate checks per second: the full pre-trade check of an allowed limit order, one caller;
- gate submits per second: check, reservation, a journaled intent (an in-memory journal
  that takes a turn of the loop, as a commit does), the send and the fill of a market
  buy, with 1 and with 50 concurrent submitters;
- tick-to-halt: from receiving the crossing tick until the breaker is TRIGGERED and the
  halt step has cancelled every resting entry (20 resting orders on the paper exchange);
- trip-to-durable: from an operator's trip (or the crossing tick of a rule trip) until its
  circuit_breaker_events row is committed (synchronous=FULL) in a journal on disk.
Run: .venv/bin/python bench/bench_trading.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _kit import pct, quiet_logs  # noqa: E402
from core import compiled  # noqa: E402
from core.config import load_config  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.events import BreakerStatus, Tick  # noqa: E402
from core.session import Session  # noqa: E402
from core.trading.gate import OrderGate  # noqa: E402
from core.trading.orders import Order, OrderStatus, OrderType, Side  # noqa: E402
from core.trading.paper import PaperExchange  # noqa: E402
from core.trading.portfolio import Portfolio  # noqa: E402
from tests.helpers import ListFeed, TurnJournal, path  # noqa: E402

T0 = 1_700_000_000_000


class _NullFeed:
    name, realtime, cadence_ms = "bench", False, 1000

    def __init__(self) -> None:
        self.pause_marks: list[bool] = []  # never paused (core.market.feed.Feed's)


def rig(settings, journal=None, breaker=None):
    engine = Engine(settings, _NullFeed(), breaker=breaker)
    portfolio = Portfolio(1e9)
    exchange = PaperExchange(settings.execution.paper.model_copy(update={"starting_balance_usd": 1e9}),
                             engine.market, engine.now_ms)
    # unvalidated copy: a benchmark's caps may exceed what the config accepts
    risk = settings.risk_management.model_copy(update={
        "max_orders_per_minute": 10 ** 9, "max_position_notional_usd": 1e12, "max_open_positions": 10 ** 6,
        "daily_loss_limit_usd": 1e12, "weekly_loss_limit_usd": 1e12})
    gate = OrderGate(risk, engine.breaker, engine.market, exchange, portfolio, journal, clock=engine.now_ms)
    engine.tick_listeners.append(gate.on_market_tick)
    engine.process([Tick("BTCUSDT", 100_000.0, 1.0, T0 + i * 1000) for i in range(300)])
    return engine, gate


def resting_bid(i: int, price: float = 99_000.0) -> Order:
    return Order(symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity=0.001, price=price - i * 0.01,
                 client_order_id=f"bid-{i}")


def gate_checks(settings, n: int, breaker=None) -> float:
    _, gate = rig(settings, breaker=breaker)
    order = resting_bid(0)
    started = time.perf_counter()
    for _ in range(n):
        decision = gate.check(order)
    elapsed = time.perf_counter() - started
    assert decision.allowed, decision.reason
    return n / elapsed


def gate_submits(settings, n: int, concurrency: int) -> float:
    _, gate = rig(settings, TurnJournal())
    buys = [Order(symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.001, client_order_id=f"m{i}")
            for i in range(n)]

    async def submitter(share: list[Order]) -> None:
        for order in share:
            assert (await gate.submit(order)).status is OrderStatus.FILLED

    async def go() -> float:
        shares = [buys[k::concurrency] for k in range(concurrency)]
        started = time.perf_counter()
        await asyncio.gather(*(submitter(s) for s in shares))
        return time.perf_counter() - started

    return n / asyncio.run(go())


def tick_to_halt(settings, trials: int) -> list[float]:
    out = []
    for _ in range(trials):
        engine, gate = rig(settings)
        for i in range(20):
            assert gate.submit_now(resting_bid(i)).status is OrderStatus.NEW
        crossing = Tick("BTCUSDT", 84_000.0, 1.0, T0 + 301 * 1000)
        t0 = time.perf_counter_ns()
        engine.process([crossing])
        done = gate.last_halt_ns
        assert engine.breaker.status is BreakerStatus.TRIGGERED and not gate.open_orders()
        out.append((done - t0) / 1000.0)
    return out


async def trip_to_durable(settings, trials: int, tmp: Path, rule: bool) -> list[float]:
    out = []
    for i in range(trials):
        db = tmp / f"trip-{'rule' if rule else 'op'}-{i}.db"
        session = Session(settings, ListFeed(), journal_path=db)
        await session.open_journal(db)
        try:
            session.engine.process(path("BTCUSDT", [(0, 100_000.0), (30, 100_000.0)], step_ms=5000))
            await session.journal.flush()
            t0 = time.perf_counter_ns()
            if rule:
                session.engine.process([Tick("BTCUSDT", 84_000.0, 1.0, T0 + 31 * 60_000)])
            else:
                session.force_trigger("bench")
            assert session.breaker.status is BreakerStatus.TRIGGERED
            await session.wait_saved(session.breaker.epoch)
            out.append((time.perf_counter_ns() - t0) / 1e6)
        finally:
            await session.close()
    return out


def main() -> None:
    quiet_logs()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(f"engine hot path: {compiled.running()}")
    settings = load_config(env={}, dotenv_paths=[]).settings
    checks, submits, trials, trips = (20_000, 2_000, 100, 15) if args.quick else (200_000, 20_000, 1000, 60)
    rates = [gate_checks(settings, checks) for _ in range(3)]
    print(f"gate checks, one caller: median {statistics.median(rates):,.0f} per second ({checks:,} x 3 runs)")
    for concurrency in (1, 50):
        rates = [gate_submits(settings, submits, concurrency) for _ in range(3)]
        print(f"gate submits (check, reserve, intent, send), {concurrency} concurrent submitter(s): "
              f"median {statistics.median(rates):,.0f} per second ({submits:,} x 3 runs)")
    lat = tick_to_halt(settings, trials)
    print(f"tick-to-halt, the halt step cancelling 20 resting entries, {trials} trials:")
    print(f"  p50 {pct(lat, 0.5):.1f} us   p99 {pct(lat, 0.99):.1f} us   max {max(lat):.1f} us   (goal p99 <= 1000 us)")
    with tempfile.TemporaryDirectory() as tmp:
        for rule in (False, True):
            lat = asyncio.run(trip_to_durable(settings, trips, Path(tmp), rule))
            what = "rule trip (crossing tick)" if rule else "operator trip"
            print(f"trip-to-durable, {what} -> its breaker row committed (synchronous=FULL), {trips} trials: "
                  f"p50 {pct(lat, 0.5):.2f} ms   p99 {pct(lat, 0.99):.2f} ms")


if __name__ == "__main__":
    main()
