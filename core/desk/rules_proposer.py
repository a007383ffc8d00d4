"""The plain rules proposer: a spike becomes a sized proposal or a skip with its reason.

It is the desk's floor: deterministic, offline, and behind the same interface the agent
crew uses, so approval works end to end without any model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from core.breaker.state import CircuitBreakerState
from core.desk.proposal import TradeProposal
from core.desk.sizing import size_long
from core.events import BreakerStatus, SpikeDetected, SpikeType
from core.market.state import MarketState
from core.settings import Settings


@dataclass(frozen=True)
class Skip:
    reason: str


Decision = TradeProposal | Skip


def entry_blocked(status: BreakerStatus, held: float, market: MarketState, symbol: str) -> str | None:
    """Why no new long entry may be proposed in `symbol` now, or None. Every proposer (these
    rules, the agent crew) asks this before sizing; the gate checks again at approval."""
    if status in (BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING):
        return f"circuit breaker {status.value}: no new entries"
    if held > 0:
        return f"already holding {symbol}"
    w = market.symbols.get(symbol)
    if w is None or not w.ticks:
        return f"no market data for {symbol}"
    return None


class RulesProposer:
    source = "rules"

    def __init__(self, settings: Settings, market: MarketState, breaker: CircuitBreakerState,
                 equity: Callable[[], float], holdings: Callable[[str], float],
                 wall_clock: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.market = market
        self.breaker = breaker
        self.equity = equity
        self.holdings = holdings
        self.wall_clock = wall_clock or (lambda: time.time_ns() // 1_000_000)
        self._seq = 0

    def decide(self, spike: SpikeDetected, spike_event_id: int | None = None) -> Decision:
        status = self.breaker.status
        blocked = entry_blocked(status, self.holdings(spike.symbol), self.market, spike.symbol)
        if blocked:
            return Skip(blocked)
        if spike.spike_type not in (SpikeType.SPOT_PRICE_SPIKE, SpikeType.VOLUME_EXPLOSION):
            return Skip(f"{spike.spike_type.value} is context, not an entry signal")
        if spike.confidence < 0.5:
            return Skip(f"confidence {spike.confidence:.2f} below 0.50")
        w = self.market.symbols[spike.symbol]
        risk = self.settings.risk_management
        price = w.last_price
        if spike.direction == "dump":
            # fade the flush: a passive bid just under the market, stop below the low
            entry_type, entry = self.settings.execution.default_order_type, price * 0.998
            thesis = (f"{spike.symbol} dumped {spike.magnitude_pct:.1f}% over {spike.timeframe_minutes}m "
                      f"(volume x{spike.volume_multiple:.1f}); mean-reversion bid below the market")
        else:
            if spike.volume_multiple < 3.0:
                return Skip(f"pump without volume (x{spike.volume_multiple:.1f} < x3): likely to fade")
            entry_type, entry = "market", price
            thesis = (f"{spike.symbol} pumped {spike.magnitude_pct:.1f}% over {spike.timeframe_minutes}m on "
                      f"x{spike.volume_multiple:.1f} volume; momentum entry with a tight stop")
        sizing = size_long(risk, w, entry, self.equity())
        if sizing.quantity <= 0:
            return Skip("position size rounds to zero")
        now = self.wall_clock()
        self._seq += 1
        capped = f"; capped by {sizing.capped_by}" if sizing.capped_by else ""
        proposal = TradeProposal(
            proposal_id=f"r{now:x}-{self._seq}",  # readable, unique per clock tick, deterministic in tests
            created_ms=now, expires_ms=now + int(self.settings.execution.proposal_ttl_seconds * 1000),
            symbol=spike.symbol, side="BUY", quantity=sizing.quantity, entry_type=entry_type,
            entry_price=None if entry_type == "market" else round(entry, 8), stop_loss=round(sizing.stop_loss, 8),
            take_profit=round(sizing.take_profit, 8), reference_price=price, breaker_epoch=self.breaker.epoch,
            breaker_status=status.value, spike_time_ms=spike.time_ms, spike_type=spike.spike_type.value,
            spike_direction=spike.direction, spike_event_id=spike_event_id, confidence=spike.confidence,
            risk_usd=round(sizing.risk_usd, 2), notional_usd=round(sizing.notional_usd, 2),
            reward_risk=round(sizing.reward_risk, 2),
            rationale=f"{thesis}. Stop {sizing.stop_distance_pct:.2f}% away, risk {sizing.risk_usd:,.2f} USD"
                      f"{capped}.",
            source=self.source,
        )
        return proposal.sealed()
