"""What the positions panel shows: each position with its protection (the resting stop, the
bracket's target), the distance to each and its exposure; and the equity since the session
started, sampled into a short curve."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from core.trading.orders import Order, OrderType, Side

EQUITY_SAMPLE_MS = 10_000  # one point per 10 s of market time
EQUITY_POINTS = 360  # an hour of points


@dataclass(frozen=True, slots=True)
class PositionView:
    symbol: str
    quantity: float
    average_price: float
    last: float
    unrealized: float
    stop: float | None  # the resting protective stop's trigger price
    target: float | None  # the bracket's take-profit
    exposure_usd: float

    @property
    def stop_distance_pct(self) -> float | None:
        """How far the price may fall before the stop (negative: below it already)."""
        return (self.last - self.stop) / self.last * 100 if self.stop and self.last else None

    @property
    def target_distance_pct(self) -> float | None:
        return (self.target - self.last) / self.last * 100 if self.target and self.last else None


def position_views(positions: Iterable[tuple[str, float, float, float, float]], open_orders: Iterable[Order],
                   targets: Mapping[str, float]) -> list[PositionView]:
    """`positions` as Session.open_positions() gives them; the nearest protective stop per symbol."""
    stops: dict[str, float] = {}
    for order in open_orders:
        if order.type is OrderType.STOP and order.side is Side.SELL and order.reduce_only and order.stop_price:
            stops[order.symbol] = max(stops.get(order.symbol, 0.0), order.stop_price)
    return [PositionView(symbol, qty, avg, last, upnl, stops.get(symbol), targets.get(symbol), qty * last)
            for symbol, qty, avg, last, upnl in positions]


class EquityCurve:
    """Equity since the start, one point per EQUITY_SAMPLE_MS of market time (the latest point
    is always the current value)."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.points: deque[float] = deque(maxlen=EQUITY_POINTS)
        self._bucket: int | None = None

    def sample(self, time_ms: int, equity: float) -> None:
        if equity != equity:
            return
        if self.start is None:
            self.start = equity
        bucket = time_ms // EQUITY_SAMPLE_MS
        if bucket == self._bucket and self.points:
            self.points[-1] = equity
        else:
            self.points.append(equity)
            self._bucket = bucket

    @property
    def pnl(self) -> float:
        return self.points[-1] - self.start if self.points and self.start is not None else 0.0

    @property
    def pnl_pct(self) -> float:
        return self.pnl / self.start * 100 if self.start else 0.0


__all__ = ["EquityCurve", "PositionView", "position_views"]
