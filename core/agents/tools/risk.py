"""The seed's risk tools: portfolio, sizing, loss limits, slippage, market stability.

Sizing is core.desk.sizing.size_long (volatility-scaled, capped by config) and the loss
limits are the order gate's own arithmetic, so what the agents see is what the gate will
enforce. Slippage is a model over the book's spread and depth, and says so ("source": "model").
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field

from core.agents.context import DeskContext, RunState
from core.agents.tools.binance import account_view, read_book
from core.agents.tools.breaker import status_payload
from core.agents.tools.common import (MODEL_CAVEAT, SOURCE_MODEL, Args, NoArgs, ToolSpec, finite_positive, num,
                                      unavailable, windows_or_none)
from core.desk.sizing import size_long
from core.events import BreakerStatus


class PortfolioArgs(Args):
    symbol: str | None = Field(None, description="the symbol under study, to report existing exposure")


def portfolio_analyzer(ctx: DeskContext, run: RunState | None, symbol: str | None = None) -> dict:
    out = account_view(ctx)
    risk = ctx.settings.risk_management
    prices = ctx.market.last_prices()
    exposure = 0.0
    if ctx.portfolio is not None:
        for s, pos in ctx.portfolio.positions(open_only=True).items():
            exposure += pos.quantity * prices.get(s, pos.average_price)
        open_symbols = ctx.portfolio.open_symbols()
    else:
        open_symbols = []
    out.update({"gross_exposure_usd": num(exposure), "open_positions": len(open_symbols),
                "max_open_positions": risk.max_open_positions,
                "position_slots_left": max(0, risk.max_open_positions - len(open_symbols))})
    if symbol:
        symbol = symbol.upper()
        held = ctx.holdings(symbol)
        out["symbol"] = symbol
        out["holding_symbol"] = held > 0
        out["symbol_quantity"] = held
        out["symbol_position_cap_usd"] = risk.max_position_notional_usd
    return out


class SizingArgs(Args):
    symbol: str = Field(..., description="Binance symbol")
    entry_price: float | None = Field(None, description="intended entry price (default: the last price)")


def size_factor(ctx: DeskContext) -> float:
    status = ctx.breaker.status
    risk = ctx.settings.risk_management
    if status is BreakerStatus.WARNING:
        return risk.warning_size_factor
    if status is BreakerStatus.RECOVERING:
        return risk.recovering_size_factor
    if status is BreakerStatus.TRIGGERED:
        return 0.0
    return 1.0


def position_sizing_optimizer(ctx: DeskContext, run: RunState | None, symbol: str,
                              entry_price: float | None = None) -> dict:
    symbol = symbol.upper()
    w = windows_or_none(ctx, symbol)
    if w is None:
        return unavailable(f"no market data for {symbol}")
    entry = float(entry_price) if entry_price and entry_price > 0 else w.last_price
    risk = ctx.settings.risk_management
    equity = ctx.equity()
    s = size_long(risk, w, entry, equity)
    factor = size_factor(ctx)
    return {"status": "ok", "symbol": symbol, "entry_price": entry, "equity_usd": num(equity),
            "quantity": s.quantity, "notional_usd": num(s.notional_usd), "stop_loss": num(s.stop_loss),
            "take_profit": num(s.take_profit), "stop_distance_percent": num(s.stop_distance_pct, 6),
            "take_profit_percent": num((s.take_profit / entry - 1.0) * 100.0, 6), "risk_usd": num(s.risk_usd),
            "reward_risk": num(s.reward_risk, 4), "capped_by": s.capped_by,
            "risk_per_trade_percent": risk.risk_per_trade_percent, "max_order_notional_usd": risk.max_order_notional_usd,
            "max_order_quantity": risk.max_order_quantity.get(symbol),
            "gate_size_factor": factor, "quantity_after_gate_factor": s.quantity * factor,
            "method": "risk a fixed fraction of equity; stop at the wider of the configured stop and two 5-minute "
                      "sigmas; capped by max_order_notional_usd and max_order_quantity"}


def loss_metrics(ctx: DeskContext) -> dict[str, Any]:
    risk = ctx.settings.risk_management
    now = ctx.now_ms()
    day = datetime.fromtimestamp(now / 1000, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    week_ms = int((day.timestamp() - day.weekday() * 86_400) * 1000)
    day_ms = int(day.timestamp() * 1000)
    prices = ctx.market.last_prices()
    if ctx.portfolio is None:
        return {"daily_pnl_usd": 0.0, "weekly_pnl_usd": 0.0, "note": "no portfolio attached"}
    unreal = ctx.portfolio.unrealized_pnl(prices)
    daily = ctx.portfolio.realized_pnl_since(day_ms) + min(0.0, unreal)
    weekly = ctx.portfolio.realized_pnl_since(week_ms) + min(0.0, unreal)
    return {
        "daily_pnl_usd": num(daily), "daily_loss_limit_usd": risk.daily_loss_limit_usd,
        "daily_headroom_usd": num(risk.daily_loss_limit_usd + min(0.0, daily)),
        "weekly_pnl_usd": num(weekly), "weekly_loss_limit_usd": risk.weekly_loss_limit_usd,
        "weekly_headroom_usd": num(risk.weekly_loss_limit_usd + min(0.0, weekly)),
        "unrealized_pnl_usd": num(unreal),
        "daily_limit_hit": -daily >= risk.daily_loss_limit_usd, "weekly_limit_hit": -weekly >= risk.weekly_loss_limit_usd,
    }


def risk_metrics_calculator(ctx: DeskContext, run: RunState | None) -> dict:
    risk = ctx.settings.risk_management
    m = loss_metrics(ctx)
    prices = ctx.market.last_prices()
    exposure = 0.0
    n_open = 0
    if ctx.portfolio is not None:
        for s, pos in ctx.portfolio.positions(open_only=True).items():
            exposure += pos.quantity * prices.get(s, pos.average_price)
            n_open += 1
    sent = len(getattr(ctx.gate, "_sent_times", ())) if ctx.gate is not None else 0
    within = not (m.get("daily_limit_hit") or m.get("weekly_limit_hit")) and n_open < risk.max_open_positions
    return {"status": "ok", **m, "gross_exposure_usd": num(exposure), "open_positions": n_open,
            "max_open_positions": risk.max_open_positions, "max_position_notional_usd": risk.max_position_notional_usd,
            "orders_sent_last_minute": sent, "max_orders_per_minute": risk.max_orders_per_minute,
            "within_limits": within, "source": "the order gate's loss-limit arithmetic (realised + open losses)"}


class SlippageArgs(Args):
    symbol: str = Field(..., description="Binance symbol")
    notional_usd: float = Field(..., gt=0, description="order size in USD")
    side: Literal["BUY", "SELL"] = Field("BUY", description="BUY or SELL")


def slippage_calculator(ctx: DeskContext, run: RunState | None, symbol: str, notional_usd: float,
                        side: str = "BUY") -> dict:
    """Expected entry cost. The impact is always a model (linear in size, from the paper settings); its
    inputs (spread, depth) come from the live book on Binance and from the paper model otherwise, and the
    answer says which: {"source": "model", "inputs_source": "feed" | "model"}."""
    symbol = symbol.upper()
    size = finite_positive(notional_usd)
    if size is None:
        return unavailable(f"notional_usd {notional_usd!r} is not a positive number", symbol=symbol)
    w = windows_or_none(ctx, symbol)
    if w is None:
        return unavailable(f"no market data for {symbol}")
    book = read_book(ctx, symbol)
    if book["status"] != "ok":
        return unavailable(f"no order book: {book.get('reason')}", symbol=symbol)
    depth = book["depth_usd"]
    if depth is None:
        return unavailable(f"no book depth for {symbol}: the cost of the size cannot be estimated", symbol=symbol,
                           inputs_source=book["source"])
    paper = getattr(ctx.exchange, "settings", None) or ctx.settings.execution.paper
    half_spread_bps = book["spread_bps"] / 2.0
    fillable_now = min(size, depth)
    slip_bps = paper.slippage_bps_per_10k_usd * fillable_now / 10_000.0
    fee_bps = paper.taker_fee * 10_000.0
    total = half_spread_bps + slip_bps + fee_bps
    out = {"status": "ok", "symbol": symbol, "side": side, "notional_usd": size,
           "depth_usd_per_side": num(depth), "fill_now_fraction": num(fillable_now / size, 4),
           "half_spread_bps": num(half_spread_bps, 4), "slippage_bps": num(slip_bps, 4),
           "taker_fee_bps": num(fee_bps, 4), "expected_cost_bps": num(total, 4),
           "expected_cost_usd": num(size * total / 10_000.0),
           "source": SOURCE_MODEL, "inputs_source": book["source"],
           "caveat": ("the impact is a linear model; spread and depth from the live book" if book["source"] != SOURCE_MODEL
                      else f"{MODEL_CAVEAT}: spread, depth and impact are all the paper model's"),
           "maker_alternative": "a resting limit or post-only entry pays the maker fee and no spread, at the risk of "
                                "not filling"}
    return out


def market_stability_checker(ctx: DeskContext, run: RunState | None) -> dict:
    st = status_payload(ctx)
    snap = ctx.guardian.snapshot() if ctx.guardian is not None else {}
    refs = ctx.settings.circuit_breaker.references
    warnings, unknown = [], []
    seen = snap.get("references") if isinstance(snap.get("references"), dict) else {}
    for sym, th in refs.items():
        r = seen.get(sym)
        d60 = finite_or_none(r.get("drop_60m_percent")) if isinstance(r, dict) else None
        d5 = finite_or_none(r.get("drop_5m_percent")) if isinstance(r, dict) else None
        if d60 is None or d5 is None:
            unknown.append(sym)  # a reference the guardian cannot see is unknown, not calm
            continue
        if d60 >= th.warning_1h_percent * 0.7 or d5 >= th.warning_5m_percent * 0.7:
            warnings.append(f"{sym} down {d60:.2f}% (60m) / {d5:.2f}% (5m)")
    if st["breaker_status"] != "SAFE" or warnings:
        stable: bool | None = False
    else:
        stable = None if unknown else True
    out = {"status": "ok", **st, "guardian_snapshot": snap, "approaching_thresholds": warnings, "stable": stable,
           "size_factor": size_factor(ctx)}
    if unknown:
        out["unavailable_references"] = unknown
        out["stability_note"] = f"unknown: no drawdown for {', '.join(unknown)}"
    return out


def finite_or_none(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


SPECS = [
    ToolSpec("portfolio_analyzer", "PortfolioAnalyzerTool",
             "Cash, equity, open positions and exposure, and whether the symbol is already held.", PortfolioArgs,
             portfolio_analyzer, group="risk"),
    ToolSpec("position_sizing_optimizer", "PositionSizingOptimizerTool",
             "Volatility-scaled position size, stop-loss and take-profit for an entry, capped by the configured "
             "limits.", SizingArgs, position_sizing_optimizer, group="risk"),
    ToolSpec("risk_metrics_calculator", "RiskMetricsCalculatorTool",
             "Daily and weekly PnL against the loss limits, exposure and open-position count.", NoArgs,
             risk_metrics_calculator, group="risk"),
    ToolSpec("slippage_calculator", "SlippageCalculatorTool",
             "Expected spread, slippage and fees in basis points for an order size, from the book's depth.",
             SlippageArgs, slippage_calculator, group="risk"),
    ToolSpec("market_stability_checker", "MarketStabilityCheckerTool",
             "Breaker status with the guardian's view of the reference markets: is it stable enough to enter?",
             NoArgs, market_stability_checker, group="risk"),
]
