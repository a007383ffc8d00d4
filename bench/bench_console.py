"""bench/bench_console: what the console costs and how fast it answers. Prints figures only.

- CPU: the real app, headless, 50 symbols at 10 Hz in real time (sim feed), share of one
  core over a measured window (process CPU time / wall time), after a warm-up; at 160x60
  (the history panes in tabs) and at 200x50 (all four side by side), with two alerts a
  second landing in the history (its panes repaint);
- key press to banner: from the Enter that confirms a force-trigger (or a clear) until the
  banner shows the new state, over repeated trials, with the engine running;
- key press to a filtered history: one character typed into a pane's filter over 1,000
  entries, until the pane has been rebuilt and painted;
- cold start to first frame: a fresh interpreter building the console and painting its
  first frame (headless), and whether CrewAI was imported on the way.
Run: .venv/bin/python bench/bench_console.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repo: core/ and console/
os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from _kit import fifty_symbols, quiet_logs  # noqa: E402

FIRST_FRAME = """
import sys, time, asyncio
t0 = time.perf_counter()
from core.config import load_config
from core.market.sim import SimFeed
from core.session import Session
from console.app import SpikeguardApp
s = load_config(env={}, dotenv_paths=[]).settings
class Once(SpikeguardApp):
    def frame(self):
        super().frame()
        if self.first_frame_at is not None and not getattr(self, "_done", False):
            self._done = True
            self.exit(0)
