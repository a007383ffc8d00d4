"""The reasoning pane: the decision trail grouped per crew run, newest run last.

Two halves:

- The model, pure Python (no Textual), unit-tested on its own: `Trail` keeps the last
  2000 ReasoningLines as runs (the lines of one crew run, `run_id`) and a time-ordered
  stream of the lines that belong to no run (guardian, scanner, operator, the desk's own
  notes). Within a run, lines are ordered by CrewAI's emission `sequence` (then time); the
  desk's own lines (sequence 0) stay where they arrived among the sequenced ones. Runs sit
  in the stream at their first line's time. A tool call and its result (or failure) merge
  into one entry, summarised in one line (`summarise_tool`). The session's verdict on a
  spike ("skip SYM dir: why", "proposal ...", lines without a run id) is matched to its run
  by the spike's time and becomes the run's outcome.
- The view, `ReasoningLog`: a Line-API ScrollView (like the price board). Lines arrive one
  by one (`add_line`); the rows are rebuilt at most once per message-queue pass (so once
  per app frame, however many lines the frame brought), and `render_line` builds only the
  visible rows' strips. A RichLog cannot regroup, reorder or fold what it has written; a
  Tree or ListView would hold a node or widget per line and need them moved or rebuilt.

Keys (the pane focused): up/down/pgup/pgdn/home/end move the cursor, Enter or space folds
the run under it (or shows a line's full text), `c` folds or unfolds every run, `f` cycles
the agent filter, `s` the symbol filter, `e` errors only, Escape clears the filter.
"""

from __future__ import annotations

import bisect
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Union

from rich.segment import Segment
from rich.style import Style
from textual.actions import SkipAction
from textual.binding import Binding
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from core.events import ReasoningLine

MAX_LINES = 2000

# ---------------------------------------------------------------------- the one table of tags
# tag -> (style, every name its role goes by: the operator's name, the CrewAI role title of
# config/default.yaml, the config key). Agents are upper case, the rule-based parts lower case.
TAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "GRD": ("bold magenta", ("Market Guardian", "Market Crash Protection Specialist", "market_guardian")),
    "SCN": ("bold cyan", ("Market Scanner", "Binance Market Surveillance Specialist", "market_scanner")),
    "CTX": ("bold blue", ("Context Analyzer", "Market Context Analyst", "context_analyzer")),
    "RSK": ("bold yellow", ("Risk Assessment", "Risk Assessment Officer", "risk_assessment")),
    "EXE": ("bold green", ("Strategy Executor", "strategy_executor")),
    "AGT": ("bold", ("agent",)),  # a CrewAI event that named no agent
    "guard": ("magenta", ("guardian",)),
    "scan": ("cyan", ("scanner",)),
    "desk": ("yellow", ("desk",)),
    "oper": ("white", ("operator",)),
}
_ROLE_TAG = {name.lower(): tag for tag, (_style, names) in TAGS.items() for name in names}
TAG_WIDTH = 5


def tag_of(role: str, extra: dict[str, str] | None = None) -> str:
    """The short tag of a role: the table's, else the initials of its words (at most 3)."""
    key = (role or "").strip().lower()
    if extra and key in extra:
        return extra[key]
    tag = _ROLE_TAG.get(key)
    if tag is not None:
        return tag
    words = re.findall(r"[A-Za-z0-9]+", role or "")
    return "".join(w[0] for w in words[:3]).upper() or "?"


def tag_style(tag: str) -> str:
    entry = TAGS.get(tag)
    return entry[0] if entry else "bold"


