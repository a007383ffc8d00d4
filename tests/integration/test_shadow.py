"""Shadow breakers and `tune`: alternative configs on the same ticks in the same pass,
scored, never acting."""

from __future__ import annotations

import asyncio
import csv
import json

import pytest

from core.config import ConfigError, shadow_variant
from core.headless import run_headless
from core.market.replay import ReplayFeed
from core.shadow import load_shadows
from tests.conftest import MARKET_DATA, run_cli

CRASH = MARKET_DATA / "BTCUSDT-1m-2021-05-19.csv"
SLOW = MARKET_DATA / "BTCUSDT-1m-2021-04-18.csv"
CALM = MARKET_DATA / "BTCUSDT-1m-2023-04-06-calm.csv"


def replay(settings, path, shadows=None) -> dict:
    return asyncio.run(run_headless(settings, ReplayFeed([path]), journal=False, shadows=shadows))[1]


def test_a_shadow_of_the_real_config_moves_exactly_as_the_real_breaker(settings):
    report = replay(settings, CRASH, [("same", shadow_variant(settings))])
    real, same = report["shadows"]
    assert real["transitions"] and same["transitions"] == real["transitions"]
    assert [(r["time"], r["to"]) for r in report["breaker"]] == [(r["time"], r["to"]) for r in real["transitions"]]
    for book in ("flatten_at_trigger", "policy", "dip_buyer_with_breaker"):
        assert same["protection"][book] == real["protection"][book]


def test_shadows_never_act_on_the_real_run(settings):
    plain = replay(settings, CRASH)
    shadowed = replay(settings, CRASH, [("loose", shadow_variant(settings, overrides=[
        "circuit_breaker.slow_crash.enabled=false", "circuit_breaker.references.BTCUSDT.dump_1h_percent=40",
        "circuit_breaker.references.BTCUSDT.warning_1h_percent=30"]))])
    for key in ("breaker", "protection"):
        assert shadowed[key] == plain[key], key
    timeless = [{k: v for k, v in row.items() if k != "detection_latency_ms"} for row in plain["spikes"]]
    assert [{k: v for k, v in row.items() if k != "detection_latency_ms"} for row in shadowed["spikes"]] == timeless
    assert shadowed["shadows"][1]["triggers"] == 0


def test_a_shadow_reports_its_false_trips_and_missed_crashes(settings):
    jumpy = shadow_variant(settings, overrides=["circuit_breaker.slow_crash.horizons.4h.warning_percent=0.5",
                                                "circuit_breaker.slow_crash.horizons.4h.trigger_percent=1"])
    calm = replay(settings, CALM, [("jumpy", jumpy)])["shadows"]
    assert calm[0]["false_trips"] == [] and calm[0]["triggers"] == 0
    assert calm[1]["false_trips"] and calm[1]["minutes_in_state"]["TRIGGERED"] > 0
    blind = shadow_variant(settings, overrides=[
        "circuit_breaker.slow_crash.enabled=false", "circuit_breaker.market_wide.enabled=false",
        "circuit_breaker.references.BTCUSDT.dump_1h_percent=60", "circuit_breaker.references.BTCUSDT.warning_1h_percent=50",
        "circuit_breaker.references.BTCUSDT.warning_5m_percent=50"])
    crash = replay(settings, CRASH, [("blind", blind)])["shadows"]
    assert crash[0]["crashes"] >= 1 and crash[0]["missed_crashes"] == []
    assert len(crash[1]["missed_crashes"]) == crash[1]["crashes"] >= 1
    total = sum(crash[1]["minutes_in_state"].values())
    assert total == pytest.approx(sum(crash[0]["minutes_in_state"].values()), abs=0.2)


