"""SimFeed: determinism, stream invariants, validation, and that each scenario tells its story.

Scenario checks work on 1-minute bars and compute trailing-60-minute highs/lows naively
(max/min over the previous 60 bars), independently of the detectors under test elsewhere.
Seed sweeps use 1-second steps to keep the file fast; the model is written in time units,
so the shapes do not depend on the step.
"""

from __future__ import annotations

import math
import statistics
from itertools import islice

import pytest

from core.events import Liquidation, MarkPrice, Tick
from core.market.feed import MAX_SPEED
from core.market.sim import DEFAULT_SYMBOLS, SCENARIOS, SimFeed

MINUTE = 60_000


# -- helpers -------------------------------------------------------------------------
def bars(events: list, symbol: str, start_ms: int) -> list[list[float]]:
    """1-minute [open, high, low, close, volume] bars of one symbol's ticks, by minute index."""
    out: dict[int, list[float]] = {}
    for e in events:
        if type(e) is Tick and e.symbol == symbol:
            m = (e.time_ms - start_ms) // MINUTE
            b = out.get(m)
            if b is None:
                out[m] = [e.price, e.price, e.price, e.price, e.qty]
            else:
                b[1] = max(b[1], e.price)
                b[2] = min(b[2], e.price)
                b[3] = e.price
                b[4] += e.qty
    assert sorted(out) == list(range(len(out))), "a minute without ticks"
    return [out[m] for m in range(len(out))]


def drops(bs: list[list[float]], window: int = 60) -> list[float]:
    """Per minute: fall of the minute's low from the high of the trailing `window` minutes."""
    return [1.0 - bs[m][2] / max(b[1] for b in bs[max(0, m - window + 1) : m + 1]) for m in range(len(bs))]


def rises(bs: list[list[float]], window: int = 60) -> list[float]:
    """Per minute: rise of the minute's high above the low of the trailing `window` minutes."""
    return [bs[m][1] / min(b[2] for b in bs[max(0, m - window + 1) : m + 1]) - 1.0 for m in range(len(bs))]


def run(scenario: str, seed: int, **kw: object) -> tuple[SimFeed, list]:
    feed = SimFeed(scenario, seed=seed, **kw)  # type: ignore[arg-type]
    if feed.duration_s is None:
        feed = SimFeed(scenario, seed=seed, duration_s=feed.scenario_length_s, **kw)  # type: ignore[arg-type]
    return feed, list(feed._events())


@pytest.fixture(scope="module")
def flash() -> tuple[SimFeed, list]:
    """The default console market: flash-crash, seed 7, 8 symbols, 500 ms steps."""
    return run("flash-crash", 7)


# -- determinism and invariants -----------------------------------------------------------
def test_same_seed_same_stream_different_seed_different() -> None:
    a = list(islice(SimFeed(seed=3)._events(), 5000))
    b = list(islice(SimFeed(seed=3)._events(), 5000))
    c = list(islice(SimFeed(seed=4)._events(), 5000))
    assert len(a) == 5000
    assert a == b
    assert a != c
    # one feed iterated twice replays the same stream
    feed = SimFeed("random", seed=11)
    assert list(islice(feed._events(), 2000)) == list(islice(feed._events(), 2000))


def test_attributes_and_defaults() -> None:
    feed = SimFeed(tick_interval_ms=250)
    assert feed.name == "sim"
    assert feed.symbols == DEFAULT_SYMBOLS
    assert feed.cadence_ms == 250
    assert feed.scenario == "flash-crash"
    assert feed.speed == MAX_SPEED
    assert set(SCENARIOS) == {"calm", "flash-crash", "slow-bleed", "pump-and-dump", "market-wide-crash", "random"}
    first = {e.symbol: e.price for e in islice(feed._events(), 8) if type(e) is Tick}
    assert 80_000 < first["BTCUSDT"] < 110_000
    assert 2_900 < first["ETHUSDT"] < 3_900
    assert 0.25 < first["DOGEUSDT"] < 0.4


