"""A live feed's stream health reaches the engine's bus and the status bar."""

from __future__ import annotations

from console.app import feed_detail
from core.engine import Engine
from core.events import FeedHealth, FeedState
from tests.helpers import T0, ListFeed


def test_feed_health_in_a_batch_is_kept_per_stream_and_published(settings):
    engine = Engine(settings, ListFeed())
    bus = engine.bus.subscribe()
    down = FeedHealth("spot", FeedState.RECONNECTING, "connection closed", T0, reconnects=1)
    up = FeedHealth("spot", FeedState.GAP_FILLED, "4 minutes backfilled", T0 + 5_000, reconnects=1)
    engine.process([down])
    assert engine.feed_health["spot"] is down and bus.get_nowait() is down
    engine.process([up])
    assert engine.feed_health == {"spot": up}


def test_the_status_bar_names_troubled_streams_and_counts_reconnects():
    assert feed_detail([]) == ""
    assert feed_detail([FeedHealth("spot", FeedState.CONNECTED, "", T0)]) == ""
    health = [FeedHealth("spot", FeedState.RECONNECTING, "", T0, reconnects=2),
              FeedHealth("futures", FeedState.CONNECTED, "", T0, reconnects=1, overflows=1)]
    assert feed_detail(health) == "spot reconnecting, 3 reconnects, 1 overflows"
