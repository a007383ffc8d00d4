"""A seeded, deterministic market simulator: the console's default market and the tests' fixture.

Model: a one-factor model of log returns (each symbol = beta * market + idiosyncratic),
with Student-t innovations and rare Poisson jumps for fat tails, and a GARCH-like
variance multiplier per factor for volatility clustering. Scenarios add a deterministic
log-price path ("overlay") to the market factor or to single symbols, so a crash has a
known size and timing while the noise around it stays realistic. Volume, liquidations
and the futures basis react to how fast the overlay moves relative to normal volatility,
which is what the breaker and the spike scanner look at.

Why a simulator at all: the console must run with no network, and tests need markets
where the right answer is known in advance. Everything comes from `random.Random(seed)`,
so the same arguments give exactly the same stream.
"""

from __future__ import annotations

import math
import random
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from core.events import Liquidation, MarketEvent, MarkPrice, Tick
from core.market.feed import MAX_SPEED, PacedFeed

SCENARIOS: tuple[str, ...] = ("calm", "flash-crash", "slow-bleed", "pump-and-dump", "market-wide-crash", "random")

DEFAULT_SYMBOLS: tuple[str, ...] = (
    "BTCUSDT",
    "ETHUSDT",
    "SOLUSDT",
    "BNBUSDT",
    "XRPUSDT",
    "DOGEUSDT",
    "ADAUSDT",
    "AVAXUSDT",
)


@dataclass(frozen=True, slots=True)
class SymbolProfile:
    price: float  # start price
    beta: float  # loading on the market factor
    vol: float  # total calm annualised volatility
    notional_per_s: float  # typical traded USDT per second


# Roughly early-2026 levels; vol and volume ranks follow the real market (majors calmer
# and deeper than alts) so per-symbol thresholds in the detectors see realistic spreads.
PROFILES: dict[str, SymbolProfile] = {
    "BTCUSDT": SymbolProfile(95_000.0, 1.00, 0.50, 45_000.0),
    "ETHUSDT": SymbolProfile(3_400.0, 1.20, 0.62, 25_000.0),
    "SOLUSDT": SymbolProfile(190.0, 1.40, 0.85, 9_000.0),
    "BNBUSDT": SymbolProfile(650.0, 0.85, 0.55, 4_000.0),
    "XRPUSDT": SymbolProfile(2.2, 1.20, 0.85, 7_000.0),
    "DOGEUSDT": SymbolProfile(0.32, 1.30, 0.95, 5_000.0),
    "ADAUSDT": SymbolProfile(0.9, 1.25, 0.85, 2_500.0),
    "AVAXUSDT": SymbolProfile(38.0, 1.40, 0.95, 1_800.0),
}

MARK_SYMBOLS: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")

SCENARIO_LENGTH_S: dict[str, float] = {
    "calm": 7_200.0,
    "flash-crash": 7_200.0,
    "slow-bleed": 23_400.0,
    "pump-and-dump": 5_400.0,
    "market-wide-crash": 7_200.0,
    "random": 28_800.0,
}

# pumps are the most common real-world event, so "random" shows them more often
_RANDOM_KINDS = ("flash-crash", "slow-bleed", "pump-and-dump", "market-wide-crash")
_RANDOM_WEIGHTS = (1.0, 1.0, 2.0, 1.0)

_SYMBOL_RE = re.compile(r"^[A-Z0-9]+$")
_SECONDS_PER_YEAR = 365.0 * 86_400.0  # crypto trades every day
_MARKET_VOL = 0.46  # annualised vol of the market factor (BTC's systematic part)
_NU = 4.0  # Student-t degrees of freedom: fat tails with finite variance
_T_CLIP = 10.0  # a single 10-sigma draw is already extreme at sub-second steps
_VAR_TAU_S = 900.0  # variance shocks fade over ~15 minutes
_VAR_ALPHA = 0.2  # strength of volatility clustering
_VAR_MIN, _VAR_MAX = 0.3, 5.0
_PRESS_TAU_S = 90.0  # how long volume/basis keep "remembering" a fast move
_MKT_JUMP_PER_S = 1.0 / 10_800.0  # market jumps: about one per three hours
_MKT_JUMP_SD = 0.0035
_IDIO_JUMP_PER_S = 1.0 / 21_600.0  # symbol jumps: about one per six hours each (most jumps are market-wide)
_CALM_LIQ_PER_S = 1.0 / 900.0
# Binance's forceOrder stream sends at most one liquidation per symbol per second.
_MAX_LIQ_PER_S = 1.0


