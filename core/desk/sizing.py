"""Position sizing and exit levels from the risk rules (used by every proposer).

Size is volatility-scaled: a fixed fraction of equity is put at risk, and the stop sits
at the wider of the configured stop and two five-minute sigmas, so a wilder market gets
a smaller position. Caps from config bound the result; the gate applies them again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.market.windows import SymbolWindows
from core.settings import RiskSettings


@dataclass(frozen=True)
class Sizing:
    quantity: float
    entry: float
    stop_loss: float
    take_profit: float
    risk_usd: float
    notional_usd: float
    stop_distance_pct: float
    capped_by: str | None

    @property
    def reward_risk(self) -> float:
        risk = self.entry - self.stop_loss
        return (self.take_profit - self.entry) / risk if risk > 0 else 0.0


def size_long(risk: RiskSettings, w: SymbolWindows, entry: float, equity: float) -> Sizing:
    sigma_5m = w.sigma_1m() * math.sqrt(5.0) * 100.0  # percent
    stop_pct = max(risk.stop_loss_percent, 2.0 * sigma_5m)
    take_pct = max(risk.take_profit_percent, 2.0 * stop_pct)
    risk_usd = max(0.0, equity) * risk.risk_per_trade_percent / 100.0
    stop_loss = entry * (1 - stop_pct / 100.0)
    qty = risk_usd / (entry - stop_loss) if entry > stop_loss else 0.0
    capped_by = None
    notional_cap = sizing_notional_cap(risk)
    if qty * entry > notional_cap:
        qty, capped_by = notional_cap / entry, "max_order_notional_usd"
    cap_q = risk.max_order_quantity.get(w.symbol)
    if cap_q is not None and qty > cap_q:
        qty, capped_by = cap_q, "max_order_quantity"
    qty = _round_down(qty, entry)
    return Sizing(qty, entry, stop_loss, entry * (1 + take_pct / 100.0), qty * (entry - stop_loss), qty * entry,
                  stop_pct, capped_by)


def sizing_notional_cap(risk: RiskSettings) -> float:
    """The notional a proposal is sized to at most: the cap less its headroom, so a price that
    moved within the approval drift limit still fits the cap when the gate checks again."""
    return risk.max_order_notional_usd * (1 - risk.sizing_headroom_percent / 100.0)


def _round_down(qty: float, price: float) -> float:
    """Round a quantity down to a sensible step for its price (like Binance's LOT_SIZE)."""
    if qty <= 0:
        return 0.0
    step = 10 ** math.floor(math.log10(max(1e-12, 1.0 / price)) - 2) if price > 0 else 1e-8
    step = max(step, 1e-8)
    return math.floor(qty / step) * step
