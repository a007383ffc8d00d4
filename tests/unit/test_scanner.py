"""The scanner on synthetic paths: timeframes, z-scores, volume, cool-down, futures data."""

from __future__ import annotations

from core.events import Liquidation, MarkPrice, SpikeType, Tick
from tests.helpers import MIN, SEC, T0, make_engine, path


def spikes(engine, kind=SpikeType.SPOT_PRICE_SPIKE):
    return [s for s in engine.spikes if s.spike_type is kind]


def test_a_one_minute_wick_is_caught_on_the_one_minute_window(settings):
    engine = make_engine(settings)
    engine.process(path("SOLUSDT", [(0, 100.0), (20, 100.0), (20.5, 104.0)]))
    got = spikes(engine)
    assert len(got) == 1
    s = got[0]
    assert s.direction == "pump" and s.timeframe_minutes == 1 and s.magnitude_pct >= 3.0
    assert s.time_ms <= T0 + 20 * MIN + 30 * SEC and s.confidence >= 0.5 and s.detection_latency_ms >= 0


def test_a_move_building_over_an_hour_is_caught_on_a_long_window(settings):
    engine = make_engine(settings)
    # 11% over 55 minutes: never 3% in 1m, 5% in 5m or 7% in 15m
    engine.process(path("SOLUSDT", [(0, 100.0), (15, 100.0), (70, 89.0)]))
    got = spikes(engine)
    assert got and all(s.direction == "dump" for s in got)
    assert got[0].timeframe_minutes == 60 and got[0].magnitude_pct >= 10.0


def test_per_pair_thresholds(settings):
    engine = make_engine(settings)
    engine.process(path("BTCUSDT", [(0, 100.0), (20, 100.0), (20.5, 101.6)]))  # BTC m1 threshold 1.5%
    engine.process(path("SOLUSDT", [(0, 100.0), (20, 100.0), (20.5, 101.6)]))  # default m1 threshold 3%
    assert [s.symbol for s in spikes(engine)] == ["BTCUSDT"]


def test_warm_up_and_calm_noise_make_no_alerts(settings):
    import random

    rng = random.Random(5)
    engine = make_engine(settings)
    price, ticks = 100.0, []
    for i in range(6 * 3600):  # six hours, one tick a second, 0.02% noise
        price *= 1 + rng.gauss(0, 0.0002)
        ticks.append(Tick("SOLUSDT", price, rng.uniform(0.5, 1.5), T0 + i * SEC))
    engine.process(ticks)
    assert list(engine.spikes) == []


def test_zscore_path_catches_an_outsized_move_for_a_quiet_pair(settings):
    import random

    rng = random.Random(1)
    engine = make_engine(settings)
    price, ticks = 100.0, []
    for i in range(90 * 60):  # 90 quiet minutes: sigma of one-minute returns ~0.05%
        price *= 1 + rng.gauss(0, 0.00007)
        ticks.append(Tick("SOLUSDT", price, 1.0, T0 + i * SEC))
    engine.process(ticks)
    assert not spikes(engine)
    # a 2% pop in one minute: under the 3% percent bar, but many sigmas
    engine.process(path("SOLUSDT", [(90, price), (91, price * 1.02)], start=T0))
    got = spikes(engine)
    assert got and got[0].direction == "pump" and got[0].zscore >= settings.spike_detection.default_thresholds.zscore


def test_duplicates_are_suppressed_by_the_cooldown(settings):
    engine = make_engine(settings)
    engine.process(path("SOLUSDT", [(0, 100.0), (20, 100.0), (20.5, 104.0), (21, 100.0), (21.5, 104.5),
                                    (22, 100.0), (40, 100.0), (40.5, 104.0)]))
    pumps = [s for s in spikes(engine) if s.direction == "pump"]
    assert len(pumps) == 2  # 20.5 and, after the 15-minute cool-down, 40.5
    assert pumps[1].time_ms - pumps[0].time_ms >= 15 * MIN