def test_stream_invariants(flash: tuple[SimFeed, list]) -> None:
    feed, events = flash
    end_ms = feed.start_ms + int(feed.scenario_length_s * 1000)
    times = [e.time_ms for e in events]
    assert times == sorted(times)
    assert times[0] >= feed.start_ms and times[-1] < end_ms + feed.tick_interval_ms
    kinds = {type(e) for e in events}
    assert kinds == {Tick, MarkPrice, Liquidation}
    ticks = [e for e in events if type(e) is Tick]
    assert len(ticks) == len(feed.symbols) * int(feed.scenario_length_s * 1000 / feed.tick_interval_ms)
    # one tick per symbol per step, symbols in a fixed order
    assert [t.symbol for t in ticks[: 3 * len(feed.symbols)]] == list(feed.symbols) * 3
    for e in events:
        if type(e) is MarkPrice:
            assert e.symbol in ("BTCUSDT", "ETHUSDT")
            assert math.isfinite(e.mark_price) and e.mark_price > 0
        else:
            assert math.isfinite(e.price) and e.price > 0
            assert math.isfinite(e.qty) and e.qty > 0
        if type(e) is Liquidation:
            assert e.side in ("SELL", "BUY")
        if type(e) is Tick:
            assert e.market == "spot"
    marks = [e for e in events if type(e) is MarkPrice and e.symbol == "BTCUSDT"]
    assert abs(len(marks) - feed.scenario_length_s) <= 2  # about once per second


def test_duration_and_no_futures() -> None:
    feed = SimFeed("calm", seed=1, duration_s=90, futures=False, tick_interval_ms=1000)
    events = list(feed._events())
    assert {type(e) for e in events} == {Tick}
    assert len(events) == 90 * len(DEFAULT_SYMBOLS)
    assert max(e.time_ms for e in events) < feed.start_ms + 90_000


