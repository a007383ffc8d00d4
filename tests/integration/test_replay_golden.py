"""The replay's decisions, fixed: the breaker's transitions, the spikes and the protection
books on every shared file hash to what tests/data/replay_golden.json holds. A speed-up
must leave them byte for byte as they were (issue 14); a change that means to move them
rewrites the file on purpose:

    SPIKEGUARD_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/integration/test_replay_golden.py
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest

from core.headless import run_headless
from core.market.replay import ReplayFeed
from tests.conftest import MARKET_DATA

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "replay_golden.json"
FILES = sorted(p for p in MARKET_DATA.glob("*-*.csv"))
TIMED = {"detection_latency_ms"}  # wall-clock figures: measured, not decided


def fingerprint(settings, path: Path) -> dict[str, str]:
    report = asyncio.run(run_headless(settings, ReplayFeed([path]), journal=False))[1]
    parts = {"breaker": report["breaker"],
             "spikes": [{k: v for k, v in s.items() if k not in TIMED} for s in report["spikes"]],
             "protection": report["protection"]}
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:16] for k, v in parts.items()}


def test_every_shared_file_replays_to_its_fixed_decisions(settings):
    assert FILES, f"no market files in {MARKET_DATA}"
    now = {p.name: fingerprint(settings, p) for p in FILES}
    if os.environ.get("SPIKEGUARD_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        pytest.fail(f"rewrote {GOLDEN.name}: review its diff, then run again without SPIKEGUARD_UPDATE_GOLDEN")
    golden = json.loads(GOLDEN.read_text())
    moved = {name: [k for k in parts if golden.get(name, {}).get(k) != parts[k]] for name, parts in now.items()}
    moved = {name: keys for name, keys in moved.items() if keys}
    assert not moved, f"replay decisions moved: {moved}"
    assert set(golden) == set(now), "the golden file covers exactly the shared files"
