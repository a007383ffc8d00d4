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


# ---------------------------------------------------------------------- the rules, one by one
T0 = 1_618_540_000_000  # 2021-04-16T02:26:40Z
MIN = 60_000


class _Journal:
    """Keeps what the tracker submits."""

    def __init__(self):
        self.rows = []

    def submit(self, kind, **row):
        self.rows.append((kind, row))


def _tracker(maker_fee=None, **crew):
    from core.agents.outcomes import OutcomeTracker

    settings = make_settings(**crew)
    if maker_fee is not None:  # a maker rebate tier: resting fills pay less than taking ones
        ex = settings.execution
        settings = settings.model_copy(update={"execution": ex.model_copy(update={
            "paper": ex.paper.model_copy(update={"maker_fee": maker_fee})})})
    journal = _Journal()

    class Market:
        symbols = {}  # no windows: the hypothetical trade uses the configured stop and target percentages

    return OutcomeTracker(settings, Market(), lambda: journal, lambda: 10_000.0), journal, settings


def _spike(price=100.0, t=T0, symbol="SOLUSDT"):
    from core.events import SpikeDetected, SpikeType

    return SpikeDetected(symbol, SpikeType.SPOT_PRICE_SPIKE, "dump", 4.0, 1, 3.0, price * 1.04, price, 0.8, t, 0.1)


def _ticks(tracker, *points, symbol="SOLUSDT", market="spot"):
    from core.events import Tick

    for minutes, price in points:
        tracker.on_tick(Tick(symbol, price, 1.0, T0 + int(minutes * MIN), market))


def test_a_skipped_spike_is_a_market_buy_at_its_price_with_the_configured_levels_stopped_at_the_tick():
    from core.desk.rules_proposer import Skip

    tracker, journal, settings = _tracker()
    spike = _spike(100.0)
    f = tracker.on_spike(spike, 7)
    tracker.on_decision(spike, Skip("scanner: DISCARD"))
    assert (f.hypothetical.stop, f.hypothetical.target) == pytest.approx((98.0, 104.0))  # 2% and 4%
    _ticks(tracker, (1, 99.0), (2, 97.0))  # gaps through the stop: sold at the tick's 97, not at 98
    assert f.outcome == "unprofitable" and f.measured.exit_reason == "stop" and f.measured.exit == 97.0
    fee = settings.execution.paper.taker_fee
    assert f.return_pct == pytest.approx((97 * (1 - fee) - 100 * (1 + fee)) / 100 * 100, abs=1e-6)
    updates = [row for kind, row in journal.rows if kind == "spike_update"]
    assert updates[0]["status"] == "skipped" and updates[-1]["outcome"] == "unprofitable"
    assert updates[-1]["spike_id"] == 7 and "pnl" not in updates[-1]  # no market windows: no size, no USD


def test_a_proposal_is_measured_on_its_own_levels_a_limit_filling_at_its_price_as_maker():
    tracker, journal, settings = _tracker(maker_fee=0.0002)
    spike = _spike(100.0)
    f = tracker.on_spike(spike, 3)
    proposal = _proposal(limit=99.0, stop=97.0, target=101.0)
    tracker.on_decision(spike, proposal)
    _ticks(tracker, (1, 99.5), (2, 98.9), (3, 100.0), (4, 101.5))
    trade = f.measured
    assert trade is f.trade and trade.fill == 99.0 and trade.entry_fee == settings.execution.paper.maker_fee
    assert trade.exit_reason == "target" and trade.exit == 101.5 and f.outcome == "profitable"
    paper = settings.execution.paper
    assert f.return_pct == pytest.approx((101.5 * (1 - paper.taker_fee) - 99 * (1 + paper.maker_fee)) / 99 * 100,
                                         abs=1e-6)
    [update] = [row for kind, row in journal.rows if kind == "spike_update" and "trade_id" in row]
    assert update["trade_id"] == proposal.proposal_id and update["status"] == "proposed"
    [measured] = [row for kind, row in journal.rows if kind == "spike_update" and "outcome" in row]
    net = 101.5 * (1 - paper.taker_fee) - 99 * (1 + paper.maker_fee)
    assert measured["outcome"] == "profitable" and measured["pnl"] == pytest.approx(10 * net, abs=1e-5)
    [row] = [row for kind, row in journal.rows if kind == "agent_decision"]
    assert row["decision_type"] == "outcome_measured" and row["trade_id"] == proposal.proposal_id


def _proposal(limit, stop, target, entry_type="limit", ref=100.0):
    from core.desk.proposal import TradeProposal

    return TradeProposal(created_ms=1, expires_ms=2, symbol="SOLUSDT", side="BUY", quantity=10.0,
                         entry_type=entry_type, entry_price=limit, stop_loss=stop, take_profit=target,
                         reference_price=ref, breaker_epoch=0, breaker_status="SAFE", confidence=0.7, risk_usd=1.0,
                         notional_usd=1.0, reward_risk=1.0, rationale="test", source="crew:rules")


