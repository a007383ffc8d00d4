"""bench/bench_pipeline: throughput and tick-to-halt latency of the engine's hot path.

Prints figures; asserts nothing (timing goals are measured here, not in unit tests).
- ticks per second through market state, guardian and scanner, 50 symbols, one core
  (the sim's calm market pre-generated, so the feed's cost is not counted);
- tick-to-halt: from receiving the crossing tick until the breaker is TRIGGERED and every
  subscriber (an order-gate stand-in, the event bus) has been notified;
- the cost of the slow-crash rules, and of 3 shadow breakers in the same pass, as a ratio
  to the pipeline without them (goal: at most 1.5x with the shadows);
- peak RSS.
Run: make bench   (or .venv/bin/python bench/bench_pipeline.py [--quick])
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kit import fifty_symbols, pct, quiet_logs  # noqa: E402

from core import compiled  # noqa: E402
from core.config import load_config  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.events import BreakerChanged, BreakerStatus, Tick  # noqa: E402
from core.market.sim import SimFeed  # noqa: E402

SYMBOLS = 50


class _NullFeed:
    name, realtime, cadence_ms, paused = "bench", False, 100, False

    def __init__(self) -> None:
        self.pause_marks: list[bool] = []  # the engine's pause hook (a paced feed appends to it)


def throughput(settings, scenario: str, minutes: float, runs: int, shadows: int = 0) -> list[float]:
    from core.config import shadow_variant
    from core.shadow import attach_shadows, long_minutes_of

    feed = SimFeed(scenario=scenario, seed=3, symbols=fifty_symbols(), tick_interval_ms=100,
                   duration_s=minutes * 60)
    events = [e for e in feed._events() if type(e) is Tick]
    batches = [events[i:i + 512] for i in range(0, len(events), 512)]
    variants = [(f"s{i}", shadow_variant(settings, overrides=[
        f"circuit_breaker.slow_crash.horizons.4h.trigger_percent={10 + 2 * i}"])) for i in range(shadows)]
    rates = []
    for _ in range(runs):
        engine = Engine(settings, _NullFeed(), long_minutes=long_minutes_of(s for _, s in variants))
        if variants:
            attach_shadows(engine, variants, (), protection=False)
        gc.collect()
        started = time.perf_counter()
        for batch in batches:
            engine.process(batch)
        rates.append(len(events) / (time.perf_counter() - started))
    return rates


def tick_to_halt(settings, trials: int) -> list[float]:
    out = []
    history = [Tick("BTCUSDT", 100.0, 1.0, 1_700_000_000_000 + i * 1000) for i in range(300)]
    crossing = Tick("BTCUSDT", 84.0, 1.0, 1_700_000_000_000 + 300 * 1000)
    for _ in range(trials):
        engine = Engine(settings, _NullFeed())
        halted = []
        engine.breaker.subscribe(lambda change: halted.append(time.perf_counter_ns()))  # the gate's place
        queue = engine.bus.subscribe()
        engine.process(history)
        t0 = time.perf_counter_ns()
        engine.process([crossing])
        # the trip reaches the bus first (the crash's spike follows it)
        assert engine.breaker.status is BreakerStatus.TRIGGERED and halted
        assert isinstance(queue.get_nowait(), BreakerChanged)
        out.append((halted[0] - t0) / 1000.0)
    return out



def main() -> None:
    quiet_logs()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller run (for CI smoke)")
    args = ap.parse_args()
    print(f"engine hot path: {compiled.running()}")
    settings = load_config(env={}, dotenv_paths=[]).settings
    minutes, runs, trials = (12, 1, 300) if args.quick else (30, 3, 2000)

    # the scanner starts after 10 minutes of warm-up: most of each run is past it
    for scenario in ("calm", "market-wide-crash"):
        rates = throughput(settings, scenario, minutes, runs)
        print(f"pipeline throughput, {SYMBOLS} symbols at 10 Hz, {minutes} min of {scenario}, {runs} runs:")
        print(f"  median {statistics.median(rates):,.0f} ticks/s   (min {min(rates):,.0f}, max {max(rates):,.0f}; "
              f"goal >= 200,000)")
    cb = settings.circuit_breaker
    plain = settings.model_copy(update={"circuit_breaker": cb.model_copy(
        update={"slow_crash": cb.slow_crash.model_copy(update={"enabled": False})})})
    base = statistics.median(throughput(plain, "market-wide-crash", minutes, runs))
    slow = statistics.median(throughput(settings, "market-wide-crash", minutes, runs))
    shadowed = statistics.median(throughput(settings, "market-wide-crash", minutes, runs, shadows=3))
    print(f"slow-crash rules and shadow breakers, {minutes} min of market-wide-crash, median of {runs}:")
    print(f"  60-minute rules only {base:,.0f} ticks/s; with the slow-crash rules {slow:,.0f} ticks/s "
          f"({base / slow:.2f}x the cost); plus 3 shadow breakers {shadowed:,.0f} ticks/s "
          f"({base / shadowed:.2f}x; goal <= 1.5x)")
    lat = tick_to_halt(settings, trials)
    print(f"tick-to-halt latency over {trials} trials (crossing tick -> TRIGGERED -> subscribers notified):")
    print(f"  p50 {pct(lat, 0.5):.1f} us   p99 {pct(lat, 0.99):.1f} us   max {max(lat):.1f} us   (goal p99 <= 1000 us)")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
