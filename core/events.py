"""The engine's one vocabulary of typed events.

Market events are NamedTuples: they are created once per tick on the hot path, where
construction cost matters. Engine events (breaker changes, spikes) are rare and richer.
All times are event times in epoch milliseconds unless a name says otherwise.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple


class Market(str, enum.Enum):
    SPOT = "spot"
    FUTURES = "futures"


class Tick(NamedTuple):
    """One trade (or one point of a candle's price path)."""

    symbol: str
    price: float
    qty: float
    time_ms: int
    market: str = "spot"  # "spot" or "futures"


class MarkPrice(NamedTuple):
    """A futures mark price, used for futures/spot divergence."""

    symbol: str
    mark_price: float
    time_ms: int


class Liquidation(NamedTuple):
    """A forced liquidation order (Binance forceOrder)."""

    symbol: str
    side: str  # "SELL" liquidates longs, "BUY" liquidates shorts
    price: float
    qty: float
    time_ms: int


class SymbolEnded(NamedTuple):
    """The feed will send no more data for this symbol (end of a replay file)."""

    symbol: str
    time_ms: int


MarketEvent = Tick | MarkPrice | Liquidation | SymbolEnded


class BreakerStatus(str, enum.Enum):
    SAFE = "SAFE"
    WARNING = "WARNING"
    TRIGGERED = "TRIGGERED"
    RECOVERING = "RECOVERING"


class Actor(str, enum.Enum):
    RULE = "rule"
    OPERATOR = "operator"
    AGENT = "agent"


def iso_utc(time_ms: int | None) -> str | None:
    if time_ms is None:
        return None
    return datetime.fromtimestamp(time_ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


@dataclass(frozen=True, slots=True)
class BreakerChanged:
    epoch: int
    previous: BreakerStatus
    status: BreakerStatus
    reason: str
    actor: Actor
    time_ms: int  # event time of the tick (or clock) that caused it
    symbol: str | None = None
    trigger_type: str | None = None  # btc_dump, eth_dump, market_wide, stale_data, operator, ...
    details: dict[str, Any] = field(default_factory=dict)
    market_snapshot: dict[str, Any] = field(default_factory=dict)
    wall_ns: int = 0  # perf_counter_ns at the transition, for latency figures


class SpikeType(str, enum.Enum):
    SPOT_PRICE_SPIKE = "spot_price_spike"
    VOLUME_EXPLOSION = "volume_explosion"
    FUTURES_SPOT_DIVERGENCE = "futures_spot_divergence"
    LIQUIDATION_CASCADE = "liquidation_cascade"


@dataclass(frozen=True, slots=True)
class SpikeDetected:
    symbol: str
    spike_type: SpikeType
    direction: str  # "pump" or "dump"
    magnitude_pct: float
    timeframe_minutes: int
    volume_multiple: float
    price_from: float
    price_to: float
    confidence: float  # 0..1
    time_ms: int
    detection_latency_ms: float
    zscore: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FeedProblem:
    """A malformed input the feed skipped (bad CSV row, bad websocket message)."""

    source: str  # file path or stream name
    line: int | None
    error: str


@dataclass(frozen=True, slots=True)
class ProposalUpdate:
    """A proposal entered the queue or changed status (pending, approved, rejected, ...)."""

    proposal: Any  # core.desk.proposal.TradeProposal
    status: str
    note: str = ""
    actor: str = "rule"


@dataclass(frozen=True, slots=True)
class SpikeStatus:
    """The desk moved a spike along detected -> analysing -> proposed -> approved/rejected/expired/skipped."""

    spike: SpikeDetected
    status: str
    note: str = ""
    proposal_id: str | None = None


class FeedState(str, enum.Enum):
    CONNECTED = "connected"
    STALE = "stale"  # no message for the watchdog's time: the stream is being reopened
    RECONNECTING = "reconnecting"
    GAP_FILLED = "gap_filled"  # after a reconnect, the missed minutes came back from REST
    OVERFLOW = "overflow"  # the library's queue overflowed (ReadLoopClosed): the socket was recreated


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """A live feed's stream changed state (the console shows it; the journal keeps it)."""

    stream: str  # "spot", "futures", "user", or a symbol
    state: FeedState
    detail: str
    time_ms: int
    reconnects: int = 0
    overflows: int = 0


@dataclass(frozen=True, slots=True)
class VenueAlarm:
    """The exchange reported a condition (core.trading.binance_alarms): the console shows it
    at once; what it does to the breaker and the gate is core.venue's."""

    kind: str  # an Alarm value: "ip_banned", "clock_skew", "halt_incomplete", ...
    detail: str
    severity: str  # "error", "warning", "information"
    time_ms: int


@dataclass(frozen=True, slots=True)
class JournalHealth:
    """The journal could (ok) or could not write; `unwritten` rows wait in memory meanwhile.
    While it is not ok the session denies new entries, as under TRIGGERED."""

    ok: bool
    error: str | None
    unwritten: int
    time_ms: int


@dataclass(frozen=True, slots=True)
class ReasoningLine:
    """One line of the decision trail: guardian and scanner reasons, agents' tool calls and thoughts."""

    role: str  # "guardian", "scanner", "Market Scanner", ...
    kind: str  # "reason", "tool_call", "tool_result", "thought", "answer", "error"
    text: str
    time_ms: int
    run_id: str | None = None
    sequence: int = 0
