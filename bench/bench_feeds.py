"""bench/bench_feeds: how fast the feeds produce events, and how closely a paced replay keeps time.

Prints figures; asserts nothing (the unit tests check what the feeds produce and when, on a
virtual clock; the wall-clock goals are measured here):
- sim generation: half an hour of the flash crash (goal: under 2 s);
- replay parsing and validation over every file in ../shared/data/market (rows and ticks per second);
- a paced replay: 105 s of event time at 600x should take 0.175 s of wall time
  (goal: between 0.15 s and 2 s);
- a paced replay of two files a day apart at 600x: the day is skipped (goal: under 2 s; the
  day itself would be 144 s).
Run: .venv/bin/python bench/bench_feeds.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kit import quiet_logs  # noqa: E402

from core.market.replay import ReplayFeed  # noqa: E402
from core.market.sim import SimFeed  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MARKET = Path(os.environ.get("SPIKEGUARD_SHARED", REPO.parent / "shared")) / "data" / "market"
TWO_CANDLES = ["1700000000000,100,101,99,100.5,10,1700000059999", "1700000060000,100.5,100.6,98,98.5,20,1700000119999"]


def sim_generation(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        feed = SimFeed("flash-crash", seed=1, duration_s=1800)
        started = time.perf_counter()
        sum(1 for _ in feed._events())
        out.append(time.perf_counter() - started)
    return out


def replay_parsing(files: list[Path], runs: int) -> tuple[int, int, list[float]]:
    rows = ticks = 0
    seconds = []
    for _ in range(runs):
        feed = ReplayFeed(files)
        started = time.perf_counter()
        ticks = sum(1 for _ in feed._events()) - len(files)  # less one SymbolEnded per file
        seconds.append(time.perf_counter() - started)
        rows = sum(s.rows for s in feed.sources)
    return rows, ticks, seconds


async def _drain(feed: ReplayFeed) -> None:
    async for _ in feed.batches():
        pass


def paced(paths: list[Path], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        feed = ReplayFeed(paths, speed=600.0)
        started = time.perf_counter()
        asyncio.run(_drain(feed))
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    quiet_logs()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (for CI smoke)")
    args = ap.parse_args()
    runs = 3 if args.quick else 9

    gen = sim_generation(runs)
    print(f"sim generation, flash-crash, 1800 s of event time, {runs} runs:")
    print(f"  median {statistics.median(gen):.3f} s   (min {min(gen):.3f}, max {max(gen):.3f}; goal < 2 s)")

    files = sorted(p for p in MARKET.glob("*.csv") if p.name != "events.csv")
    rows, ticks, secs = replay_parsing(files, runs)
    med = statistics.median(secs)
    print(f"replay parsing and validation, {len(files)} real files ({rows:,} rows, {ticks:,} ticks), {runs} runs:")
    print(f"  median {med:.3f} s: {rows / med:,.0f} rows/s, {ticks / med:,.0f} ticks/s")

    with tempfile.TemporaryDirectory(prefix="spikeguard-bench-") as tmp:
        a = Path(tmp) / "BTCUSDT-1m-a.csv"
        a.write_text("\n".join(TWO_CANDLES) + "\n")
        b = Path(tmp) / "ETHUSDT-1m-b.csv"  # the same candles a day later
        b.write_text("\n".join(r.replace("17000000", "17000864") for r in TWO_CANDLES) + "\n")
        one = paced([a], runs)
        print(f"paced replay, 105 s of event time at 600x (due 0.175 s), {runs} runs:")
        print(f"  median {statistics.median(one):.3f} s   (min {min(one):.3f}, max {max(one):.3f}; "
              f"goal 0.15 to 2 s)")
        gap = paced([a, b], runs)
        print(f"paced replay, two files a day apart at 600x (due 0.35 s; the day skipped), {runs} runs:")
        print(f"  median {statistics.median(gap):.3f} s   (min {min(gap):.3f}, max {max(gap):.3f}; goal < 2 s)")


if __name__ == "__main__":
    main()
