"""The console shows the de-risking policy in the banner and the live shadow breakers in the
status bar and the reasoning trail, and the shadows never act."""

from __future__ import annotations

from core.config import shadow_variant
from tests.console.conftest import make_app, screen_text
from tests.helpers import path

SIZE = (200, 40)


async def _ready(app, pilot) -> None:
    await pilot.pause()
    app.frame()
    await pilot.pause()


async def test_the_banner_says_the_policy_and_the_status_bar_the_shadows(session, clock):
    tight = shadow_variant(session.settings, overrides=["circuit_breaker.slow_crash.horizons.4h.warning_percent=0.5",
                                                        "circuit_breaker.slow_crash.horizons.4h.trigger_percent=1"])
    session.add_shadows([("tight", tight)])
    # BTC 2% down over an hour: nothing for the real breaker, a halt for the shadow
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (30, 100_000.0), (90, 98_000.0)], step_ms=5000))
    assert session.breaker.status.value == "SAFE"
    assert session.shadows[0].breaker.status.value == "TRIGGERED"
    app = make_app(session, clock)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        text = screen_text(app)
        assert "de-risking: WARNING keep 0%, TRIGGERED flatten" in text
        assert "shadows: tight TRIGGERED" in text
    assert session.gate.sent == 0  # the shadow's halt sent nothing anywhere


async def test_a_narrow_banner_keeps_the_policy_in_short(session, clock):
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (30, 100_000.0)], step_ms=5000))
    app = make_app(session, clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot)
        assert "de-risk 0%/0%/25%" in screen_text(app)
