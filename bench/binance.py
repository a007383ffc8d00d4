"""bench/binance: the Binance feed's parsing speed and frame-to-halt latency.

Prints figures; asserts nothing (the tests check what the feed does; its speed is measured here):
- websocket frames parsed into events per second on one core: a mix of combined aggTrade,
  bookTicker and depth5 frames of 50 symbols, from the bytes on the wire (orjson) to Ticks,
  Quotes and Depths (goal >= 100,000/s); and from the dicts python-binance hands over;
- frame-to-halt: the fake Binance (tests/fakes/binance) on loopback writes a trade 16% below
  BTC's 60-minute high, and the breaker's halt step runs: p50 and p99 (goal p99 <= 5 ms). Each
  trial starts a feed and an engine (the breaker trips once), so start-up to a backfilled
  feed is printed too.
Run: .venv/bin/python bench/binance.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # not bench/: this file's name would shadow python-binance

import orjson  # noqa: E402

from bench.common import fifty_symbols, pct, quiet_logs  # noqa: E402
from core.config import load_config  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.market.binance_feed import BinanceFeed  # noqa: E402
from core.market.binance_messages import parse_frame, parse_message  # noqa: E402
from core.settings import BinanceSettings  # noqa: E402
from tests.fakes.binance import FakeBinance  # noqa: E402

T0 = 1_700_000_000_000
CRASH_PRICE = 84_000.0  # 16% under the flat 100,000 history: TRIGGERED on one trade


def frame_mix(symbols: list[str], n: int) -> list[bytes]:
    """Half trades, a quarter best bid/ask, a quarter depth5 snapshots, as Binance sends them."""
    out = []
    for i in range(n):
        s = symbols[i % len(symbols)]
        low, price = s.lower(), 100.0 + (i % 97) * 0.01
        kind = i % 4
        if kind < 2:
            data = {"e": "aggTrade", "E": T0 + i, "s": s, "a": i, "p": f"{price:.8f}", "q": "0.01200000",
                    "f": i, "l": i, "T": T0 + i, "m": bool(i & 1), "M": True}
            stream = f"{low}@aggTrade"
        elif kind == 2:
            data = {"u": i, "s": s, "b": f"{price - 0.01:.8f}", "B": "1.50000000", "a": f"{price + 0.01:.8f}",
                    "A": "2.25000000"}
            stream = f"{low}@bookTicker"
        else:
            data = {"lastUpdateId": i, "bids": [[f"{price - k * 0.01:.8f}", f"{k:.8f}"] for k in range(1, 6)],
                    "asks": [[f"{price + k * 0.01:.8f}", f"{k:.8f}"] for k in range(1, 6)]}
            stream = f"{low}@depth5@100ms"
        out.append(orjson.dumps({"stream": stream, "data": data}))
    return out


def parse_rate(frames: list, parse, runs: int) -> list[float]:
    rates = []
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        for raw in frames:
            parse(raw)
        rates.append(len(frames) / (time.perf_counter() - started))
    return rates


async def frame_to_halt(settings, trials: int) -> tuple[list[float], list[float]]:
    """Microseconds from the crossing frame's write to the halt step; milliseconds from a feed's
    start to its last symbol backfilled."""
    server = await FakeBinance().start()
    halts, startups = [], []
    try:
        now = server.now_ms()
        start = now - now % 60_000 - 120 * 60_000
        server.market.set_history("BTCUSDT", start, [100_000.0] * 24 * 60)  # flat through the whole run
        written: list[int] = []

        def on_write(stream: str, payload, ns: int) -> None:
            if stream == "btcusdt@aggTrade" and float(payload["p"]) == CRASH_PRICE:
                written.append(ns)

        server.market.write_listeners.append(on_write)
        binance = BinanceSettings(symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"], futures=False)
        for _ in range(trials):
            server.set_price("BTCUSDT", 100_000.0)
            feed = BinanceFeed(binance, server.endpoints())
            engine = Engine(settings, feed)
            halted, backfilled = asyncio.Event(), asyncio.Event()
            halt_ns: list[int] = []

            def halt(change, halt_ns=halt_ns, halted=halted) -> None:
                halt_ns.append(time.perf_counter_ns())
                halted.set()

            def after_batch(feed=feed, backfilled=backfilled) -> None:
                if feed.stats.gaps_filled == len(feed.symbols):
                    backfilled.set()

            engine.breaker.add_halt_step(halt)
            started = time.perf_counter()
            run = asyncio.create_task(engine.run(on_batch=after_batch))
            try:
                await backfilled.wait()
                startups.append((time.perf_counter() - started) * 1000)
                written.clear()
                server.set_price("BTCUSDT", CRASH_PRICE)
                await halted.wait()
                halts.append((halt_ns[0] - written[0]) / 1000)
            finally:
                engine.stop()
                await run
    finally:
        await server.stop()
    return halts, startups


def main() -> None:
    quiet_logs()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs and trials (for CI smoke)")
    args = ap.parse_args()
    runs, trials = (3, 30) if args.quick else (9, 200)
    settings = load_config(env={}, dotenv_paths=[]).settings

    frames = frame_mix(fifty_symbols(), 200_000)
    rates = parse_rate(frames, parse_frame, runs)
    print(f"frames parsed, bytes -> events (orjson), {len(frames):,} combined frames (aggTrade 1/2, bookTicker 1/4, "
          f"depth5 1/4), 50 symbols, one core, {runs} runs:")
    print(f"  median {statistics.median(rates):,.0f} frames/s   (min {min(rates):,.0f}, max {max(rates):,.0f}; "
          f"goal >= 100,000)")
    decoded = [orjson.loads(f) for f in frames]
    rates = parse_rate(decoded, parse_message, runs)
    print(f"frames parsed, decoded dicts -> events (what python-binance hands the feed), {runs} runs:")
    print(f"  median {statistics.median(rates):,.0f} frames/s   (min {min(rates):,.0f}, max {max(rates):,.0f})")

    halts, startups = asyncio.run(frame_to_halt(settings, trials))
    print(f"frame-to-halt over loopback, the fake server's crossing trade written -> the breaker's halt step, "
          f"{trials} trials:")
    print(f"  p50 {pct(halts, 0.5) / 1000:.2f} ms   p99 {pct(halts, 0.99) / 1000:.2f} ms   "
          f"max {max(halts) / 1000:.2f} ms   (goal p99 <= 5 ms)")
    print(f"start-up to backfilled (client, exchangeInfo, socket, 3 x 60 min of klines), {trials} trials:")
    print(f"  median {statistics.median(startups):.1f} ms   p99 {pct(startups, 0.99):.1f} ms")


if __name__ == "__main__":
    main()
