"""Regenerate docs/screenshot.svg: the console during the seeded flash crash, at 140x40.

Run: .venv/bin/python scripts/screenshot.py
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from console.app import SpikeguardApp  # noqa: E402
from core.config import load_config  # noqa: E402
from core.market.sim import SimFeed  # noqa: E402
from core.session import Session  # noqa: E402


async def main(minutes: float = 21.5) -> None:
    settings = load_config(env={}, dotenv_paths=[]).settings
    feed = SimFeed(scenario="flash-crash", seed=7, tick_interval_ms=1000, duration_s=minutes * 60)
    wall = [1_767_225_600.0]
    session = Session(settings, feed, wall_clock=lambda: int(wall[0] * 1000))
    app = SpikeguardApp(session, live=False, feed_label="sim flash-crash", speed_label="30x",
                        journal_label="~/.local/share/spikeguard/journal.db", wall_clock=lambda: wall[0],
                        watchdog=False)
    events = list(feed._events())
    for i in range(0, len(events), 512):
        session.engine.process(events[i:i + 512])
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        app.frame()
        await pilot.pause()
        out = ROOT / "docs" / "screenshot.svg"
        app.save_screenshot(filename=out.name, path=str(out.parent))
        print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 21.5))
