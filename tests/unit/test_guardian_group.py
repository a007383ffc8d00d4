"""The guardian group (shadow breakers' guardians): it skips a member only on a tick that
cannot change it, so its bands and its recheck must be exactly the members' own."""

from __future__ import annotations

from bisect import bisect_right

from hypothesis import given
from hypothesis import strategies as st

from core.breaker.state import CircuitBreakerState
from core.config import shadow_variant
from core.detect.guardian import Guardian, GuardianGroup, _band_of
from core.market.state import MarketState
from tests.helpers import SEC, T0

LEVELS = st.lists(st.sampled_from([0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0]), unique=True, max_size=5).map(
    lambda xs: tuple(sorted(xs)))


@given(levels=LEVELS, x=st.sampled_from([0.0, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0])
       | st.floats(min_value=0.0, max_value=100.0) | st.just(float("nan")))
def test_a_band_counts_the_levels_at_or_below_the_drop_as_bisect_right_does(levels, x):
    """A drop exactly at a level is in the band above it: the members' rules fire at >= the level."""
    assert _band_of(levels, x) == bisect_right(levels, x)


def _guardian(settings, market: MarketState, overrides: list[str]) -> Guardian:
    variant = shadow_variant(settings, overrides=overrides)
    return Guardian(variant.circuit_breaker, market, CircuitBreakerState(), 1000)


def test_a_due_recheck_reaches_the_member_whose_timer_is_due_first(settings):
    """The group's recheck is the earliest of its members': one member's later timer must not
    hold back another's (its stale and timer rules would run late)."""
    market = MarketState(long_minutes=settings.long_minutes())
    breadth = _guardian(settings, market, [])
    quiet = _guardian(settings, market, ["circuit_breaker.market_wide.enabled=false"])
    group = GuardianGroup(market.timeframes_min.index(60))
    group.append(breadth)
    group.append(quiet)
    w = market.windows("SOLUSDT")
    w.update(100.0, 1.0, T0)
    quiet._next_check_ms = T0 + 300  # due before the breadth member's next recheck (T0 + 1 s)
    group.on_tick(w, T0)  # a new symbol: a new band, so the members are called
    assert breadth._next_check_ms == T0 + SEC and quiet._next_check_ms == T0 + 300
    w.update(100.0, 1.0, T0 + 400)  # the same band: only a due recheck calls the members now
    group.on_tick(w, T0 + 400)
    assert quiet.last_time_ms == T0 + 400