def test_shadow_files_and_sets_load_or_fail_on_one_line(settings, tmp_path):
    f = tmp_path / "variants.yaml"
    f.write_text("shadows:\n  a: {circuit_breaker: {auto_resume: false}}\n  b: {protection_policy: {warning_exposure: 0.5}}\n")
    one = tmp_path / "tight.yaml"
    one.write_text("circuit_breaker: {references: {BTCUSDT: {dump_1h_percent: 12}}}\n")
    loaded = load_shadows(settings, [f, one], ["circuit_breaker.deep_level_percent=30"])
    assert [n for n, _ in loaded] == ["a", "b", "tight", "set"]
    assert loaded[2][1].circuit_breaker.references["BTCUSDT"].dump_1h_percent == 12
    bad = tmp_path / "bad.yaml"
    for text, words in (("execution: {mode: live}\n", "may change only"),
                        ("circuit_breaker: {nonsense: 1}\n", "circuit_breaker.nonsense: unknown key"),
                        ("circuit_breaker: [\n", "bad.yaml"),
                        ("shadows: {real: {circuit_breaker: {auto_resume: false}}}\n", "not 'real'")):
        bad.write_text(text)
        with pytest.raises(ConfigError) as exc:
            load_shadows(settings, [bad], [])
        assert words in str(exc.value) and "\n" not in str(exc.value)


def test_replay_with_shadows_from_the_command_line(tmp_path):
    f = tmp_path / "v.yaml"
    f.write_text("shadows:\n  no-slow: {circuit_breaker: {slow_crash: {enabled: false}}}\n")
    out = run_cli("replay", str(SLOW), "--shadow", str(f), "--shadow-set", "protection_policy.warning_exposure=0.5",
                  "--json")
    assert out.returncode == 0, out.stderr
    shadows = json.loads(out.stdout)["shadows"]
    assert [s["name"] for s in shadows] == ["real", "no-slow", "set"]
    assert shadows[0]["triggers"] == 1 and shadows[1]["triggers"] == 0
    text = run_cli("replay", str(SLOW), "--shadow", str(f))
    assert text.returncode == 0 and "Shadow breakers" in text.stdout and "no-slow" in text.stdout
    for args, words in ((["--shadow-set", "execution.mode=live"], "may change only"),
                        (["--shadow-set", "nonsense"], "expected KEY=VALUE"),
                        (["--shadow", str(tmp_path / "missing.yaml")], "file not found")):
        bad = run_cli("replay", str(SLOW), *args)
        assert bad.returncode == 2 and words in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


def test_tune_sweeps_a_grid_in_one_pass_per_file(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for src in (SLOW, CALM):
        (folder / src.name).symlink_to(src)
    out_csv = tmp_path / "scores.csv"
    grid = ["--grid", "circuit_breaker.slow_crash.horizons.4h.trigger_percent=12,30",
            "--grid", "protection_policy.warning_exposure=0,0.5"]
    run = run_cli("tune", str(folder), *grid, "--csv", str(out_csv), "--json")
    assert run.returncode == 0, run.stderr
    points = json.loads(run.stdout)["points"]
    assert len(points) == 4
    by = {p["overrides"]: p for p in points}
    flatten = by["circuit_breaker.slow_crash.horizons.4h.trigger_percent=12 protection_policy.warning_exposure=0"]
    half = by["circuit_breaker.slow_crash.horizons.4h.trigger_percent=30 protection_policy.warning_exposure=0.5"]
    # 2021-04-18 fell 16.8% from its 24-hour high: both trip (the 24h rule), but keeping half at WARNING costs
    assert flatten["triggers"] == half["triggers"] == 1 and flatten["false_trips"] == 0
    assert flatten["worst_drawdown_ratio"] < 0.6 < half["worst_drawdown_ratio"]
    assert flatten["max_quiet_cost_pct"] <= 0.3
    with out_csv.open() as f:
        assert len(list(csv.DictReader(f))) == 4
    table = run_cli("tune", str(folder), *grid)
    assert table.returncode == 0 and "worst drawdown ratio per grid point" in table.stdout


@pytest.mark.parametrize("args, words", [
    (["--grid", "circuit_breaker.auto_resume"], "expected KEY=V1,V2"),
    ([], "at least one --grid"),
    (["--grid", "execution.mode=live,paper"], "may change only"),
    (["--grid", "circuit_breaker.deep_level_percent=20", "--csv", "/proc/nope/x.csv"], "cannot write the CSV"),
])
def test_tune_refuses_bad_input_on_one_line(tmp_path, args, words):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / CALM.name).symlink_to(CALM)
    run = run_cli("tune", str(folder), *args)
    assert run.returncode == 2 and words in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_tune_refuses_a_folder_without_csv_files(tmp_path):
    run = run_cli("tune", str(tmp_path), "--grid", "circuit_breaker.deep_level_percent=20")
    assert run.returncode == 2 and "no .csv files" in run.stderr
    run = run_cli("tune", str(tmp_path / "nope"), "--grid", "circuit_breaker.deep_level_percent=20")
    assert run.returncode == 2 and "not a folder" in run.stderr


