"""Long horizons (the slow-crash rules' 4 and 24 hours) against a naive scan.

A long horizon of H minutes at a tick in minute m covers the ticks of minutes m-H .. m:
minute-granular, never shorter than H. Its high must equal the highest price a scan of
those ticks finds, after every tick, through gaps longer than the horizon, and its
memory must stay bounded by the minutes in it, not by the ticks.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.market.windows import MINUTE_MS, SymbolWindows

HORIZONS = (7, 30)  # short stand-ins for 4 h and 24 h: the code does not care


def naive_high(ticks: list[tuple[int, float]], horizon: int) -> float:
    minute = ticks[-1][0] // MINUTE_MS
    return max(p for t, p in ticks if t // MINUTE_MS >= minute - horizon)


steps = st.lists(
    st.tuples(st.integers(0, 3 * MINUTE_MS),  # time step: several ticks a minute up to gaps of minutes
              st.floats(1.0, 1000.0, allow_nan=False)),
    min_size=1, max_size=300)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.integers(0, 10))
def test_long_high_equals_a_scan_of_the_horizons_minutes(path, jump_at):
    w = SymbolWindows("BTCUSDT", long_horizons_min=HORIZONS)
    ticks: list[tuple[int, float]] = []
    t = 1_700_000_000_000
    for i, (dt, price) in enumerate(path):
        t += dt + (40 * MINUTE_MS if i == jump_at else 0)  # one gap longer than every horizon
        w.update(price, 1.0, t)
        ticks.append((t, price))
        for j, horizon in enumerate(HORIZONS):
            expected = naive_high(ticks, horizon)
            assert w.long_high(j) == expected, (i, horizon)
            assert w.long_drop_pct(j) == (expected - price) / expected * 100.0


def test_a_long_horizon_keeps_minutes_not_ticks():
    w = SymbolWindows("BTCUSDT", long_horizons_min=(240, 1440))
    t = 1_700_000_000_000
    price = 50_000.0
    for i in range(3 * 1440 * 10):  # three days at 10 ticks a minute, falling: every minute high stays a candidate
        price *= 0.99999
        w.update(price, 0.1, t)
        t += 6_000
    assert len(w._lh_p) <= 1441 + 1024  # the day's minutes, plus at most what waits for compaction
    assert w.long_drop_pct(1) > w.long_drop_pct(0) > 0


def test_the_horizons_must_be_increasing_and_positive():
    import pytest

    for bad in ((240, 240), (1440, 240), (0,), (-5,)):
        with pytest.raises(ValueError):
            SymbolWindows("BTCUSDT", long_horizons_min=bad)
