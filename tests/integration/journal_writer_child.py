"""Child process for the journal's process tests.

    python tests/integration/journal_writer_child.py DBPATH               write forever
    python tests/integration/journal_writer_child.py DBPATH --hold        hold the journal open
    python tests/integration/journal_writer_child.py DBPATH --leave-open  write a row, exit unclosed

Writing: prints "ready" once the journal is open, then one line "ack TABLE ID" per write,
only after the awaited commit. Breaker transitions go through the real state machine,
restored from the journal's last breaker record at start, so epochs must stay consecutive
across kills. A thread writes operator actions through the thread-safe submit path.

--hold prints "ready" and keeps the journal (and its lock) until stdin closes.
--leave-open writes one row, prints "ready" and returns without closing the journal: the
process must still exit.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.breaker.backend import MemoryBackend  # noqa: E402
from core.breaker.machine import BreakerRecord  # noqa: E402
from core.breaker.state import CircuitBreakerState  # noqa: E402
from core.events import Actor, BreakerStatus, SpikeDetected, SpikeType  # noqa: E402
from core.journal import Journal  # noqa: E402
from core.trading.orders import Fill, Order, OrderStatus, OrderType, Side  # noqa: E402

T0 = 1_700_000_000_000
_out = threading.Lock()


def say(line: str) -> None:
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


async def breaker_loop(j: Journal, state: CircuitBreakerState) -> None:
    snap = {"references": {"BTCUSDT": {"price": 42_000.0, "drop_60m_percent": 16.0},
                           "ETHUSDT": {"price": 2_000.0, "drop_60m_percent": 12.0}}}
    while True:
        t = T0 + state.epoch * 1000
        st = state.status
        if st is BreakerStatus.SAFE:
            if state.epoch % 3:
                state.trigger("BTC -16%", {"drop_percent": 16.0}, snap, time_ms=t, symbol="BTCUSDT",
                              trigger_type="btc_dump")
            else:
                state.set_warning("BTC -11%", {"drop_percent": 11.0}, time_ms=t, symbol="BTCUSDT")
        elif st is BreakerStatus.WARNING:
            state.trigger("BTC -15%", {"drop_percent": 15.0}, snap, time_ms=t, symbol="BTCUSDT",
                          trigger_type="btc_dump")
        elif st is BreakerStatus.TRIGGERED:
            state.start_recovery(time_ms=t)
        else:
            state.clear(50.0, actor=Actor.RULE, time_ms=t)
        change = state.history[-1]
        row_id = await j.record_breaker_change(change, state.snapshot().to_dict())
        say(f"ack circuit_breaker_events {row_id}")


async def order_loop(j: Journal, k: int) -> None:
    i = 0
    while True:
        i += 1
        o = Order("BTCUSDT", Side.BUY, OrderType.LIMIT, 0.01, price=50_000.0, created_ms=T0 + i)
        say(f"ack orders {await j.record_order(o, T0 + i)}")
        say(f"ack orders {await j.record_order(o.with_(status=OrderStatus.NEW), T0 + i)}")
        fill = Fill(o.client_order_id, "BTCUSDT", Side.BUY, 0.01, 50_000.0, 0.5, "taker", T0 + i)
        say(f"ack fills {await j.record_fill(fill)}")
        done = o.with_(status=OrderStatus.FILLED, filled_quantity=0.01, average_price=50_000.0)
        say(f"ack orders {await j.record_order(done, T0 + i)}")


async def spike_loop(j: Journal) -> None:
    i = 0
    while True:
        i += 1
        s = SpikeDetected("SOLUSDT", SpikeType.SPOT_PRICE_SPIKE, "pump", 6.0, 5, 3.0, 100.0, 106.0, 0.8, T0 + i, 1.0)
        sid = await j.record_spike(s)
        say(f"ack spike_events {sid}")
        say(f"ack row_updates {await j.update_spike(sid, status='analyzed', pnl=float(i))}")


def thread_loop(j: Journal, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        fut = j.submit("operator_action", {"action": "note", "reason": f"thread {i}"})
        say(f"ack operator_actions {fut.result(timeout=30)}")


async def hold(path: str) -> None:
    j = await Journal.open(path)
    try:
        say("ready")
        await asyncio.to_thread(sys.stdin.read)
    finally:
        await j.close()


async def leave_open(path: str) -> None:
    j = await Journal.open(path)
    await j.record_operator_action("note", "left open")
    say("ready")


async def main(path: str) -> None:
    j = await Journal.open(path)
    rec = await j.last_breaker_record()
    state = CircuitBreakerState(MemoryBackend(BreakerRecord.from_dict(rec) if rec else None))
    say("ready")
    stop = threading.Event()
    th = threading.Thread(target=thread_loop, args=(j, stop), daemon=True)
    th.start()
    await asyncio.gather(breaker_loop(j, state), order_loop(j, 1), order_loop(j, 2), spike_loop(j))


if __name__ == "__main__":
    mode = {"--hold": hold, "--leave-open": leave_open}.get(sys.argv[2] if len(sys.argv) > 2 else "", main)
    asyncio.run(mode(sys.argv[1]))
