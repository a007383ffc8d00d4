"""bench/bench_instructions: the pipeline's cost in instructions a tick (valgrind's callgrind).

Wall-clock figures on a shared VM move by +-30% between runs; instruction counts do not, so
a ratio between two configurations is measured here: the 60-minute rules only, with the
slow-crash rules, and with 3 shadow breakers in the same pass (goal: at most 1.5x). Each
configuration runs in its own process under callgrind; the cost of building the ticks is
measured alone and taken off.
Run: make bench-instructions   (or .venv/bin/python bench/bench_instructions.py [--quick])
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("setup", "plain", "slow", "shadows")
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def child(mode: str, minutes: float) -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _kit import fifty_symbols, quiet_logs

    from core.config import load_config, shadow_variant
    from core.engine import Engine
    from core.events import Tick
    from core.market.sim import SimFeed
    from core.shadow import attach_shadows, long_minutes_of
    from bench_pipeline import _NullFeed

    quiet_logs()
    settings = load_config(env={}, dotenv_paths=[]).settings
    variants = [(f"s{i}", shadow_variant(settings, overrides=[
        f"circuit_breaker.slow_crash.horizons.4h.trigger_percent={10 + 2 * i}"])) for i in range(3)]
    if mode == "plain":  # every mode builds the same objects: only the processing differs
        settings = shadow_variant(settings, overrides=["circuit_breaker.slow_crash.enabled=false"])
    feed = SimFeed(scenario="market-wide-crash", seed=3, symbols=fifty_symbols(), tick_interval_ms=1000,
                   duration_s=minutes * 60)
    events = [e for e in feed._events() if type(e) is Tick]
    variants = variants if mode == "shadows" else []
    engine = Engine(settings, _NullFeed(), long_minutes=long_minutes_of(s for _, s in variants))
    if variants:
        attach_shadows(engine, variants, (), protection=False)
    if mode != "setup":
        for i in range(0, len(events), 512):
            engine.process(events[i:i + 512])
    print(len(events))


def measure(mode: str, minutes: float) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", sys.executable, __file__,
             "--child", mode, "--minutes", str(minutes)], capture_output=True, text=True, check=True)
    found = _COLLECTED.search(out.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no instruction count for {mode}: {out.stderr.strip()[-200:]}")
    return int(found.group(1)), int(out.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller run (for CI smoke)")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--minutes", type=float, default=40.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.minutes)
        return
    sys.path.insert(0, str(ROOT))
    from core import compiled

    print(f"engine hot path: {compiled.running()}")  # what the children import
    if args.quick:  # the smoke run: every mode's code, without callgrind's minutes
        for mode in MODES:
            subprocess.run([sys.executable, __file__, "--child", mode, "--minutes", "0.25"], check=True,
                           capture_output=True)
        print(f"quick: ran {', '.join(MODES)} without callgrind (the figures need a full run)")
        return
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: no instruction counts (apt install valgrind)")
        return
    minutes = args.minutes
    counts = {mode: measure(mode, minutes) for mode in MODES}
    setup, ticks = counts["setup"]
    per_tick = {m: (counts[m][0] - setup) / ticks for m in MODES[1:]}
    print(f"instructions a tick, {ticks:,} ticks of {minutes:g} min of market-wide-crash, 50 symbols (callgrind):")
    print(f"  60-minute rules only {per_tick['plain']:,.0f}; with the slow-crash rules {per_tick['slow']:,.0f} "
          f"({per_tick['slow'] / per_tick['plain']:.2f}x); plus 3 shadow breakers {per_tick['shadows']:,.0f} "
          f"({per_tick['shadows'] / per_tick['plain']:.2f}x; goal <= 1.5x)")


if __name__ == "__main__":
    main()
