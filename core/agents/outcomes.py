"""Outcomes: what each spike's decision would have earned on paper, measured from the market.

Every spike the desk answers (and every spike the breaker blocks) is followed for
`crew.outcome_horizon_minutes` of market time, on the ticks as the engine processes them:
the clock is the ticks' event time, never the wall clock, so a replay resolves its
outcomes as it goes, exactly as a live session does over an hour.

Which trade is measured
- A proposal: a paper trade at the proposal's entry with its stop-loss, take-profit and
  quantity, placed when the decision lands (the spike's tick in a replay, which holds there).
- A skipped (or blocked) spike: a hypothetical trade, a market BUY at the spike's price
  (`price_to`) at the spike's tick, with the stop and target the desk sizes with
  (core.desk.sizing.size_long at that tick: the stop at the wider of
  risk_management.stop_loss_percent and two five-minute sigmas, the target at the wider of
  take_profit_percent and twice the stop, the quantity from the per-trade risk and caps).

The paper trade, on the ticks of its symbol (spot) strictly after its start:
- Entry. market: fills at the start at the market's last price, taker fee. limit: at or
  above the market it fills at once at the market price (taker); below, it rests and
  fills at its limit on the first tick at or below it (maker fee). post_only at or above
  the market is rejected, as the paper exchange does: never filled.
- Exits, as the approval queue's bracket places them: the first tick at or below the stop
  sells at that tick's price (a stop-market: a gap through the stop costs), the first tick
  at or above the target sells at that tick's price (the take-profit watch's market
  sell); taker fee both. Still open at start + horizon: sold at the last price at or
  before the horizon, taker fee.
- return_pct = (exit * (1 - exit_fee) - fill * (1 + entry_fee)) / fill * 100, and
  pnl_usd = quantity * (exit * (1 - exit_fee) - fill * (1 + entry_fee)). Spread and
  slippage are not modelled; the fees are execution.paper's taker_fee and maker_fee.
- neutral when |return_pct| <= crew.outcome_neutral_band_percent, or when the entry never
  filled (it earned nothing); otherwise profitable or unprofitable.
- horizon_not_reached when the market data ends first (finish(), at a replay's end or
  a session's close): never guessed.

Verdicts (core.agents.bookkeeping counts them per agent and market day, the UTC date of
the spike's event time): a profitable proposal is a true positive, an unprofitable one a
false positive; a skipped spike that would have paid is a false negative, one that would
have lost a true negative; neutral is not judged. Each agent is judged on its own vote
in the run against the spike's outcome.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from core.desk.proposal import TradeProposal
from core.desk.rules_proposer import Skip
from core.events import SpikeDetected, Tick, iso_utc

log = logging.getLogger("spikeguard.agents")

PROFITABLE, UNPROFITABLE, NEUTRAL, NOT_REACHED = "profitable", "unprofitable", "neutral", "horizon_not_reached"


def market_day(time_ms: int) -> str:
    """The UTC date of an event time: the period agent_performance is kept by."""
    return datetime.fromtimestamp(time_ms / 1000, timezone.utc).strftime("%Y-%m-%d")


def label_for(return_pct: float, neutral_band_pct: float) -> str:
    if abs(return_pct) <= neutral_band_pct:
        return NEUTRAL
    return PROFITABLE if return_pct > 0 else UNPROFITABLE


@dataclass(eq=False)
class PaperTrade:
    """One long trade followed tick by tick (see the module docstring for the rules)."""

    symbol: str
    start_ms: int
    deadline_ms: int
    entry_type: str  # market | limit | post_only
    limit: float | None
    stop: float
    target: float
    quantity: float
    taker_fee: float
    maker_fee: float
    fill: float | None = None
    entry_fee: float = 0.0
    exit: float | None = None
    exit_ms: int | None = None
    exit_reason: str | None = None  # stop | target | horizon | not_filled
    last: float | None = None
    closed: bool = False

    def open_at(self, price: float) -> None:
        """The market at the start: a market entry fills, a marketable limit takes, the rest rests."""
        self.last = price
        if self.entry_type == "market" or (self.entry_type == "limit" and self.limit is not None and self.limit >= price):
            self.fill, self.entry_fee = price, self.taker_fee
        elif self.entry_type == "post_only" and self.limit is not None and self.limit >= price:
            self._close(None, self.start_ms, "not_filled")  # rejected at placement, as the paper exchange does

    def on_price(self, price: float, t: int) -> None:
        if self.closed or t <= self.start_ms or t > self.deadline_ms:
            return
        self.last = price
        if self.fill is None:
            if self.limit is not None and price <= self.limit:
                self.fill, self.entry_fee = self.limit, self.maker_fee
            return  # the fill's own tick is the first the bracket sees, as after a real fill
        if price <= self.stop:
            self._close(price, t, "stop")
        elif price >= self.target:
            self._close(price, t, "target")

    def at_horizon(self) -> None:
        if self.closed:
            return
        if self.fill is None:
            self._close(None, self.deadline_ms, "not_filled")
        else:
            self._close(self.last if self.last is not None else self.fill, self.deadline_ms, "horizon")

    def _close(self, price: float | None, t: int, reason: str) -> None:
        self.exit, self.exit_ms, self.exit_reason, self.closed = price, t, reason, True

    def net_per_unit(self) -> float:
        if self.fill is None or self.exit is None:
            return 0.0
        return self.exit * (1 - self.taker_fee) - self.fill * (1 + self.entry_fee)

    def return_pct(self) -> float:
        return self.net_per_unit() / self.fill * 100.0 if self.fill else 0.0

    def summary(self) -> dict[str, Any]:
        return {"entry_type": self.entry_type, "limit": self.limit, "stop_loss": self.stop, "take_profit": self.target,
                "quantity": self.quantity, "start": iso_utc(self.start_ms), "start_ms": self.start_ms,
                "entry_price": self.fill, "exit_price": self.exit, "exit_time": iso_utc(self.exit_ms) if
                self.exit_ms is not None else None, "exit_ms": self.exit_ms, "exit_reason": self.exit_reason}


@dataclass(eq=False)
class Followed:
    """One spike, from its tick until its outcome is known."""

    spike: SpikeDetected
    row: Any  # the spike's journal row id, or the future of it, or None
    hypothetical: PaperTrade
    decision: str | None = None  # proposed | skipped | blocked
    reason: str | None = None
    proposal: TradeProposal | None = None
    trade: PaperTrade | None = None  # the proposal's
    votes: dict[str, tuple[str, float | None]] = field(default_factory=dict)  # agent -> (decision, confidence)
    context_analysis: Any = None
    risk_assessment: Any = None
    outcome: str | None = None
    return_pct: float | None = None
    pnl_usd: float | None = None

    @property
    def measured(self) -> PaperTrade:
        return self.trade if self.trade is not None else self.hypothetical

    @property
    def day(self) -> str:
        return market_day(self.spike.time_ms)

    def row_id(self) -> int | None:
        row = self.row
        if row is None or isinstance(row, int):
            return row
        try:
            if row.done() and not row.cancelled() and row.exception() is None:
                return row.result()
        except Exception:
            return None
        return None

    def report(self) -> dict[str, Any]:
        s = self.spike
        return {"spike": {"time": iso_utc(s.time_ms), "symbol": s.symbol, "type": s.spike_type.value,
                          "direction": s.direction, "price": s.price_to, "spike_event_id": self.row_id()},
                "market_day": self.day, "decision": self.decision, "reason": self.reason,
                "proposal_id": self.proposal.proposal_id if self.proposal is not None else None,
                "outcome": self.outcome, "return_pct": self.return_pct, "pnl_usd": self.pnl_usd,
                "trade": self.measured.summary(), "hypothetical": self.trade is None}


class OutcomeTracker:
    """Follows spikes to their outcomes on the engine's ticks (runs on the engine loop).

    Hooks: on_spike (the session's spike hook), on_decision (when the desk's answer lands),
    note_run (the books, with each agent's vote), on_tick (an engine tick listener),
    finish (the end of the market data). Listeners: on_decided(f), on_resolved(f),
    on_late_votes(f, votes) (votes journaled after the outcome was known)."""

    def __init__(self, settings: Any, market: Any, journal: Callable[[], Any], equity: Callable[[], float]) -> None:
        crew = settings.crew
        paper = settings.execution.paper
        self.settings = settings
        self.market = market
        self._journal = journal
        self._equity = equity
        self.horizon_ms = int(crew.outcome_horizon_minutes * 60_000)
        self.neutral_band_pct = float(crew.outcome_neutral_band_percent)
        self.taker_fee, self.maker_fee = paper.taker_fee, paper.maker_fee
        self.on_decided: list[Callable[[Followed], None]] = []
        self.on_resolved: list[Callable[[Followed], None]] = []
        self.on_late_votes: list[Callable[[Followed, dict[str, tuple[str, float | None]]], None]] = []
        self._followed: dict[int, Followed] = {}  # id(spike) -> Followed (it holds the spike, so the id is stable)
        self._open: dict[str, list[tuple[PaperTrade, Followed]]] = {}  # symbol -> trades still open
        self._deadlines: list[tuple[int, int, PaperTrade, Followed]] = []
        self._seq = itertools.count()
        self.resolved: deque[Followed] = deque(maxlen=5000)
        self.finished = False

    # ------------------------------------------------------------------ hooks
    def on_spike(self, spike: SpikeDetected, row: Any, blocked: str | None = None) -> Followed:
        from core.desk.sizing import size_long

        risk = self.settings.risk_management
        price = spike.price_to
        w = self.market.symbols.get(spike.symbol)
        if w is not None and w.ticks:
            sizing = size_long(risk, w, price, self._equity())
            stop, target, qty = sizing.stop_loss, sizing.take_profit, sizing.quantity
        else:  # no spot market for it (a futures-only signal): the configured percentages, no size
            stop = price * (1 - risk.stop_loss_percent / 100.0)
            target = price * (1 + risk.take_profit_percent / 100.0)
            qty = 0.0
        trade = self._trade(spike.symbol, spike.time_ms, "market", None, stop, target, qty)
        f = Followed(spike, row, trade)
        self._followed[id(spike)] = f
        self._watch(trade, f, price)
        if blocked:
            self._decide(f, "blocked", f"circuit breaker {blocked}")
        return f

    def on_decision(self, spike: SpikeDetected, decision: Any) -> None:
        f = self._followed.get(id(spike))
        if f is None or f.decision is not None:
            return
        if isinstance(decision, TradeProposal):
            w = self.market.symbols.get(spike.symbol)
            start = max(spike.time_ms, int(w.last_time)) if w is not None and w.ticks else spike.time_ms
            price = float(w.last_price) if w is not None and w.ticks else decision.reference_price
            f.proposal = decision
            f.trade = self._trade(spike.symbol, start, decision.entry_type, decision.entry_price, decision.stop_loss,
                                  decision.take_profit, decision.quantity)
            self._watch(f.trade, f, price)
            self._decide(f, "proposed", None)
        else:
            self._decide(f, "skipped", decision.reason if isinstance(decision, Skip) else str(decision))

    def note_run(self, spike: SpikeDetected | None, votes: dict[str, tuple[str, float | None]],
                 context_analysis: Any = None, risk_assessment: Any = None) -> None:
        """Each agent's vote in the spike's crew run. It may come after the decision (a veto
        answers the desk at once, the run journals after) or even after the outcome: late votes
        are judged when they arrive, and the analyses reach the spike's row all the same."""
        if spike is None:
            return
        f = self._followed.get(id(spike)) or next((r for r in reversed(self.resolved) if r.spike is spike), None)
        if f is None:
            return
        late = {a: v for a, v in votes.items() if a not in f.votes}
        f.votes.update(votes)
        f.context_analysis = context_analysis if context_analysis is not None else f.context_analysis
        f.risk_assessment = risk_assessment if risk_assessment is not None else f.risk_assessment
        if f.decision is not None:  # the decision's row update has gone: the analyses follow it
            changes = {k: v for k, v in (("context_analysis", context_analysis),
                                         ("risk_assessment", risk_assessment)) if v is not None}
            if changes:
                self._update_spike(f, changes)
        if f.outcome is not None and late:
            for fn in self.on_late_votes:
                _call(fn, f, late)

    def on_tick(self, tick: Tick) -> None:
        deadlines = self._deadlines
        if not deadlines:
            return
        t = tick.time_ms
        self._expire(t, inclusive=False)  # a tick past a horizon is not inside it
        if tick.market == "spot":
            trades = self._open.get(tick.symbol)
            if trades:
                for trade, f in list(trades):
                    trade.on_price(tick.price, t)
                    if trade.closed:
                        self._closed(trade, f)
        self._expire(t, inclusive=True)

    def finish(self) -> None:
        """The market data has ended: what is still open never reached its horizon."""
        if self.finished:
            return
        self.finished = True
        for f in list(self._followed.values()):
            self._resolve(f, NOT_REACHED)
        self._open.clear()
        self._deadlines.clear()

    # ------------------------------------------------------------------ reads
    def report(self) -> list[dict[str, Any]]:
        """Every spike followed, resolved or not, in market order (the replay JSON's "outcomes")."""
        every = sorted([*self.resolved, *self._followed.values()], key=lambda f: f.spike.time_ms)
        return [f.report() for f in every]

    def outcome_of(self, proposal_id: str) -> str | None:
        for f in [*self.resolved, *self._followed.values()]:
            if f.proposal is not None and f.proposal.proposal_id == proposal_id:
                return f.outcome
        return None

    # ------------------------------------------------------------------ internals
    def _trade(self, symbol: str, start: int, entry_type: str, limit: float | None, stop: float, target: float,
               qty: float) -> PaperTrade:
        return PaperTrade(symbol, start, start + self.horizon_ms, entry_type, limit, stop, target, qty,
                          self.taker_fee, self.maker_fee)

    def _watch(self, trade: PaperTrade, f: Followed, price: float) -> None:
        trade.open_at(price)
        if trade.closed:
            self._closed(trade, f)
            return
        self._open.setdefault(trade.symbol, []).append((trade, f))
        heapq.heappush(self._deadlines, (trade.deadline_ms, next(self._seq), trade, f))

    def _expire(self, t: int, inclusive: bool) -> None:
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] < t or (inclusive and deadlines[0][0] == t)):
            _, _, trade, f = heapq.heappop(deadlines)
            if not trade.closed:
                trade.at_horizon()
                self._closed(trade, f)

    def _closed(self, trade: PaperTrade, f: Followed) -> None:
        trades = self._open.get(trade.symbol)
        if trades:
            trades[:] = [(tr, ff) for tr, ff in trades if tr is not trade]
            if not trades:
                del self._open[trade.symbol]
        self._maybe_resolve(f)

    def _decide(self, f: Followed, decision: str, reason: str | None) -> None:
        f.decision, f.reason = decision, reason
        # a blocked spike's row was written "skipped" already; a decided one says what the desk did
        changes: dict[str, Any] = {} if decision == "blocked" else {"status": decision}
        if f.proposal is not None:
            changes["trade_id"] = f.proposal.proposal_id
        if f.context_analysis is not None:
            changes["context_analysis"] = f.context_analysis
        if f.risk_assessment is not None:
            changes["risk_assessment"] = f.risk_assessment
        if changes:
            self._update_spike(f, changes)
        for fn in self.on_decided:
            _call(fn, f)
        self._maybe_resolve(f)

    def _maybe_resolve(self, f: Followed) -> None:
        if f.decision is None or f.outcome is not None or not f.measured.closed:
            return
        trade = f.measured
        if trade.exit_reason == "not_filled":
            ret, label = 0.0, NEUTRAL
        else:
            ret = trade.return_pct()
            label = label_for(ret, self.neutral_band_pct)
        f.return_pct = round(ret, 6)
        f.pnl_usd = round(trade.quantity * trade.net_per_unit(), 6) if trade.quantity > 0 else None
        self._resolve(f, label)

    def _resolve(self, f: Followed, label: str) -> None:
        if f.outcome is not None:
            return
        f.outcome = label
        self._followed.pop(id(f.spike), None)
        for trade in (f.hypothetical, f.trade):
            if trade is not None and not trade.closed:
                trade.closed = True  # stop following it (its entry in the deadline heap is skipped)
        self.resolved.append(f)
        changes: dict[str, Any] = {"outcome": label}
        if f.pnl_usd is not None:
            changes["pnl"] = f.pnl_usd
        self._update_spike(f, changes)
        self._journal_outcome(f)
        for fn in self.on_resolved:
            _call(fn, f)

    def _update_spike(self, f: Followed, changes: dict[str, Any]) -> None:
        """A spike_update once the spike's row id is known (its row commits within milliseconds)."""
        journal = self._journal()
        if journal is None or f.row is None:
            return
        row_id = f.row_id()
        if row_id is not None:
            submit_logged(journal, "spike_update", spike_id=row_id, time_ms=self._event_time(f), **changes)
        elif hasattr(f.row, "add_done_callback"):
            t = self._event_time(f)

            def later(fut: Any) -> None:
                if not fut.cancelled() and fut.exception() is None:
                    submit_logged(journal, "spike_update", spike_id=fut.result(), time_ms=t, **changes)

            f.row.add_done_callback(later)

    def _journal_outcome(self, f: Followed) -> None:
        """An agent_decisions row with the measured trade, beside the spike's outcome column."""
        journal = self._journal()
        if journal is None:
            return
        submit_logged(journal, "agent_decision", agent_name="desk", decision_type="outcome_measured",
                decision=f.outcome.upper(), confidence=f.proposal.confidence if f.proposal is not None else None,
                reasoning=f"{f.decision}: {f.reason or ''}"[:2000], input_data={"spike": f.report()["spike"]},
                output_data=f.report(), spike_event_id=f.row_id(),
                trade_id=f.proposal.proposal_id if f.proposal is not None else None, time_ms=self._event_time(f))

    def _event_time(self, f: Followed) -> int:
        trade = f.measured
        return trade.exit_ms if trade.exit_ms is not None else f.spike.time_ms


def submit_logged(journal: Any, kind: str, **row: Any) -> None:
    """Hand a row to the journal's writer; a refusal or a failed write is logged, never raised
    (the desk's figures go on without the row)."""
    try:
        fut = journal.submit(kind, **row)
        if fut is not None and hasattr(fut, "add_done_callback"):
            fut.add_done_callback(lambda done: _log_failure(kind, done))
    except Exception as exc:
        log.warning("%s row not journaled: %s", kind, exc)


def _log_failure(kind: str, fut: Any) -> None:
    try:
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("%s row failed: %s", kind, fut.exception())
    except Exception:
        pass


def _call(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # a listener's bug never stops the market
        log.exception("outcome listener failed")


__all__ = ["OutcomeTracker", "PaperTrade", "Followed", "market_day", "label_for", "PROFITABLE", "UNPROFITABLE",
           "NEUTRAL", "NOT_REACHED"]