# ---------------------------------------------------------------------- tool calls in one line
# tool -> (short name, the arguments shown, the result fields shown as (key, format));
# a tool not here shows its first arguments and fields.
TOOLS: dict[str, tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "check_circuit_breaker_status": ("breaker", (), (("breaker_status", "{}"),)),
    "market_stability_checker": ("stability", ("symbol",), (("breaker_status", "{}"), ("size_factor", "size x{}"),
                                                            ("stability_note", "{}"))),
    "calculate_market_drawdown": ("drawdown", ("symbol", "window_minutes"), (("drawdown_percent", "{} off high"),)),
    "assess_market_recovery_conditions": ("recovery", (), (("recovery_conditions_met", "met {}"),
                                                           ("recommendation", "{}"))),
    "get_circuit_breaker_statistics": ("breaker stats", (), (("triggers", "{} triggers"), ("warnings", "{} warnings"))),
    "trigger_circuit_breaker": ("TRIGGER", ("symbol", "reason"), (("breaker_status", "{}"),)),
    "set_circuit_breaker_warning": ("warn", ("reason",), (("breaker_status", "{}"),)),
    "start_circuit_breaker_recovery": ("recover", (), (("breaker_status", "{}"),)),
    "clear_circuit_breaker": ("clear", (), (("breaker_status", "{}"),)),
    "binance_websocket": ("ticker", ("symbol",), (("price", "{}"), ("sigma_1m_percent", "sigma 1m {}"))),
    "binance_order_book": ("book", ("symbol", "notional_usd"), (("spread_bps", "spread {}"),
                                                                ("depth_usd_per_side", "depth {}"))),
    "binance_account": ("account", (), (("equity_usdt", "equity {}"), ("open_orders", "{} open orders"))),
    "binance_spot_order": ("order", ("symbol", "side", "entry_type", "quantity", "entry_price"), ()),
    "binance_futures_data": ("futures", ("symbol",), ()),
    "binance_liquidation": ("liquidations", ("symbol",), ()),
    "correlation_analysis": ("correlation", ("symbol",), (("change_percent", "{}"), ("direction", "{}"),
                                                          ("correlation_btc", "BTC corr {}"))),
    "manipulation_detector": ("manipulation", ("symbol",), (("manipulation_score", "score {}"),
                                                            ("thin_book", "thin book {}"),
                                                            ("volume_burst", "burst {}"))),
    "news_sentiment": ("news", ("symbol",), (("sentiment", "sentiment {}"),)),
    "twitter_sentiment": ("twitter", ("symbol",), (("sentiment", "sentiment {}"),)),
    "onchain_data": ("onchain", ("symbol",), ()),
    "portfolio_analyzer": ("portfolio", ("symbol",), (("equity_usdt", "equity {}"),
                                                      ("open_positions", "{} positions"),
                                                      ("position_slots_left", "{} slots left"))),
    "position_sizing_optimizer": ("sizing", ("symbol", "entry_price"), (("quantity", "qty {}"),
                                                                        ("notional_usd", "{}"),
                                                                        ("stop_loss", "stop {}"))),
    "risk_metrics_calculator": ("risk", (), (("daily_headroom_usd", "day headroom {}"),
                                             ("weekly_headroom_usd", "week {}"))),
    "slippage_calculator": ("slippage", ("symbol", "notional_usd"), (("expected_cost_bps", "cost {}"),
                                                                     ("slippage_bps", "slip {}"))),
}
_QUIET_FIELDS = {"symbol", "epoch", "as_of_ms", "time_ms", "since_ms", "caveat", "backend", "actor"}
_MARKERS = (("[modelled, not exchange data]", "[model]"), ("[live book]", "[live]"))
_KV = re.compile(r"(?:^|, )([A-Za-z_][A-Za-z0-9_]*)=")
_FAILED = re.compile(r"([a-z_][a-z0-9_]*) failed: ?(.*)", re.S)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_ONE_LINE = str.maketrans({"\n": " ", "\r": " ", "\t": " "})


def parse_fields(text: str) -> tuple[str, dict[str, str]]:
    """'head, k=v, k2=v2' -> ('head', {'k': 'v', 'k2': 'v2'}) (a value may hold ', ')."""
    found = list(_KV.finditer(text))
    if not found:
        return text.strip(), {}
    head = text[:found[0].start()].strip().rstrip(",").strip()
    fields: dict[str, str] = {}
    for m, nxt in zip(found, found[1:] + [None]):
        fields[m.group(1)] = text[m.end():nxt.start() if nxt is not None else len(text)].strip()
    return head, fields


def parse_call(text: str) -> tuple[str, dict[str, str]]:
    """'name(k='v', n=3)' (as the stream writes a tool call) -> ('name', {'k': 'v', 'n': '3'})."""
    name, _, rest = text.partition("(")
    if rest.endswith(")"):
        rest = rest[:-1]
    _head, args = parse_fields(rest)
    return name.strip(), {k: v.strip().strip("'\"") for k, v in args.items()}


def tool_of(line: ReasoningLine) -> str | None:
    """The tool a tool_call, tool_result or tool failure line is about."""
    if line.kind == "tool_call":
        return line.text.partition("(")[0].strip() or None
    if line.kind == "tool_result":
        return line.text.partition(" -> ")[0].strip() or None
    if line.kind == "error":
        m = _FAILED.match(line.text)
        return m.group(1) if m else None
    return None


def _short_number(x: float) -> str:
    if x != x:
        return "nan"
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.4g}" if abs(x) >= 1 else f"{x:.3g}"


def fmt_value(key: str, raw: str, limit: int = 40) -> str:
    """One value as the operator reads it: units from the key's name, numbers shortened."""
    raw = raw.strip().strip("'\"")
    if raw in ("True", "False"):
        return "yes" if raw == "True" else "no"
    if _NUMBER.fullmatch(raw):
        x = float(raw)
        if key.endswith(("_usd", "_usdt", "_usd_per_side")):
            return f"{_short_number(round(x) if abs(x) >= 100 else x)} USD"
        if key.endswith("_bps"):
            return f"{x:.1f} bps"
        if key.endswith("_percent"):
            return f"{_short_number(x)}%"
        if key.endswith("minutes"):
            return f"{_short_number(x)}m"
        return _short_number(x)
    return raw if len(raw) <= limit else raw[: limit - 1] + "…"


