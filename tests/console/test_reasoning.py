"""The reasoning pane: runs grouped and ordered, short tags, tool calls in one line, folding,
filters. The model (Trail and the summaries) is tested as pure functions; the widget in a
tiny app, through its rendered lines."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from textual.app import App, ComposeResult

from console.widgets.reasoning_log import (
    TAGS,
    TOOLS,
    Entry,
    Filter,
    ReasoningLog,
    Run,
    Trail,
    summarise_tool,
    tag_of,
)
from core.config import load_config
from core.events import ReasoningLine
from tests.console.conftest import screen_text

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SCN, GRD = "Binance Market Surveillance Specialist", "Market Crash Protection Specialist"  # CrewAI's role titles
RSK = "Risk Assessment Officer"
SLIP_RESULT = ("slippage_calculator -> [modelled, not exchange data], symbol=SOLUSDT, side=BUY, notional_usd=1000.0, "
               "depth_usd_per_side=25000.0, fill_now_fraction=1.0, half_spread_bps=1.0, slippage_bps=0.098, "
               "taker_fee_bps=10.0, expected_cost_bps=11.1, expected_cost_usd=1.08…")


def L(role: str, kind: str, text: str, t: int = 0, run: str | None = None, seq: int = 0) -> ReasoningLine:  # noqa: N802
    return ReasoningLine(role, kind, text, T0 + t, run, seq)


def header(run: str, symbol: str, direction: str = "dump", t: int = 0) -> ReasoningLine:
    return L("desk", "thought", f"crew run {run} for {symbol} {direction} (spot_price_spike) with model rules", t, run)


def scan(symbol: str, direction: str = "dump", t: int = 0) -> ReasoningLine:
    return L("scanner", "reason", f"{symbol} {direction}: 3.33% over 1m, vol x1.4 (spot_price_spike, conf 0.55)", t)


def texts(rows) -> list[str]:
    """Each row as one string: a run's id, or an entry's tag and text."""
    return [f"[{item.run_id}]" if isinstance(item, Run) else f"{item.tag} {item.line.text}" for item, _run, _n in rows]


def two_runs_out_of_order() -> list[ReasoningLine]:
    """Two spike runs in parallel, their lines interleaved and partly out of order, and lines of
    the guardian and the scanner between them."""
    return [
        scan("SOLUSDT", t=0),
        header("run1", "SOLUSDT", t=1000),
        scan("ETHUSDT", "pump", t=1500),
        header("run2", "ETHUSDT", "pump", t=2000),
        L(SCN, "thought", "eth: second thought", 2600, "run2", 22),
        L(SCN, "thought", "sol: third thought", 2500, "run1", 9),
        L(SCN, "thought", "eth: first thought", 2400, "run2", 21),
        L(SCN, "thought", "sol: first thought", 2100, "run1", 5),
        L("guardian", "reason", "SAFE -> WARNING: BTC -10% in 60m", 2300),
        L(SCN, "thought", "sol: second thought", 2200, "run1", 7),
    ]


# ---------------------------------------------------------------------- tags
AGENT_KEYS = {"market_guardian": "GRD", "market_scanner": "SCN", "context_analyzer": "CTX",
              "risk_assessment": "RSK", "strategy_executor": "EXE"}


def test_every_configured_agent_role_has_its_short_tag():
    agents = load_config(env={}, dotenv_paths=[]).settings.agents
    for key, tag in AGENT_KEYS.items():
        assert tag_of(getattr(agents, key).role) == tag, key
    assert tag_of("Binance Market Surveillance Specialist") == "SCN"
    assert [tag_of(n) for n in ("Market Guardian", "Market Scanner", "Context Analyzer", "Risk Assessment",
                                "Strategy Executor")] == ["GRD", "SCN", "CTX", "RSK", "EXE"]
    assert [tag_of(n) for n in ("guardian", "scanner", "desk", "operator")] == ["guard", "scan", "desk", "oper"]
    assert tag_of("risk assessment officer") == "RSK"  # case does not matter
    assert tag_of("Liquidity Watcher") == "LW"  # a role not in the table: its initials


def test_one_tag_per_role_and_every_tag_fits_the_column():
    names = [n.lower() for _style, ns in TAGS.values() for n in ns]
    assert len(names) == len(set(names)), "a name maps to two tags"
    assert all(len(tag) <= 5 for tag in TAGS)


def test_a_renamed_role_takes_its_tag_from_the_settings():
    trail = Trail()
    trail.add(L("Pump Hunter", "thought", "before"))
    trail.learn_roles(SimpleNamespace(market_scanner=SimpleNamespace(role="Pump Hunter")))
    trail.add(L("Pump Hunter", "thought", "after", 1))
    assert [e.tag for e in trail.items] == ["PH", "SCN"]


# ---------------------------------------------------------------------- tool calls in one line
def test_a_tool_call_and_its_result_read_as_one_short_line():
    call = "slippage_calculator(symbol='SOLUSDT', notional_usd=1000)"
    assert summarise_tool(call, SLIP_RESULT) == "slippage(SOLUSDT, 1,000 USD) → [model] cost 11.1 bps, slip 0.1 bps"
    assert summarise_tool(call) == "slippage(SOLUSDT, 1,000 USD) → …"  # the result is not in yet
    assert summarise_tool(None, SLIP_RESULT).startswith("slippage → [model] cost 11.1 bps")
    assert summarise_tool("check_circuit_breaker_status()", "check_circuit_breaker_status -> breaker_status=SAFE, "
                          "epoch=0, is_safe=True, is_active=False") == "breaker() → SAFE"
    assert summarise_tool("news_sentiment(symbol='SOLUSDT')", "news_sentiment -> unavailable, no news feeds "
                          "configured (crew.news_feeds is empty)") == \
        "news(SOLUSDT) → unavailable: no news feeds configured (crew.news_feeds is empty)"
    assert summarise_tool("news_sentiment(symbol='SOLUSDT')", error="news_sentiment failed: timeout") == \
        "news(SOLUSDT) ✖ failed: timeout"
    assert summarise_tool("binance_order_book(symbol='SOLUSDT')", "binance_order_book -> [live book], symbol=SOLUSDT, "
                          "spread_bps=2.0, depth_usd_per_side=25000.0") == \
        "book(SOLUSDT) → [live] spread 2.0 bps, depth 25,000 USD"


def test_an_unknown_tool_shows_its_first_arguments_and_fields():
    assert summarise_tool("mystery_tool(a=1, b='x')", "mystery_tool -> foo=1, symbol=X, bar=2.5, baz=True, qux=4") == \
        "mystery_tool(1, x) → foo 1, bar 2.5, baz yes"


def test_the_tool_table_names_every_tool_of_the_desk():
    from core.agents.tools import SPECS

    assert set(TOOLS) == set(SPECS)


# ---------------------------------------------------------------------- grouping and order
def test_runs_are_grouped_and_ordered_by_sequence_and_first_time():
    trail = Trail()
    for line in two_runs_out_of_order():
        trail.add(line)
    assert texts(trail.rows()) == [
        "scan SOLUSDT dump: 3.33% over 1m, vol x1.4 (spot_price_spike, conf 0.55)",
        "[run1]",
        "desk crew run run1 for SOLUSDT dump (spot_price_spike) with model rules",
        "SCN sol: first thought", "SCN sol: second thought", "SCN sol: third thought",
        "scan ETHUSDT pump: 3.33% over 1m, vol x1.4 (spot_price_spike, conf 0.55)",
        "[run2]",
        "desk crew run run2 for ETHUSDT pump (spot_price_spike) with model rules",
        "SCN eth: first thought", "SCN eth: second thought",
        "guard SAFE -> WARNING: BTC -10% in 60m",
    ]
    run1 = trail.runs["run1"]
    assert (run1.symbol, run1.direction, run1.spike_type, run1.spike_ms) == ("SOLUSDT", "dump", "spot_price_spike", T0)


def test_a_run_moves_back_when_an_earlier_line_lands_late():
    trail = Trail()
    trail.add(L(SCN, "thought", "b", 5000, "runB", 10))
    trail.add(L(SCN, "thought", "a", 6000, "runA", 20))
    assert [r.run_id for r in trail.items] == ["runB", "runA"]
    trail.add(L(SCN, "thought", "a0", 4000, "runA", 19))
    assert [r.run_id for r in trail.items] == ["runA", "runB"]


def test_the_desks_own_lines_stay_where_they_arrived_among_the_sequenced_ones():
    trail = Trail()
    trail.add(header("run1", "SOLUSDT"))
    trail.add(L(SCN, "answer", "spike_detection_task: DISCARD (confidence 0.2): noise", 10, "run1", 40))
    trail.add(L("desk", "reason", "run run1 ends at a veto: Market Scanner DISCARD: noise", 20, "run1"))
    trail.add(L(SCN, "thought", "late thought", 5, "run1", 30))  # emitted before the answer, landed last
    assert [e.line.text for e in trail.runs["run1"].entries][1:] == [
        "late thought", "spike_detection_task: DISCARD (confidence 0.2): noise",
        "run run1 ends at a veto: Market Scanner DISCARD: noise"]
    assert trail.runs["run1"].outcome == "skip: Market Scanner DISCARD: noise"


def test_a_tool_call_and_its_result_merge_into_one_entry_whichever_lands_first():
    trail = Trail()
    trail.add(L(RSK, "tool_call", "slippage_calculator(symbol='SOLUSDT', notional_usd=1000)", 0, "run1", 10))
    trail.add(L(RSK, "tool_result", SLIP_RESULT, 1, "run1", 12))
    trail.add(L(GRD, "tool_result", "calculate_market_drawdown -> symbol=BTCUSDT, drawdown_percent=2.5", 3, "run1", 22))
    trail.add(L(GRD, "tool_call", "calculate_market_drawdown(symbol='BTCUSDT', window_minutes=60)", 2, "run1", 20))
    trail.add(L(GRD, "tool_call", "news_sentiment(symbol='SOLUSDT')", 4, "run1", 30))
    trail.add(L(GRD, "error", "news_sentiment failed: timeout", 5, "run1", 31))
    entries = trail.runs["run1"].entries
    assert [e.summary() for e in entries] == ["slippage(SOLUSDT, 1,000 USD) → [model] cost 11.1 bps, slip 0.1 bps",
                                              "drawdown(BTCUSDT, 60m) → 2.5% off high",
                                              "news(SOLUSDT) ✖ failed: timeout"]
    assert [e.kind for e in entries] == ["tool_call", "tool_call", "error"]
    assert entries[0].full() == ["slippage_calculator(symbol='SOLUSDT', notional_usd=1000)", SLIP_RESULT]
    assert trail.count == trail.runs["run1"].lines == 6


def test_parallel_calls_of_one_tool_pair_with_their_own_agents():
    trail = Trail()
    trail.add(L(SCN, "tool_call", "check_circuit_breaker_status()", 0, "run1", 1))
    trail.add(L(GRD, "tool_call", "check_circuit_breaker_status()", 0, "run1", 2))
    trail.add(L(GRD, "tool_result", "check_circuit_breaker_status -> breaker_status=WARNING", 0, "run1", 3))
    [scn, grd] = trail.runs["run1"].entries
    assert (scn.tag, scn.result) == ("SCN", None)
    assert grd.tag == "GRD" and grd.summary() == "breaker() → WARNING"


# ---------------------------------------------------------------------- outcomes and folding
def test_the_sessions_verdict_goes_to_the_run_of_that_spike():
    trail = Trail()
    for line in two_runs_out_of_order():
        trail.add(line)
    # a second SOLUSDT spike skipped at once (another time): not run1's verdict
    trail.add(L("desk", "reason", "skip SOLUSDT dump: duplicate: crew run run1 is already analysing SOLUSDT dump",
                3000))
    assert trail.runs["run1"].outcome == ""
    trail.add(L("desk", "reason", "skip SOLUSDT dump: Market Scanner DISCARD: noise", 0))  # the spike's time
    trail.add(L("desk", "answer", "proposal p7: SELL 2.5 ETHUSDT limit (stop 3100, target 2900) [crew]", 1500))
    run1, run2 = trail.runs["run1"], trail.runs["run2"]
    assert (run1.outcome_kind, run1.outcome) == ("skip", "skip: Market Scanner DISCARD: noise")
    assert (run2.outcome_kind, run2.outcome) == ("proposal", "proposal p7 SELL 2.5 limit")
    assert run1.entries[-1].line.text.startswith("skip SOLUSDT dump: Market Scanner")
    loose = [e.line.text for e in trail.items if isinstance(e, Entry)]
    assert any(t.startswith("skip SOLUSDT dump: duplicate") for t in loose)
    assert not any("DISCARD" in t or "proposal p7" in t for t in loose)


def test_an_aborted_run_stays_an_error_when_the_session_calls_it_a_skip():
    trail = Trail()
    trail.add(scan("SOLUSDT"))
    trail.add(header("run1", "SOLUSDT", t=10))
    trail.add(L("desk", "error", "run run1 aborted: run deadline: no decision within 60s", 20, "run1"))
    trail.add(L("desk", "reason", "skip SOLUSDT dump: run deadline: no decision within 60s", 0))
    run = trail.runs["run1"]
    assert (run.outcome_kind, run.outcome) == ("error", "error: run deadline: no decision within 60s")
    assert run.settled


def test_finished_runs_fold_once_a_newer_run_started_the_running_ones_stay_open():
    trail = Trail()
    for line in two_runs_out_of_order():
        trail.add(line)
    run1, run2 = trail.runs["run1"], trail.runs["run2"]
    assert not trail.is_collapsed(run1) and not trail.is_collapsed(run2)  # both running
    trail.add(L("desk", "answer", "proposal p7: SELL 2.5 ETHUSDT limit (stop 3100, target 2900) [crew]", 1500))
    assert not trail.is_collapsed(run2)  # finished, but the newest
    trail.add(L("desk", "reason", "skip SOLUSDT dump: Market Scanner DISCARD: noise", 0))
    assert trail.is_collapsed(run1) and "SCN sol: first thought" not in texts(trail.rows())
    run1.collapsed = False  # the operator's choice wins
    assert "SCN sol: first thought" in texts(trail.rows())
    run2.collapsed = True
    assert "SCN eth: first thought" not in texts(trail.rows()) and "[run2]" in texts(trail.rows())


def test_a_guardian_run_ends_with_its_answer():
    trail = Trail()
    trail.add(L("desk", "thought", "guardian crew run9: breaker WARNING (BTC -10% in 60m)", 0, "run9"))
    assert not trail.runs["run9"].finished
    trail.add(L(GRD, "answer", "market_monitoring_task: ESCALATED (confidence 0.8): halt", 5, "run9", 50))
    run = trail.runs["run9"]
    assert (run.kind, run.detail, run.outcome_kind, run.outcome) == ("guardian", "breaker WARNING", "done",
                                                                      "GRD ESCALATED")


# ---------------------------------------------------------------------- bounded history
def test_the_history_is_bounded_the_oldest_runs_go_first():
    trail = Trail(max_lines=50)
    for r in range(3):
        trail.add(header(f"run{r}", "SOLUSDT", t=r * 1000))
        for k in range(19):
            trail.add(L(SCN, "thought", f"r{r} k{k}", r * 1000 + k, f"run{r}", k + 1))
    assert trail.count <= 50
    assert "run0" not in trail.runs and len(trail.runs["run2"].entries) == 20


def test_one_run_longer_than_the_history_keeps_its_newest_lines():
    trail = Trail(max_lines=50)
    for k in range(80):
        trail.add(L(SCN, "thought", f"k{k}", k, "run1", k + 1))
    entries = trail.runs["run1"].entries
    assert trail.count == 50 and entries[0].line.text == "k30" and entries[-1].line.text == "k79"


# ---------------------------------------------------------------------- filters
def filtered_trail() -> Trail:
    trail = Trail()
    for line in two_runs_out_of_order():
        trail.add(line)
    trail.add(L(RSK, "thought", "sol: risk says ok", 2700, "run1", 11))
    trail.add(L(RSK, "error", "model call failed: 503", 2800, "run2", 25))
    trail.add(L("operator", "reason", "breaker clear: all quiet", 3000))
    trail.add(L(SCN, "tool_call", "news_sentiment(symbol='SOLUSDT')", 2900, "run1", 12))
    trail.add(L(SCN, "error", "news_sentiment failed: timeout", 2910, "run1", 13))
    trail.add(L(SCN, "tool_call", "onchain_data(symbol='ETHUSDT')", 2920, "run2", 26))
    trail.add(L(SCN, "tool_result", "onchain_data -> error, etherscan answered 500", 2930, "run2", 27))
    return trail


def test_the_agent_filter_keeps_one_agents_lines_under_their_runs():
    rows = texts(filtered_trail().rows(Filter("agent", "RSK")))
    assert rows == ["[run1]", "RSK sol: risk says ok", "[run2]", "RSK model call failed: 503"]


def test_the_symbol_filter_keeps_that_symbols_runs_and_the_lines_that_name_it():
    rows = texts(filtered_trail().rows(Filter("symbol", "SOLUSDT")))
    assert rows[:2] == ["scan SOLUSDT dump: 3.33% over 1m, vol x1.4 (spot_price_spike, conf 0.55)", "[run1]"]
    assert "SCN sol: third thought" in rows and "RSK sol: risk says ok" in rows
    assert "[run2]" not in rows and not any("eth" in r or "ETHUSDT" in r or "guard" in r for r in rows)


def test_the_errors_filter_keeps_errors_only():
    trail = filtered_trail()
    rows = texts(trail.rows(Filter("errors")))
    assert rows == ["[run1]", "SCN news_sentiment(symbol='SOLUSDT')", "[run2]", "RSK model call failed: 503",
                    "SCN onchain_data(symbol='ETHUSDT')"]
    assert trail.tags() == ["SCN", "RSK", "guard", "scan", "desk", "oper"]
    assert trail.symbols() == ["SOLUSDT", "ETHUSDT"]


# ---------------------------------------------------------------------- the widget
class Pane(App):
    AUTO_FOCUS = None  # as in the console, where the price board has the focus first

    def compose(self) -> ComposeResult:
        yield ReasoningLog(id="reasoning")


def pane_text(pane: ReasoningLog) -> list[str]:
    """What the pane shows, line by line (its own Line API output)."""
    return [pane.render_line(y).text.rstrip() for y in range(pane.size.height)]


def index_of(lines: list[str], needle: str) -> int:
    found = [i for i, ln in enumerate(lines) if needle in ln]
    assert found, f"{needle!r} not shown:\n" + "\n".join(lines)
    return found[0]


async def test_the_pane_groups_interleaved_runs_and_orders_them():
    app = Pane()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = app.query_one(ReasoningLog)
        for line in two_runs_out_of_order():
            pane.add_line(line)
        pane.add_line(L(RSK, "tool_call", "slippage_calculator(symbol='SOLUSDT', notional_usd=1000)", 2700, "run1", 10))
        pane.add_line(L(RSK, "tool_result", SLIP_RESULT, 2710, "run1", 12))
        await pilot.pause()
        lines = pane_text(pane)
        order = [index_of(lines, s) for s in ("SOLUSDT dump: 3.33%", "▾ run1 SOLUSDT dump", "sol: first thought",
                                              "sol: second thought", "sol: third thought",
                                              "slippage(SOLUSDT, 1,000 USD) → [model] cost 11.1 bps",
                                              "ETHUSDT pump: 3.33%", "▾ run2 ETHUSDT pump", "eth: first thought",
                                              "eth: second thought", "SAFE -> WARNING")]
        assert order == sorted(order), "\n".join(lines)
        assert "running" in lines[index_of(lines, "▾ run1")]
        text = screen_text(app)
        assert "Surveillance Specialist" not in text and "SCN" in text and "slippage_calculator" not in text
        assert "00:00:00 scan  • SOLUSDT dump" in text and "+1.1s SCN   … sol: first thought" in text


async def test_a_run_folds_and_unfolds_and_c_folds_them_all():
    app = Pane()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = app.query_one(ReasoningLog)
        for line in two_runs_out_of_order()[1:]:  # run1's header is the first row
            pane.add_line(line)
        pane.focus()
        await pilot.press("home", "enter")
        await pilot.pause()
        lines = pane_text(pane)
        assert "▸ run1 SOLUSDT dump" in lines[index_of(lines, "run1 SOLUSDT")]
        assert not any("sol: first thought" in ln for ln in lines) and "[4]" in lines[index_of(lines, "run1")]
        assert any("eth: first thought" in ln for ln in lines)  # the other run stays open
        await pilot.press("space")
        await pilot.pause()
        assert any("sol: first thought" in ln for ln in pane_text(pane))
        await pilot.press("c")
        await pilot.pause()
        lines = pane_text(pane)
        assert not any("thought" in ln for ln in lines) and "▸ run2" in lines[index_of(lines, "run2 ETHUSDT")]
        await pilot.press("c")
        await pilot.pause()
        lines = pane_text(pane)
        assert any("sol: first thought" in ln for ln in lines) and any("eth: first thought" in ln for ln in lines)


async def test_a_click_on_a_run_header_folds_it_and_the_cursor_shows_only_with_focus():
    app = Pane()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = app.query_one(ReasoningLog)
        for line in two_runs_out_of_order():
            pane.add_line(line)
        await pilot.pause()
        y = index_of(pane_text(pane), "▾ run1")
        last = index_of(pane_text(pane), "SAFE -> WARNING")  # the newest row, where the cursor is
        assert pane.cursor is pane.rows[-1][0] and not any(s.style and s.style.bgcolor for s in pane.render_line(last))
        await pilot.click(ReasoningLog, offset=(3, y))
        await pilot.pause()
        lines = pane_text(pane)
        assert "▸ run1" in lines[y] and not any("sol: first thought" in ln for ln in lines)
        assert pane.has_focus and pane.cursor is pane.trail.runs["run1"]
        assert any(s.style and s.style.bgcolor for s in pane.render_line(y))


async def test_a_finished_run_folds_by_itself_when_the_next_one_starts():
    app = Pane()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = app.query_one(ReasoningLog)
        for line in (scan("SOLUSDT"), header("run1", "SOLUSDT", t=10), L(SCN, "thought", "sol thinking", 20, "run1", 4),
                     L("desk", "reason", "skip SOLUSDT dump: Market Scanner DISCARD: noise", 0)):
            pane.add_line(line)
        await pilot.pause()
        assert any("sol thinking" in ln for ln in pane_text(pane))  # finished, but still the newest
        pane.add_line(header("run2", "ETHUSDT", "pump", t=100))
        await pilot.pause()
        lines = pane_text(pane)
        assert not any("sol thinking" in ln for ln in lines)
        assert "skip: Market Scanner DISCARD: noise" in lines[index_of(lines, "▸ run1")]


async def test_enter_on_a_tool_line_shows_the_call_and_the_result_in_full():
    app = Pane()
    async with app.run_test(size=(60, 20)) as pilot:
        pane = app.query_one(ReasoningLog)
        pane.add_line(header("run1", "SOLUSDT"))
        pane.add_line(L(RSK, "tool_call", "slippage_calculator(symbol='SOLUSDT', notional_usd=1000)", 10, "run1", 10))
        pane.add_line(L(RSK, "tool_result", SLIP_RESULT, 20, "run1", 12))
        await pilot.pause()
        assert not any("expected_cost_usd" in ln for ln in pane_text(pane))
        pane.focus()
        await pilot.press("end", "enter")
        await pilot.pause()
        lines = pane_text(pane)
        assert all(len(ln) <= 60 for ln in lines)
        assert any("call: slippage_calculator(symbol='SOLUSDT'" in ln for ln in lines)
        assert "expected_cost_usd" in "".join(lines)
        pane.add_line(L(RSK, "thought", "a newer line", 30, "run1", 14))  # the expanded line stays in view
        await pilot.pause()
        assert pane.cursor.tool == "slippage_calculator"
        assert any("call: slippage_calculator(symbol='SOLUSDT'" in ln for ln in pane_text(pane))


async def test_the_filter_keys_narrow_the_pane_and_escape_clears():
    app = Pane()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = app.query_one(ReasoningLog)
        for line in two_runs_out_of_order():
            pane.add_line(line)
        pane.add_line(L(RSK, "thought", "sol: risk says ok", 2700, "run1", 11))
        pane.add_line(L(RSK, "error", "model call failed: 503", 2800, "run2", 25))
        pane.focus()
        await pilot.press("f")  # the first agent in the table's order: SCN
        await pilot.pause()
        assert pane.border_title == "Reasoning · agent SCN (esc: all)"
        lines = pane_text(pane)
        assert "agent SCN" in lines[0] and any("eth: first thought" in ln for ln in lines)
        assert not any("risk says ok" in ln or "crew run run1" in ln for ln in lines)
        await pilot.press("f")
        await pilot.pause()
        lines = pane_text(pane)
        assert pane.border_title.startswith("Reasoning · agent RSK")
        assert any("risk says ok" in ln for ln in lines) and not any("eth: first thought" in ln for ln in lines)
        await pilot.press("s")
        await pilot.pause()
        lines = pane_text(pane)
        assert pane.filter == Filter("symbol", "SOLUSDT")
        assert any("sol: first thought" in ln for ln in lines) and not any("run2" in ln for ln in lines)
        await pilot.press("e")
        await pilot.pause()
        lines = pane_text(pane)
        assert pane.border_title.startswith("Reasoning · errors only")
        assert any("model call failed: 503" in ln for ln in lines) and not any("thought" in ln for ln in lines)
        await pilot.press("escape")
        await pilot.pause()
        lines = pane_text(pane)
        assert pane.filter is None and pane.border_title == "Reasoning"
        assert any("eth: first thought" in ln for ln in lines) and any("risk says ok" in ln for ln in lines)


async def test_a_burst_of_lines_is_one_rebuild_and_the_newest_stays_in_view():
    app = Pane()
    async with app.run_test(size=(100, 20)) as pilot:
        pane = app.query_one(ReasoningLog)
        await pilot.pause()
        rebuilds = []
        real = pane._rebuild
        pane._rebuild = lambda: rebuilds.append(1) or real()
        pane.add_line(header("run1", "SOLUSDT"))
        for k in range(2500):
            pane.add_line(L(SCN, "thought", f"line {k}", k, "run1", k + 1))
        await pilot.pause()
        assert len(rebuilds) == 1
        assert pane.trail.count == 2000
        lines = pane_text(pane)
        assert "line 2499" in lines[-1] and not any("line 2480 " in ln for ln in lines)
        pane.focus()
        await pilot.press("up", "up", "up")
        pane.add_line(L(SCN, "thought", "line 2500", 2500, "run1", 2501))
        await pilot.pause()
        assert isinstance(pane.cursor, Entry) and pane.cursor.line.text == "line 2496"  # not yanked to the end
        await pilot.press("end")
        pane.add_line(L(SCN, "thought", "line 2501", 2501, "run1", 2502))
        await pilot.pause()
        assert "line 2501" in pane_text(pane)[-1] and pane.cursor.line.text == "line 2501"  # following again


async def test_every_cell_is_styled_so_no_color_renders(monkeypatch):
    """Textual's NO_COLOR filter reads the style of every segment: a bare pad crashed the frame."""
    monkeypatch.setenv("NO_COLOR", "1")
    app = Pane()
    async with app.run_test(size=(60, 20)) as pilot:
        pane = app.query_one(ReasoningLog)
        for line in two_runs_out_of_order():
            pane.add_line(line)
        await pilot.pause()
        assert all(seg.style is not None for y in range(pane.size.height) for seg in pane.render_line(y))
        assert "run1 SOLUSDT" in screen_text(app)


async def test_clear_and_refill_as_the_app_does_after_a_layout_change():
    app = Pane()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = app.query_one(ReasoningLog)
        for line in two_runs_out_of_order():
            pane.add_line(line)
        await pilot.pause()
        before = pane_text(pane)
        pane.clear()
        await pilot.pause()
        assert pane.trail.count == 0 and not any("run1" in ln for ln in pane_text(pane)[1:])
        for line in two_runs_out_of_order():
            pane.add_line(line)
        await pilot.pause()
        assert pane_text(pane) == before


@pytest.mark.parametrize("kind", ["agent", "symbol"])
async def test_cycling_a_filter_past_the_last_value_clears_it(kind):
    app = Pane()
    async with app.run_test(size=(100, 30)) as pilot:
        pane = app.query_one(ReasoningLog)
        for line in two_runs_out_of_order():
            pane.add_line(line)
        pane.focus()
        key = "f" if kind == "agent" else "s"
        values = pane.trail.tags() if kind == "agent" else pane.trail.symbols()
        seen = []
        for _ in values:
            await pilot.press(key)
            seen.append(pane.filter.value)
        assert seen == values
        await pilot.press(key)
        assert pane.filter is None
