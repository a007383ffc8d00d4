"""Capital protection, measured: counterfactual paper books over the same replay.

Each book trades on its own paper exchange with the product's fees, spread, slippage and
depth, through its own order gate with the product's breaker policy. A book "without" the
breaker has a gate whose breaker never moves. The books are counterfactual, so they are
not journaled.

- passive: the replayed symbols bought at the start and held (equal shares of capital).
- flatten_at_trigger: the passive book sold at TRIGGERED and bought back at SAFE (the
  plain reading of the breaker; the report's first keys describe it and passive).
- policy: the passive book under the de-risking tiers (core.trading.derisk) with the
  configured protection_policy.
- dip_buyer_with_breaker / dip_buyer_without_breaker: a bot that buys DIP_NOTIONAL_USD of
  a symbol each time it trades DIP_STEP_PERCENT below its last buy (or its first price),
  within the gate's order, position and open-position caps. With the breaker it does not
  enter in WARNING or TRIGGERED (and the gate enforces TRIGGERED); without, it keeps buying.
  The loss limits are lifted for both bots: they would stop both at the same point, and
  the comparison is of the breaker.

capital_saved is the flatten book's equity minus the passive one's at the passive book's
lowest point; the difference at the end is reported as it is, also when it is negative
(a protected book may miss a rebound).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.breaker.state import CircuitBreakerState
from core.events import BreakerChanged, BreakerStatus, Tick, iso_utc
from core.market.state import MarketState
from core.settings import Settings
from core.trading.derisk import ExposurePolicy, PolicyAction, symbol_view
from core.trading.gate import OrderGate
from core.trading.orders import Fill, Order, OrderStatus, OrderType, Origin, Side
from core.trading.paper import PaperExchange
from core.trading.portfolio import Portfolio

BOOKS = ("passive", "flatten_at_trigger", "policy", "dip_buyer_with_breaker", "dip_buyer_without_breaker")
BREAKER_BOOKS = ("flatten_at_trigger", "policy", "dip_buyer_with_breaker")  # the ones a breaker changes
DIP_NOTIONAL_USD = 250.0
DIP_STEP_PERCENT = 3.0
_ENTRY_BUDGET = 0.995  # of the cash per symbol: room for fees and slippage


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
    orders: int = 0
    round_trips: int = 0  # a buy of a symbol the book sold before
    _sold: set[str] = field(default_factory=set)

    def on_fill(self, fill: Fill) -> None:
        self.qty[fill.symbol] = self.portfolio.quantity(fill.symbol)
        if fill.side is Side.SELL:
            self._sold.add(fill.symbol)
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
        if self.equity < self.low:
            self.low, self.low_time = self.equity, t

    def submit(self, order: Order) -> Order:
        if order.side is Side.BUY and order.symbol in self._sold:
            self._sold.discard(order.symbol)
            self.round_trips += 1
        done = self.gate.submit_now(order)
        self.orders += 1
        if done.status is OrderStatus.DENIED:
            self.denied += 1
        return done

    def summary(self) -> dict[str, Any]:
        self.recompute()
        return {
            "max_drawdown_pct": round(self.max_drawdown, 3),
            "equity_end": round(self.equity, 2),
            "lowest_equity": round(min(self.low, self.equity), 2),
            "lowest_equity_time": iso_utc(self.low_time),
            "fees": round(self.portfolio.fees_paid, 2),
            "round_trips": self.round_trips,
            "orders": self.orders,
            "orders_denied": self.denied,
        }


class ProtectionStudy:
    def __init__(self, settings: Settings, market: MarketState, breaker: CircuitBreakerState,
                 symbols: tuple[str, ...], clock, books: tuple[str, ...] = BOOKS) -> None:
        """`books`: which of BOOKS to keep (a shadow breaker keeps only BREAKER_BOOKS: the
        others do not depend on the breaker)."""
        self.market = market
        self.breaker = breaker
        self.symbols = symbols
        self.capital = settings.execution.paper.starting_balance_usd
        # the holding books trade the whole capital: per-order caps belong to the live desk, not to the study
        lifted = settings.risk_management.model_copy(update={
            "max_order_notional_usd": self.capital * 10, "max_position_notional_usd": self.capital * 10,
            "max_order_quantity": {}, "max_open_positions": max(1, len(symbols)), "max_orders_per_minute": 10_000,
            "daily_loss_limit_usd": self.capital * 10, "weekly_loss_limit_usd": self.capital * 10,
            "warning_size_factor": 1.0, "recovering_size_factor": 1.0,
            "falling_coin": settings.risk_management.falling_coin.model_copy(update={"enabled": False}),
        })
        bot_caps = settings.risk_management.model_copy(update={
            "daily_loss_limit_usd": self.capital * 10, "weekly_loss_limit_usd": self.capital * 10,
            "max_orders_per_minute": 10_000,
        })
        # without the breaker the bot also buys coins in their own crash (the gate's falling_coin)
        blind_bot = bot_caps.model_copy(update={"falling_coin": lifted.falling_coin})
        never = CircuitBreakerState()  # a breaker that never moves
        plan = {"passive": (lifted, never), "flatten_at_trigger": (lifted, breaker), "policy": (lifted, breaker),
                "dip_buyer_with_breaker": (bot_caps, breaker), "dip_buyer_without_breaker": (blind_bot, never)}
        self.books = {name: self._book(name, settings, *plan[name], clock) for name in BOOKS if name in books}
        self._holders = tuple(n for n in ("passive", "flatten_at_trigger", "policy") if n in self.books)
        self.entered: dict[str, set[str]] = {name: set() for name in self._holders}
        policy_book = self.books.get("policy")
        self.policy = ExposurePolicy(settings.protection_policy, tuple(settings.circuit_breaker.references),
                                     holdings=lambda: dict(policy_book.qty) if policy_book else {},
                                     last_price=self._last_price, own=symbol_view(market, settings.protection_policy))
        self._dip_ref: dict[str, dict[str, float]] = {
            n: {} for n in ("dip_buyer_with_breaker", "dip_buyer_without_breaker") if n in self.books}
        self.flattened_at: list[str] = []
        self.reentered_at: list[str] = []
        self.flat = False
        self.now = 0
        self._flatten_at_low = self.capital
        breaker.subscribe(self._on_breaker)

    def _book(self, name: str, settings: Settings, risk, breaker: CircuitBreakerState, clock) -> _Book:
        portfolio = Portfolio(self.capital)
        exchange = PaperExchange(settings.execution.paper, self.market, clock)
        gate = OrderGate(risk, breaker, self.market, exchange, portfolio, journal=None, clock=clock)
        book = _Book(name, gate, portfolio, self.capital, equity=self.capital, peak=self.capital)
        gate.fill_listeners.append(book.on_fill)
        return book

    def _last_price(self, symbol: str) -> float | None:
        w = self.market.symbols.get(symbol)
        return w.last_price if w is not None and w.ticks else None

    # ------------------------------------------------------------------ ticks
    def on_tick(self, tick: Tick) -> None:
        self.now = t = tick.time_ms
        symbol, price = tick.symbol, tick.price
        for name, book in self.books.items():
            book.gate.on_market_tick(tick)
            book.mark(symbol, price, t)
        for name in self._holders:
            if symbol not in self.entered[name] and not (name == "flatten_at_trigger" and self.flat):
                self._enter(self.books[name], name, symbol)
        if policy_book := self.books.get("policy"):
            self._apply(self.policy.on_price(symbol, price, t), policy_book)
        self._dip(symbol, price)
        passive, flatten = self.books.get("passive"), self.books.get("flatten_at_trigger")
        if passive is not None and flatten is not None and passive.low_time == t and passive.low == passive.equity:
            self._flatten_at_low = flatten.equity

    def _enter(self, book: _Book, name: str, symbol: str) -> None:
        remaining = [s for s in self.symbols if s not in self.entered[name]]
        budget = book.portfolio.cash / max(1, len(remaining)) * _ENTRY_BUDGET
        price = self.market.symbols[symbol].last_price
        qty = budget / price
        if qty <= 0:
            return
        order = book.submit(Order(symbol=symbol, side=Side.BUY, type=OrderType.MARKET, quantity=qty,
                                  origin=Origin.PROTECTION))
        if order.status is not OrderStatus.DENIED:
            self.entered[name].add(symbol)

    def _dip(self, symbol: str, price: float) -> None:
        blocked = self.breaker.status in (BreakerStatus.WARNING, BreakerStatus.TRIGGERED)
        for name, refs in self._dip_ref.items():
            ref = refs.get(symbol)
            if ref is None:
                refs[symbol] = price
                continue
            if price > ref * (1.0 - DIP_STEP_PERCENT / 100.0) or (blocked and name == "dip_buyer_with_breaker"):
                continue
            order = self.books[name].submit(Order(symbol=symbol, side=Side.BUY, type=OrderType.MARKET,
                                                  quantity=DIP_NOTIONAL_USD / price, origin=Origin.PROTECTION))
            if order.status is not OrderStatus.DENIED:
                refs[symbol] = price

    # ------------------------------------------------------------------ the breaker
    @staticmethod
    def _apply(action: PolicyAction | None, book: _Book) -> None:
        if action is not None:
            for order in action.orders:
                book.submit(order)

    def _on_breaker(self, change: BreakerChanged) -> None:
        if policy_book := self.books.get("policy"):
            self._apply(self.policy.on_breaker(change), policy_book)
        book = self.books.get("flatten_at_trigger")
        if book is None:
            return
        if change.status is BreakerStatus.TRIGGERED and not self.flat:
            self.flat = True
            self.flattened_at.append(iso_utc(change.time_ms))
            for symbol in list(book.qty):
                qty = book.portfolio.quantity(symbol)
                if qty > 0:
                    book.submit(Order(symbol=symbol, side=Side.SELL, type=OrderType.MARKET, quantity=qty,
                                      reduce_only=True, origin=Origin.PROTECTION))
        elif change.status is BreakerStatus.SAFE and self.flat:
            self.flat = False
            self.reentered_at.append(iso_utc(change.time_ms))
            self.entered["flatten_at_trigger"].clear()
            held = [s for s in self.symbols if s in self.market.symbols and self.market.symbols[s].ticks]
            for symbol in held:
                self._enter(book, "flatten_at_trigger", symbol)

    # ------------------------------------------------------------------ the figures
    def report(self) -> dict[str, Any]:
        books = {name: book.summary() for name, book in self.books.items()}
        out: dict[str, Any] = {"starting_capital": self.capital, "books": books,
                               "policy_actions": [{"time": iso_utc(a.time_ms), "kind": a.kind, "reason": a.reason,
                                                   **a.details(ids=False)} for a in self.policy.actions]}
        w, wo = self.books.get("flatten_at_trigger"), self.books.get("passive")
        if w is None or wo is None:
            return out
        return {
            "capital_saved": round(self._flatten_at_low - wo.low, 2) if wo.low_time is not None else 0.0,
            "max_drawdown_with_breaker_pct": round(w.max_drawdown, 3),
            "max_drawdown_without_pct": round(wo.max_drawdown, 3),
            "equity_difference_at_end": round(w.equity - wo.equity, 2),
            "equity_with_breaker_end": round(w.equity, 2),
            "equity_without_end": round(wo.equity, 2),
            "lowest_point_time": iso_utc(wo.low_time),
            "fees_with_breaker": round(w.portfolio.fees_paid, 2),
            "fees_without": round(wo.portfolio.fees_paid, 2),
            "flattened_at": self.flattened_at,
            "reentered_at": self.reentered_at,
            "orders_denied": w.denied + wo.denied,
            **out,
        }