def _result_text(name: str, text: str) -> str:
    body = text.split(" -> ", 1)[1] if " -> " in text else text
    head, fields = parse_fields(body)
    marks = []
    for long, short in _MARKERS:  # a modelled number must not read as exchange data: the mark comes first
        if long in head:
            marks.append(short)
            head = head.replace(long, "")
    head = head.strip().strip(",").strip()
    status, _, why = head.partition(", ")
    parts = [f"{status}: {why}" if why else status] if status else []
    spec = TOOLS.get(name)
    if spec is not None:
        parts += [fmt.format(fmt_value(k, fields[k])) for k, fmt in spec[2] if fields.get(k) not in (None, "", "None")]
    if spec is None or (not parts and not spec[2]):
        parts += [f"{k} {fmt_value(k, v)}" for k, v in fields.items() if k not in _QUIET_FIELDS][:3]
    return " ".join(marks + [", ".join(parts) or body.strip() or "done"])


def summarise_tool(call: str | None, result: str | None = None, error: str | None = None) -> str:
    """A tool call and its result (or failure) in one line: `name(key args) → short result`."""
    name = ""
    args_text = ""
    if call:
        name, args = parse_call(call)
        spec = TOOLS.get(name)
        keys = spec[1] if spec is not None else tuple(args)[:3]
        args_text = ", ".join(fmt_value(k, args[k], 24) for k in keys if k in args and args[k] != "…")
    else:
        name = (result or error or "").partition(" -> ")[0].partition(" failed")[0].strip()
    short = TOOLS[name][0] if name in TOOLS else name
    head = f"{short}({args_text})" if call else short
    if error is not None:
        m = _FAILED.match(error)
        return f"{head} ✖ failed: {m.group(2) if m else error}"
    if result is None:
        return f"{head} → …"
    return f"{head} → {_result_text(name, result)}"


# ---------------------------------------------------------------------- the model
@dataclass(eq=False)
class Entry:
    """One row of the trail: a line, or a tool call with its result merged in."""

    line: ReasoningLine
    tag: str
    key: tuple
    tool: str | None = None
    result: ReasoningLine | None = None  # the tool result (or failure) of a call
    outcome: bool = False  # the session's verdict, attached to its run
    expanded: bool = False
    _summary: str | None = None

    @property
    def kind(self) -> str:
        """"error" too for a tool that answered {"status": "error"} (the tools never raise)."""
        last = self.result if self.result is not None else self.line
        if last.kind == "error" or (last.kind == "tool_result" and last.text.partition(" -> ")[2].startswith("error")):
            return "error"
        return self.line.kind

    @property
    def lines(self) -> int:
        return 1 + (self.result is not None)

    def summary(self) -> str:
        if self._summary is None:
            if self.tool is None:
                self._summary = self.line.text.translate(_ONE_LINE)
            else:
                call = self.line.text if self.line.kind == "tool_call" else None
                res = self.result if call is not None else self.line
                if res is None:
                    self._summary = summarise_tool(call)
                elif res.kind == "error":
                    self._summary = summarise_tool(call, error=res.text)
                else:
                    self._summary = summarise_tool(call, res.text)
                self._summary = self._summary.translate(_ONE_LINE)
        return self._summary

    def full(self) -> list[str]:
        """The raw texts behind the row (a merged tool call: the call, then its result)."""
        if self.tool is None:
            return [self.line.text]
        return [self.line.text] + ([self.result.text] if self.result is not None else [])

    def attach(self, result: ReasoningLine) -> None:
        self.result = result
        self._summary = None


@dataclass(eq=False)
class Run:
    """The lines of one crew run, with what the desk said of it."""

    run_id: str
    key: tuple[int, int]  # (first time, arrival): where the run sits in the stream
    entries: list[Entry] = field(default_factory=list)
    kind: str = ""  # "spike" or "guardian" once the desk's first line is in
    symbol: str | None = None
    direction: str = ""
    spike_type: str = ""
    detail: str = ""
    spike_ms: int | None = None  # the spike's time (its scanner line's): the session's verdict carries it
    outcome: str = ""
    outcome_kind: str = ""  # "proposal", "skip", "error", "done"; "" while running
    last_answer: str = ""
    max_seq: int = 0
    collapsed: bool | None = None  # the operator's choice; None: the default
    settled: bool = False  # the session's verdict is in
    lines: int = 0
    open_calls: list[Entry] = field(default_factory=list)
    orphans: list[Entry] = field(default_factory=list)  # results whose call has not landed

    @property
    def first_ms(self) -> int:
        return self.key[0]

    @property
    def finished(self) -> bool:
        return bool(self.outcome_kind)

    def insert(self, entry: Entry) -> None:
        bisect.insort(self.entries, entry, key=lambda e: e.key)
        self.lines += entry.lines

    def remove(self, entry: Entry) -> None:
        self.entries.remove(entry)
        self.lines -= entry.lines
        for pending in (self.open_calls, self.orphans):
            if entry in pending:
                pending.remove(entry)

    def set_outcome(self, kind: str, text: str) -> None:
        rank = {"": 0, "done": 1, "skip": 2, "error": 3, "proposal": 4}
        if rank[kind] >= rank[self.outcome_kind]:
            self.outcome_kind, self.outcome = kind, text