def test_volume_explosion_needs_a_price_move(settings):
    engine = make_engine(settings)
    base = [Tick("SOLUSDT", 100.0 + (i % 2) * 0.01, 1.0, T0 + i * SEC) for i in range(70 * 60)]
    engine.process(base)
    burst_flat = [Tick("SOLUSDT", 100.0, 50.0, T0 + 70 * MIN + i * SEC) for i in range(60)]
    engine.process(burst_flat)
    assert not spikes(engine, SpikeType.VOLUME_EXPLOSION)
    burst_move = [Tick("SOLUSDT", 100.0 * (1 + 0.03 * i / 120), 50.0, T0 + 71 * MIN + i * SEC) for i in range(120)]
    engine.process(burst_move)
    got = spikes(engine, SpikeType.VOLUME_EXPLOSION)
    assert got and got[0].direction == "pump" and got[0].volume_multiple >= 8.0


def test_futures_spot_divergence(settings):
    engine = make_engine(settings)
    engine.process([Tick("BTCUSDT", 100.0, 1.0, T0)])
    engine.process([MarkPrice("BTCUSDT", 100.5, T0 + SEC)])
    assert not spikes(engine, SpikeType.FUTURES_SPOT_DIVERGENCE)
    engine.process([MarkPrice("BTCUSDT", 98.5, T0 + 2 * SEC)])
    got = spikes(engine, SpikeType.FUTURES_SPOT_DIVERGENCE)
    assert len(got) == 1 and got[0].direction == "dump" and got[0].magnitude_pct >= 1.0
    # a mark against a stale spot price says nothing
    engine2 = make_engine(settings)
    engine2.process([Tick("BTCUSDT", 100.0, 1.0, T0), MarkPrice("BTCUSDT", 90.0, T0 + 60 * SEC)])
    assert not spikes(engine2, SpikeType.FUTURES_SPOT_DIVERGENCE)


def test_liquidation_cascade(settings):
    engine = make_engine(settings)
    engine.process([Tick("ETHUSDT", 3000.0, 1.0, T0)])
    liqs = [Liquidation("ETHUSDT", "SELL", 3000.0, 100.0, T0 + i * SEC) for i in range(25)]  # 25 x $300k
    engine.process(liqs)
    got = spikes(engine, SpikeType.LIQUIDATION_CASCADE)
    assert len(got) == 1 and got[0].direction == "dump"
    assert got[0].details["liquidated_notional_usd"] >= 5_000_000


def test_spikes_while_triggered_are_marked(settings):
    engine = make_engine(settings)
    engine.process(path("BTCUSDT", [(0, 100.0), (15, 100.0), (35, 80.0)]))
    assert engine.breaker.is_active()
    blocked = [s for s in engine.spikes if s.details.get("blocked_by_breaker")]
    assert blocked and blocked[-1].details["blocked_by_breaker"] == "TRIGGERED"


def test_scanner_pause(settings):
    engine = make_engine(settings)
    engine.scanner.paused = True
    engine.process(path("SOLUSDT", [(0, 100.0), (20, 100.0), (20.5, 104.0)]))
    assert not engine.spikes


def test_engine_rejects_bad_ticks_without_stopping(settings):
    engine = make_engine(settings)
    engine.process([Tick("BTCUSDT", 100.0, 1.0, T0), Tick("BTCUSDT", float("nan"), 1.0, T0 + 1),
                    Tick("BTCUSDT", -1.0, 1.0, T0 + 2), Tick("BTCUSDT", 100.0, float("inf"), T0 + 3),
                    Tick("BTCUSDT", 100.0, 1.0, T0 - 5), Tick("BTCUSDT", 101.0, 1.0, T0 + 4)])
    assert engine.ticks == 2 and engine.rejected_ticks == 4
    assert engine.market.symbols["BTCUSDT"].last_price == 101.0
    assert len(engine.problems) == 4