app = Once(Session(s, SimFeed(scenario="calm", speed=30.0)), watchdog=False)
app.run(headless=True, size=(120, 36))
print(f"{app.first_frame_at - t0:.4f} {'crewai' in sys.modules}")
"""


async def cpu_share(seconds: float, size: tuple[int, int]) -> tuple[float, int, float]:
    from console.app import SpikeguardApp
    from core.config import load_config
    from core.market.sim import SimFeed
    from core.session import Session

    settings = load_config(env={}, dotenv_paths=[]).settings
    session = Session(settings, SimFeed(scenario="calm", seed=2, symbols=fifty_symbols(), tick_interval_ms=100, speed=1.0))
    app = SpikeguardApp(session, watchdog=False, freeze_gc=True)

    async def alerts() -> None:
        n = 0
        while True:
            await asyncio.sleep(0.5)
            n += 1
            session.alert("bench", f"bench alert {n}", "warning")

    async with app.run_test(size=size) as pilot:
        trickle = asyncio.create_task(alerts())
        await pilot.pause(3.0)  # warm-up
        ticks0, cpu0, wall0 = session.engine.ticks, time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        ticks = session.engine.ticks - ticks0
        trickle.cancel()
    return cpu / wall * 100.0, ticks, wall


async def key_to_filtered_history(trials: int) -> list[float]:
    """One character into the alerts pane's filter over 1,000 entries: from the key until the
    first paint after the pane was rebuilt."""
    from console.app import SpikeguardApp
    from console.widgets.history import HistoryPane
    from core.config import load_config
    from core.market.sim import SimFeed
    from core.session import Session

    settings = load_config(env={}, dotenv_paths=[]).settings
    session = Session(settings, SimFeed(scenario="calm", seed=2, speed=30.0))
    for i in range(1_000):
        session.alert("bench", f"{'BTCUSDT' if i % 2 else 'ETHUSDT'} bench alert {i}", "warning")
    app = SpikeguardApp(session, watchdog=False, freeze_gc=True)
    marks: dict[str, float] = {}
    original_rebuild = HistoryPane._rebuild

    def rebuild(pane):
        original_rebuild(pane)
        marks.setdefault("rebuilt", time.perf_counter())

    original_display = app._display

    def display(*a, **k):
        if "rebuilt" in marks:
            marks.setdefault("painted", time.perf_counter())
        return original_display(*a, **k)

    HistoryPane._rebuild = rebuild  # type: ignore[method-assign]
    app._display = display  # type: ignore[method-assign]
    out = []
    try:
        async with app.run_test(size=(200, 50)) as pilot:
            await pilot.pause(1.0)
            pane = app.screen.query_one("#history-alerts")
            pane.query_one("Input").focus()
            for i in range(trials):
                await pilot.pause(0.05)
                marks.clear()
                t0 = time.perf_counter()
                await pilot.press("E" if i % 2 == 0 else "backspace")
                while "painted" not in marks:
                    await asyncio.sleep(0.001)
                out.append((marks["painted"] - t0) * 1000.0)
    finally:
        HistoryPane._rebuild = original_rebuild  # type: ignore[method-assign]
    return out


async def key_to_banner(trials: int) -> list[float]:
    """From the Enter that confirms until the first paint after the banner took the new state."""
    from console.app import SpikeguardApp
    from console.widgets.breaker_banner import BreakerBanner
    from core.config import load_config
    from core.market.sim import SimFeed
    from core.session import Session

    settings = load_config(env={}, dotenv_paths=[]).settings
    session = Session(settings, SimFeed(scenario="calm", seed=2, speed=30.0))
    app = SpikeguardApp(session, watchdog=False, freeze_gc=True)
    marks: dict[str, float] = {}
    original_show = BreakerBanner.show

    def show(banner, state):
        if state.reason == "bench":
            marks.setdefault("shown", time.perf_counter())
        original_show(banner, state)

    original_display = app._display

    def display(*a, **k):
        if "shown" in marks:
            marks.setdefault("painted", time.perf_counter())
        return original_display(*a, **k)

    BreakerBanner.show = show  # type: ignore[method-assign]
    app._display = display  # type: ignore[method-assign]
    out = []
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause(1.0)
            for i in range(trials):
                await pilot.press("T" if i % 2 == 0 else "C")
                await pilot.press(*"bench")
                marks.clear()
                t0 = time.perf_counter()
                await pilot.press("enter")
                while "painted" not in marks:
                    await asyncio.sleep(0.001)
                out.append((marks["painted"] - t0) * 1000.0)
    finally:
        BreakerBanner.show = original_show  # type: ignore[method-assign]
    return out


def cold_start(runs: int) -> list[tuple[float, float, bool]]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", FIRST_FRAME], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        total = time.perf_counter() - started
        inside, crewai = proc.stdout.split()[-2:]
        out.append((total, float(inside), crewai == "True"))
    return out


def main() -> None:
    quiet_logs()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seconds, trials, runs = (5.0, 6, 2) if args.quick else (15.0, 20, 5)
    for size, layout in (((160, 60), "history panes in tabs"), ((200, 50), "four history panes side by side")):
        share, ticks, wall = asyncio.run(cpu_share(seconds, size))
        print(f"console CPU at {size[0]}x{size[1]} ({layout}), 50 symbols at 10 Hz, headless, {wall:.1f}s measured: "
              f"{share:.1f}% of one core ({ticks / wall:,.0f} ticks/s; goal <= 15%)")
    lat = asyncio.run(key_to_banner(trials))
    print(f"key press to banner change over {trials} trials: median {statistics.median(lat):.1f} ms, "
          f"max {max(lat):.1f} ms (goal <= 50 ms)")
    lat = asyncio.run(key_to_filtered_history(trials))
    print(f"key press to a filtered history (1,000 entries) over {trials} trials: median "
          f"{statistics.median(lat):.1f} ms, max {max(lat):.1f} ms (goal <= 50 ms)")
    cold = cold_start(runs)
    totals = [c[0] for c in cold]
    print(f"cold start to first frame over {runs} runs: median {statistics.median(totals) * 1000:.0f} ms for the "
          f"whole process (median {statistics.median(c[1] for c in cold) * 1000:.0f} ms after the interpreter "
          f"started); CrewAI imported: {any(c[2] for c in cold)} (goal <= 1000 ms, CrewAI never)")


if __name__ == "__main__":
    main()