Item = Union[Run, Entry]


@dataclass(frozen=True)
class Filter:
    """What the pane is narrowed to: one agent (tag), one symbol, or errors only."""

    kind: str  # "agent", "symbol", "errors"
    value: str = ""

    @property
    def label(self) -> str:
        return "errors only" if self.kind == "errors" else f"{self.kind} {self.value}"

    def _mentions(self, entry: Entry) -> bool:
        return re.search(rf"(?<![A-Z0-9]){re.escape(self.value)}(?![A-Z0-9])", " ".join(entry.full())) is not None

    def entry(self, entry: Entry, run: Run | None) -> bool:
        if self.kind == "errors":
            return entry.kind == "error"
        if self.kind == "agent":
            return entry.tag == self.value
        return (run is not None and run.symbol == self.value) or self._mentions(entry)


Row = tuple[Item, Union[Run, None], int]  # the item, its run (an entry's), lines shown (a run's)

_HEADER = re.compile(r"crew run (\S+) for (\S+) (\S+) \(([^)]*)\)")
_GUARDIAN = re.compile(r"guardian crew (\S+): breaker (\S+)")
_SCAN = re.compile(r"([A-Z0-9]{2,}) (pump|dump): ")
_SKIP = re.compile(r"skip (\S+) (\S+): (.*)", re.S)
_PROPOSAL = re.compile(r"proposal (\S+): (\S+) (\S+) (\S+) (\S+)")
_ANSWER = re.compile(r"(\w+): ([A-Z][A-Z_]+)")
_VETO_LINE = re.compile(r"run \S+ ends at a veto: (.*)", re.S)
_ABORT_LINE = re.compile(r"run \S+ aborted: (.*)", re.S)


