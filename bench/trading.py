"""bench/trading: the order gate and the journal, measured. Prints figures, asserts nothing.

- gate checks per second (the full pre-trade check of an allowed limit order);
- tick-to-halt with the gate: from receiving the crossing tick until the breaker is
  TRIGGERED, the gate denies new orders and the cancels of every open order are issued
  (20 resting orders on the paper exchange);
- journal rows per second with synchronous=FULL: one commit per row, and batched.
Run: .venv/bin/python bench/trading.py [--quick]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import pct, quiet_logs  # noqa: E402
from core.config import load_config  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.events import BreakerStatus, Tick  # noqa: E402
from core.journal import Journal  # noqa: E402
from core.trading.gate import OrderGate  # noqa: E402
from core.trading.orders import Order, OrderStatus, OrderType, Side  # noqa: E402
from core.trading.paper import PaperExchange  # noqa: E402
from core.trading.portfolio import Portfolio  # noqa: E402

T0 = 1_700_000_000_000


class _NullFeed:
    name, realtime, cadence_ms = "bench", False, 1000


def rig(settings):
    engine = Engine(settings, _NullFeed())
    portfolio = Portfolio(settings.execution.paper.starting_balance_usd)
    exchange = PaperExchange(settings.execution.paper, engine.market, engine.now_ms)
    risk = settings.risk_management.model_copy(update={"max_orders_per_minute": 1_000_000})
    gate = OrderGate(risk, engine.breaker, engine.market, exchange, portfolio, clock=engine.now_ms)
    engine.process([Tick("BTCUSDT", 100_000.0, 1.0, T0 + i * 1000) for i in range(300)])
    return engine, gate, exchange


def gate_checks(settings, n: int) -> float:
    _, gate, _ = rig(settings)
    order = Order(symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity=0.001, price=99_900.0)
    started = time.perf_counter()
    for _ in range(n):
        decision = gate.check(order)
    elapsed = time.perf_counter() - started
    assert decision.allowed, decision.reason
    return n / elapsed


def tick_to_halt(settings, trials: int) -> list[float]:
    out = []
    for _ in range(trials):
        engine, gate, exchange = rig(settings)
        for i in range(20):
            placed = exchange.place_now(Order(symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity=0.0005,
                                              price=99_000.0 - i, client_order_id=f"rest-{i}"))
            assert placed.status is OrderStatus.NEW
        crossing = Tick("BTCUSDT", 84_000.0, 1.0, T0 + 301 * 1000)
        t0 = time.perf_counter_ns()
        engine.process([crossing])
        done = gate.last_halt_ns
        assert engine.breaker.status is BreakerStatus.TRIGGERED and not exchange.open_orders()
        assert not gate.check(Order(symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.001)).allowed
        out.append((done - t0) / 1000.0)
    return out


async def journal_rows(n: int, batching: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        journal = await Journal.open(Path(tmp) / "bench.db", batching=batching)
        orders = [Order(symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity=0.001, price=99_000.0,
                        client_order_id=f"o{i}") for i in range(n)]
        started = time.perf_counter()
        await asyncio.gather(*(journal.record_order(o, T0 + i) for i, o in enumerate(orders)))
        elapsed = time.perf_counter() - started
        await journal.close()
        return n / elapsed



def main() -> None:
    quiet_logs()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    settings = load_config(env={}, dotenv_paths=[]).settings
    checks, trials, rows = (20_000, 100, 500) if args.quick else (200_000, 1000, 3000)
    rates = [gate_checks(settings, checks) for _ in range(3)]
    print(f"gate checks: median {statistics.median(rates):,.0f} per second ({checks:,} checks x 3 runs)")
    lat = tick_to_halt(settings, trials)
    print(f"tick-to-halt with the gate, 20 open orders cancelled, {trials} trials:")
    print(f"  p50 {pct(lat, 0.5):.1f} us   p99 {pct(lat, 0.99):.1f} us   max {max(lat):.1f} us   (goal p99 <= 1000 us)")
    single = asyncio.run(journal_rows(rows // 5, batching=False))
    batched = asyncio.run(journal_rows(rows, batching=True))
    print(f"journal order rows, synchronous=FULL: {single:,.0f} rows/s one commit per row; "
          f"{batched:,.0f} rows/s batched ({batched / single:.1f}x)")


if __name__ == "__main__":
    main()
