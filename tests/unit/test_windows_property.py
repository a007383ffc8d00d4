"""SymbolWindows against a naive recomputation over a plain list of ticks.

A window of length w minutes at time t covers the ticks with time in (t - w*60000, t].
After every tick, every window's high/low (and their times), drop/rise, volume, VWAP,
count and first price must equal what a straightforward scan of the kept ticks gives.

Running sums (volume, sum of p*q) are updated incrementally, so they may drift by a few
ulps of the largest magnitudes they ever held; the tolerances below allow exactly that
(1e-12 of the total ever added, i.e. far more than the drift of a few thousand additions,
far less than any single tick's contribution) and nothing more.
"""

from __future__ import annotations

import bisect
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.market import windows as windows_mod
from core.market.windows import MINUTE_MS, TIMEFRAMES_MIN, SymbolWindows

DRIFT = 1e-12  # allowed running-sum drift, relative to everything ever added to the sum


# -- naive reference ---------------------------------------------------------------------
class Naive:
    """Every tick in a list; each query scans the window."""

    def __init__(self, timeframes_min: tuple[int, ...]) -> None:
        self.windows_ms = [m * MINUTE_MS for m in timeframes_min]
        self.ticks: list[tuple[int, float, float]] = []
        self.times: list[int] = []
        self.hist_q = 0.0  # everything ever added to the volume sums
        self.hist_pq = 0.0

    def add(self, price: float, qty: float, t: int) -> None:
        self.ticks.append((t, price, qty))
        self.times.append(t)
        self.hist_q += qty
        self.hist_pq += price * qty

    def window(self, k: int) -> list[tuple[int, float, float]]:
        t = self.times[-1]
        cutoff = t - self.windows_ms[k]
        start = bisect.bisect_right(self.times, cutoff)  # first tick with time > cutoff
        return self.ticks[start:]


def check_window(w: SymbolWindows, ref: Naive, k: int, *, check_vwap: bool = True) -> None:
    win = ref.window(k)
    assert win, "the current tick is always inside every window"
    last_t, last_p, _ = ref.ticks[-1]
    prices = [p for _, p, _ in win]
    hi, lo = max(prices), min(prices)
    ctx = f"window k={k} ({ref.windows_ms[k] // MINUTE_MS}m) at t={last_t}, {len(win)} ticks"

    assert w.count(k) == len(win), ctx
    assert w.first_price(k) == win[0][1], ctx
    assert w.high(k) == hi, ctx
    assert w.low(k) == lo, ctx
    assert any(t == w.high_time(k) and p == hi for t, p, _ in win), f"high_time not a tick at the high: {ctx}"
    assert any(t == w.low_time(k) and p == lo for t, p, _ in win), f"low_time not a tick at the low: {ctx}"
    assert w.drop_pct(k) == pytest.approx((hi - last_p) / hi * 100.0, rel=1e-12, abs=1e-12), ctx
    assert w.rise_pct(k) == pytest.approx((last_p - lo) / lo * 100.0, rel=1e-12, abs=1e-12), ctx
    assert w.drop_pct(k) >= 0.0 and w.rise_pct(k) >= 0.0, ctx

    s_q = math.fsum(q for _, _, q in win)
    s_pq = math.fsum(p * q for _, p, q in win)
    tol_q = DRIFT * ref.hist_q
    assert w.volume(k) == pytest.approx(s_q, rel=1e-9, abs=tol_q), ctx
    if check_vwap:
        check_vwap_value(w, ref, k, s_q, s_pq, lo, hi, last_p, ctx)


