"""bench/bench_peers: the engine against a plain loop and NautilusTrader on the same real ticks.

Prints figures; asserts nothing.
- The stream: every 1-minute file in ../shared/data/market, dealt round-robin to N symbols
  (the first two are BTCUSDT and ETHUSDT on their own files, so the breaker has its
  references), each re-based to one start time, 4 ticks a candle on the O-L-H-C path (O-H-L-C
  for a falling candle), 15 s apart, merged in time order. The ticks are built before the
  clock starts.
- The rows: a plain-Python loop keeping only a 60-minute rolling max per symbol and flagging
  a 15% drop; spikeguard's `Engine.process` (windows, guardian with the slow-crash rules,
  scanner); NautilusTrader's BacktestEngine with the same rolling-max detector, when the
  optional `bench` extra is installed (`pip install -e .[bench]`; the row says when it is not).
- Each as ticks/s and as its time over the plain loop's, for 50 and 500 symbols (the same
  candles dealt 10x wider), so the cost per tick as symbols grow shows. The engine's row runs
  the compiled hot path when it is built (the header says); a child process with
  SPIKEGUARD_PURE_PYTHON=1 gives the pure-Python row on the same stream.
Run: make bench-peers   (or .venv/bin/python bench/bench_peers.py [--quick])
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import os
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _kit import quiet_logs  # noqa: E402

from core import compiled  # noqa: E402
from core.config import load_config  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.events import Tick  # noqa: E402

MARKET = REPO.parent / "shared" / "data" / "market"
STEP_MS = 15_000
DROP_PERCENT = 15.0
WINDOW_MS = 60 * 60_000


def candle_files() -> list[Path]:
    files = sorted(p for p in MARKET.glob("*-1m-*.csv"))
    if not files:
        raise SystemExit(f"no 1-minute candle files in {MARKET} (the benchmark reads ../shared/data/market)")
    refs = [next(p for p in files if p.name.startswith(s)) for s in ("BTCUSDT", "ETHUSDT")]
    return refs + [p for p in files if p not in refs]


def read_candles(path: Path) -> list[tuple[int, float, float, float, float, float]]:
    """open time, O, H, L, C, volume of a Binance kline CSV (these files are clean: checked by the tests)."""
    with path.open() as f:
        next(f)
        return [(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]))
                for r in (line.split(",") for line in f)]


def build_stream(symbols: int, max_candles: int | None) -> list[Tick]:
    files = candle_files()
    base = 1_700_000_000_000
    streams = []
    for i in range(symbols):
        path = files[i % len(files)]
        name = path.name.split("-")[0] if i < 2 else f"S{i:03d}USDT"
        candles = read_candles(path)[:max_candles]
        start = candles[0][0]
        ticks = []
        for t, o, h, lo, c, v in candles:
            t0 = base + (t - start)
            path4 = (o, lo, h, c) if c >= o else (o, h, lo, c)
            ticks.extend(Tick(name, p, v / 4, t0 + k * STEP_MS) for k, p in enumerate(path4))
        streams.append(ticks)
    return list(heapq.merge(*streams, key=lambda tick: tick.time_ms))


def plain_loop(ticks: list[Tick]) -> tuple[float, int]:
    """A 60-minute rolling max per symbol (a monotonic deque) and a 15% drop flag: the least a
    crash detector can do."""
    highs: dict[str, deque] = {}
    flagged = 0
    started = time.perf_counter()
    for tick in ticks:
        d = highs.get(tick.symbol)
        if d is None:
            d = highs[tick.symbol] = deque()
        p, t = tick.price, tick.time_ms
        while d and d[-1][0] <= p:
            d.pop()
        d.append((p, t))
        while d[0][1] <= t - WINDOW_MS:
            d.popleft()
        if (d[0][0] - p) / d[0][0] * 100.0 >= DROP_PERCENT:
            flagged += 1
    return time.perf_counter() - started, flagged


class _Feed:
    name, realtime, cadence_ms, paused = "bench", False, STEP_MS, False

    def __init__(self) -> None:
        self.pause_marks: list[bool] = []


def spikeguard(ticks: list[Tick], settings) -> tuple[float, int]:
    engine = Engine(settings, _Feed())
    started = time.perf_counter()
    for i in range(0, len(ticks), 512):
        engine.process(ticks[i:i + 512])
    return time.perf_counter() - started, len(engine.spikes)


def nautilus(ticks: list[Tick]) -> tuple[float, int] | str:
    try:
        import _nautilus_peer
    except ImportError as exc:
        return f"not installed ({exc.name}): pip install -e .[bench]"
    return _nautilus_peer.run(ticks, WINDOW_MS, DROP_PERCENT)


def pure_python(symbols: int, runs: int, candles: int | None) -> tuple[float, float]:
    """(engine, plain loop) median seconds on the pure-Python hot path, from a child process."""
    env = {**os.environ, compiled.PURE_ENV: "1"}
    args = [sys.executable, __file__, "--engine-only", str(symbols), "--runs", str(runs)]
    if candles is not None:
        args.append("--quick")
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    engine, plain = json.loads(out.stdout.splitlines()[-1])
    return engine, plain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few hours of candles, one run (for CI smoke)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--engine-only", type=int, metavar="SYMBOLS", help=argparse.SUPPRESS)  # the pure child
    args = ap.parse_args()
    quiet_logs()
    settings = load_config(env={}, dotenv_paths=[]).settings
    runs, candles = (1, 240) if args.quick else (args.runs, None)
    if args.engine_only:
        ticks = build_stream(args.engine_only, candles)
        engine = [spikeguard(ticks, settings)[0] for _ in range(runs)]
        plain = [plain_loop(ticks)[0] for _ in range(runs)]
        print(json.dumps([statistics.median(engine), statistics.median(plain)]))
        return
    print(f"engine hot path: {compiled.running()}")
    for symbols in (50, 500):
        ticks = build_stream(symbols, candles)
        rows: dict[str, list[float]] = {"plain loop": [], "spikeguard Engine": [], "NautilusTrader": []}
        absent = ""
        for _ in range(runs):
            for name, fn in (("plain loop", plain_loop), ("spikeguard Engine", lambda tk: spikeguard(tk, settings)),
                             ("NautilusTrader", nautilus)):
                gc.collect()
                out = fn(ticks)
                if isinstance(out, str):
                    absent = out
                    continue
                rows[name].append(out[0])
        base = statistics.median(rows["plain loop"])
        print(f"{symbols} symbols, {len(ticks):,} real ticks (1-minute candles, 4 ticks each), median of {runs}:")
        for name, times in rows.items():
            if not times:
                print(f"  {name:<26} {absent}")
                continue
            t = statistics.median(times)
            print(f"  {name:<26} {len(ticks) / t:>12,.0f} ticks/s   {t / base:6.1f}x the plain loop's time")
        pure, pure_base = pure_python(symbols, runs, candles)
        speedup = pure / statistics.median(rows["spikeguard Engine"])
        print(f"  {'spikeguard, pure Python':<26} {len(ticks) / pure:>12,.0f} ticks/s   {pure / pure_base:6.1f}x "
              f"(a child process's plain loop): the engine row is {speedup:.2f}x as fast")
        if rows["NautilusTrader"]:
            ratio = statistics.median(rows["NautilusTrader"]) / statistics.median(rows["spikeguard Engine"])
            print(f"  spikeguard at {ratio:.2f}x NautilusTrader's ticks/s (goal >= 1.5x)")


if __name__ == "__main__":
    main()
