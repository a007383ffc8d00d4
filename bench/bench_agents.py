"""bench/bench_agents: the agent desk with `llm: rules`, beyond the first import.

Prints figures; asserts nothing.
- importing the desk's modules in a fresh process, which must not import CrewAI
  (goal: under 1 s; tests/agents/test_offline.py checks that crewai stays out);
- the one-time cost of loading CrewAI (in a worker thread) and the longest stall it caused
  on the event loop meanwhile (what the console would feel);
- spike -> proposal latency over N runs of the five-agent crew (goal: median <= 300 ms);
- CrewAI event -> ReasoningLine on the engine bus (goal: the UI sees it within 100 ms), and
  the first line of each run after the spike;
- event-loop lateness while crews run (a 60 Hz ticker: the console's frame clock stand-in;
  30 fps needs every gap under 33 ms);
- RSS before and after loading CrewAI, and peak.
The desk as the console runs it: crews in a worker thread (BENCH_KICKOFF=async compares
`await crew.akickoff()`), the GIL switch interval at 1 ms and the post-import gc.freeze().
Run: make bench-agents   (or .venv/bin/python bench/bench_agents.py [--runs 20] [--quick] [--json])
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kit import pct, quiet_logs  # noqa: E402 - after the sys.path setup


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


DESK_IMPORT = """
import json, sys, time
t = time.perf_counter()
import core.agents, core.agents.desk, core.agents.crew, core.agents.tools, core.agents.llm
import core.agents.analyst, core.agents.offline, core.agents.context, core.agents.untrusted
print(json.dumps({"seconds": time.perf_counter() - t, "crewai": "crewai" in sys.modules}))
"""


def desk_import(repeats: int = 5) -> dict:
    """Import time of the desk's modules, each time in a fresh interpreter (the best of `repeats`)."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", DESK_IMPORT], capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"best_s": round(min(r["seconds"] for r in runs), 3), "worst_s": round(max(r["seconds"] for r in runs), 3),
            "imported_crewai": any(r["crewai"] for r in runs)}


class Ticker:
    """A 60 Hz task on the loop: how late each tick fires is what a frame would suffer."""

    def __init__(self, hz: float = 60.0) -> None:
        self.period = 1.0 / hz
        self.late_ms: list[float] = []
        self.gaps_ms: list[float] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            due = time.perf_counter() + self.period
            await asyncio.sleep(self.period)
            now = time.perf_counter()
            self.late_ms.append((now - due) * 1000.0)
            self.gaps_ms.append((now - last) * 1000.0)
            last = now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def reset(self) -> None:
        self.late_ms.clear()
        self.gaps_ms.clear()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def bench(runs: int) -> dict:
    from core.agents import offline
    from core.config import load_config
    from core.events import ReasoningLine
    from core.session import Session
    from tests.helpers import ListFeed, path

    figures: dict = {"desk_import": desk_import()}  # before this process loads crewai
    storage = Path(tempfile.mkdtemp(prefix="spikeguard-bench-crewai-"))
    offline.configure(storage)
    figures["rss_before_crewai_mb"] = round(rss_mb(), 1)
    ticker = Ticker()
    ticker.start()
    t0 = time.perf_counter()
    await asyncio.to_thread(offline.load_crewai, storage)
    figures["crewai_import_s"] = round(time.perf_counter() - t0, 2)
    figures["loop_max_stall_during_import_ms"] = round(max(ticker.late_ms or [0.0]), 1)
    figures["rss_after_crewai_mb"] = round(rss_mb(), 1)

    base = load_config(env={}, dotenv_paths=[]).settings
    settings = base.model_copy(update={"crew": base.crew.model_copy(update={"max_runs_per_minute": 10_000})})
    session = Session(settings, ListFeed())
    session.desk_enabled = False
    session.bus.bind_loop(asyncio.get_running_loop())
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (20, 100_000.0)], step_ms=5000))
    session.engine.process(path("SOLUSDT", [(0, 100.0), (20, 100.0), (20.5, 96.0)], step_ms=5000))
    [spike] = [s for s in session.engine.spikes if s.symbol == "SOLUSDT"]

    from core.agents.desk import AgentDesk

    desk = AgentDesk(session, settings, None, session.bus, storage, dedupe_seconds=0,
                     kickoff_mode=os.environ.get("BENCH_KICKOFF", "thread"))
    await desk.start()
    queue = session.bus.subscribe()
    first_line_ms: list[float] = []

    async def one() -> tuple[float, object]:
        while not queue.empty():
            queue.get_nowait()
        started = time.perf_counter()
        got_first: list[float] = []

        async def watch() -> None:
            while True:
                ev = await queue.get()
                if isinstance(ev, ReasoningLine) and ev.run_id and ev.sequence:
                    got_first.append((time.perf_counter() - started) * 1000.0)
                    return

        watcher = asyncio.get_running_loop().create_task(watch())
        decision = await desk.handle_spike(spike)
        elapsed = time.perf_counter() - started
        watcher.cancel()
        if got_first:
            first_line_ms.append(got_first[0])
        return elapsed, decision

    t0 = time.perf_counter()
    first, decision = await one()
    figures["first_run_ms"] = round(first * 1000, 1)
    figures["first_decision"] = type(decision).__name__
    desk.forward_latency_ms.clear()
    first_line_ms.clear()
    ticker.reset()
    latencies = []
    kinds = []
    for _ in range(runs):
        elapsed, decision = await one()
        latencies.append(elapsed * 1000.0)
        kinds.append(type(decision).__name__)
    ms = sorted(latencies)
    figures.update({
        "runs": runs, "decisions": {k: kinds.count(k) for k in set(kinds)},
        "spike_to_proposal_ms": {"median": round(statistics.median(ms), 1), "p90": round(pct(ms, 0.9), 1),
                                 "p95": round(pct(ms, 0.95), 1),
                                 "min": round(ms[0], 1), "max": round(ms[-1], 1)},
        "event_to_bus_ms": {"median": round(statistics.median(desk.forward_latency_ms), 1),
                            "p99": round(pct(list(desk.forward_latency_ms), 0.99), 1),
                            "max": round(max(desk.forward_latency_ms), 1), "lines": len(desk.forward_latency_ms)},
        "spike_to_first_line_ms": {"median": round(statistics.median(first_line_ms), 1) if first_line_ms else None,
                                   "max": round(max(first_line_ms), 1) if first_line_ms else None},
        "loop_lateness_during_runs_ms": {"p50": round(pct(ticker.late_ms, 0.5), 2),
                                         "p99": round(pct(ticker.late_ms, 0.99), 2),
                                         "max": round(max(ticker.late_ms), 2)},
        "frame_gaps_over_33ms": sum(1 for g in ticker.gaps_ms if g > 33.3),
        "frame_gaps_total": len(ticker.gaps_ms),
        "rss_with_crew_mb": round(rss_mb(), 1), "peak_rss_mb": round(peak_rss_mb(), 1),
    })
    ticker.stop()
    await desk.close()
    return figures


