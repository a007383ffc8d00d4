"""bench/bench_tune: wall time of `spikeguard tune` over a 10-file folder and a 27-point grid.

The folder holds links to ten of ../shared/data/market's files (seven crashes, three calm
windows); the grid is 3 x 3 x 3 breaker settings. Each file is replayed once with the 27
points as shadow breakers in the same pass. Prints figures; asserts nothing.
Run: make bench-tune   (or .venv/bin/python bench/bench_tune.py [--quick])
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _kit import quiet_logs  # noqa: E402

from console.tuning import parse_grid, sweep  # noqa: E402
from core.config import load_config  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "market"
FILES = ("BTCUSDT-1m-2021-04-18", "BTCUSDT-1m-2021-05-19", "BTCUSDT-1m-2024-08-05", "BTCUSDT-5m-2020-03-12",
         "ETHUSDT-1m-2021-12-04", "ETHUSDT-5m-2022-11-08", "ETHUSDT-5m-2025-10-10-futures",
         "BTCUSDT-1m-2021-10-07-calm", "BTCUSDT-1m-2023-04-06-calm", "ETHUSDT-1m-2020-06-12-calm")
GRID = ["circuit_breaker.slow_crash.horizons.4h.trigger_percent=10,12,15",
        "circuit_breaker.slow_crash.horizons.24h.warning_percent=6,8,10",
        "protection_policy.warning_exposure=0,0.25,0.5"]


def main() -> None:
    quiet_logs()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 files and a 2-point grid (for CI smoke)")
    args = ap.parse_args()
    settings = load_config(env={}, dotenv_paths=[]).settings
    files, grid, runs = (FILES[:2], [GRID[0].rsplit(",", 1)[0]], 1) if args.quick else (FILES, GRID, 3)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in files:
            (folder / f"{name}.csv").symlink_to(SHARED / f"{name}.csv")
        paths = sorted(folder.glob("*.csv"))
        points = parse_grid(grid)
        walls = []
        for _ in range(runs):
            started = time.perf_counter()
            scores = sweep(settings, paths, points)
            walls.append(time.perf_counter() - started)
    print(f"tune over {len(paths)} files and a {len(scores)}-point grid, {runs} runs:")
    print(f"  median {statistics.median(walls):.1f} s wall (min {min(walls):.1f}, max {max(walls):.1f}); "
          f"{statistics.median(walls) / len(paths):.2f} s per file with {len(scores)} shadows")


if __name__ == "__main__":
    main()