def _profile(symbol: str) -> SymbolProfile:
    known = PROFILES.get(symbol)
    if known is not None:
        return known
    # crc32, not hash(): str hashes are salted per process and would break determinism.
    h = zlib.crc32(symbol.encode("ascii"))
    price = 10.0 ** (-2.0 + 5.0 * ((h & 0xFFFF) / 0xFFFF))  # 0.01 .. 1000, log-uniform
    beta = 0.9 + 0.5 * (((h >> 16) & 0xFF) / 0xFF)
    vol = 0.75 + 0.35 * (((h >> 24) & 0xFF) / 0xFF)
    return SymbolProfile(float(f"{price:.6g}"), round(beta, 3), round(vol, 3), 1_000.0)


@dataclass(frozen=True, slots=True)
class Episode:
    """One scenario event: a log-price path added to the market factor or to symbols.

    `target` is "market" (the factor, so every symbol moves by its beta), "alts" (every
    symbol but BTCUSDT, on top of the market) or one symbol name. `knots` are
    (seconds from start, log-price offset) points, linearly interpolated and held at
    the last value after the end.
    """

    kind: str
    start_ms: int
    target: str
    knots: tuple[tuple[float, float], ...]

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(self.knots[-1][0] * 1000)

    def level(self, t_s: float) -> float:
        knots = self.knots
        if t_s <= knots[0][0]:
            return knots[0][1]
        for (t0, y0), (t1, y1) in zip(knots, knots[1:]):
            if t_s <= t1:
                return y0 + (y1 - y0) * (t_s - t0) / (t1 - t0)
        return knots[-1][1]


def _scaled(points: Sequence[tuple[float, float]], seconds: float, level: float) -> tuple[tuple[float, float], ...]:
    return tuple((f * seconds, y * level) for f, y in points)


def flash_crash_knots(fall: float = 0.18, rebound: float = 0.5) -> tuple[tuple[float, float], ...]:
    """Peak-to-trough `fall` (fraction of price) in ~24 minutes, accelerating into a
    capitulation wick, then recovering `rebound` of the fall over the next 30 minutes."""
    trough = math.log(1.0 - fall)
    back = math.log(1.0 - fall + rebound * fall)
    down = [(0.0, 0.0), (5.0, 0.075), (12.0, 0.25), (18.0, 0.6), (22.0, 0.93), (24.0, 1.0)]
    up = [(27.0, 0.15), (35.0, 0.45), (50.0, 0.9), (54.0, 1.0)]
    return tuple((m * 60.0, f * trough) for m, f in down) + tuple(
        (m * 60.0, trough + f * (back - trough)) for m, f in up
    )


def pump_and_dump_knots(rise: float = 0.40, settle: float = -0.07) -> tuple[tuple[float, float], ...]:
    """Up `rise` in 15 minutes, a 5-minute hold, then a dump to `settle` below the start."""
    top = math.log(1.0 + rise)
    low = math.log(1.0 + settle)
    pts = [(0.0, 0.0), (5.0, 0.2 * top), (10.0, 0.5 * top), (15.0, top), (20.0, 0.95 * top)]
    pts += [(23.0, 0.7 * top), (28.0, 0.3 * top), (33.0, 0.0), (38.0, low)]
    return tuple((m * 60.0, y) for m, y in pts)


def slow_bleed_knots(fall: float = 0.12, hours: float = 6.0) -> tuple[tuple[float, float], ...]:
    """A grind down with small relief bounces, never steep in any single hour."""
    shape = [
        (0.0, 0.0),
        (1 / 6, 0.2),
        (0.25, 0.16),
        (5 / 12, 0.39),
        (0.5, 0.35),
        (2 / 3, 0.66),
        (0.75, 0.62),
        (11 / 12, 0.94),
        (1.0, 1.0),
    ]
    return _scaled(shape, hours * 3600.0, math.log(1.0 - fall))