class Trail:
    """The reasoning lines as runs and a loose stream, in display order, bounded."""

    def __init__(self, max_lines: int = MAX_LINES) -> None:
        self.max_lines = max_lines
        self.extra_roles: dict[str, str] = {}
        self.clear()

    def clear(self) -> None:
        self.items: list[Item] = []  # runs and loose entries, by key
        self.runs: dict[str, Run] = {}
        self.count = 0
        self.version = 0
        self._arrival = 0
        self._scans: dict[tuple[str, str], int] = {}  # (symbol, direction) -> the last scanner line's time

    def learn_roles(self, agents: Any) -> None:
        """The role titles of the settings' agents (config.agents.<key>.role), should they differ
        from config/default.yaml's: each gets the tag its config key has in TAGS."""
        for tag, (_style, names) in TAGS.items():
            for name in names:
                role = getattr(getattr(agents, name, None), "role", None)
                if isinstance(role, str) and role:
                    self.extra_roles[role.lower()] = tag

    # ------------------------------------------------------------------ lines in
    def add(self, line: ReasoningLine) -> None:
        self._arrival += 1
        self.version += 1
        tag = tag_of(line.role, self.extra_roles)
        if line.run_id:
            self._add_to_run(line, tag)
        else:
            self._add_loose(line, tag)
        self.count += 1
        self._trim()

    def _insert_item(self, item: Item) -> None:
        bisect.insort(self.items, item, key=lambda x: x.key)

    def _add_loose(self, line: ReasoningLine, tag: str) -> None:
        if line.role == "scanner":
            m = _SCAN.match(line.text)
            if m:
                self._scans[(m.group(1), m.group(2))] = line.time_ms
        if line.role == "desk" and self._attach_verdict(line, tag):
            return
        self._insert_item(Entry(line, tag, (line.time_ms, self._arrival)))

    def _attach_verdict(self, line: ReasoningLine, tag: str) -> bool:
        """The session's verdict on a spike, to the run that decided it (same symbol, the
        spike's time; a run whose spike time is unknown as a last resort)."""
        m = _SKIP.match(line.text)
        if m:
            symbol, direction, kind, text = m.group(1), m.group(2), "skip", f"skip: {m.group(3)}"
        else:
            m = _PROPOSAL.match(line.text) if line.kind == "answer" else None
            if m is None:
                return False
            symbol, direction, kind = m.group(4), "", "proposal"
            text = f"proposal {m.group(1)} {m.group(2)} {m.group(3)} {m.group(5)}"
        candidates = [r for r in self.runs.values() if r.kind == "spike" and r.symbol == symbol and not r.settled
                      and (not direction or r.direction == direction)]
        pick = [r for r in candidates if r.spike_ms == line.time_ms] or [r for r in candidates if r.spike_ms is None]
        if not pick:
            return False
        run = max(pick, key=lambda r: r.key)
        run.settled = True
        run.set_outcome(kind, text)
        run.insert(Entry(line, tag, (run.max_seq, 2, line.time_ms, self._arrival), outcome=True))
        return True

    def _add_to_run(self, line: ReasoningLine, tag: str) -> None:
        run = self.runs.get(line.run_id or "")
        if run is None:
            run = Run(line.run_id or "", (line.time_ms, self._arrival))
            self.runs[run.run_id] = run
            self._insert_item(run)
        elif line.time_ms < run.key[0]:  # a line that ran late: the run moves back to its first time
            self.items.remove(run)
            run.key = (line.time_ms, run.key[1])
            self._insert_item(run)
        if line.sequence:
            key: tuple = (line.sequence, 0, line.time_ms, self._arrival)
            run.max_seq = max(run.max_seq, line.sequence)
        else:  # the desk's own line: after everything sequenced that arrived before it
            key = (run.max_seq, 1, line.time_ms, self._arrival)
        self._note(run, line, tag)
        entry = Entry(line, tag, key, tool=tool_of(line))
        if entry.tool is not None and self._pair(run, entry):
            return
        run.insert(entry)

    def _pair(self, run: Run, entry: Entry) -> bool:
        """Merge a call with its result: True when `entry` went into an entry already there."""
        if entry.line.kind == "tool_call":
            for orphan in run.orphans:
                if orphan.tool == entry.tool and orphan.key > entry.key:
                    run.remove(orphan)
                    entry.attach(orphan.line)
                    run.insert(entry)
                    return True
            run.open_calls.append(entry)
            return False
        calls = [c for c in run.open_calls if c.tool == entry.tool and c.key < entry.key]
        call = next((c for c in calls if c.tag == entry.tag), calls[0] if calls else None)
        if call is None:
            run.orphans.append(entry)
            return False
        run.open_calls.remove(call)
        call.attach(entry.line)
        run.lines += 1
        return True

    def _note(self, run: Run, line: ReasoningLine, tag: str) -> None:
        """What a line says of its run: the spike, the outcome, the last decision."""
        text = line.text
        if line.role == "desk":
            m = _HEADER.match(text)
            if m:
                run.kind, run.symbol, run.direction, run.spike_type = "spike", m.group(2), m.group(3), m.group(4)
                run.spike_ms = self._scans.get((run.symbol, run.direction))
                return
            m = _GUARDIAN.match(text)
            if m:
                run.kind, run.detail = "guardian", f"breaker {m.group(2)}"
                return
            m = _VETO_LINE.match(text)
            if m:
                run.set_outcome("skip", f"skip: {m.group(1)}")
            elif line.kind == "error":
                m = _ABORT_LINE.match(text)
                run.set_outcome("error", f"error: {m.group(1) if m else text}")
            return
        if line.kind == "answer":
            m = _ANSWER.match(text)
            if m:
                run.last_answer = f"{tag} {m.group(2)}"
                if run.kind == "guardian":
                    run.set_outcome("done", run.last_answer)

    def _trim(self) -> None:
        while self.count > self.max_lines and self.items:
            first = self.items[0]
            if isinstance(first, Entry):
                self.items.pop(0)
                self.count -= first.lines
            elif len(self.items) > 1 or len(first.entries) <= 1:
                self.items.pop(0)
                self.runs.pop(first.run_id, None)
                self.count -= first.lines
            else:  # one run holds the whole history: its oldest lines go
                entry = first.entries[0]
                first.remove(entry)
                self.count -= entry.lines

    # ------------------------------------------------------------------ rows out
    def newest_run(self) -> Run | None:
        for item in reversed(self.items):
            if isinstance(item, Run):
                return item
        return None

    def is_collapsed(self, run: Run, flt: Filter | None = None, newest: Run | None = None) -> bool:
        """The operator's choice; by default a finished run folds once a newer run started
        (the running ones and the newest stay open), and nothing folds under a filter."""
        if run.collapsed is not None:
            return run.collapsed
        if flt is not None:
            return False
        newest = newest if newest is not None else self.newest_run()
        return run.finished and run is not newest

    def rows(self, flt: Filter | None = None) -> list[Row]:
        out: list[Row] = []
        newest = self.newest_run()
        for item in self.items:
            if isinstance(item, Entry):
                if flt is None or flt.entry(item, None):
                    out.append((item, None, 1))
                continue
            run = item
            if flt is None or (flt.kind == "symbol" and run.symbol == flt.value):
                shown = run.entries
            else:
                shown = [e for e in run.entries if flt.entry(e, run)]
                if not shown and not (flt.kind == "errors" and run.outcome_kind == "error"):
                    continue
            out.append((run, None, len(shown)))
            if not self.is_collapsed(run, flt, newest):
                out.extend((e, run, 1) for e in shown)
        return out

    def tags(self) -> list[str]:
        """The tags in the trail: the table's order, then the others."""
        seen = {e.tag for e in self._entries()}
        return [t for t in TAGS if t in seen] + sorted(seen - set(TAGS))

    def symbols(self) -> list[str]:
        """The symbols of the runs and of the scanner's lines, first seen first."""
        seen: dict[str, None] = {}
        for item in self.items:
            if isinstance(item, Run):
                if item.symbol:
                    seen[item.symbol] = None
            elif item.line.role == "scanner":
                m = _SCAN.match(item.line.text)
                if m:
                    seen[m.group(1)] = None
        return list(seen)

    def _entries(self) -> Iterable[Entry]:
        for item in self.items:
            if isinstance(item, Entry):
                yield item
            else:
                yield from item.entries