def check_vwap_value(w, ref, k, s_q, s_pq, lo, hi, last_p, ctx) -> None:
    got = w.vwap(k)
    if s_q > 0:
        expected = s_pq / s_q
        # error of (S_pq + e_pq) / (S_q + e_q), with |e| <= DRIFT * everything ever added
        tol = (DRIFT * ref.hist_pq + expected * DRIFT * ref.hist_q) / s_q + 1e-9 * expected
        assert got == pytest.approx(expected, rel=1e-9, abs=tol), ctx
        assert lo - tol <= got <= hi + tol, f"{ctx}: vwap {got} outside [{lo}, {hi}]"
    else:
        # no volume in the window: vwap() is documented to fall back to the last price
        assert got == last_p, f"{ctx}: window has zero volume, expected last price {last_p}, got {got}"


# -- strategies --------------------------------------------------------------------------
PRICE_POOL = [0.5, 1.0, 99.5, 100.0, 100.0, 101.25, 30_000.0]
prices = st.one_of(
    st.sampled_from(PRICE_POOL),  # repeated equal prices are common
    st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False),
)
quantities = st.one_of(
    st.just(0.0),
    st.sampled_from([0.1, 0.2, 0.3, 1.0, 2.5]),
    st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False),
)
gaps = st.one_of(
    st.just(0),  # several ticks in the same millisecond
    st.integers(0, 2_000),
    st.integers(0, 6 * MINUTE_MS),  # several minutes
    st.sampled_from([MINUTE_MS - 1, MINUTE_MS, MINUTE_MS + 1, 5 * MINUTE_MS, 15 * MINUTE_MS, 60 * MINUTE_MS]),
    st.integers(60 * MINUTE_MS, 3 * 60 * MINUTE_MS),  # longer than the longest window
)
tick = st.tuples(gaps, prices, quantities)
ticks_strategy = st.one_of(
    st.lists(tick, min_size=1, max_size=30),
    st.lists(tick, min_size=40, max_size=200),  # long enough for several windows to fill and slide
)
start_times = st.integers(0, 10**13)


def feed(timeframes: tuple[int, ...], start: int, ticks, *, check_vwap: bool = True) -> None:
    w = SymbolWindows("TEST", timeframes)
    ref = Naive(timeframes)
    t = start
    for gap, p, q in ticks:
        t += gap
        w.update(p, q, t)
        ref.add(p, q, t)
        assert w.last_price == p and w.last_time == t
        for k in range(len(timeframes)):
            check_window(w, ref, k, check_vwap=check_vwap)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- properties ----------------------------------------------------------------------------
@SETTINGS
@given(start=start_times, ticks=ticks_strategy)
def test_default_windows_match_naive(start, ticks):
    """High/low/times/drop/rise/volume/count/first price for 1, 5, 15, 60 minutes."""
    feed(TIMEFRAMES_MIN, start, ticks, check_vwap=False)


@SETTINGS
@given(start=start_times, ticks=st.lists(tick, min_size=1, max_size=60))
def test_default_windows_vwap_matches_naive(start, ticks):
    """VWAP = sum(p*q)/sum(q) over the window; the last price when the window has no volume."""
    feed(TIMEFRAMES_MIN, start, ticks, check_vwap=True)


@SETTINGS
@given(
    timeframes=st.sampled_from([(1, 2, 3), (1,), (2, 7), (3, 10, 30, 90, 240)]),
    start=start_times,
    ticks=ticks_strategy,
)
def test_custom_windows_match_naive(timeframes, start, ticks):
    feed(timeframes, start, ticks, check_vwap=False)


# -- regression examples ------------------------------------------------------------------
def test_vwap_of_zero_volume_window_is_last_price():
    """Hypothesis' minimal example. Quantities 0.1 and 0.2 leave the 1-minute window; only a
    zero-quantity tick at 1.0 remains. The running sums are left with the residues
    0.1 + 0.2 - 0.1 - 0.2 = 2.8e-17 and 1.4e-17 (not 0), so vwap() divides residue by
    residue. With no volume in the window it is documented to be the last price.
    """
    w = SymbolWindows("TEST")
    w.update(0.5, 0.1, 0)
    w.update(0.5, 0.2, 0)
    w.update(1.0, 0.0, MINUTE_MS)
    k = w.index_of(1)
    assert w.count(k) == 1 and w.low(k) == w.high(k) == 1.0
    assert w.volume(k) == pytest.approx(0.0, abs=1e-12)
    assert w.vwap(k) == 1.0  # the code returns 0.5, a price outside the window


