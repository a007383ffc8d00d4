"""Rolling per-symbol statistics in O(1) amortised work per tick.

One tick history per symbol serves every timeframe: the windows are nested (1m inside
5m inside 15m inside 60m), so each window is a head index into the same vectors, and
each head only moves forward. The same trick serves the monotonic deques that give a
window's maximum and minimum: the 60-minute deque holds every candidate, and a shorter
window's extreme is the first candidate younger than its cutoff.

A window of length w at time t covers ticks with time in (t - w, t], the same convention
as the independent crash labeller, so the guardian's drop is exact, not bucketed.
Volatility and volume baselines are EWMAs of one-minute samples, updated when a minute
closes, so they cost nothing on most ticks.

Long horizons (the slow-crash rules' 4 and 24 hours) keep no ticks: each closed minute's
high enters one more monotonic deque, so a day of history costs at most 1,440 entries
per symbol whatever the feed's rate. Their window is minute-granular: the current
minute and the horizon's whole minutes before it, so it is never shorter than the horizon.

Nothing here raises on a finite positive price or a finite non-negative quantity, however
extreme. Within the bounds of core/market/ticks.py (the engine admits nothing else) every
figure is finite; beyond them a ratio or a sum may saturate to infinity, never to an error.
"""

from __future__ import annotations

import math
from typing import Final

from librt.vecs import append, vec
from mypy_extensions import i64

# Final: the compiled hot path folds them in rather than looking them up on every tick
MINUTE_MS: Final = 60_000
TIMEFRAMES_MIN: Final[tuple[int, ...]] = (1, 5, 15, 60)
_COMPACT_AT: Final = 4096  # compact the history once this many expired entries sit at the front
SPARK_MINUTES: Final = 60


def log_ratio(a: float, b: float) -> float:
    """log(a / b) for any positive finite a and b. The quotient is the more exact form, but it
    overflows or underflows for extreme pairs; the difference of the logs never does."""
    r = a / b
    if 0.0 < r < math.inf:
        return math.log(r)
    return math.log(a) - math.log(b)


def _exact_sum(values) -> float:
    """math.fsum of non-negative values, or inf when their sum exceeds the float range."""
    try:
        return math.fsum(values)
    except OverflowError:  # fsum refuses an intermediate overflow; the true sum is that large
        return math.inf


def _push_max(times: list[int], values: list[float], heads: list[int], t: int, value: float, wins: tuple[int, ...],
              n: int) -> None:
    """Add (t, value) to a monotonic (decreasing) deque shared by nested windows, and move
    each window's head past the entries that left it. Amortised O(1) per call."""
    size = len(values)
    while size and values[size - 1] <= value:
        size -= 1
    if size < len(values):
        del times[size:]
        del values[size:]
        for k in range(n):
            if heads[k] > size:
                heads[k] = size
    times.append(t)
    values.append(value)
    for k in range(n):
        h = heads[k]
        cutoff = t - wins[k]
        while times[h] <= cutoff:
            h += 1
        heads[k] = h