# ---------------------------------------------------------------------- the view
KIND_MARKS = {"tool_call": "»", "tool_result": "»", "thought": "…", "answer": "✔", "reason": "•", "error": "✖"}
S_TITLE = Style(bold=True, color="bright_white", bgcolor="grey23")
S_TITLE_FILTER = Style(bold=True, color="black", bgcolor="yellow")
S_PLAIN = Style()
S_TIME = Style(color="grey50")
S_DIM = Style(color="grey62")
S_MARK = Style(color="grey70")
S_ERROR = Style(color="red")
S_FOLD = Style(bold=True, color="bright_white")
S_SYMBOL = Style(bold=True)
S_PUMP = Style(color="green")
S_DUMP = Style(color="red")
S_CURSOR = Style(bgcolor="dark_blue")
OUTCOME_STYLES = {"proposal": Style(bold=True, color="green"), "skip": Style(color="yellow"),
                  "error": Style(bold=True, color="red"), "done": Style(color="cyan"), "": Style(color="cyan")}
_TAG_STYLES: dict[str, Style] = {}
HINTS = ("   enter fold · c all · f agent · s symbol · e errors · esc all", "   enter fold · c all · f/s/e filter",
         "   f/s/e filter")  # the title row's key hint: the longest that fits


def _tag_style(tag: str) -> Style:
    style = _TAG_STYLES.get(tag)
    if style is None:
        style = _TAG_STYLES[tag] = Style.parse(tag_style(tag))
    return style


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%H:%M:%S")


def _fit(segments: list[Segment], width: int, fill: Style | None = None) -> Strip:
    """One row exactly `width` cells: cut with an ellipsis, or padded (every segment styled:
    the NO_COLOR filter reads each segment's style)."""
    strip = Strip(segments)
    if strip.cell_length > width:
        strip = Strip.join([strip.crop(0, max(0, width - 1)), Strip([Segment("…", S_DIM)])])
    return strip.extend_cell_length(width, fill or S_PLAIN)