def test_vwap_of_zero_volume_window_after_large_ticks_expire():
    """Hypothesis' shrunk example: large quantities leave the 1-minute window, one
    zero-quantity tick at 0.5 remains; the residue of the running sums gives a negative VWAP."""
    w = SymbolWindows("TEST")
    t = 9_260
    for gap, p, q in [(0, 100.0, 226.14508301095753), (0, 0.5, 0.1), (0, 0.5, 0.0),
                      (0, 199574.1823717924, 811.5784310041488), (244_862, 0.5, 0.0)]:
        t += gap
        w.update(p, q, t)
    k = w.index_of(1)
    assert w.count(k) == 1
    assert w.vwap(k) == 0.5  # the code returns -262144.0 (-2.98e-08 / 1.14e-13)


def test_vwap_of_window_with_volume_is_exact_example():
    w = SymbolWindows("TEST", (1, 2, 3))
    w.update(10.0, 1.0, 0)
    w.update(20.0, 3.0, 30_000)
    w.update(40.0, 0.0, 61_000)  # tick at 0 leaves the 1-minute window
    assert w.vwap(0) == pytest.approx(20.0)
    assert w.vwap(1) == pytest.approx((10.0 + 60.0) / 4.0)
    assert w.volume(2) == pytest.approx(4.0)


def test_window_boundary_is_open_on_the_left():
    """(t - w, t]: a tick exactly one window old is out, one millisecond younger is in."""
    w = SymbolWindows("TEST", (1,))
    w.update(50.0, 1.0, 0)
    w.update(60.0, 1.0, 1)
    w.update(40.0, 1.0, MINUTE_MS)  # cutoff = 0: tick at 0 is out, tick at 1 is in
    assert w.count(0) == 2
    assert w.first_price(0) == 60.0
    assert w.high(0) == 60.0 and w.high_time(0) == 1
    assert w.low(0) == 40.0
    assert w.volume(0) == pytest.approx(2.0)


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("timeframes", [(), (0,), (0, 1), (-1, 5), (5, 1), (1, 1, 5), (1, 5, 5), (15, 5, 60)])
def test_invalid_timeframes_raise(timeframes):
    with pytest.raises(ValueError):
        SymbolWindows("TEST", timeframes)


def test_custom_timeframes_index_of():
    w = SymbolWindows("TEST", (1, 2, 3))
    assert [w.index_of(m) for m in (1, 2, 3)] == [0, 1, 2]
    with pytest.raises(KeyError):
        w.index_of(5)


def test_tick_older_than_last_raises_and_changes_nothing():
    w = SymbolWindows("TEST")
    w.update(100.0, 1.0, 10_000)
    w.update(101.0, 1.0, 10_000)  # equal time is fine
    with pytest.raises(ValueError):
        w.update(99.0, 1.0, 9_999)
    assert w.ticks == 2 and w.last_price == 101.0 and w.last_time == 10_000
    assert w.count(0) == 2 and w.low(0) == 100.0
    w.update(102.0, 1.0, 10_001)  # still usable
    assert w.count(3) == 3