BREADTH_VARIANTS = [
    ("wide-loose", ["circuit_breaker.market_wide.dump_1h_percent=14", "circuit_breaker.market_wide.warning_dump_1h_percent=9"]),
    ("wide-tight", ["circuit_breaker.market_wide.dump_1h_percent=6", "circuit_breaker.market_wide.warning_dump_1h_percent=3",
                    "circuit_breaker.slow_crash.market_wide.warning_percent=6",
                    "circuit_breaker.slow_crash.market_wide.trigger_percent=9"]),
    ("wide-4h", ["circuit_breaker.slow_crash.market_wide.horizon=4h",
                 "circuit_breaker.slow_crash.market_wide.warning_percent=5",
                 "circuit_breaker.slow_crash.market_wide.trigger_percent=10"]),
    ("no-breadth", ["circuit_breaker.market_wide.enabled=false"]),
    ("slow-only", ["circuit_breaker.references.BTCUSDT.dump_1h_percent=60",
                   "circuit_breaker.references.ETHUSDT.dump_1h_percent=60",
                   "circuit_breaker.slow_crash.market_wide.warning_percent=4"]),
]


@pytest.mark.parametrize("scenario", ["market-wide-crash", "flash-crash"])
def test_shadows_that_skip_quiet_ticks_move_exactly_as_each_config_would_as_the_real_one(settings, scenario):
    """The group calls its guardians only when a tick can change something; each shadow's
    transitions must still equal a run where its config is the real breaker's, on 50 symbols."""
    from core.engine import Engine
    from core.events import Tick
    from core.market.sim import SimFeed
    from core.shadow import attach_shadows, long_minutes_of

    symbols = ["BTCUSDT", "ETHUSDT"] + [f"ALT{i:02d}USDT" for i in range(18)]
    events = [e for e in SimFeed(scenario=scenario, seed=7, symbols=symbols, tick_interval_ms=2_000,
                                 duration_s=7_200)._events()
              if type(e) is Tick]
    variants = [(name, shadow_variant(settings, overrides=o)) for name, o in BREADTH_VARIANTS]

    class Feed:
        name, realtime, cadence_ms, paused = "test", False, 500, False
        pause_marks: list = []

    def moves(breaker_changes):
        return [(c.time_ms, c.status.value, c.trigger_type, c.reason) for c in breaker_changes]

    engine = Engine(settings, Feed(), long_minutes=long_minutes_of(s for _, s in variants))
    scores = attach_shadows(engine, variants, (), protection=False)
    for i in range(0, len(events), 500):
        engine.process(events[i:i + 500])
    assert len({tuple(moves(s.changes)) for s in scores}) >= 4, "the configs must not all move alike"
    for (name, variant), score in zip(variants, scores[1:]):
        alone = Engine(variant, Feed(), long_minutes=long_minutes_of(s for _, s in variants))
        seen = []
        alone.breaker.subscribe(seen.append)
        for i in range(0, len(events), 500):
            alone.process(events[i:i + 500])
        assert moves(score.changes) == moves(seen), name
