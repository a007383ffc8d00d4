"""Capital protection, measured: two long-exposure paper books over the same replay.

Book "with breaker" holds the replayed symbols and flattens when the breaker trips (as
an operator following it would), then re-enters when it is SAFE again. Book "without"
holds throughout. Both trade on paper exchanges with the same fees, spread, slippage and
depth as the product's, through order gates with the product's breaker policy (the
"without" book's gate sees a breaker that never moves). The books are counterfactual, so
they are not journaled.

capital_saved is the protected book's equity minus the unprotected one's at the
unprotected book's lowest point; the difference at the end is reported as it is, also
when it is negative (the protected book may miss a rebound).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.breaker.state import CircuitBreakerState
from core.events import BreakerChanged, BreakerStatus, Tick, iso_utc
from core.market.state import MarketState
from core.settings import Settings
from core.trading.gate import OrderGate
from core.trading.orders import Order, OrderType, Origin, Side
from core.trading.paper import PaperExchange
from core.trading.portfolio import Portfolio


@dataclass
class _Book:
    name: str
    gate: OrderGate  # holds the book's own paper exchange
    portfolio: Portfolio
    start: float
    qty: dict[str, float] = field(default_factory=dict)
    price: dict[str, float] = field(default_factory=dict)
    equity: float = 0.0
    peak: float = 0.0
    max_drawdown: float = 0.0
    low: float = float("inf")
    low_time: int | None = None
    denied: int = 0

    def on_fill(self, fill) -> None:
        self.qty[fill.symbol] = self.portfolio.quantity(fill.symbol)
        self.recompute()

    def recompute(self) -> None:
        self.equity = self.portfolio.cash + sum(q * self.price.get(s, 0.0) for s, q in self.qty.items())

    def mark(self, symbol: str, price: float, t: int) -> None:
        old = self.price.get(symbol)
        self.price[symbol] = price
        q = self.qty.get(symbol, 0.0)
        if q:
            self.equity += q * (price - (old if old is not None else price))
        if self.equity > self.peak:
            self.peak = self.equity
        elif self.peak > 0:
            dd = (self.peak - self.equity) / self.peak * 100.0
            if dd > self.max_drawdown:
                self.max_drawdown = dd


class ProtectionStudy:
    def __init__(self, settings: Settings, market: MarketState, breaker: CircuitBreakerState,
                 symbols: tuple[str, ...], clock) -> None:
        self.market = market
        self.breaker = breaker
        self.symbols = symbols
        self.capital = settings.execution.paper.starting_balance_usd
        # the books trade the whole capital: per-order caps belong to the live desk, not to the study
        risk = settings.risk_management.model_copy(update={
            "max_order_notional_usd": self.capital * 10, "max_position_notional_usd": self.capital * 10,
            "max_order_quantity": {}, "max_open_positions": max(1, len(symbols)), "max_orders_per_minute": 10_000,
            "daily_loss_limit_usd": self.capital * 10, "weekly_loss_limit_usd": self.capital * 10,
            "warning_size_factor": 1.0, "recovering_size_factor": 1.0,
        })
        self.books = {
            "with": self._book("with", settings, risk, breaker, clock),
            "without": self._book("without", settings, risk, CircuitBreakerState(), clock),
        }
        self.entered: dict[str, set[str]] = {"with": set(), "without": set()}
        self.flattened_at: list[str] = []
        self.reentered_at: list[str] = []
        self.flat = False
        self.now = 0
        self._with_at_low = self.capital
        breaker.subscribe(self._on_breaker)

    def _book(self, name: str, settings: Settings, risk, breaker: CircuitBreakerState, clock) -> _Book:
        portfolio = Portfolio(self.capital)
        exchange = PaperExchange(settings.execution.paper, self.market, clock)
        gate = OrderGate(risk, breaker, self.market, exchange, portfolio, journal=None, clock=clock)
        book = _Book(name, gate, portfolio, self.capital, equity=self.capital, peak=self.capital)
        gate.fill_listeners.append(book.on_fill)
        return book

    # ------------------------------------------------------------------ ticks
    def on_tick(self, tick: Tick) -> None:
        self.now = tick.time_ms
        for name, book in self.books.items():
            book.gate.on_market_tick(tick)
            book.mark(tick.symbol, tick.price, tick.time_ms)
            if tick.symbol not in self.entered[name] and not (name == "with" and self.flat):
                self._enter(book, name, tick.symbol)
        without = self.books["without"]
        if without.equity < without.low:
            without.low, without.low_time = without.equity, tick.time_ms
            self._with_at_low = self.books["with"].equity

    def _enter(self, book: _Book, name: str, symbol: str) -> None:
        remaining = [s for s in self.symbols if s not in self.entered[name]]
        budget = book.portfolio.cash / max(1, len(remaining)) * 0.995  # leave room for fees and slippage
        price = self.market.symbols[symbol].last_price
        qty = budget / price
        if qty <= 0:
            return
        order = book.gate.submit_now(Order(symbol=symbol, side=Side.BUY, type=OrderType.MARKET, quantity=qty,
                                           origin=Origin.PROTECTION))
        if order.status.value == "DENIED":
            book.denied += 1
            return
        self.entered[name].add(symbol)

    # ------------------------------------------------------------------ the breaker
    def _on_breaker(self, change: BreakerChanged) -> None:
        book = self.books["with"]
        if change.status is BreakerStatus.TRIGGERED and not self.flat:
            self.flat = True
            self.flattened_at.append(iso_utc(change.time_ms))
            for symbol in list(book.qty):
                qty = book.portfolio.quantity(symbol)
                if qty > 0:
                    order = book.gate.submit_now(Order(
                        symbol=symbol, side=Side.SELL, type=OrderType.MARKET, quantity=qty, reduce_only=True,
                        origin=Origin.PROTECTION))
                    if order.status.value == "DENIED":
                        book.denied += 1
        elif change.status is BreakerStatus.SAFE and self.flat:
            self.flat = False
            self.reentered_at.append(iso_utc(change.time_ms))
            self.entered["with"].clear()
            held = [s for s in self.symbols if s in self.market.symbols and self.market.symbols[s].ticks]
            for symbol in held:
                self._enter(book, "with", symbol)

    # ------------------------------------------------------------------ the figures
    def report(self) -> dict[str, Any]:
        w, wo = self.books["with"], self.books["without"]
        for book in (w, wo):
            book.recompute()
        with_at_low = self._with_at_low
        return {
            "capital_saved": round(with_at_low - wo.low, 2) if wo.low_time is not None else 0.0,
            "max_drawdown_with_breaker_pct": round(w.max_drawdown, 3),
            "max_drawdown_without_pct": round(wo.max_drawdown, 3),
            "equity_difference_at_end": round(w.equity - wo.equity, 2),
            "starting_capital": self.capital,
            "equity_with_breaker_end": round(w.equity, 2),
            "equity_without_end": round(wo.equity, 2),
            "lowest_point_time": iso_utc(wo.low_time),
            "fees_with_breaker": round(w.portfolio.fees_paid, 2),
            "fees_without": round(wo.portfolio.fees_paid, 2),
            "flattened_at": self.flattened_at,
            "reentered_at": self.reentered_at,
            "orders_denied": w.denied + wo.denied,
        }