# -- compaction and memory ------------------------------------------------------------------
def test_long_stream_compacts_and_stays_bounded():
    """> 10,000 ticks: compaction runs repeatedly, invariants hold, arrays stay bounded.

    Quantities here are strictly positive (the zero-volume fallback of vwap() is covered
    above); prices include long flat runs and long monotonic trends, which grow the max/min
    deques to the full window.
    """
    assert windows_mod._COMPACT_AT == 4096
    rng = random.Random(20240611)
    w = SymbolWindows("TEST")
    ref = Naive(TIMEFRAMES_MIN)
    t = 1_700_000_000_000
    price = 100.0
    n_ticks = 40_000
    margin = 64
    compactions = 0
    prev_len = 0
    max_len = 0
    max_n60 = 0
    mode = "walk"
    for i in range(n_ticks):
        if i % 700 == 0:
            mode = rng.choice(["walk", "flat", "up", "down", "walk"])
        r = rng.random()
        if r < 0.0002:
            gap = rng.randint(60 * MINUTE_MS, 2 * 60 * MINUTE_MS)  # longer than every window
        elif r < 0.0012:
            gap = rng.randint(MINUTE_MS, 10 * MINUTE_MS)
        elif r < 0.2:
            gap = 0
        else:
            gap = rng.randint(1, 400)
        t += gap
        if mode == "walk":
            price = max(0.01, price * math.exp(rng.gauss(0.0, 0.002)))
        elif mode == "up":
            price *= 1.0001
        elif mode == "down":
            price = max(0.01, price * 0.9999)
        qty = rng.choice([0.001, 0.5, 1.0, 3.0]) if rng.random() < 0.5 else rng.uniform(1e-3, 50.0)
        w.update(price, qty, t)
        ref.add(price, qty, t)

        n60 = w.count(3)
        max_n60 = max(max_n60, n60)
        bound = n60 + windows_mod._COMPACT_AT + margin
        cur_len = len(w._t)
        if cur_len < prev_len:
            compactions += 1
        prev_len = cur_len
        max_len = max(max_len, cur_len)
        assert cur_len <= bound, f"tick {i}: {cur_len} history entries for {n60} ticks in 60m"
        assert len(w._p) == len(w._q) == cur_len
        assert len(w._mx_p) == len(w._mx_t) <= bound, f"tick {i}: max deque {len(w._mx_p)}"
        assert len(w._mn_p) == len(w._mn_t) <= bound, f"tick {i}: min deque {len(w._mn_p)}"

        if i % 97 == 0 or i >= n_ticks - 5 or (gap >= MINUTE_MS and i % 3 == 0):
            for k in range(len(TIMEFRAMES_MIN)):
                check_window(w, ref, k, check_vwap=True)
    assert w.ticks == n_ticks
    assert compactions >= 3, f"compaction ran only {compactions} times"
    assert max_len < n_ticks
    assert max_n60 > windows_mod._COMPACT_AT, "the 60-minute window should itself hold thousands of ticks"


# -- one-minute EWMA sampling ------------------------------------------------------------------
def test_sigma_zero_until_two_minute_boundaries_then_positive():
    w = SymbolWindows("TEST")
    base = 1_700_000_000_000 - (1_700_000_000_000 % MINUTE_MS) + 12_345  # mid-minute start
    w.update(100.0, 1.0, base)
    assert w.sigma_1m() == 0.0
    w.update(101.0, 2.0, base + 10_000)  # same minute; close of minute 0 will be 101
    assert w.sigma_1m() == 0.0
    assert w.vol_baseline == 0.0
    w.update(102.0, 4.0, base + MINUTE_MS)  # first boundary: minute 0 closes, no return yet
    assert w.sigma_1m() == 0.0
    assert w.vol_baseline == pytest.approx(3.0)  # first completed minute's volume seeds the EWMA
    assert w.vol_samples == 1
    w.update(103.0, 1.0, base + MINUTE_MS + 5_000)
    assert w.sigma_1m() == 0.0
    w.update(104.0, 1.0, base + 2 * MINUTE_MS)  # second boundary: minute 1 closed at 103
    assert w.sigma_1m() > 0.0
    assert w.sigma_1m() == pytest.approx(abs(math.log(103.0 / 101.0)))
    # second volume sample updates the EWMA from the seed towards minute 1's volume (5.0)
    a = 1.0 - 0.5 ** (1.0 / 60.0)
    assert w.vol_baseline == pytest.approx((1 - a) * 3.0 + a * 5.0)