def test_unknown_symbols_get_a_stable_price() -> None:
    a = SimFeed("calm", symbols=["FOOUSDT", "BTCUSDT", "X1"], duration_s=5)
    b = SimFeed("calm", symbols=("FOOUSDT", "BTCUSDT", "X1"), duration_s=5)
    assert a.symbols == ("FOOUSDT", "BTCUSDT", "X1")
    assert a.profiles == b.profiles
    assert all(p.price > 0 for p in a.profiles)
    assert a.profiles[0].price != a.profiles[2].price
    assert list(a._events()) == list(b._events())


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"scenario": "moon"}, "flash-crash"),  # the message lists the valid names
        ({"scenario": "moon"}, "moon"),
        ({"tick_interval_ms": 0}, "tick_interval_ms"),
        ({"tick_interval_ms": -5}, "tick_interval_ms"),
        ({"tick_interval_ms": 2.5}, "tick_interval_ms"),
        ({"symbols": []}, "empty"),
        ({"symbols": ["BTCUSDT", "BTCUSDT"]}, "duplicate"),
        ({"symbols": ["btcusdt"]}, "uppercase"),
        ({"symbols": ["BTC-USDT"]}, "uppercase"),
        ({"symbols": "BTCUSDT"}, "symbols"),
        ({"duration_s": 0}, "duration_s"),
        ({"duration_s": float("nan")}, "duration_s"),
        ({"speed": -1.0}, "speed"),
        ({"seed": "x"}, "seed"),
        ({"start_ms": -1}, "start_ms"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        SimFeed(**kwargs)


# -- scenarios ----------------------------------------------------------------------------
def test_calm_stays_calm_and_correlated() -> None:
    for seed in range(6):
        feed, events = run("calm", seed, symbols=("BTCUSDT", "ETHUSDT"), tick_interval_ms=1000)
        btc = bars(events, "BTCUSDT", feed.start_ms)
        eth = bars(events, "ETHUSDT", feed.start_ms)
        assert len(btc) == 120
        assert max(drops(btc)) < 0.05, seed
        rb = [math.log(btc[i][3] / btc[i - 1][3]) for i in range(1, len(btc))]
        re_ = [math.log(eth[i][3] / eth[i - 1][3]) for i in range(1, len(eth))]
        assert statistics.correlation(rb, re_) > 0.5, seed
        # realistic calm vol: BTC annualised from 1-minute returns, roughly 25%..90%
        ann = statistics.pstdev(rb) * math.sqrt(365 * 24 * 60)
        assert 0.25 < ann < 0.9, (seed, ann)


def test_calm_at_default_resolution() -> None:
    feed, events = run("calm", 7)
    assert max(drops(bars(events, "BTCUSDT", feed.start_ms))) < 0.05


def check_flash_crash(feed: SimFeed, events: list) -> None:
    (episode,) = feed.episodes
    crash_min = (episode.start_ms - feed.start_ms) // MINUTE
    btc = bars(events, "BTCUSDT", feed.start_ms)
    d = drops(btc)
    assert 0.15 <= max(d) <= 0.25, max(d)
    assert max(d[:crash_min]) < 0.05  # calm before
    trough = min(range(len(btc)), key=lambda m: btc[m][2])
    assert 0 < trough - crash_min <= 50
    rebound = max(b[1] for b in btc[trough:]) / btc[trough][2] - 1.0
    assert rebound >= 0.05
    assert btc[-1][3] < btc[0][0]  # only a partial recovery
    eth = max(drops(bars(events, "ETHUSDT", feed.start_ms)))
    assert eth > max(d) - 0.01  # ETH follows through its beta (a bit more)


def test_flash_crash_default(flash: tuple[SimFeed, list]) -> None:
    check_flash_crash(*flash)


@pytest.mark.parametrize("seed", range(6))
def test_flash_crash_seeds(seed: int) -> None:
    check_flash_crash(*run("flash-crash", seed, tick_interval_ms=1000, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT")))


def test_flash_crash_futures_and_volume(flash: tuple[SimFeed, list]) -> None:
    feed, events = flash
    crash_start = feed.episodes[0].start_ms
    crash_end = crash_start + 30 * MINUTE
    spot: dict[str, float] = {}
    calm_basis: list[float] = []
    crash_basis: list[float] = []
    for e in events:
        if type(e) is Tick:
            spot[e.symbol] = e.price
        elif type(e) is MarkPrice and e.symbol == "BTCUSDT":
            basis = e.mark_price / spot["BTCUSDT"] - 1.0
            if e.time_ms < crash_start:
                calm_basis.append(basis)
            elif e.time_ms < crash_end:
                crash_basis.append(basis)
    assert max(abs(b) for b in calm_basis) < 0.002  # a few basis points
    assert 0.005 <= max(abs(b) for b in crash_basis) <= 0.02  # widens in the crash

    def liqs(lo: int, hi: int, side: str) -> int:
        return sum(1 for e in events if type(e) is Liquidation and lo <= e.time_ms < hi and e.side == side)

    calm_all = liqs(feed.start_ms, crash_start, "SELL") + liqs(feed.start_ms, crash_start, "BUY")
    crash_sells = liqs(crash_start, crash_end, "SELL")
    assert calm_all < 50  # rare in calm (10 minutes, 8 symbols)
    assert crash_sells > 20 * max(calm_all, 1)  # a burst of long liquidations
    assert crash_sells > 5 * liqs(crash_start, crash_end, "BUY")

    btc = bars(events, "BTCUSDT", feed.start_ms)
    vols = [b[4] for b in btc]
    crash_min = (crash_start - feed.start_ms) // MINUTE
    assert max(vols[crash_min : crash_min + 30]) >= 4 * statistics.median(vols)


@pytest.mark.parametrize("seed", [0, 1])
def test_pump_and_dump(seed: int) -> None:
    feed, events = run("pump-and-dump", seed)
    assert feed.pump_symbol == "DOGEUSDT"
    doge = bars(events, "DOGEUSDT", feed.start_ms)
    r = rises(doge)
    peak = max(range(len(doge)), key=lambda m: doge[m][1])
    assert r[peak] >= 0.30
    assert 1.0 - min(b[2] for b in doge[peak:]) / doge[peak][1] >= 0.25
    assert min(b[2] for b in doge[peak:]) < doge[0][0]  # dumps below where it started
    vols = [b[4] for b in doge]
    pump_start = (feed.episodes[0].start_ms - feed.start_ms) // MINUTE
    assert max(vols[pump_start : peak + 1]) >= 5 * statistics.median(vols)
    # the rest stay calm
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        assert max(drops(bars(events, symbol, feed.start_ms))) < 0.05


def test_pump_without_doge_uses_last_symbol() -> None:
    feed = SimFeed("pump-and-dump", symbols=("BTCUSDT", "ETHUSDT", "PEPEUSDT"))
    assert feed.pump_symbol == "PEPEUSDT"
    assert feed.episodes[0].target == "PEPEUSDT"


@pytest.mark.parametrize("seed", [0, 1])
def test_market_wide_crash(seed: int) -> None:
    feed, events = run("market-wide-crash", seed, tick_interval_ms=1000)
    per_symbol = {s: drops(bars(events, s, feed.start_ms)) for s in feed.symbols}
    minutes = len(per_symbol["BTCUSDT"])
    breadth = max(sum(1 for s in feed.symbols if per_symbol[s][m] >= 0.08) for m in range(minutes))
    assert breadth >= math.ceil(0.6 * len(feed.symbols))
    btc = max(per_symbol["BTCUSDT"])
    assert 0.08 <= btc < 0.15
    for s in feed.symbols:
        assert 0.08 <= max(per_symbol[s]) <= 0.25, s
    alts = [max(per_symbol[s]) for s in ("SOLUSDT", "DOGEUSDT", "AVAXUSDT")]
    assert min(alts) > btc  # alts fall harder


def test_slow_bleed() -> None:
    feed, events = run("slow-bleed", 3, tick_interval_ms=5000, symbols=("BTCUSDT", "ETHUSDT"))
    btc = bars(events, "BTCUSDT", feed.start_ms)
    total = 1.0 - btc[-1][3] / btc[0][0]
    assert 0.08 <= total <= 0.17
    assert max(drops(btc)) < 0.07  # never steep in any one hour


def test_random_is_endless_seeded_and_eventful() -> None:
    a = SimFeed("random", seed=5)
    b = SimFeed("random", seed=6)
    assert a.duration_s is None
    assert a.episodes and {ep.kind for ep in a.episodes} <= set(SCENARIOS)
    assert [(e.kind, e.start_ms) for e in a.episodes] != [(e.kind, e.start_ms) for e in b.episodes]
    # endless: well past the natural length the stream still flows (coarse steps keep this fast)
    coarse = SimFeed("random", seed=5, tick_interval_ms=60_000, symbols=("BTCUSDT",), futures=False)
    late = list(islice(coarse._events(), 2 * int(coarse.scenario_length_s / 60)))
    assert late[-1].time_ms >= coarse.start_ms + int(coarse.scenario_length_s * 1000)
    times = [e.time_ms for e in late]
    assert times == sorted(times)


async def test_batches_at_max_speed_yield_everything() -> None:
    feed = SimFeed("flash-crash", seed=2, duration_s=1200)
    expected = list(feed._events())
    got = []
    async for batch in feed.batches():
        assert batch
        got.extend(batch)
    assert got == expected
    assert feed.stats.events == len(expected)
    assert feed.stats.last_event_ms == expected[-1].time_ms


def test_half_an_hour_of_flash_crash_is_every_symbol_every_step() -> None:
    """How fast this generates is a figure of bench/feeds.py, not a bound here."""
    feed = SimFeed("flash-crash", seed=1, duration_s=1800)
    ticks = [e for e in feed._events() if type(e) is Tick]
    steps = 1800 * 1000 // feed.tick_interval_ms
    assert len(ticks) == steps * len(feed.symbols) == 3600 * 8
    assert ticks[-1].time_ms - ticks[0].time_ms >= (steps - 1) * feed.tick_interval_ms
