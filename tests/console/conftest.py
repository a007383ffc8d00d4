"""Console test rig: a session over a list feed, a hand-driven wall clock, no live workers."""

from __future__ import annotations

import os

import pytest

from core.config import load_config
from core.session import Session
from tests.helpers import ListFeed, path

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

WALL0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class Clock:
    def __init__(self, t: float = WALL0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def ms(self) -> int:
        return int(self.t * 1000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def session(clock):
    settings = load_config(env={}, dotenv_paths=[]).settings
    s = Session(settings, ListFeed(), wall_clock=clock.ms)
    s.orders_seen = []  # every order update the gate reported
    s.gate.listeners.append(s.orders_seen.append)
    return s


def orders_for(session: Session, proposal_id: str) -> list:
    """The latest state of each order sent for a proposal."""
    latest = {}
    for order in session.orders_seen:
        if order.proposal_id == proposal_id:
            latest[order.client_order_id] = order
    return list(latest.values())


def screen_text(app) -> str:
    """What the terminal shows, as plain text (from the SVG export)."""
    import html
    import re

    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


def dump_spike(session: Session) -> None:
    """Market history then a 4% one-minute flush in SOLUSDT: the rules desk proposes a bid."""
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (20, 100_000.0)], step_ms=5000))
    session.engine.process(path("SOLUSDT", [(0, 100.0), (20, 100.0), (20.5, 96.0)], step_ms=5000))


def make_app(session: Session, clock: Clock, live: bool = False):
    from console.app import SpikeguardApp

    return SpikeguardApp(session, live=live, feed_label="test", speed_label="1x", journal_label="memory",
                         wall_clock=clock, watchdog=False)


def screen_lines(app) -> list[str]:
    """The terminal's rows as plain text, each text run placed at its column (the SVG export
    draws cells 12.2 px wide)."""
    import html
    import re

    grid: dict[int, dict[int, str]] = {}
    for x, line, text in re.findall(r'<text[^>]*? x="([\d.]+)"[^>]*?clip-path="url\(#terminal-\d+-line-(\d+)\)">'
                                    r'([^<]*)</text>', app.export_screenshot()):
        grid.setdefault(int(line), {})[round(float(x) / 12.2)] = html.unescape(text).replace("\xa0", " ")
    out = []
    for n in range(max(grid, default=-1) + 1):
        row = ""
        for col, text in sorted(grid.get(n, {}).items()):
            row = row.ljust(col) + text
        out.append(row.rstrip())
    return out
