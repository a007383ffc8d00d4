"""The outcome loop over a real pump (DOGEUSDT 2021-04-16): every proposal and every skipped
spike is followed on the market for the horizon and marked profitable, unprofitable or neutral
after fees; spike_events and agent_performance (per market day) say so.

The expected figures are computed here from the CSV rows, by the rules written in
core.agents.outcomes' docstring, without the product's code: each candle is the four points
the replay feed documents (open, low, high, close for an up bar; open, high, low, close for a
down bar; a quarter of the bar apart), walked in time order after the trade's start."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pytest

from core.headless import run_headless
from core.market.replay import ReplayFeed
from tests.agents.conftest import make_settings

PUMP = "DOGEUSDT-1m-2021-04-16-pump.csv"
SUPPORT = {"CONFIRM", "STABLE", "CAUTION", "ISOLATED", "MARKET_WIDE", "NEWS_DRIVEN", "APPROVE", "PROPOSE"}
OPPOSE = {"DISCARD", "UNSTABLE", "ESCALATED", "MANIPULATION_SUSPECTED", "REJECT", "SKIP"}


def csv_path(file) -> list[tuple[int, float]]:
    """(time_ms, price) along every candle, as the replay documents it."""
    points = []
    with open(file, newline="") as fh:
        for row in csv.DictReader(fh):
            t0 = int(row["open_time"])
            o, h, lo, c = (float(row[k]) for k in ("open", "high", "low", "close"))
            step = int(row["close_time"]) + 1 - t0
            prices = (o, lo, h, c) if c >= o else (o, h, lo, c)
            points += [(t0 + k * step // 4, p) for k, p in enumerate(prices)]
    return points


def expected(points, start, entry_type, limit, stop, target, horizon_ms, taker, maker, band):
    """The outcome label and return (percent after fees) of one long paper trade."""
    deadline = start + horizon_ms
    before = [p for t, p in points if t <= start]
    market = before[-1]
    fill = fee_in = None
    if entry_type == "market" or (entry_type == "limit" and limit >= market):
        fill, fee_in = market, taker
    elif entry_type == "post_only" and limit >= market:
        return "neutral", 0.0
    last = market
    exit_price = None
    for t, p in points:
        if t <= start:
            continue
        if t > deadline:
            break
        last = p
        if fill is None:
            if p <= limit:
                fill, fee_in = limit, maker
            continue
        if p <= stop or p >= target:
            exit_price = p
            break
    if exit_price is None:
        if points[-1][0] < deadline:
            return "horizon_not_reached", None
        if fill is None:
            return "neutral", 0.0
        exit_price = last
    ret = (exit_price * (1 - taker) - fill * (1 + fee_in)) / fill * 100
    label = "neutral" if abs(ret) <= band else ("profitable" if ret > 0 else "unprofitable")
    return label, ret


def day(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, timezone.utc).strftime("%Y-%m-%d")


def iso_ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp() * 1000)


@pytest.fixture(scope="module")
def pump_replay(market_data, tmp_path_factory):
    """One replay of the pump with the crew (`llm: rules`), shared by the tests below."""
    import asyncio
    import socket

    from tests.agents.conftest import _guarded_connect, _guarded_connect_ex

    settings = make_settings(max_runs_per_minute=6)  # the configured default
    db = tmp_path_factory.mktemp("outcomes") / "journal.db"
    feed = ReplayFeed([str(market_data / PUMP)])
    with pytest.MonkeyPatch.context() as mp:  # nothing here may leave the machine
        mp.setattr(socket.socket, "connect", _guarded_connect)
        mp.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
        _session, report = asyncio.run(run_headless(settings, feed, agents=True, db_path=db))
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    yield settings, report, conn, csv_path(market_data / PUMP)
    conn.close()


def test_the_outcomes_of_a_pump_replay_match_the_market(pump_replay):
    settings, report, conn, points = pump_replay
    crew, paper = settings.crew, settings.execution.paper
    horizon = int(crew.outcome_horizon_minutes * 60_000)
    band = crew.outcome_neutral_band_percent
    outcomes = report["outcomes"]
    assert len(outcomes) == len(report["spikes"]) > 0  # every spike is followed
    proposals = {p["proposal_id"]: p for p in report["proposals"]}
    assert proposals, "the pump gave the desk nothing to propose"
    labels = Counter()
    for o in outcomes:
        spike_ms = iso_ms(o["spike"]["time"])
        trade = o["trade"]
        if o["decision"] == "proposed":
            p = proposals[o["proposal_id"]]
            # the proposal's own levels, from the moment it was made (the spike's tick: the replay holds there)
            assert trade["start_ms"] == spike_ms and not o["hypothetical"]
            assert (trade["stop_loss"], trade["take_profit"], trade["entry_type"]) == \
                (p["stop_loss"], p["take_profit"], p["entry_type"])
            args = (p["entry_type"], p["entry_price"], p["stop_loss"], p["take_profit"])
            assert p["outcome"] == o["outcome"]
        else:
            assert o["decision"] == "skipped" and o["hypothetical"]
            # the hypothetical entry: a market buy at the spike's price, the desk's sizing rules for the levels
            assert trade["start_ms"] == spike_ms and trade["entry_type"] == "market"
            assert trade["entry_price"] == o["spike"]["price"]
            risk = settings.risk_management
            assert trade["stop_loss"] <= o["spike"]["price"] * (1 - risk.stop_loss_percent / 100) * (1 + 1e-9)
            assert trade["take_profit"] >= o["spike"]["price"] * (1 + risk.take_profit_percent / 100) * (1 - 1e-9)
            args = ("market", None, trade["stop_loss"], trade["take_profit"])
        want, ret = expected(points, spike_ms, *args, horizon, paper.taker_fee, paper.maker_fee, band)
        assert o["outcome"] == want, (o, want, ret)
        if ret is None:
            assert o["return_pct"] is None
        else:
            assert o["return_pct"] == pytest.approx(ret, abs=1e-5), o
        labels[want] += 1
    # a known pump: winners and losers both, and the last hour of the file never reached its horizon
    assert labels["profitable"] and labels["unprofitable"] and labels["horizon_not_reached"]

    # spike_events: every row is decided, and carries its outcome and PnL
    rows = {r["id"]: r for r in conn.execute("SELECT * FROM spike_events")}
    assert len(rows) == len(outcomes)
    for o in outcomes:
        r = rows[o["spike"]["spike_event_id"]]
        assert r["timestamp"] == o["spike"]["time"]
        assert r["status"] == o["decision"] and r["outcome"] == o["outcome"]
        if o["decision"] == "proposed":
            assert r["trade_id"] == o["proposal_id"]
        if o["outcome"] == "horizon_not_reached":
            assert r["pnl"] is None
        elif o["trade"]["entry_price"] is None:  # a limit that never filled earned nothing
            assert r["pnl"] == 0
        else:  # USD: the quantity times the return after fees on the fill
            usd = o["trade"]["quantity"] * o["trade"]["entry_price"] * o["return_pct"] / 100
            assert r["pnl"] == pytest.approx(usd, rel=1e-4, abs=1e-4)
    analysed = [r for r in rows.values() if r["context_analysis"] is not None]
    assert analysed and all(json.loads(r["context_analysis"])["decision"] for r in analysed)
    assert any(r["risk_assessment"] is not None for r in rows.values())


def test_agent_performance_counts_are_real_and_kept_per_market_day(pump_replay):
    settings, report, conn, points = pump_replay
    outcomes = report["outcomes"]
    by_spike_row = {o["spike"]["spike_event_id"]: o for o in outcomes}
    want: dict[tuple[str, str], Counter] = defaultdict(Counter)

    def judge(agent, period, positive, outcome):
        c = want[(agent, period)]
        if outcome == "neutral":
            return
        paid = outcome == "profitable"
        c["tp" if positive and paid else "fp" if positive else "fn" if paid else "tn"] += 1

    for o in outcomes:
        if o["outcome"] == "horizon_not_reached":
            continue
        judge("desk", day(iso_ms(o["spike"]["time"])), o["decision"] == "proposed", o["outcome"])
    # each agent on its own vote, as journaled in agent_decisions
    for r in conn.execute("SELECT agent_name, decision, spike_event_id, input_data FROM agent_decisions "
                          "WHERE agent_name NOT IN ('crew', 'desk')"):
        o = by_spike_row.get(r["spike_event_id"])
        if o is None or o["outcome"] == "horizon_not_reached" or r["decision"] not in SUPPORT | OPPOSE:
            continue
        judge(r["agent_name"], day(iso_ms(o["spike"]["time"])), r["decision"] in SUPPORT, o["outcome"])
    latest = {(r["agent_name"], r["period"]): r for r in conn.execute(
        "SELECT * FROM agent_performance WHERE id IN (SELECT MAX(id) FROM agent_performance "
        "GROUP BY agent_name, period)")}
    # market days, never the wall clock's
    assert {p for _, p in latest} == {day(iso_ms(o["spike"]["time"])) for o in outcomes} == {"2021-04-16", "2021-04-17"}
    assert ("desk", "2021-04-16") in latest and ("market_scanner", "2021-04-16") in latest
    for key, c in want.items():
        row = latest[key]
        got = (row["true_positives"], row["false_positives"], row["false_negatives"])
        assert got == (c["tp"], c["fp"], c["fn"]), (key, got, c)
        assert (row["correct_decisions"], row["incorrect_decisions"]) == (c["tp"] + c["tn"], c["fp"] + c["fn"]), key
        judged = sum(c.values())
        if judged:
            assert row["accuracy_percent"] == pytest.approx((c["tp"] + c["tn"]) / judged * 100), key
    desk = latest[("desk", "2021-04-16")]
    assert desk["false_negatives"] > 0 and desk["true_positives"] + desk["false_positives"] > 0
    # the desk's average confidence is its proposals' on that day
    confs = [p for p in report["proposals"] if p["time"].startswith("2021-04-16")]
    assert desk["avg_confidence"] is not None and 0 < desk["avg_confidence"] <= 1 and confs
    # the report carries the same table
    table = {(r["agent"], r["period"]): r for r in report["agent_performance"]}
    assert table[("desk", "2021-04-16")]["false_negatives"] == desk["false_negatives"]