async def replay_doge(figures: dict) -> None:
    """`replay --agents` (llm rules) over the DOGE pump file: wall time and crew runs per
    minute of market. The feed holds at each spike while its crew runs."""
    from core.config import load_config
    from core.headless import run_headless
    from core.market.replay import ReplayFeed

    shared = Path(os.environ.get("SPIKEGUARD_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    csv = shared / "data" / "market" / "DOGEUSDT-1m-2021-04-16-pump.csv"
    if not csv.is_file():
        figures["replay_doge"] = None
        return
    settings = load_config(env={}, dotenv_paths=[]).settings
    feed = ReplayFeed([str(csv)])
    started = time.perf_counter()
    session, report = await run_headless(settings, feed, agents=True, llm="rules", journal=False, protection=False)
    wall = time.perf_counter() - started
    runs = len({d["run_id"] for d in report["decisions"] if d.get("run_id")})
    w = session.engine.market.symbols["DOGEUSDT"]
    market_minutes = (w.last_time - w.first_time) / 60_000
    figures["replay_doge"] = {"wall_s": round(wall, 1), "crew_runs": runs, "proposals": len(report["proposals"]),
                              "market_minutes": round(market_minutes), "spikes": len(report["spikes"]),
                              "runs_per_market_minute": round(runs / market_minutes, 3) if market_minutes else None,
                              "runs_per_wall_minute": round(runs / wall * 60, 1) if wall else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="3 runs (for CI smoke)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args()
    quiet_logs()
    f = asyncio.run(bench(3 if args.quick else args.runs))
    asyncio.run(replay_doge(f))
    if args.json:
        print(json.dumps(f, indent=2))
        return
    s = f["spike_to_proposal_ms"]
    e = f["event_to_bus_ms"]
    lat = f["loop_lateness_during_runs_ms"]
    d = f["desk_import"]
    print(f"desk modules import (fresh process, without crewai): best {d['best_s']:.2f} s, worst {d['worst_s']:.2f} s"
          f"   (goal < 1 s){'   CREWAI WAS IMPORTED' if d['imported_crewai'] else ''}")
    print(f"crewai import (worker thread): {f['crewai_import_s']:.2f} s; longest loop stall meanwhile "
          f"{f['loop_max_stall_during_import_ms']:.0f} ms")
    print(f"first run (cold): {f['first_run_ms']:.0f} ms -> {f['first_decision']}")
    print(f"spike -> proposal, llm rules, 5 agents, {f['runs']} runs: median {s['median']:.0f} ms  p90 {s['p90']:.0f} ms"
          f"  p95 {s['p95']:.0f} ms"
          f"  min {s['min']:.0f}  max {s['max']:.0f}   (goal median <= 300 ms)   {f['decisions']}")
    print(f"CrewAI event -> ReasoningLine on the bus: median {e['median']:.0f} ms  p99 {e['p99']:.0f} ms  max "
          f"{e['max']:.0f} ms over {e['lines']} lines   (goal <= 100 ms)")
    fl = f["spike_to_first_line_ms"]
    print(f"spike -> first agent line: median {fl['median']} ms, max {fl['max']} ms")
    print(f"loop lateness while crews run (60 Hz ticker): p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms  "
          f"max {lat['max']:.1f} ms; gaps > 33 ms: {f['frame_gaps_over_33ms']} of {f['frame_gaps_total']}")
    r = f.get("replay_doge")
    if r is None:
        print("replay --agents over the DOGE pump: ../shared/data/market not found, skipped")
    else:
        print(f"replay --agents (rules) over DOGEUSDT-1m-2021-04-16-pump.csv: {r['wall_s']:.1f} s wall, "
              f"{r['spikes']} spikes, {r['crew_runs']} crew runs over {r['market_minutes']} market minutes "
              f"({r['runs_per_market_minute']} per market minute, {r['runs_per_wall_minute']} per wall minute), "
              f"{r['proposals']} proposals")
    print(f"RSS: {f['rss_before_crewai_mb']:.0f} MB before crewai, {f['rss_after_crewai_mb']:.0f} MB after import, "
          f"{f['rss_with_crew_mb']:.0f} MB with crews run, peak {f['peak_rss_mb']:.0f} MB   (goal <= 300 MB)")


if __name__ == "__main__":
    main()
