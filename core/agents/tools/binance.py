"""The seed's Binance tools, over the engine's feed and exchange interfaces.

They read what the engine has (rolling windows, the paper book's quotes and depth, mark
prices and liquidations when the feed carries them, the portfolio), so they work the same
on sim, replay, paper and Binance. `BinanceSpotOrderTool` never reaches an exchange: it
records the executor's intended order as the run's candidate, which the pipeline then
validates, re-caps, and hands to the approval queue (and, once approved, the order gate).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from core.agents.context import DeskContext, RunState
from core.agents.tools.common import (MODEL_CAVEAT, SOURCE_MODEL, Args, NoArgs, ToolSpec, book_source, finite_positive,
                                      num, unavailable, window_index, windows_or_none)


class SymbolArgs(Args):
    symbol: str = Field(..., description="Binance symbol, e.g. SOLUSDT")


class BookArgs(Args):
    symbol: str = Field(..., description="Binance symbol, e.g. SOLUSDT")
    notional_usd: float | None = Field(None, description="order size in USD to compare with the depth")


class SpotOrderArgs(Args):
    symbol: str = Field(..., description="Binance symbol")
    side: Literal["BUY", "SELL"] = Field("BUY", description="BUY (the desk is spot, long only)")
    entry_type: Literal["market", "limit", "post_only"] = Field(..., description="market, limit or post_only")
    quantity: float = Field(..., description="base quantity (re-capped by the risk rules afterwards)")
    entry_price: float | None = Field(None, description="limit price (required for limit and post_only)")
    stop_loss: float = Field(..., description="stop-loss price")
    take_profit: float = Field(..., description="take-profit price")
    confidence: float = Field(0.5, description="0..1")
    rationale: str = Field("", description="one paragraph: why this trade")


def market_view(ctx: DeskContext, symbol: str) -> dict[str, Any] | None:
    w = windows_or_none(ctx, symbol)
    if w is None:
        return None
    frames = {}
    for k in range(w.n):
        minutes = w.windows_ms[k] // 60_000
        frames[f"{minutes}m"] = {
            "change_percent": num(w.change_pct(k), 6), "drop_from_high_percent": num(w.drop_pct(k), 6),
            "rise_from_low_percent": num(w.rise_pct(k), 6), "high": w.high(k), "low": w.low(k),
            "volume": num(w.volume(k)), "volume_multiple": num(w.volume_multiple(k), 4), "vwap": num(w.vwap(k)),
            "ticks": w.count(k),
        }
    sigma = w.sigma_1m()
    k1 = window_index(w, 1)
    move_1m = math.log(w.last_price / w.first_price(k1)) if w.first_price(k1) > 0 else 0.0
    return {
        "symbol": symbol, "price": w.last_price, "time_ms": w.last_time, "age_seconds": num(
            max(0, ctx.now_ms() - w.last_time) / 1000.0, 4),
        "sigma_1m_percent": num(sigma * 100.0, 6), "sigma_samples": int(getattr(w, "ret_samples", 0) or 0),
        "zscore_1m": num(move_1m / sigma, 4) if sigma > 0 else None,
        "volume_baseline_per_min": num(w.vol_baseline), "windows": frames, "history_minutes": num(w.span_ms() / 60_000, 4),
    }


def binance_websocket(ctx: DeskContext, run: RunState | None, symbol: str) -> dict:
    symbol = symbol.upper()
    view = market_view(ctx, symbol)
    if view is None:
        return unavailable(f"the feed has no data for {symbol}", symbol=symbol)
    return {"status": "ok", "source": f"{ctx.feed_name} feed, engine rolling windows", **view}


def read_book(ctx: DeskContext, symbol: str) -> dict[str, Any]:
    """The exchange's touch for symbol, checked: {"status": "ok", bid, ask, mid, spread_bps, depth_usd
    (None when unknown), source, depth_note} or unavailable with the reason. Broken numbers (NaN, <= 0,
    a crossed book) are unavailable, never passed on."""
    ex = ctx.exchange
    if ex is None or not hasattr(ex, "quotes") or not hasattr(ex, "depth_usd"):
        return unavailable("no order book: the exchange interface gives no quotes or depth", symbol=symbol)
    source = book_source(ex)
    try:
        q = ex.quotes(symbol)
    except Exception as exc:  # an exchange that cannot answer is unavailable, not an error in the agent
        return unavailable(f"quotes for {symbol} failed: {type(exc).__name__}", symbol=symbol)
    if q is None:
        return unavailable(f"no quotes for {symbol} (no market data yet)", symbol=symbol, source=source)
    try:
        bid, ask = (finite_positive(x) for x in q)
    except (TypeError, ValueError):
        return unavailable(f"malformed quotes for {symbol}: {str(q)[:80]}", symbol=symbol, source=source)
    if bid is None or ask is None or ask < bid:
        return unavailable(f"malformed quotes for {symbol}: bid {q[0]!r}, ask {q[1]!r}", symbol=symbol,
                           source=source)
    try:
        depth = finite_positive(ex.depth_usd(symbol))
    except Exception:
        depth = None
    mid = (bid + ask) / 2.0
    return {"status": "ok", "symbol": symbol, "bid": bid, "ask": ask, "mid": mid,
            "spread_bps": (ask - bid) / mid * 10_000.0, "depth_usd": depth, "source": source,
            "depth_note": None if depth is not None else "unavailable: the book gives no depth for this symbol"}


def order_book(ctx: DeskContext, symbol: str, notional_usd: float | None = None) -> dict[str, Any]:
    book = read_book(ctx, symbol)
    if book["status"] != "ok":
        return book
    ex = ctx.exchange
    depth = book["depth_usd"]
    out: dict[str, Any] = {
        "status": "ok", "symbol": symbol, "bid": book["bid"], "ask": book["ask"], "mid": book["mid"],
        "spread_bps": num(book["spread_bps"], 4), "depth_usd_per_side": num(depth, 6) if depth is not None else None,
        "source": book["source"],
    }
    if book["source"] == SOURCE_MODEL:
        out["caveat"] = f"{MODEL_CAVEAT}: touch depth = max(25k USD, 5x last minute's quote volume), spread fixed"
        out["source_detail"] = f"{getattr(ex, 'name', 'exchange')} book model"
    else:
        out["source_detail"] = f"{getattr(ex, 'name', 'exchange')} live book (depth levels of the feed)"
    if depth is None:
        out["depth_note"] = book["depth_note"]
    size = finite_positive(notional_usd)
    if size is not None:
        out["notional_usd"] = size
        out["notional_over_depth"] = num(size / depth, 4) if depth else None
    elif notional_usd is not None:
        out["notional_note"] = f"notional_usd {notional_usd!r} ignored: not a positive number"
    return out


def binance_order_book(ctx: DeskContext, run: RunState | None, symbol: str, notional_usd: float | None = None) -> dict:
    return order_book(ctx, symbol.upper(), notional_usd)


def binance_liquidation(ctx: DeskContext, run: RunState | None, symbol: str) -> dict:
    symbol = symbol.upper()
    scanner = ctx.scanner
    liqs = getattr(scanner, "_liqs", None) if scanner is not None else None
    if not liqs:
        return unavailable("the feed carries no liquidations", symbol=symbol)
    q = liqs.get(symbol)
    if not q:
        return {"status": "ok", "symbol": symbol, "count": 0, "notional_usd": 0.0,
                "note": "no liquidations of this symbol in the scanner's window"}
    longs = sum(n for _, n in q if n > 0)
    shorts = -sum(n for _, n in q if n < 0)
    cfg = ctx.settings.spike_detection.spike_types.liquidation_cascade
    return {"status": "ok", "symbol": symbol, "window_minutes": cfg.window_minutes, "count": len(q),
            "notional_usd": num(longs + shorts), "longs_liquidated_usd": num(longs), "shorts_liquidated_usd": num(shorts),
            "cascade_threshold_usd": cfg.min_notional_usd, "first_ms": q[0][0], "last_ms": q[-1][0]}


def account_view(ctx: DeskContext) -> dict[str, Any]:
    prices = ctx.market.last_prices()
    out: dict[str, Any] = {"status": "ok"}
    if ctx.portfolio is not None:
        p = ctx.portfolio
        out.update({"cash_usdt": num(p.cash), "equity_usdt": num(p.equity(prices)),
                    "realized_pnl_net": num(p.net_realized_pnl), "fees_paid": num(p.fees_paid),
                    "positions": [{"symbol": s, "quantity": pos.quantity, "average_price": pos.average_price,
                                   "last_price": prices.get(s), "unrealized_pnl": num(pos.unrealized_pnl(prices.get(s, pos.average_price)))}
                                  for s, pos in sorted(p.positions(open_only=True).items())]})
    else:
        out["equity_usdt"] = ctx.settings.risk_management.account_equity_usd
        out["note"] = "no portfolio attached: configured account equity"
    ex = ctx.exchange
    if ex is not None and hasattr(ex, "balances"):
        out["balances"] = ex.balances()
        out["open_orders"] = len(ex.open_orders())
        out["exchange"] = getattr(ex, "name", "exchange")
    return out


def binance_account(ctx: DeskContext, run: RunState | None) -> dict:
    return account_view(ctx)


def binance_spot_order(ctx: DeskContext, run: RunState | None, symbol: str, side: str, entry_type: str,
                       quantity: float, stop_loss: float, take_profit: float, entry_price: float | None = None,
                       confidence: float = 0.5, rationale: str = "") -> dict:
    candidate = {"symbol": symbol.upper(), "side": side, "entry_type": entry_type, "quantity": quantity,
                 "entry_price": entry_price, "stop_loss": stop_loss, "take_profit": take_profit,
                 "confidence": confidence, "rationale": str(rationale)[:2000]}
    if run is None:
        return unavailable("no crew run to attach the order to", candidate=candidate)
    run.candidate = candidate
    return {"status": "recorded", "candidate": candidate,
            "note": "NOT sent to any exchange: the desk validates it against the schema, re-caps the size with the "
                    "risk rules, and queues it for the operator's approval; the order gate checks it again"}


def binance_futures_data(ctx: DeskContext, run: RunState | None, symbol: str) -> dict:
    symbol = symbol.upper()
    mark = ctx.market.marks.get(symbol)
    if mark is None:
        return unavailable("the feed carries no futures mark prices for this symbol", symbol=symbol)
    mark_price, t = mark
    w = windows_or_none(ctx, symbol)
    out: dict[str, Any] = {"status": "ok", "symbol": symbol, "mark_price": mark_price, "mark_time_ms": t,
                           "mark_age_seconds": num(max(0, ctx.now_ms() - t) / 1000.0, 4)}
    if w is not None:
        out["spot_price"] = w.last_price
        out["basis_percent"] = num((mark_price / w.last_price - 1.0) * 100.0, 6)
        out["divergence_threshold_percent"] = ctx.settings.spike_detection.spike_types.futures_spot_divergence.threshold_percent
    return out


SPECS = [
    ToolSpec("binance_websocket", "BinanceWebSocketTool",
             "Latest price, changes, highs/lows, volume and volume multiple over 1/5/15/60 minute windows, 1-minute "
             "volatility and z-score, from the live feed.", SymbolArgs, binance_websocket),
    ToolSpec("binance_order_book", "BinanceOrderBookTool",
             "Best bid/ask, spread and touch depth in USD for a symbol (optionally compared with an order size).",
             BookArgs, binance_order_book),
    ToolSpec("binance_liquidation", "BinanceLiquidationTool",
             "Recent forced liquidations of a symbol (longs and shorts, USD), when the feed carries them.",
             SymbolArgs, binance_liquidation),
    ToolSpec("binance_account", "BinanceAccountTool", "Account balances, equity, open positions and open orders.",
             NoArgs, binance_account),
    ToolSpec("binance_spot_order", "BinanceSpotOrderTool",
             "Submit the intended spot order for validation and the operator's approval. It is never sent to the "
             "exchange directly.", SpotOrderArgs, binance_spot_order, on_loop=False),
    ToolSpec("binance_futures_data", "BinanceFuturesDataTool",
             "Futures mark price and basis against spot, when the feed carries mark prices.", SymbolArgs,
             binance_futures_data),
]
