"""bench/bench_binance: the Binance feed's parsing speed and frame-to-halt latency.

Prints figures; asserts nothing (the tests check what the feed does; its speed is measured here):
- websocket frames parsed into events per second on one core: a mix of combined aggTrade,
  bookTicker and depth5 frames of 50 symbols, from the bytes on the wire to Ticks, Quotes and
  Depths, as the feed's decoder does in python-binance's read loop (goal >= 100,000/s); and
  the same through a dict (orjson, then dict -> event), the path before;
- frame-to-halt: a testnet session (the composition root's: journal, BinanceExchange, Binance
  feed) on the fake Binance (tests/fakes/binance) over loopback, a resting entry; the server
  writes a trade 16% below BTC's 60-minute high, and the gate's halt issues the entry's cancel:
  p50 and p99 (goal p99 <= 5 ms). Each trial starts a whole session, so start-up to a
  backfilled feed is printed too;
- start-up to the first live price on screen: `spikeguard console --feed binance` in tmux on
  the fake as the testnet, until a live trade's price is drawn.
Run: .venv/bin/python bench/bench_binance.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo: core/ and console/

import orjson  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from _kit import fifty_symbols, pct, quiet_logs  # noqa: E402
from core.config import load_config  # noqa: E402
from core.market.binance_feed import BinanceFeed  # noqa: E402
from core.market.binance_messages import parse_frame, parse_message  # noqa: E402
from core.settings import BinanceSettings  # noqa: E402
from core.trading.orders import Order, OrderType, Side  # noqa: E402
from core.wiring import FeedChoice, JournalChoice, Venue, build_feed, build_session, open_journal  # noqa: E402
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


def on_fake(settings, server: FakeBinance):
    """The shipped settings with the testnet on the fake server, and (fake) keys: a testnet session."""
    binance = BinanceSettings(symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"], futures=False, testnet=server.endpoints())
    return settings.model_copy(update={"binance": binance, "secrets": settings.secrets.model_copy(update={
        "binance_api_key": SecretStr("bench-key"), "binance_secret_key": SecretStr("bench-secret")})})


async def frame_to_halt(settings, trials: int, workdir: Path) -> tuple[list[float], list[float]]:
    """Microseconds from the crossing frame's write to the end of the gate's halt (its cancel
    of a resting entry issued); milliseconds from building a testnet session (journal, exchange
    start and reconcile, feed) to its last symbol backfilled."""
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
        settings = on_fake(settings, server)
        venue = Venue("testnet", "testnet")
        for trial in range(trials):
            server.set_price("BTCUSDT", 100_000.0)
            # each trial is one start: 200 of them in a minute would spend the IP's request weight, and
            # the exchange's throttle would (rightly) hold the reconcile's openOrders to the next minute
            server.trading.reset_weight()
            started = time.perf_counter()
            session = build_session(settings, build_feed(settings, FeedChoice(kind="binance"), venue).feed,
                                    JournalChoice(workdir / f"journal-{trial}.db"), venue=venue)
            backfilled = asyncio.Event()

            def after_batch(feed=session.feed, backfilled=backfilled) -> None:
                if feed.stats.gaps_filled == len(feed.symbols):
                    backfilled.set()

            await open_journal(session, JournalChoice(workdir / f"journal-{trial}.db"))
            await session.start_venue()
            run = asyncio.create_task(session.run(on_batch=after_batch))
            try:
                await backfilled.wait()
                startups.append((time.perf_counter() - started) * 1000)
                server.set_price("BTCUSDT", 100_000.0)  # a live price for the entry's reference
                while session.engine.market.symbols["BTCUSDT"].last_time < server.now_ms() - 1000:
                    await asyncio.sleep(0.001)
                entry = await session.gate.submit(Order(symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT,
                                                        quantity=0.002, price=99_000.0))
                assert entry.status.is_open, entry
                written.clear()
                halted_before = session.gate.last_halt_ns
                server.set_price("BTCUSDT", CRASH_PRICE)
                while session.gate.last_halt_ns == halted_before:
                    await asyncio.sleep(0)
                halts.append((session.gate.last_halt_ns - written[0]) / 1000)
            finally:
                await session.close("bench trial over")
                await run
    finally:
        await server.stop()
    return halts, startups


def first_price_on_screen(trials: int, workdir: Path) -> list[float] | None:
    """Seconds from `spikeguard console --feed binance` (testnet keys, the fake as the testnet)
    being started in a real terminal (tmux) to a live trade's price on its screen; None
    without tmux."""
    import shutil
    import threading

    if shutil.which("tmux") is None:
        return None
    from tests.e2e.test_tmux import Tmux
    from tests.e2e.test_tmux_binance import command, config_on
    from tests.fakes.binance.threaded import ThreadedFake

    fake = ThreadedFake()
    streaming = threading.Event()

    def trade_every_20ms() -> None:  # a live price the backfill never had
        while not streaming.wait(0.02):
            fake.call(fake.server.set_price, "BTCUSDT", 100_123.45)

    pusher = threading.Thread(target=trade_every_20ms, daemon=True)
    pusher.start()
    seconds = []
    try:
        config = config_on(fake, workdir / "binance.yaml")
        for trial in range(trials):
            term = Tmux(workdir)
            try:
                started = time.monotonic()
                term.start(command(workdir / f"sg-{trial}", config))
                term.wait_for("100,123.45", "TESTNET", timeout=60)
                seconds.append(time.monotonic() - started)
                term.keys("q")
                term.wait_for("SPIKEGUARD-EXIT=", timeout=30)
            finally:
                term.kill()
    finally:
        streaming.set()
        pusher.join(5)
        fake.stop()
    return seconds


def main() -> None:
    quiet_logs()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs and trials (for CI smoke)")
    args = ap.parse_args()
    runs, trials = (3, 30) if args.quick else (9, 200)
    settings = load_config(env={}, dotenv_paths=[]).settings

    frames = frame_mix(fifty_symbols(), 200_000)
    print(f"frames parsed, bytes -> events on one core, 50 symbols, median of {runs} runs: the feed's decoder (in "
          f"python-binance's read loop: msgspec into typed fields for trades and quotes, orjson for the rest) and the "
          f"path before it (orjson to a dict, then dict -> event)")
    kinds = {"aggTrade": frames[0::4] + frames[1::4], "bookTicker": frames[2::4], "depth5": frames[3::4],
             "the mix (trades 1/2, bookTicker 1/4, depth5 1/4)": frames}
    for name, sample in kinds.items():
        decoder = statistics.median(parse_rate(sample, parse_frame, runs))
        general = statistics.median(parse_rate(sample, lambda raw: parse_message(orjson.loads(raw)), runs))
        goal = "   goal >= 100,000" if sample is frames else ""
        print(f"  {name:<48} {decoder:>10,.0f} frames/s   before {general:>10,.0f}   {decoder / general:4.2f}x{goal}")

    with tempfile.TemporaryDirectory() as workdir:
        halts, startups = asyncio.run(frame_to_halt(settings, trials, Path(workdir)))
    print(f"frame-to-halt over loopback, a testnet session on the fake: the crossing trade written -> the gate's "
          f"halt (a resting entry's cancel issued), {trials} trials:")
    print(f"  p50 {pct(halts, 0.5) / 1000:.2f} ms   p99 {pct(halts, 0.99) / 1000:.2f} ms   "
          f"max {max(halts) / 1000:.2f} ms   (goal p99 <= 5 ms)")
    print(f"start-up to backfilled (journal, exchange start and reconcile, feed client, socket, 3 x 60 min of "
          f"klines), {trials} trials:")
    print(f"  median {statistics.median(startups):.1f} ms   p99 {pct(startups, 0.99):.1f} ms")
    screens = 3 if args.quick else 9
    with tempfile.TemporaryDirectory() as workdir:
        shown = first_price_on_screen(screens, Path(workdir))
    if shown is None:
        print("start-up to the first live price on screen: tmux is not installed, skipped")
    else:
        print(f"start-up to the first live price on screen (the console process started in tmux -> a live BTC "
              f"trade's price drawn; Python start and imports included), {screens} trials:")
        print(f"  median {statistics.median(shown):.2f} s   max {max(shown):.2f} s")


if __name__ == "__main__":
    main()