_MWC_SHAPE = [(0.0, 0.0), (10.0, 0.15), (25.0, 0.45), (40.0, 0.8), (50.0, 1.0), (65.0, 0.9)]


def market_crash_knots(fall: float = 0.12) -> tuple[tuple[float, float], ...]:
    """The market factor (so BTC, beta 1) down `fall` in 50 minutes, then a small relief."""
    return tuple((m * 60.0, f * math.log(1.0 - fall)) for m, f in _MWC_SHAPE)


def alt_extra_knots(extra: float = 0.02) -> tuple[tuple[float, float], ...]:
    """Extra log-drop for alts in a market-wide crash: alts fall harder than beta alone says."""
    return tuple((m * 60.0, -f * extra) for m, f in _MWC_SHAPE)


class SimFeed(PacedFeed):
    """Simulated market. See the module docstring for the model.

    Emits one `Tick` per symbol per step of `tick_interval_ms`, plus (with `futures`)
    `MarkPrice` for BTCUSDT/ETHUSDT about once per second and `Liquidation` events.
    `duration_s=None` runs forever; otherwise the stream stops after that much event time.
    """

    name = "sim"

    def __init__(
        self,
        scenario: str = "flash-crash",
        seed: int = 7,
        symbols: Sequence[str] | None = None,
        start_ms: int = 1_767_225_600_000,
        duration_s: float | None = None,
        tick_interval_ms: int = 500,
        speed: float = MAX_SPEED,
        futures: bool = True,
    ) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; valid scenarios: {', '.join(SCENARIOS)}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if isinstance(tick_interval_ms, bool) or not isinstance(tick_interval_ms, int) or tick_interval_ms <= 0:
            raise ValueError(f"tick_interval_ms must be a positive int, got {tick_interval_ms!r}")
        if isinstance(start_ms, bool) or not isinstance(start_ms, int) or start_ms < 0:
            raise ValueError(f"start_ms must be a non-negative int (epoch ms), got {start_ms!r}")
        if duration_s is not None:
            if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)):
                raise ValueError(f"duration_s must be a positive number or None, got {duration_s!r}")
            if not (duration_s > 0) or not math.isfinite(duration_s):
                raise ValueError(f"duration_s must be a positive number or None, got {duration_s!r}")
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed) or speed < 0:
            raise ValueError(f"speed must be MAX_SPEED (0) or a positive number, got {speed!r}")
        syms = self._check_symbols(DEFAULT_SYMBOLS if symbols is None else symbols)

        super().__init__(speed=float(speed))
        self.scenario = scenario
        self.seed = seed
        self.symbols = syms
        self.start_ms = start_ms
        self.duration_s = None if duration_s is None else float(duration_s)
        self.tick_interval_ms = tick_interval_ms
        self.cadence_ms = tick_interval_ms
        self.futures = bool(futures)
        self.profiles: tuple[SymbolProfile, ...] = tuple(_profile(s) for s in syms)

    @staticmethod
    def _check_symbols(symbols: Sequence[str]) -> tuple[str, ...]:
        if isinstance(symbols, str):
            raise ValueError(f"symbols must be a sequence of symbol names, not one string {symbols!r}")
        syms = tuple(symbols)
        if not syms:
            raise ValueError("symbols must not be empty")
        seen: set[str] = set()
        for s in syms:
            if not isinstance(s, str) or not _SYMBOL_RE.match(s):
                raise ValueError(f"symbol {s!r} must be uppercase letters and digits, like 'BTCUSDT'")
            if s in seen:
                raise ValueError(f"duplicate symbol {s!r}")
            seen.add(s)
        return syms

    # -- scenario ------------------------------------------------------------------
    @property
    def scenario_length_s(self) -> float:
        """The scenario's natural length: long enough to contain its story and the calm after."""
        return SCENARIO_LENGTH_S[self.scenario]

    @property
    def pump_symbol(self) -> str:
        return "DOGEUSDT" if "DOGEUSDT" in self.symbols else self.symbols[-1]

    @property
    def episodes(self) -> list[Episode]:
        """The scenario's events that start within the run (or its natural length if endless)."""
        horizon_s = self.duration_s if self.duration_s is not None else self.scenario_length_s
        end_ms = self.start_ms + int(horizon_s * 1000)
        out: list[Episode] = []
        for ep in self._schedule():
            if ep.start_ms >= end_ms:
                break
            out.append(ep)
        return out

    def _schedule(self) -> Iterator[Episode]:
        """Episodes in start order; endless for "random"."""
        t0 = self.start_ms
        minute = 60_000
        if self.scenario == "calm":
            return iter(())
        if self.scenario == "flash-crash":
            return iter([Episode("flash-crash", t0 + 10 * minute, "market", flash_crash_knots())])
        if self.scenario == "slow-bleed":
            return iter([Episode("slow-bleed", t0 + 15 * minute, "market", slow_bleed_knots())])
        if self.scenario == "pump-and-dump":
            return iter([Episode("pump-and-dump", t0 + 10 * minute, self.pump_symbol, pump_and_dump_knots())])
        if self.scenario == "market-wide-crash":
            start = t0 + 10 * minute
            return iter(
                [
                    Episode("market-wide-crash", start, "market", market_crash_knots()),
                    Episode("market-wide-crash", start, "alts", alt_extra_knots()),
                ]
            )
        return self._random_schedule()

    def _random_schedule(self) -> Iterator[Episode]:
        # A separate stream, so the schedule is known up front (see `episodes`) and
        # does not depend on how many noise draws the market consumed.
        rng = random.Random(self.seed * 1_000_003 + 17)
        minute = 60_000
        alts = [s for s in self.symbols if s not in MARK_SYMBOLS] or list(self.symbols)
        t = self.start_ms + int(rng.uniform(10, 40) * minute)
        while True:
            kind = rng.choices(_RANDOM_KINDS, _RANDOM_WEIGHTS)[0]
            batch: list[Episode]
            if kind == "flash-crash":
                knots = flash_crash_knots(rng.uniform(0.12, 0.22), rng.uniform(0.35, 0.65))
                batch = [Episode(kind, t, "market", knots)]
            elif kind == "slow-bleed":
                knots = slow_bleed_knots(rng.uniform(0.06, 0.12), rng.uniform(2.0, 6.0))
                batch = [Episode(kind, t, "market", knots)]
            elif kind == "pump-and-dump":
                knots = pump_and_dump_knots(rng.uniform(0.25, 0.6), rng.uniform(-0.12, -0.02))
                batch = [Episode(kind, t, rng.choice(alts), knots)]
            else:
                fall = rng.uniform(0.08, 0.14)
                batch = [
                    Episode(kind, t, "market", market_crash_knots(fall)),
                    Episode(kind, t, "alts", alt_extra_knots(rng.uniform(0.0, 0.04))),
                ]
            yield from batch
            t = max(ep.end_ms for ep in batch) + int(rng.uniform(20, 90) * minute)

    def _targets(self, ep: Episode) -> list[int] | None:
        if ep.target == "market":
            return None
        if ep.target == "alts":
            return [i for i, s in enumerate(self.symbols) if s != "BTCUSDT"]
        return [self.symbols.index(ep.target)] if ep.target in self.symbols else []

    def _activate(self, ep: Episode, first_step_ms: int) -> list[Any]:
        # [per-step deltas, next index, target symbol indices or None for the market factor]
        """Precompute the episode's per-step log increments so the hot loop only indexes."""
        dt_s = self.tick_interval_ms / 1000.0
        offset_s = (first_step_ms - ep.start_ms) / 1000.0
        n = max(1, math.ceil((ep.knots[-1][0] - offset_s) / dt_s))
        level = ep.level
        prev = level(0.0)  # a late first step takes the whole move so far, keeping the total exact
        deltas: list[float] = []
        for k in range(1, n + 1):
            cur = level(offset_s + k * dt_s)
            deltas.append(cur - prev)
            prev = cur
        return [deltas, 0, self._targets(ep)]

    # -- the stream ------------------------------------------------------------------
    def _events(self) -> Iterator[MarketEvent]:
        rng = random.Random(self.seed)
        gauss = rng.gauss
        gammav = rng.gammavariate
        rand = rng.random
        exp = math.exp
        sqrt = math.sqrt

        syms = self.symbols
        n = len(syms)
        interval = self.tick_interval_ms
        dt = interval / 1000.0
        end_ms = None if self.duration_s is None else self.start_ms + int(round(self.duration_s * 1000))

        half_nu = _NU / 2.0
        t_scale = (_NU - 2.0) / 2.0  # t = z * sqrt(t_scale / Gamma(nu/2)) has unit variance
        kv = 1.0 - math.exp(-dt / _VAR_TAU_S)
        av = _VAR_ALPHA * math.sqrt(dt / _VAR_TAU_S)  # keeps clustering strength ~independent of dt
        dec = math.exp(-dt / _PRESS_TAU_S)
        one_dec = 1.0 - dec
        sqrt60 = math.sqrt(60.0)

        # market factor
        m_sig_s = _MARKET_VOL / math.sqrt(_SECONDS_PER_YEAR)
        m_sd = m_sig_s * math.sqrt(dt)
        m_coef = one_dec * sqrt60 / (dt * m_sig_s)  # press = drift per minute / sigma per minute
        m_jump_p = _MKT_JUMP_PER_S * dt

        profiles = self.profiles
        beta = [p.beta for p in profiles]
        sig_s = [p.vol / math.sqrt(_SECONDS_PER_YEAR) for p in profiles]
        idio_sd = []
        for p, s in zip(profiles, sig_s):
            idio_vol = math.sqrt(max(p.vol**2 - (p.beta * _MARKET_VOL) ** 2, (0.15 * p.vol) ** 2))
            idio_sd.append(idio_vol / math.sqrt(_SECONDS_PER_YEAR) * math.sqrt(dt))
        inv_tsd = [1.0 / (s * math.sqrt(dt)) for s in sig_s]
        coef = [one_dec * sqrt60 / (dt * s) for s in sig_s]
        ijump_p = _IDIO_JUMP_PER_S * dt
        ijump_sd = [0.004 * p.vol for p in profiles]
        qbase = [p.notional_per_s * dt / p.price for p in profiles]
        liq_notional = [0.4 * p.notional_per_s for p in profiles]
        lp = [math.log(p.price) for p in profiles]
        var = [1.0] * n
        # "press": EWMA of the scenario drift in units of normal per-minute sigma. A fast
        # forced move is what raises volume, noise, liquidations and the futures discount.
        press = [0.0] * n
        zeros = [0.0] * n
        own = zeros
        futures = self.futures
        liq_calm = _CALM_LIQ_PER_S * dt
        liq_max = _MAX_LIQ_PER_S * dt
        mark_idx = [syms.index(s) for s in MARK_SYMBOLS if s in syms] if futures else []
        basis = [0.0003] * len(mark_idx)
        next_mark = self.start_ms
        last_mark = self.start_ms
        # within-step jitter: trades are not synchronised, but a step must not spill into the next
        jmax = min(3, (interval - 1) // (n + 1))

        mv = 1.0
        mpress = 0.0
        schedule = self._schedule()
        pending = next(schedule, None)
        active: list[list[Any]] = []
        step = 0
        start = self.start_ms

        while True:
            base = start + step * interval
            if end_ms is not None and base >= end_ms:
                return
            step += 1

            while pending is not None and pending.start_ms <= base:
                active.append(self._activate(pending, base))
                pending = next(schedule, None)
            mkt_d = 0.0
            if active:
                own = [0.0] * n
                for act in active:
                    deltas, k, targets = act
                    d = deltas[k]
                    act[1] = k + 1
                    if targets is None:
                        mkt_d += d
                    else:
                        for j in targets:
                            own[j] += d
                active = [a for a in active if a[1] < len(a[0])]
            elif own is not zeros:
                own = zeros

            # market factor
            g = gammav(half_nu, 1.0)
            t = gauss(0.0, 1.0) * sqrt(t_scale / g) if g > 1e-6 else 0.0
            if t > _T_CLIP:
                t = _T_CLIP
            elif t < -_T_CLIP:
                t = -_T_CLIP
            amp = mpress if mpress >= 0.0 else -mpress
            mult = 1.0 + 0.06 * amp
            if mult > 2.5:
                mult = 2.5
            m_eps = m_sd * sqrt(mv) * mult * t
            t2 = t * t
            if t2 > 16.0:
                t2 = 16.0
            mv += kv * (1.0 - mv) + av * mv * (t2 - 1.0)
            if rand() < m_jump_p:
                m_eps += gauss(0.0, _MKT_JUMP_SD)
                mv += 1.0  # a jump leaves a volatile aftermath
            if mv < _VAR_MIN:
                mv = _VAR_MIN
            elif mv > _VAR_MAX:
                mv = _VAR_MAX
            mpress = mpress * dec + m_coef * mkt_d

            tm = base
            for i in range(n):
                g = gammav(half_nu, 1.0)
                t = gauss(0.0, 1.0) * sqrt(t_scale / g) if g > 1e-6 else 0.0
                if t > _T_CLIP:
                    t = _T_CLIP
                elif t < -_T_CLIP:
                    t = -_T_CLIP
                pi = press[i]
                amp = pi if pi >= 0.0 else -pi
                mult = 1.0 + 0.06 * amp
                if mult > 2.5:
                    mult = 2.5
                vi = var[i]
                sv = sqrt(vi)
                e = idio_sd[i] * sv * mult * t
                t2 = t * t
                if t2 > 16.0:
                    t2 = 16.0
                vi += kv * (1.0 - vi) + av * vi * (t2 - 1.0)
                if rand() < ijump_p:
                    e += gauss(0.0, ijump_sd[i])
                    vi += 1.0
                if vi < _VAR_MIN:
                    vi = _VAR_MIN
                elif vi > _VAR_MAX:
                    vi = _VAR_MAX
                var[i] = vi
                b = beta[i]
                di = b * mkt_d + own[i]
                noise = b * m_eps + e
                x = lp[i] + noise + di
                lp[i] = x
                price = exp(x)
                press[i] = pi = pi * dec + coef[i] * di

                # volume: bigger on surprising moves, in volatile regimes and during fast
                # scenario moves (the "several-fold" volume of real crashes and pumps)
                zr = (noise if noise >= 0.0 else -noise) * inv_tsd[i]
                if zr > 6.0:
                    zr = 6.0
                vm = 1.0 + 0.5 * amp
                if vm > 15.0:
                    vm = 15.0
                qty = qbase[i] * (0.55 + 0.45 * zr) * (0.5 + 0.5 * sv) * vm * exp(0.5 * gauss(0.0, 1.0))
                if jmax:
                    tm += int(rand() * (jmax + 1))
                yield Tick(syms[i], price, qty, tm)

                if futures:
                    amp = pi if pi >= 0.0 else -pi
                    lam = liq_calm + 0.006 * amp * amp * dt
                    if lam > liq_max:
                        lam = liq_max
                    # the rate is capped at one per second, so a step of up to 1 s holds at
                    # most one (as Binance sends); coarser steps get the whole part plus a coin flip
                    count = int(lam)
                    if rand() < lam - count:
                        count += 1
                    if count:
                        for _ in range(count):
                            if pi < -1.0:
                                sell = rand() < 0.92  # a dump liquidates longs
                            elif pi > 1.0:
                                sell = rand() < 0.08  # a pump liquidates shorts
                            else:
                                sell = rand() < 0.5
                            slip = 0.001 * rand()
                            lpx = price * (1.0 - slip) if sell else price * (1.0 + slip)
                            lq = liq_notional[i] * (1.0 + 0.1 * amp) * exp(0.9 * gauss(0.0, 1.0)) / lpx
                            yield Liquidation(syms[i], "SELL" if sell else "BUY", lpx, lq, tm)

            if mark_idx and base >= next_mark:
                dtm = max(base - last_mark, interval) / 1000.0
                kb = 1.0 - math.exp(-dtm / 20.0)
                for m, i in enumerate(mark_idx):
                    pi = press[i]
                    # perps trade at a small premium; in a dump they sink below spot
                    # (forced selling hits futures first), in a pump the premium widens
                    if pi < 0.0:
                        target = 0.0003 - 0.015 * (1.0 - exp(pi / 8.0))
                    else:
                        target = 0.0003 + 0.004 * (1.0 - exp(-pi / 8.0))
                    bm = basis[m]
                    bm += (target - bm) * kb + 0.00004 * sqrt(dtm) * gauss(0.0, 1.0)
                    basis[m] = bm
                    yield MarkPrice(syms[i], exp(lp[i]) * (1.0 + bm), tm)
                last_mark = base
                next_mark += 1000
                if next_mark <= base:
                    next_mark = base + 1000
