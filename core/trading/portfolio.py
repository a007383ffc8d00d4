"""Positions and PnL, computed from fills only: the fills are the single source of truth.

Accounting (spot, long only, average cost, all money in the quote currency USDT):

* A buy of q at p with fee f: cash -= q*p + f; the position's quantity grows by q and its
  average price becomes the quantity-weighted average of the old average and p. Fees are
  never folded into the average price.
* A sell of q at p with fee f: cash += q*p - f; realised PnL += (p - average) * q; the
  average price is unchanged (0 once the position is flat). Selling more than is held
  raises ValueError: there is no shorting.
* Every fee (buys and sells) is subtracted from cash and added to `fees_paid` and to the
  position's `fees`.

Which figures are net of fees:

* `Position.realized_pnl` and `Portfolio.realized_pnl` are GROSS: price PnL only.
* `Portfolio.net_realized_pnl` = realized_pnl - fees_paid.
* `realized_pnl_since(t)` is NET: the gross realised PnL of the fills at or after t minus
  the fees of those same fills (buy fees included), as the loss limits want.

So: equity(prices) = starting_cash + realized_pnl - fees_paid + unrealized_pnl(prices),
exactly (up to float rounding).

Quantities are floats; float sums of fills may overshoot a position by a few ulps, so a
sell within SELL_TOLERANCE (relative) of the held quantity closes it exactly, and a
remainder smaller than that is snapped to zero. The paper exchange uses the same rule
(`sell_remainder`) for its base balances, so both books agree.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.trading.orders import Fill, Side

SELL_TOLERANCE = 1e-9  # relative


def sell_remainder(held: float, qty: float) -> float:
    """What remains of `held` after selling `qty`; ValueError if that would go below zero
    (beyond a relative float tolerance). Remainders within the tolerance snap to 0."""
    if qty > held * (1.0 + SELL_TOLERANCE):
        raise ValueError(f"cannot sell {qty:g}: only {held:g} held (spot: no shorting)")
    rest = held - qty
    if rest <= held * SELL_TOLERANCE:
        return 0.0
    return rest


@dataclass(frozen=True)
class Position:
    symbol: str
    quantity: float
    average_price: float  # average cost of the quantity held, fees excluded (0 when flat)
    realized_pnl: float  # gross: sum of (sell price - average) * quantity sold
    fees: float  # every fee paid on this symbol, buys and sells

    @property
    def is_open(self) -> bool:
        return self.quantity > 0.0

    def cost_basis(self) -> float:
        return self.quantity * self.average_price

    def market_value(self, price: float) -> float:
        return self.quantity * price

    def unrealized_pnl(self, price: float) -> float:
        return self.quantity * (price - self.average_price)

    def to_dict(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "quantity": self.quantity, "average_price": self.average_price,
                "realized_pnl": self.realized_pnl, "fees": self.fees}


class Portfolio:
    def __init__(self, starting_cash: float) -> None:
        if not (isinstance(starting_cash, (int, float)) and math.isfinite(starting_cash) and starting_cash >= 0):
            raise ValueError(f"starting_cash must be a finite number >= 0, got {starting_cash!r}")
        self.starting_cash = float(starting_cash)
        self.cash = float(starting_cash)
        self.realized_pnl = 0.0  # gross
        self.fees_paid = 0.0
        self.fills_applied = 0
        self._positions: dict[str, Position] = {}
        self._fill_ids: set[str] = set()
        # per fill: event time and net realised PnL (gross realised of the fill - its fee)
        self._times: list[int] = []
        self._net: list[float] = []
        self._cum: list[float] = [0.0]  # prefix sums of _net (valid while _times is sorted)
        self._sorted = True

    # ------------------------------------------------------------------ building
    @classmethod
    def from_fills(cls, starting_cash: float, fills: Iterable[Fill]) -> "Portfolio":
        p = cls(starting_cash)
        for fill in fills:
            p.apply(fill)
        return p

    def apply(self, fill: Fill) -> bool:
        """Book one fill. Returns False (and changes nothing) for a fill_id already applied,
        so replaying a journal twice is harmless. ValueError for an invalid fill or a sell
        of more than is held."""
        if fill.fill_id in self._fill_ids:
            return False
        q, px, fee = fill.quantity, fill.price, fill.fee
        for name, v in (("quantity", q), ("price", px)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"fill {fill.fill_id}: {name} must be positive and finite, got {v!r}")
        if not (isinstance(fee, (int, float)) and math.isfinite(fee) and fee >= 0):
            raise ValueError(f"fill {fill.fill_id}: fee must be finite and >= 0, got {fee!r}")
        sym = fill.symbol
        pos = self._positions.get(sym) or Position(sym, 0.0, 0.0, 0.0, 0.0)
        notional = q * px
        if fill.side is Side.BUY:
            new_qty = pos.quantity + q
            avg = (pos.quantity * pos.average_price + notional) / new_qty if new_qty > 0 else 0.0
            pos = Position(sym, new_qty, avg, pos.realized_pnl, pos.fees + fee)
            self.cash -= notional + fee
            gross = 0.0
        else:
            rest = sell_remainder(pos.quantity, q)  # raises on an oversell
            gross = (px - pos.average_price) * q
            pos = Position(sym, rest, pos.average_price if rest > 0 else 0.0, pos.realized_pnl + gross,
                           pos.fees + fee)
            self.cash += notional - fee
            self.realized_pnl += gross
        self.fees_paid += fee
        self._positions[sym] = pos
        self._fill_ids.add(fill.fill_id)
        self.fills_applied += 1
        net = gross - fee
        t = int(fill.time_ms)
        if self._times and t < self._times[-1]:
            self._sorted = False
        self._times.append(t)
        self._net.append(net)
        self._cum.append(self._cum[-1] + net)
        return True

    # ------------------------------------------------------------------ reads
    def positions(self, open_only: bool = False) -> dict[str, Position]:
        """Every symbol ever traded (flat ones have quantity 0 and keep their realised PnL
        and fees), or only the open ones."""
        if open_only:
            return {s: p for s, p in self._positions.items() if p.quantity > 0}
        return dict(self._positions)

    def position(self, symbol: str) -> Position | None:
        return self._positions.get(symbol)

    def quantity(self, symbol: str) -> float:
        pos = self._positions.get(symbol)
        return pos.quantity if pos is not None else 0.0

    def open_symbols(self) -> list[str]:
        return sorted(s for s, p in self._positions.items() if p.quantity > 0)

    @staticmethod
    def _price(pos: Position, prices: Mapping[str, float]) -> float:
        """The mark for a position: prices[symbol], or its average cost when no usable
        price is given (so equity never becomes NaN)."""
        px = prices.get(pos.symbol)
        if px is None or not isinstance(px, (int, float)) or not math.isfinite(px) or px <= 0:
            return pos.average_price
        return float(px)

    def equity(self, prices: Mapping[str, float]) -> float:
        """cash + sum(quantity * price); a symbol missing from `prices` is marked at cost."""
        return self.cash + sum(p.quantity * self._price(p, prices) for p in self._positions.values() if p.quantity)

    def unrealized_pnl(self, prices: Mapping[str, float]) -> float:
        return sum(p.quantity * (self._price(p, prices) - p.average_price)
                   for p in self._positions.values() if p.quantity)

    @property
    def net_realized_pnl(self) -> float:
        return self.realized_pnl - self.fees_paid

    def realized_pnl_since(self, time_ms: int) -> float:
        """Realised PnL net of fees of the fills with time_ms at or after `time_ms`
        (buy fees count as realised costs). O(log n) while fills arrive in time order."""
        if self._sorted:
            i = bisect.bisect_left(self._times, time_ms)
            return self._cum[-1] - self._cum[i]
        return math.fsum(n for t, n in zip(self._times, self._net) if t >= time_ms)

    def snapshot(self, prices: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Plain data for the UI and the journal; with `prices`, also equity and unrealised PnL."""
        out: dict[str, Any] = {
            "starting_cash": self.starting_cash,
            "cash": self.cash,
            "realized_pnl": self.realized_pnl,
            "fees_paid": self.fees_paid,
            "net_realized_pnl": self.net_realized_pnl,
            "fills": self.fills_applied,
            "positions": [p.to_dict() for _, p in sorted(self._positions.items())],
        }
        if prices is not None:
            out["equity"] = self.equity(prices)
            out["unrealized_pnl"] = self.unrealized_pnl(prices)
        return out


__all__ = ["Portfolio", "Position", "SELL_TOLERANCE", "sell_remainder"]