class SymbolWindows:
    """Rolling windows for one symbol. `update()` is the hot path; read the rest freely."""

    __slots__ = (
        "symbol", "windows_ms", "n", "last_price", "last_time", "first_time", "ticks",
        "_t", "_p", "_q", "_h", "_sum_q", "_sum_pq",
        "_mx_t", "_mx_p", "_mx_h", "_mn_t", "_mn_p", "_mn_h",
        "_minute", "_minute_close", "_prev_close", "_minute_vol",
        "_var_alpha", "_vol_alpha", "ret_var", "ret_samples", "vol_baseline", "vol_samples",
        "closes", "_q_total",
        "long_minutes", "_minute_high", "_lh_t", "_lh_p", "_lh_h",
        "_var_alpha_slow", "ret_var_slow",
    )

    def __init__(
        self,
        symbol: str,
        timeframes_min: tuple[int, ...] = TIMEFRAMES_MIN,
        volatility_halflife_min: float = 30.0,
        volume_halflife_min: float = 60.0,
        long_horizons_min: tuple[int, ...] = (),
        slow_volatility_halflife_min: float = 360.0,
    ) -> None:
        if list(timeframes_min) != sorted(set(timeframes_min)) or not timeframes_min or timeframes_min[0] <= 0:
            raise ValueError(f"timeframes must be increasing positive minutes, got {timeframes_min!r}")
        self.symbol = symbol
        self.windows_ms = tuple(m * MINUTE_MS for m in timeframes_min)
        self.n = len(self.windows_ms)
        self.last_price = math.nan
        self.last_time = -1
        self.first_time = -1
        self.ticks = 0
        # tick history: times, prices, quantities; _h[k] = first index inside window k. Packed
        # vectors (8 bytes an entry, like an array): the compiled path reads them unboxed
        self._t = vec[i64]()
        self._p = vec[float]()
        self._q = vec[float]()
        self._h: list[int] = [0] * self.n
        self._sum_q: list[float] = [0.0] * self.n
        self._sum_pq: list[float] = [0.0] * self.n
        # monotonic deques over the longest window: highs, and lows stored negated
        self._mx_t: list[int] = []
        self._mx_p: list[float] = []
        self._mx_h: list[int] = [0] * self.n
        self._mn_t: list[int] = []
        self._mn_p: list[float] = []
        self._mn_h: list[int] = [0] * self.n
        # one-minute sampling for EWMA volatility and volume baseline
        self._minute = -1
        self._minute_close = math.nan
        self._prev_close = math.nan
        self._minute_vol = 0.0
        self._var_alpha = 1.0 - 0.5 ** (1.0 / volatility_halflife_min)
        self._vol_alpha = 1.0 - 0.5 ** (1.0 / volume_halflife_min)
        self.ret_var = 0.0  # EWMA of squared one-minute log returns
        self.ret_samples = 0
        self.vol_baseline = 0.0  # EWMA of one-minute volume
        self.vol_samples = 0
        self.closes: list[float] = []  # last SPARK_MINUTES one-minute closes, for sparklines
        self._q_total = 0.0  # all volume ever added: the scale of the running sums' rounding error
        # long horizons: a monotonic deque of closed minutes' highs (minute index, high)
        if list(long_horizons_min) != sorted(set(long_horizons_min)) or any(m <= 0 for m in long_horizons_min):
            raise ValueError(f"long horizons must be increasing positive minutes, got {long_horizons_min!r}")
        self.long_minutes = tuple(long_horizons_min)
        self._minute_high = -math.inf
        self._lh_t: list[int] = []
        self._lh_p: list[float] = []
        self._lh_h: list[int] = [0] * len(self.long_minutes)
        # the pre-crash volatility a recovery is compared with: slow enough that a crash hardly moves it
        self._var_alpha_slow = 1.0 - 0.5 ** (1.0 / slow_volatility_halflife_min)
        self.ret_var_slow = 0.0

    # ------------------------------------------------------------------ hot path
    def update(self, price: float, qty: float, t: int) -> None:
        """Add one tick. Ticks must arrive in non-decreasing time (the feed guarantees it)."""
        if t < self.last_time:
            raise ValueError(f"{self.symbol}: tick at {t} is older than the last tick at {self.last_time}")
        minute = t // MINUTE_MS
        if minute != self._minute:
            self._close_minutes(minute)
        self._minute_close = price
        if price > self._minute_high:
            self._minute_high = price
        self._minute_vol += qty
        self.last_price = price
        self.last_time = t
        if self.ticks == 0:
            self.first_time = t
        self.ticks += 1

        n = self.n
        wins = self.windows_ms
        # tick history and window sums
        ts = self._t = append(self._t, t)
        ps = self._p = append(self._p, price)
        qs = self._q = append(self._q, qty)
        heads, sq, spq = self._h, self._sum_q, self._sum_pq
        pq = price * qty
        self._q_total += qty
        for k in range(n):
            h = heads[k]
            cutoff = t - wins[k]
            s_q = sq[k] + qty
            s_pq = spq[k] + pq
            while ts[h] <= cutoff:
                s_q -= qs[h]
                s_pq -= ps[h] * qs[h]
                h += 1
            heads[k] = h
            sq[k] = s_q
            spq[k] = s_pq

        # one routine keeps both deques: the minimum is the maximum of negated prices
        _push_max(self._mx_t, self._mx_p, self._mx_h, t, price, wins, n)
        _push_max(self._mn_t, self._mn_p, self._mn_h, t, -price, wins, n)

        if heads[n - 1] >= _COMPACT_AT:
            self._compact()

    def _close_minutes(self, minute: int) -> None:
        """Sample one-minute return and volume for the EWMAs when a minute boundary passes."""
        prev_minute = self._minute
        if prev_minute >= 0:
            close = self._minute_close
            gap = minute - prev_minute  # minutes since the last sampled minute (>1 for sparse feeds)
            if self._prev_close == self._prev_close and self._prev_close > 0 and close > 0:
                r = log_ratio(close, self._prev_close)
                # a return over `gap` minutes carries gap minutes of variance
                sample = r * r / gap if gap > 1 else r * r
                a = self._var_alpha
                self.ret_var = sample if self.ret_samples == 0 else (1 - a) * self.ret_var + a * sample
                a = self._var_alpha_slow
                self.ret_var_slow = sample if self.ret_samples == 0 else (1 - a) * self.ret_var_slow + a * sample
                self.ret_samples += 1
            self._prev_close = close
            vol_sample = self._minute_vol / gap if gap > 1 else self._minute_vol
            a = self._vol_alpha
            self.vol_baseline = vol_sample if self.vol_samples == 0 else (1 - a) * self.vol_baseline + a * vol_sample
            self.vol_samples += 1
            closes = self.closes
            for _ in range(min(gap, SPARK_MINUTES)):
                closes.append(close)
            if len(closes) > SPARK_MINUTES:
                del closes[: len(closes) - SPARK_MINUTES]
            if self.long_minutes:
                self._push_minute_high(prev_minute, minute)
        self._minute = minute
        self._minute_vol = 0.0
        self._minute_high = -math.inf

    def _push_minute_high(self, closed: int, minute: int) -> None:
        """Add the closed minute's high to the long-horizon deque; move each horizon's head
        past the minutes that left it as of `minute` (the one now open)."""
        times, highs, heads = self._lh_t, self._lh_p, self._lh_h
        high = self._minute_high
        size = len(highs)
        while size and highs[size - 1] <= high:
            size -= 1
        if size < len(highs):
            del times[size:]
            del highs[size:]
            for j in range(len(heads)):
                if heads[j] > size:
                    heads[j] = size
        times.append(closed)
        highs.append(high)
        n = len(highs)
        for j, horizon in enumerate(self.long_minutes):
            h = heads[j]
            cutoff = minute - horizon - 1  # minute - horizon stays: never a shorter window than asked
            while h < n and times[h] <= cutoff:
                h += 1
            heads[j] = h
        cut = heads[-1]
        if cut >= _COMPACT_AT // 4:
            del times[:cut]
            del highs[:cut]
            for j in range(len(heads)):
                heads[j] -= cut

    def _compact(self) -> None:
        """Drop history older than the longest window; resynchronise the running sums."""
        cut = self._h[self.n - 1]
        self._t = self._t[cut:]
        ps = self._p = self._p[cut:]
        qs = self._q = self._q[cut:]
        for k in range(self.n):
            h = self._h[k] - cut
            self._h[k] = h
            # exact resync bounds floating-point drift of the running sums
            self._sum_q[k] = _exact_sum(qs[h:])
            self._sum_pq[k] = _exact_sum([p * q for p, q in zip(ps[h:], qs[h:])])
        for times, prices, heads in ((self._mx_t, self._mx_p, self._mx_h), (self._mn_t, self._mn_p, self._mn_h)):
            cut = heads[self.n - 1]
            if cut:
                del times[:cut]
                del prices[:cut]
                for k in range(self.n):
                    heads[k] -= cut

    # ------------------------------------------------------------------ reads
    def index_of(self, minutes: int) -> int:
        try:
            return self.windows_ms.index(minutes * MINUTE_MS)
        except ValueError:
            raise KeyError(f"no {minutes}-minute window (have {[w // MINUTE_MS for w in self.windows_ms]})") from None

    def high(self, k: int) -> float:
        """Highest price in window k (by index), including the current tick."""
        return self._mx_p[self._mx_h[k]]

    def low(self, k: int) -> float:
        return -self._mn_p[self._mn_h[k]]

    def high_time(self, k: int) -> int:
        return self._mx_t[self._mx_h[k]]

    def low_time(self, k: int) -> int:
        return self._mn_t[self._mn_h[k]]

    def drop_pct(self, k: int) -> float:
        """Percent below the window's high (>= 0)."""
        hi = self._mx_p[self._mx_h[k]]
        return (hi - self.last_price) / hi * 100.0

    def last_tick(self) -> tuple[int, float, float]:
        """(time, price, quantity) of the newest tick."""
        last = len(self._t) - 1
        return self._t[last], self._p[last], self._q[last]

    def long_high(self, j: int) -> float:
        """Highest price over long horizon j (by index): the open minute and the closed ones
        inside the horizon."""
        h = self._lh_h[j]
        hi = self._minute_high
        if h < len(self._lh_p) and self._lh_p[h] > hi:
            return self._lh_p[h]
        return hi

    def long_drop_pct(self, j: int) -> float:
        """Percent below long horizon j's high (>= 0). long_high inlined: breadth asks on every tick."""
        h = self._lh_h[j]
        highs = self._lh_p
        hi = self._minute_high
        if h < len(highs) and highs[h] > hi:
            hi = highs[h]
        return (hi - self.last_price) / hi * 100.0

    def rise_pct(self, k: int) -> float:
        """Percent above the window's low (>= 0)."""
        lo = -self._mn_p[self._mn_h[k]]
        return (self.last_price - lo) / lo * 100.0

    def _no_volume(self, s: float) -> bool:
        # running sums leave rounding residue (0.1 + 0.2 - 0.1 - 0.2 != 0): far below any real tick
        return s <= 1e-12 * self._q_total

    def volume(self, k: int) -> float:
        s = self._sum_q[k]
        return 0.0 if self._no_volume(s) else s

    def vwap(self, k: int) -> float:
        s = self._sum_q[k]
        if self._no_volume(s):
            return self.last_price
        # clamp: residue in a tiny sum must never move the average outside the window's range
        return min(max(self._sum_pq[k] / s, self.low(k)), self.high(k))

    def count(self, k: int) -> int:
        return len(self._t) - self._h[k]

    def first_price(self, k: int) -> float:
        """The oldest price still inside window k (the price roughly one window ago)."""
        return self._p[self._h[k]]

    def change_pct(self, k: int) -> float:
        first = self._p[self._h[k]]
        return (self.last_price / first - 1.0) * 100.0

    def span_ms(self) -> int:
        """How much event time this symbol's history covers."""
        return self.last_time - self.first_time if self.ticks else 0

    def sigma_1m(self) -> float:
        """EWMA standard deviation of one-minute log returns (0 before two minutes of data)."""
        return math.sqrt(self.ret_var) if self.ret_samples else 0.0

    def sigma_1m_slow(self) -> float:
        """The same deviation on a slow EWMA (6-hour half-life by default): the market's
        level before a crash, which a recovery's volatility is compared with."""
        return math.sqrt(self.ret_var_slow) if self.ret_samples else 0.0

    def volume_multiple(self, k: int) -> float:
        """Window volume over the baseline for the same span (0 while there is no baseline)."""
        base = self.vol_baseline
        if base <= 0.0:
            return 0.0
        return self._sum_q[k] / (base * (self.windows_ms[k] / MINUTE_MS))