def test_an_unfilled_limit_is_neutral_and_a_marketable_post_only_never_fills():
    tracker, _journal, _settings = _tracker(outcome_horizon_minutes=10)
    spike = _spike(100.0)
    f = tracker.on_spike(spike, None)
    tracker.on_decision(spike, _proposal(limit=95.0, stop=90.0, target=110.0))
    _ticks(tracker, (5, 96.0), (10, 97.0), (11, 94.0))  # 94 comes after the horizon
    assert f.outcome == "neutral" and f.measured.exit_reason == "not_filled" and f.return_pct == 0
    spike2 = _spike(100.0, t=T0 + 20 * MIN)
    f2 = tracker.on_spike(spike2, None)
    _ticks(tracker, (20, 100.0))
    tracker.on_decision(spike2, _proposal(limit=100.5, stop=95.0, target=110.0, entry_type="post_only"))
    assert f2.outcome == "neutral" and f2.measured.exit_reason == "not_filled"


def test_at_the_horizon_the_last_price_inside_it_counts_and_the_neutral_band_applies():
    from core.desk.rules_proposer import Skip

    tracker, _journal, settings = _tracker(outcome_horizon_minutes=10, outcome_neutral_band_percent=0.25)
    spike = _spike(100.0)
    f = tracker.on_spike(spike, None)
    tracker.on_decision(spike, Skip("no"))
    _ticks(tracker, (5, 100.1), (10, 100.0), (10.5, 103.9))  # the tick at the horizon counts, the later one not
    assert f.measured.exit_reason == "horizon" and f.measured.exit == 100.0
    assert f.return_pct == pytest.approx(-0.2, abs=1e-3)  # the fees alone: inside the band
    assert f.outcome == "neutral"
    tracker2, _j, _s = _tracker(outcome_horizon_minutes=10, outcome_neutral_band_percent=0.1)
    spike = _spike(100.0)
    f = tracker2.on_spike(spike, None)
    tracker2.on_decision(spike, Skip("no"))
    _ticks(tracker2, (10, 100.0))
    assert f.outcome == "unprofitable"  # -0.2% is outside a 0.1% band


def test_futures_ticks_and_other_symbols_do_not_move_a_spot_trade_and_the_clock_is_event_time():
    from core.desk.rules_proposer import Skip

    tracker, _journal, _settings = _tracker(outcome_horizon_minutes=10)
    spike = _spike(100.0)
    f = tracker.on_spike(spike, None)
    tracker.on_decision(spike, Skip("no"))
    _ticks(tracker, (1, 90.0), market="futures")
    _ticks(tracker, (2, 90.0), symbol="BTCUSDT")
    assert f.outcome is None
    _ticks(tracker, (3, 105.0))
    assert f.outcome == "profitable" and f.measured.exit_ms == T0 + 3 * MIN


def test_what_the_data_never_reached_is_marked_so_not_guessed():
    from core.desk.rules_proposer import Skip

    tracker, journal, _settings = _tracker(outcome_horizon_minutes=60)
    spike = _spike(100.0)
    f = tracker.on_spike(spike, 5)
    tracker.on_decision(spike, Skip("no"))
    _ticks(tracker, (30, 101.0))
    tracker.finish()
    assert f.outcome == "horizon_not_reached" and f.return_pct is None
    last = [row for kind, row in journal.rows if kind == "spike_update"][-1]
    assert last == {"spike_id": 5, "time_ms": T0, "outcome": "horizon_not_reached"}  # no pnl: not guessed


def test_votes_journaled_after_the_outcome_are_still_judged():
    """A veto answers the desk at once; the run's votes can reach the books after the outcome."""
    from core.agents.bookkeeping import Bookkeeper
    from core.agents.context import DeskContext
    from core.desk.rules_proposer import Skip

    tracker, _journal, settings = _tracker(outcome_horizon_minutes=10)

    class Session:
        outcomes = tracker
        journal = None

    books = Bookkeeper(DeskContext(settings=settings, market=None, breaker=None, session=Session()), settings, "rules")
    spike = _spike(100.0)
    tracker.on_spike(spike, None)
    tracker.on_decision(spike, Skip("Market Scanner DISCARD"))
    _ticks(tracker, (1, 105.0))  # it would have paid
    tracker.note_run(spike, {"market_scanner": ("DISCARD", 0.3)})
    perf = books.performance()
    assert perf["market_scanner@2021-04-16"]["false_negatives"] == 1
    assert perf["desk@2021-04-16"]["false_negatives"] == 1 and perf["desk@2021-04-16"]["decisions"] == 1