def test_sigma_zero_for_flat_price_and_baseline_seed_is_first_minute():
    w = SymbolWindows("TEST")
    for i in range(30):
        w.update(50.0, 0.25, i * 1_000)  # minute 0: 30 ticks, volume 7.5
    assert w.vol_baseline == 0.0
    w.update(50.0, 9.0, MINUTE_MS)
    assert w.vol_baseline == pytest.approx(7.5)
    for m in range(2, 6):
        w.update(50.0, 1.0, m * MINUTE_MS)
    assert w.ret_samples >= 1
    assert w.sigma_1m() == 0.0  # flat price: every return is 0


@settings(max_examples=100, deadline=None)
@given(
    first_minute=st.lists(st.tuples(st.integers(0, MINUTE_MS - 1), quantities), min_size=1, max_size=20),
    p0=prices,
    p1=prices,
)
def test_first_minute_volume_seeds_baseline(first_minute, p0, p1):
    w = SymbolWindows("TEST")
    offsets = sorted(o for o, _ in first_minute)
    for o, (_, q) in zip(offsets, first_minute):
        w.update(p0, q, o)
    assert w.sigma_1m() == 0.0 and w.vol_samples == 0
    w.update(p1, 1.0, MINUTE_MS + 1)  # the next minute: minute 0 closes
    assert w.vol_baseline == pytest.approx(math.fsum(q for _, q in first_minute), rel=1e-12, abs=1e-12)
    assert w.sigma_1m() == 0.0
    w.update(p1, 1.0, 2 * MINUTE_MS + 1)  # minute 1 closes at p1: return log(p1/p0)
    assert w.sigma_1m() == pytest.approx(abs(math.log(p1 / p0)), rel=1e-9, abs=1e-15)
    if abs(p1 / p0 - 1.0) > 1e-12:
        assert w.sigma_1m() > 0.0


# -- beyond the plausible bounds: degraded figures, never an error -------------------------------
TINY, HUGE = 5e-324, 1.7976931348623157e308


@pytest.mark.parametrize("a, b", [(TINY, HUGE), (HUGE, TINY), (1e-308, 1e308), (HUGE, HUGE), (TINY, TINY),
                                  (100.0, 99.0)])
def test_log_ratio_is_finite_for_every_pair_of_positive_floats(a, b):
    r = windows_mod.log_ratio(a, b)
    assert math.isfinite(r)
    assert r == pytest.approx(math.log(a) - math.log(b), rel=1e-12, abs=1e-12)


def test_sigma_stays_finite_across_the_whole_float_range():
    """The finding: close/prev underflowed to 0 and math.log(0) stopped the engine."""
    w = SymbolWindows("TEST")
    for minute, price in enumerate([100.0, 1e308, TINY, HUGE, 1e-308, 100.0]):
        w.update(price, 1.0, minute * MINUTE_MS)
    assert w.ret_samples == 4 and math.isfinite(w.sigma_1m()) and w.sigma_1m() > 700  # the last minute is open


def test_compaction_of_sums_past_the_float_range_does_not_raise():
    """Running sums of 1e308 quantities overflow to inf, and math.fsum raises on that; once the
    huge ticks leave the window, the exact resync brings the window's figures back."""
    w = SymbolWindows("TEST")
    t = 0
    for _ in range(3 * windows_mod._COMPACT_AT):  # past the 60-minute window, so compaction runs
        w.update(100.0, 1e308, t)
        t += 1_000
    assert w.volume(0) in (0.0, math.inf)  # saturated, not an error
    for _ in range(2 * windows_mod._COMPACT_AT):
        w.update(100.0, 1.0, t)
        t += 1_000
    assert w.high(3) == w.low(3) == w.last_price == 100.0
    assert w.count(3) == 3600
    assert w._sum_q[3] == 3600.0  # resynchronised exactly: the overflow left with its ticks