class ReasoningLog(ScrollView, can_focus=True):
    """The decision trail, grouped per crew run (see the module's docstring)."""

    DEFAULT_CSS = """
    ReasoningLog { height: 1fr; overflow-x: hidden; scrollbar-size-vertical: 1; }
    """
    BINDINGS = [
        Binding("enter,space", "toggle", "Fold", show=False),
        Binding("c", "fold_all", "Fold runs"),
        Binding("f", "filter_agent", "Agent"),
        Binding("s", "filter_symbol", "Symbol"),
        Binding("e", "filter_errors", "Errors"),
        Binding("escape", "clear_filter", "All lines", show=False),
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home", "edge(0)", show=False),
        Binding("end", "edge(1)", show=False),
    ]

    def __init__(self, *, max_lines: int = MAX_LINES, id: str | None = None,  # noqa: A002
                 classes: str | None = None, name: str | None = None) -> None:
        super().__init__(id=id, classes=classes, name=name)
        self.trail = Trail(max_lines)
        self.filter: Filter | None = None
        self._rows: list[Row] = []
        self._row_of: dict[int, int] = {}  # id(item) -> row index
        self._lines: list[tuple[int, int]] = []  # screen line (below the title) -> (row, sub-line)
        self._row_line: list[int] = []  # row -> its first screen line
        self._wrapped: dict[int, list[tuple[str, Style]]] = {}  # row -> an expanded row's further lines
        self._strips: dict[int, Strip] = {}
        self._cursor: Item | None = None
        self._cursor_row = 0
        self._follow = True  # the cursor stays on the newest row
        self._pending = False
        self._width = 0
        self.border_title = "Reasoning"

    # ------------------------------------------------------------------ data in
    def add_line(self, line: ReasoningLine) -> None:
        """A line in; the rows are rebuilt once, after the current batch."""
        self.trail.add(line)
        self._schedule()

    def clear(self) -> None:
        self.trail.clear()
        self._cursor, self._follow = None, True
        self._schedule()

    def set_filter(self, flt: Filter | None) -> None:
        self.filter = flt
        self._follow = True
        self._rebuild()

    def _schedule(self) -> None:
        if not self._pending:
            self._pending = True
            if self.is_mounted:
                self.call_later(self._rebuild)

    def on_mount(self) -> None:
        settings = getattr(getattr(self.app, "session", None), "settings", None)
        if settings is not None and getattr(settings, "agents", None) is not None:
            self.trail.learn_roles(settings.agents)
        self._rebuild()

    def on_resize(self) -> None:
        self._rebuild()

    def on_focus(self) -> None:
        self._strips.clear()
        self.refresh()

    def on_blur(self) -> None:
        self._strips.clear()
        self.refresh()

    # ------------------------------------------------------------------ rows (once per batch)
    @property
    def rows(self) -> list[Row]:
        return self._rows

    @property
    def cursor(self) -> Item | None:
        return self._cursor

    def _rebuild(self) -> None:
        self._pending = False
        width = self.scrollable_content_region.width or self.size.width or 80
        self._width = width
        rows = self.trail.rows(self.filter)
        self._rows = rows
        self._row_of = {id(item): i for i, (item, _run, _n) in enumerate(rows)}
        lines: list[tuple[int, int]] = []
        row_line: list[int] = []
        wrapped: dict[int, list[tuple[str, Style]]] = {}
        for i, (item, run, _n) in enumerate(rows):
            row_line.append(len(lines))
            lines.append((i, 0))
            if isinstance(item, Entry) and item.expanded:
                more = self._expansion(item, run, width)
                wrapped[i] = more
                lines.extend((i, k + 1) for k in range(len(more)))
        self._lines, self._row_line, self._wrapped = lines, row_line, wrapped
        self._strips.clear()
        self._place_cursor()
        self._update_title()
        size = Size(width, len(lines) + 1)
        if size != self.virtual_size:
            self.virtual_size = size
        self._scroll_to_cursor()
        self.refresh()

    def _place_cursor(self) -> None:
        rows = self._rows
        if not rows:
            self._cursor, self._cursor_row = None, 0
            return
        if self._follow or self._cursor is None:
            self._cursor_row = len(rows) - 1
        else:
            i = self._row_of.get(id(self._cursor))
            if i is None and isinstance(self._cursor, Entry):  # folded away: its run's header
                run = self.trail.runs.get(self._cursor.line.run_id or "")
                i = self._row_of.get(id(run)) if run is not None else None
            self._cursor_row = min(i if i is not None else self._cursor_row, len(rows) - 1)
        self._cursor = rows[self._cursor_row][0]

    def _update_title(self) -> None:
        label = f"Reasoning · {self.filter.label} (esc: all)" if self.filter else "Reasoning"
        self.border_title = label

    def _expansion(self, entry: Entry, run: Run | None, width: int) -> list[tuple[str, Style]]:
        indent = " " * (4 if run is not None else 2)
        room = max(10, width - len(indent))
        out: list[tuple[str, Style]] = []
        texts = entry.full()
        labels = ["call: ", "result: "] if entry.tool is not None else [""]
        for label, text in zip(labels, texts):
            for chunk in textwrap.wrap(label + text, room) or [""]:
                out.append((indent + chunk, S_ERROR if entry.kind == "error" else S_DIM))
        return out

    # ------------------------------------------------------------------ the Line API
    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            return self._title_strip(width)
        _scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y - 1
        if index >= len(self._lines):
            return Strip.blank(width, self.rich_style)
        strip = self._strips.get(index)
        if strip is None:
            strip = self._strips[index] = self._render(index, width)
        return strip

    def _title_strip(self, width: int) -> Strip:
        runs = sum(1 for item in self.trail.items if isinstance(item, Run))
        if self.filter is not None:
            shown = sum(1 for item, _run, _n in self._rows if isinstance(item, Entry))
            text = f" {self.filter.label}: {shown} rows · esc: all lines"
            return _fit([Segment(text, S_TITLE_FILTER)], width, S_TITLE_FILTER)
        text = f" Reasoning · {runs} run{'s' * (runs != 1)} · {self.trail.count} lines"
        room = width - len(text)
        hint = next((h for h in HINTS if len(h) <= room), "")
        return _fit([Segment(text, S_TITLE), Segment(hint, S_TITLE + S_DIM)], width, S_TITLE)

    def _render(self, index: int, width: int) -> Strip:
        row, sub = self._lines[index]
        item, run, shown = self._rows[row]
        if sub:
            text, style = self._wrapped[row][sub - 1]
            strip = _fit([Segment(text, style)], width)
        elif isinstance(item, Run):
            strip = _fit(self._header(item, shown), width)
        else:
            strip = _fit(self._entry(item, run), width)
        if row == self._cursor_row and self._rows and self.has_focus:  # the cursor shows while the pane has the keys
            strip = strip.apply_style(S_CURSOR)
        return strip

    def _header(self, run: Run, shown: int) -> list[Segment]:
        folded = self.trail.is_collapsed(run, self.filter)
        segs = [Segment("▸ " if folded else "▾ ", S_FOLD), Segment(f"{run.run_id} ", S_DIM)]
        if run.kind == "guardian":
            segs.append(Segment(f"guardian · {run.detail}", S_SYMBOL))
        elif run.symbol:
            segs += [Segment(f"{run.symbol} ", S_SYMBOL),
                     Segment(run.direction, S_PUMP if run.direction == "pump" else S_DUMP)]
            if run.spike_type:
                segs.append(Segment(f" · {run.spike_type.removeprefix('spot_').replace('_', ' ')}", S_DIM))
        else:
            segs.append(Segment("crew run", S_SYMBOL))
        segs.append(Segment(f" · {_clock(run.first_ms)} · ", S_TIME))
        status = run.outcome or ("running" + (f" · {run.last_answer}" if run.last_answer else ""))
        segs.append(Segment(status.translate(_ONE_LINE), OUTCOME_STYLES[run.outcome_kind]))
        total = len(run.entries)
        segs.append(Segment(f"  [{shown}/{total}]" if shown != total else f"  [{total}]", S_DIM))
        return segs

    def _entry(self, entry: Entry, run: Run | None) -> list[Segment]:
        line = entry.line
        if run is not None:
            secs = (line.time_ms - run.first_ms) / 1000
            segs = [Segment(f"  {secs:+6.1f}s " if abs(secs) < 1000 else f"  {secs:+6.0f}s ", S_TIME)]
        else:
            segs = [Segment(f"{_clock(line.time_ms)} ", S_TIME)]
        kind = entry.kind
        segs += [Segment(entry.tag.ljust(TAG_WIDTH)[:TAG_WIDTH] + " ", _tag_style(entry.tag)),
                 Segment(f"{KIND_MARKS.get(line.kind, '•')} ", S_ERROR if kind == "error" else S_MARK),
                 Segment(entry.summary(), S_ERROR if kind == "error" else S_PLAIN)]
        return segs

    # ------------------------------------------------------------------ the cursor
    def _scroll_to_cursor(self) -> None:
        if not self._rows:
            return
        top = self._row_line[self._cursor_row]
        bottom = top + len(self._wrapped.get(self._cursor_row, ()))
        height = max(1, self.scrollable_content_region.height - 1)  # below the title row
        scroll_y = round(self.scroll_y)
        if self._follow:
            target = max(0, len(self._lines) - height)
        elif top < scroll_y:
            target = top
        elif bottom >= scroll_y + height:
            target = max(0, bottom - height + 1)
        else:
            return
        if target != scroll_y:
            self.scroll_to(y=target, animate=False, force=True)  # the scrollbar may not be laid out yet

    def _move_to(self, row: int) -> None:
        if not self._rows:
            return
        row = max(0, min(row, len(self._rows) - 1))
        self._cursor_row, self._cursor = row, self._rows[row][0]
        self._follow = row == len(self._rows) - 1
        self._strips.clear()
        self._scroll_to_cursor()
        self.refresh()

    def action_move(self, delta: int) -> None:
        self._move_to(self._cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self._move_to(self._cursor_row + direction * max(1, self.scrollable_content_region.height - 2))

    def action_edge(self, end: int) -> None:
        self._move_to(len(self._rows) - 1 if end else 0)

    def on_click(self, event: Any) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        index = round(self.scroll_y) + offset.y - 1
        if 0 <= index < len(self._lines):
            self._move_to(self._lines[index][0])
            self.action_toggle()

    # ------------------------------------------------------------------ folding and filters
    def action_toggle(self) -> None:
        """Fold or unfold the run under the cursor; a line shows or hides its full text."""
        item = self._cursor
        if item is None:
            raise SkipAction()
        if isinstance(item, Run):
            item.collapsed = not self.trail.is_collapsed(item, self.filter)
        else:
            item.expanded = not item.expanded
        self._follow = False
        self._rebuild()

    def action_fold_all(self) -> None:
        """Fold every run, or unfold them all when all are folded."""
        runs = [item for item in self.trail.items if isinstance(item, Run)]
        newest = self.trail.newest_run()
        fold = any(not self.trail.is_collapsed(r, self.filter, newest) for r in runs)
        for run in runs:
            run.collapsed = fold
        self._rebuild()

    def _cycle(self, kind: str, values: list[str]) -> None:
        current = self.filter.value if self.filter is not None and self.filter.kind == kind else None
        if current in values:
            i = values.index(current) + 1
            nxt = values[i] if i < len(values) else None
        else:
            nxt = values[0] if values else None
        self.set_filter(Filter(kind, nxt) if nxt is not None else None)

    def action_filter_agent(self) -> None:
        self._cycle("agent", self.trail.tags())

    def action_filter_symbol(self) -> None:
        self._cycle("symbol", self.trail.symbols())

    def action_filter_errors(self) -> None:
        self.set_filter(None if self.filter is not None and self.filter.kind == "errors" else Filter("errors"))

    def action_clear_filter(self) -> None:
        if self.filter is None:
            raise SkipAction()
        self.set_filter(None)


__all__ = ["ReasoningLog", "Trail", "Run", "Entry", "Filter", "TAGS", "TOOLS", "tag_of", "summarise_tool",
           "parse_call", "parse_fields", "MAX_LINES"]
