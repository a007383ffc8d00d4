"""The paper exchange: a simulated spot exchange that is honest about costs.

USDT-quoted symbols only (BTCUSDT: base BTC, quote USDT); no shorting, no leverage. All
prices come from the feed through `market.symbols[symbol]` (its `last_price`), or from the
tick being processed in `on_tick`.

Fill model (h = spread_bps / 2 / 10_000, k = slippage_bps_per_10k_usd):

* bid = last * (1 - h), ask = last * (1 + h).
* Depth: the touch of each side holds depth_usd = max(25_000, 5 * volume(0) * last_price)
  (volume(0) is the 1-minute window's base volume, so this is 5x the last minute's quote
  volume). Takers consume it; it refreshes with every new tick of the symbol. `used` is
  the USD already taken from that side of the touch since the last tick (0 for the first
  order after a tick).
* A taker fill of q at touch price T (ask for buys, bid for sells) has touch notional
  n = q * T and slippage_bps = k * (2 * used + n) / 10_000; for a single order on a fresh
  touch (used = 0) that is k * n / 10_000. (The 2*used term makes splitting an order
  inside one tick cost exactly what one order of the summed size costs, so splitting is
  no way around slippage.) Buy price = T * (1 + slippage_bps / 10_000); sell price =
  T * (1 - min(slippage_bps / 10_000, 0.99)) (the cap only keeps absurd sizes positive).
  q = min(remaining, (depth_usd - used) / T): an order larger than the depth fills that
  much now (PARTIALLY_FILLED) and keeps taking on later ticks, at each tick's price.
* MARKET: takes as above, taker fee.
* LIMIT: marketable at placement (buy: limit >= ask, sell: limit <= bid) -> takes as above
  at min(buy price, limit) / max(sell price, limit), taker fee, under the same depth rule;
  whatever is left rests on the book at its limit. A resting limit fills as maker at its
  limit price on a later tick that trades through it (buy: tick price <= limit; sell:
  tick price >= limit), at most the tick's quantity per tick, shared by all the resting
  orders the tick crosses in price then time priority; maker fee.
* POST_ONLY: a LIMIT that is REJECTED if it is marketable at placement.
* STOP (stop-market): rests until a tick crosses stop_price (sell: price <= stop; buy:
  price >= stop), then takes like a MARKET order from that tick on. A stop that would
  trigger immediately at placement is REJECTED (as Binance does).
* Fees in USDT: fee = q * price * fee rate; buys pay q*price + fee, sells receive
  q*price - fee.

Reservations: a resting sell reserves its remaining base quantity. A buy reserves quote
at a fixed rate per unit of its remaining quantity: limit * (1 + max(taker, maker)) for a
marketable limit, limit * (1 + maker) for a resting one, the estimated taker price
(slippage on the whole size, taker fee) at the ask for a market order or at the stop
price for a stop, each with a 1e-9 safety margin. A buy fill may spend the order's whole
reservation plus the free USDT, never more, so cash never goes below zero: when a market
or stop buy's price runs above the estimate, its remainder's reservation shrinks to what
is left (free USDT back to 0), and a fill that cannot be paid in full is cut to what can
be paid and the rest is CANCELED (reason "insufficient USDT ...").
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.events import Tick
from core.market.state import MarketState
from core.market.symbols import split_symbol
from core.settings import PaperSettings
from core.trading.exchange import ExchangeError, FillListener, OrderListener
from core.trading.orders import Fill, Order, OrderStatus, OrderType, Side, finite_positive, shape_problem
from core.trading.portfolio import SELL_TOLERANCE, sell_remainder

log = logging.getLogger("spikeguard.paper")

QUOTE = "USDT"
MIN_DEPTH_USD = 25_000.0
DEPTH_VOLUME_MULTIPLE = 5.0
MAX_SELL_SLIPPAGE = 0.99  # fraction: keeps a sell price positive for absurd sizes
RESERVE_MARGIN = 1e-9  # relative safety margin on quote reservations
FILLED_EPS = 1e-12  # remaining below quantity * FILLED_EPS counts as filled

NEW, PARTIAL, FILLED = OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED
CANCELED, REJECTED = OrderStatus.CANCELED, OrderStatus.REJECTED


def base_asset(symbol: str) -> str | None:
    """BTCUSDT -> BTC; None for a symbol that is not USDT-quoted."""
    parts = split_symbol(symbol)
    return parts[0] if parts is not None and parts[1] == QUOTE else None


def _money(x: float) -> str:
    return f"{x:,.2f}"


@dataclass
class _Open:
    """Book-keeping for one open order."""

    order: Order
    seq: int
    asset: str
    rate: float  # buys: USDT reserved per unit of remaining quantity (0 for sells)
    taking: bool  # takes liquidity on ticks (MARKET, triggered STOP)

    @property
    def reserved(self) -> float:
        return self.order.remaining * self.rate


class PaperExchange:
    name = "paper"
    answers_synchronously = True

    def __init__(self, settings: PaperSettings, market: MarketState, clock: Callable[[], int]) -> None:
        self.settings = settings
        self.market = market
        self.clock = clock
        self._half_spread = settings.spread_bps / 2.0 / 10_000.0
        self._k = settings.slippage_bps_per_10k_usd
        self._quote_total = float(settings.starting_balance_usd)
        self._base_total: dict[str, float] = {}
        self._orders: dict[str, Order] = {}  # every order seen, latest state
        self._open: dict[str, _Open] = {}
        self._by_symbol: dict[str, dict[str, _Open]] = {}
        self._watched: frozenset[str] = frozenset()
        self._touch: dict[str, list[float]] = {}  # symbol -> [tick marker, buy used USD, sell used USD]
        self._seq = 0
        self._order_listeners: list[OrderListener] = []
        self._fill_listeners: list[FillListener] = []
        self.fills = 0

    # ------------------------------------------------------------------ listeners
    def add_listeners(self, on_order: OrderListener, on_fill: FillListener) -> None:
        self._order_listeners.append(on_order)
        self._fill_listeners.append(on_fill)

    def _emit_order(self, order: Order) -> None:
        for fn in list(self._order_listeners):
            try:
                fn(order)
            except Exception:  # a broken listener must not corrupt the book or starve the others
                log.exception("order listener failed on %s", order.client_order_id)

    def _emit_fill(self, fill: Fill) -> None:
        for fn in list(self._fill_listeners):
            try:
                fn(fill)
            except Exception:
                log.exception("fill listener failed on %s", fill.fill_id)

    # ------------------------------------------------------------------ reads
    @property
    def watched_symbols(self) -> frozenset[str]:
        """Symbols with open orders: the engine sends their ticks to on_tick."""
        return self._watched

    def open_orders(self) -> list[Order]:
        return [e.order for e in sorted(self._open.values(), key=lambda e: e.seq)]

    def get_order(self, client_order_id: str) -> Order | None:
        return self._orders.get(client_order_id)

    def quote_locked(self) -> float:
        return sum(e.reserved for e in self._open.values() if e.order.side is Side.BUY)

    def quote_free(self) -> float:
        return self._quote_total - self.quote_locked()

    def base_locked(self, asset: str) -> float:
        return sum(e.order.remaining for e in self._open.values() if e.order.side is Side.SELL and e.asset == asset)

    def base_free(self, asset: str) -> float:
        return self._base_total.get(asset, 0.0) - self.base_locked(asset)

    def balances(self) -> dict[str, dict[str, float]]:
        """{"USDT": {"free": x, "locked": y}, "BTC": {...}}: free + locked is the total held."""
        locked: dict[str, float] = {QUOTE: 0.0}
        for e in self._open.values():
            if e.order.side is Side.BUY:
                locked[QUOTE] += e.reserved
            else:
                locked[e.asset] = locked.get(e.asset, 0.0) + e.order.remaining
        totals = {QUOTE: self._quote_total, **self._base_total}
        out: dict[str, dict[str, float]] = {}
        for asset in sorted(set(totals) | set(locked), key=lambda a: (a != QUOTE, a)):
            total = totals.get(asset, 0.0)
            lk = min(locked.get(asset, 0.0), max(total, 0.0))
            if asset != QUOTE and total == 0.0 and lk == 0.0:
                continue
            out[asset] = {"free": total - lk, "locked": lk}
        return out

    def quotes(self, symbol: str) -> tuple[float, float] | None:
        """(bid, ask) from the last price, or None without market data."""
        last = self._last(symbol)
        if last is None:
            return None
        return last * (1.0 - self._half_spread), last * (1.0 + self._half_spread)

    def depth_usd(self, symbol: str) -> float:
        w = self.market.symbols.get(symbol)
        if w is None:
            return MIN_DEPTH_USD
        vol = w.volume(0) * w.last_price if w.ticks else 0.0
        if not math.isfinite(vol) or vol < 0:
            vol = 0.0
        return max(MIN_DEPTH_USD, DEPTH_VOLUME_MULTIPLE * vol)

    def _last(self, symbol: str) -> float | None:
        w = self.market.symbols.get(symbol)
        if w is None or not w.ticks:
            return None
        last = w.last_price
        return last if finite_positive(last) else None

    # ------------------------------------------------------------------ the touch
    def _touch_state(self, symbol: str) -> list[float]:
        w = self.market.symbols.get(symbol)
        marker = float(w.ticks) if w is not None else -1.0
        t = self._touch.get(symbol)
        if t is None or t[0] != marker:
            t = self._touch[symbol] = [marker, 0.0, 0.0]
        return t

    def _slippage_frac(self, used: float, notional: float) -> float:
        bps = self._k * (2.0 * used + notional) / 10_000.0
        return bps / 10_000.0

    # ------------------------------------------------------------------ placing
    async def place(self, order: Order) -> Order:
        return self.place_now(order)

    def place_now(self, order: Order) -> Order:
        """The synchronous body of place() (the paper exchange answers at once)."""
        cid = order.client_order_id
        known = self._orders.get(cid)
        if known is not None and known.status is not REJECTED:
            # never overwrite (or re-announce) the order that owns this id; an id whose
            # order was rejected may be sent again (it never reached the book)
            return order.with_(status=REJECTED, reason=f"duplicate client_order_id {cid}")
        now = self.clock()
        order = order.with_(created_ms=order.created_ms or now, status=OrderStatus.INTENT, filled_quantity=0.0,
                            average_price=0.0, exchange_order_id=f"paper-{uuid.uuid4().hex[:16]}", reason=None)
        problem = self._validate(order)
        rate = 0.0
        if problem is None:
            problem, rate = self._funds(order)
        if problem is not None:
            rejected = order.with_(status=REJECTED, reason=problem)
            self._orders[cid] = rejected
            self._emit_order(rejected)
            return rejected

        asset = base_asset(order.symbol) or ""
        accepted = order.with_(status=NEW)
        self._seq += 1
        entry = _Open(accepted, self._seq, asset, rate, taking=order.type is OrderType.MARKET)
        self._add_open(entry)
        self._emit_order(accepted)

        last = self._last(order.symbol)
        assert last is not None  # validated
        if cid not in self._open:  # a listener cancelled it on NEW
            return self._orders[cid]
        if order.type is OrderType.MARKET or (order.type is OrderType.LIMIT and self._marketable(order, last)):
            self._take(entry, last, now, order.price if order.type is OrderType.LIMIT else None)
        return self._orders[cid]

    def _validate(self, order: Order) -> str | None:
        asset = base_asset(order.symbol)
        if asset is None:
            return f"unsupported symbol {order.symbol}: the paper exchange trades USDT-quoted spot pairs only"
        if not isinstance(order.side, Side) or not isinstance(order.type, OrderType):
            return "invalid side or order type"
        problem = shape_problem(order)
        if problem:
            return problem
        last = self._last(order.symbol)
        if last is None:
            return f"unknown symbol {order.symbol}: no market data yet"
        if order.reduce_only and order.side is Side.BUY:
            return "reduce-only BUY would not reduce anything (spot: there are no shorts)"
        if order.type is OrderType.POST_ONLY and self._marketable(order, last):
            bid, ask = self._bid_ask(last)
            touch = f"ask {ask:g}" if order.side is Side.BUY else f"bid {bid:g}"
            return f"post-only order would take liquidity (limit {order.price:g}, {touch})"
        if order.type is OrderType.STOP:
            stop = order.stop_price
            assert stop is not None
            if (order.side is Side.SELL and last <= stop) or (order.side is Side.BUY and last >= stop):
                return f"stop would trigger immediately (last {last:g}, stop {stop:g})"
        return None

    def _funds(self, order: Order) -> tuple[str | None, float]:
        """(problem, buy reservation rate) for an order that passed validation."""
        q = order.quantity
        if order.side is Side.SELL:
            asset = base_asset(order.symbol) or ""
            free = self.base_free(asset)
            if q > free * (1.0 + SELL_TOLERANCE):
                return f"insufficient {asset}: need {q:g}, free {max(free, 0.0):g}", 0.0
            return None, 0.0
        rate = self._buy_rate(order)
        need = q * rate
        free = self.quote_free()
        if not math.isfinite(need) or need > free:
            return f"insufficient {QUOTE}: need {_money(need)}, free {_money(max(free, 0.0))}", 0.0
        return None, rate

    def _buy_rate(self, order: Order, remaining: float | None = None, triggered: bool = False) -> float:
        """USDT to reserve per unit of a buy's remaining quantity."""
        s = self.settings
        last = self._last(order.symbol)
        q = order.quantity if remaining is None else remaining
        if order.type in (OrderType.LIMIT, OrderType.POST_ONLY):
            assert order.price is not None
            if order.type is OrderType.LIMIT and remaining is None and last is not None and self._marketable(order, last):
                fee = max(s.taker_fee, s.maker_fee)
            else:
                fee = s.maker_fee
            return order.price * (1.0 + fee) * (1.0 + RESERVE_MARGIN)
        if order.type is OrderType.STOP and not triggered:
            assert order.stop_price is not None
            ref = order.stop_price * (1.0 + self._half_spread)
            used = 0.0
        else:
            if last is None:
                ref = order.average_price if finite_positive(order.average_price) else math.nan
                used = 0.0
            else:
                ref = last * (1.0 + self._half_spread)
                used = self._touch_state(order.symbol)[1]
        slip = self._slippage_frac(used, q * ref)
        return ref * (1.0 + slip) * (1.0 + s.taker_fee) * (1.0 + RESERVE_MARGIN)

    def _bid_ask(self, last: float) -> tuple[float, float]:
        return last * (1.0 - self._half_spread), last * (1.0 + self._half_spread)

    def _marketable(self, order: Order, last: float) -> bool:
        if order.price is None:
            return False
        bid, ask = self._bid_ask(last)
        return order.price >= ask if order.side is Side.BUY else order.price <= bid

    # ------------------------------------------------------------------ open-order index
    def _add_open(self, entry: _Open) -> None:
        cid = entry.order.client_order_id
        self._open[cid] = entry
        self._orders[cid] = entry.order
        sym = entry.order.symbol
        book = self._by_symbol.get(sym)
        if book is None:
            book = self._by_symbol[sym] = {}
            self._watched = frozenset(self._by_symbol)
        book[cid] = entry

    def _close(self, entry: _Open, order: Order) -> None:
        cid = order.client_order_id
        self._open.pop(cid, None)
        self._orders[cid] = order
        entry.order = order
        sym = order.symbol
        book = self._by_symbol.get(sym)
        if book is not None:
            book.pop(cid, None)
            if not book:
                del self._by_symbol[sym]
                self._watched = frozenset(self._by_symbol)

    # ------------------------------------------------------------------ filling
    def _take(self, entry: _Open, last: float, time_ms: int, limit: float | None = None) -> None:
        """One taker fill against the touch (at most the depth left on it)."""
        order = entry.order
        buy = order.side is Side.BUY
        remaining = order.remaining
        if remaining <= 0 or order.client_order_id not in self._open:
            return
        bid, ask = self._bid_ask(last)
        touch_px = ask if buy else bid
        state = self._touch_state(order.symbol)
        used = state[1] if buy else state[2]
        room = self.depth_usd(order.symbol) - used
        if room <= 0 or touch_px <= 0:
            return
        q = min(remaining, room / touch_px)

        def price_for(qty: float) -> float:
            slip = self._slippage_frac(used, qty * touch_px)
            if buy:
                px = touch_px * (1.0 + slip)
                return min(px, limit) if limit is not None else px
            px = touch_px * (1.0 - min(slip, MAX_SELL_SLIPPAGE))
            return max(px, limit) if limit is not None else px

        price = price_for(q)
        fee_rate = self.settings.taker_fee
        short = False
        if buy:
            q, short = self._affordable(entry, q, price, fee_rate)
            if q > 0:
                price = price_for(q)
        if q > 0:
            state[1 if buy else 2] = used + q * touch_px
            self._fill(entry, q, price, fee_rate, "taker", time_ms, cancel_rest=short)
        elif short:
            self._cancel_unaffordable(entry, price, fee_rate)

    def _affordable(self, entry: _Open, q: float, price: float, fee_rate: float) -> tuple[float, bool]:
        """Cap a buy fill at what the order can pay: its own reservation plus the free USDT.
        Returns (quantity, capped); a capped order cancels its rest after the fill."""
        cost = q * price * (1.0 + fee_rate)
        avail = max(self.quote_free(), 0.0) + entry.reserved
        if cost <= avail:
            return q, False
        q_max = avail / (price * (1.0 + fee_rate)) * (1.0 - RESERVE_MARGIN)
        if q_max <= entry.order.remaining * 1e-9:
            return 0.0, True
        return min(q, q_max), True

    def _cancel_unaffordable(self, entry: _Open, price: float, fee_rate: float) -> None:
        order = entry.order
        need = order.remaining * price * (1.0 + fee_rate)
        free = self.quote_free() + entry.reserved
        self._cancel(entry, f"insufficient {QUOTE} to fill the remaining {order.remaining:g}: need "
                            f"{_money(need)}, free {_money(max(free, 0.0))}")

    def _fill(self, entry: _Open, q: float, price: float, fee_rate: float, liquidity: str, time_ms: int,
              cancel_rest: bool = False) -> None:
        order = entry.order
        notional = q * price
        fee = notional * fee_rate
        if order.side is Side.BUY:
            self._quote_total -= notional + fee
            self._base_total[entry.asset] = self._base_total.get(entry.asset, 0.0) + q
        else:
            self._base_total[entry.asset] = sell_remainder(self._base_total.get(entry.asset, 0.0), q)
            self._quote_total += notional - fee
        filled = order.filled_quantity + q
        avg = (order.average_price * order.filled_quantity + notional) / filled if filled > 0 else 0.0
        done = order.quantity - filled <= order.quantity * FILLED_EPS
        if done:
            updated = order.with_(status=FILLED, filled_quantity=order.quantity, average_price=avg)
        elif cancel_rest:
            free = max(self.quote_free() + entry.reserved, 0.0)
            updated = order.with_(status=CANCELED, filled_quantity=filled, average_price=avg,
                                  reason=f"insufficient {QUOTE} to fill the remaining {order.quantity - filled:g}: "
                                         f"free {_money(free)}")
        else:
            updated = order.with_(status=PARTIAL, filled_quantity=filled, average_price=avg)
        if updated.status.is_final:
            self._close(entry, updated)
        else:
            entry.order = updated
            self._orders[order.client_order_id] = updated
            if order.side is Side.BUY:
                free = self.quote_free()
                if free < 0.0 and updated.remaining > 0:
                    # the price ran above the reservation's estimate: the rest keeps what is
                    # left (free back to 0) and is cancelled if that cannot pay a later fill
                    entry.rate = max(0.0, entry.rate + free / updated.remaining)
        self.fills += 1
        fill = Fill(client_order_id=order.client_order_id, symbol=order.symbol, side=order.side, quantity=q,
                    price=price, fee=fee, liquidity=liquidity, time_ms=int(time_ms))
        self._emit_fill(fill)
        self._emit_order(updated)

    # ------------------------------------------------------------------ ticks
    def on_tick(self, tick: Tick) -> None:
        """Work the open orders of tick.symbol against one trade. Call it after the market
        state has taken the tick (the depth reads the updated 1-minute volume)."""
        book = self._by_symbol.get(tick.symbol)
        if not book or tick.market != "spot":
            return
        price, qty = tick.price, tick.qty
        if not (finite_positive(price) and isinstance(qty, (int, float)) and math.isfinite(qty) and qty >= 0):
            return
        w = self.market.symbols.get(tick.symbol)
        # a new trade refreshes the touch
        self._touch[tick.symbol] = [float(w.ticks) if w is not None else -1.0, 0.0, 0.0]
        entries = sorted(book.values(), key=lambda e: e.seq)
        t = tick.time_ms
        # 1. stops whose trigger traded
        for e in entries:
            o = e.order
            if o.type is OrderType.STOP and not e.taking:
                stop = o.stop_price
                assert stop is not None
                if (o.side is Side.SELL and price <= stop) or (o.side is Side.BUY and price >= stop):
                    e.taking = True
        # 2. takers (market orders still working, triggered stops), in time priority
        for e in entries:
            if e.taking and e.order.client_order_id in self._open:
                self._take(e, price, t)
        # 3. resting limits this trade went through: maker fills out of the tick's quantity
        makers = [e for e in entries if not e.taking and e.order.type in (OrderType.LIMIT, OrderType.POST_ONLY)
                  and e.order.client_order_id in self._open
                  and ((e.order.side is Side.BUY and price <= e.order.price)  # type: ignore[operator]
                       or (e.order.side is Side.SELL and price >= e.order.price))]  # type: ignore[operator]
        if not makers or qty <= 0:
            return
        if len(makers) > 1:
            # price priority (best limit first), then time
            makers.sort(key=lambda e: (-e.order.price if e.order.side is Side.BUY else e.order.price, e.seq))  # type: ignore[operator]
        budget = qty
        fee_rate = self.settings.maker_fee
        for e in makers:
            if budget <= 0:
                break
            if e.order.client_order_id not in self._open:
                continue
            o = e.order
            assert o.price is not None
            q = min(o.remaining, budget)
            short = False
            if o.side is Side.BUY:
                q, short = self._affordable(e, q, o.price, fee_rate)
            if q > 0:
                budget -= q
                self._fill(e, q, o.price, fee_rate, "maker", t, cancel_rest=short)
            elif short:
                self._cancel_unaffordable(e, o.price, fee_rate)

    # ------------------------------------------------------------------ cancelling
    def _cancel(self, entry: _Open, reason: str) -> Order:
        cancelled = entry.order.with_(status=CANCELED, reason=reason)
        self._close(entry, cancelled)
        self._emit_order(cancelled)
        return cancelled

    async def cancel(self, client_order_id: str, reason: str = "canceled on request") -> Order:
        order = self._orders.get(client_order_id)
        if order is None:
            raise ExchangeError(f"unknown order {client_order_id}")
        entry = self._open.get(client_order_id)
        if entry is None:
            return order  # already final: unchanged
        return self._cancel(entry, reason)

    def cancel_now(self, client_order_ids: list[str], reason: str = "canceled on request") -> list[Order]:
        """Cancel these open orders at once, releasing their reservations (unknown or final
        ones are skipped). Returns the cancelled orders."""
        out = []
        for cid in client_order_ids:
            entry = self._open.get(cid)  # a listener may have cancelled it meanwhile
            if entry is not None:
                out.append(self._cancel(entry, reason))
        return out

    def cancel_all_now(self, symbol: str | None = None) -> list[Order]:
        """Cancel every open order (or one symbol's), oldest first."""
        targets = sorted((e for e in self._open.values() if symbol is None or e.order.symbol == symbol),
                         key=lambda e: e.seq)
        return self.cancel_now([e.order.client_order_id for e in targets], "cancel all")

    # ------------------------------------------------------------------ restore
    def restore(self, balances: Mapping[str, Any], open_orders: list[Order]) -> list[Order]:
        """Rebuild the book after a restart: `balances` as balances() returns it ({asset:
        {"free", "locked"}} or {asset: total}); the open orders' reservations are recomputed.
        Final orders in `open_orders` are remembered (so cancel() answers for them). An open
        order that cannot be funded or is invalid is CANCELED (announced to the listeners)
        and returned; the others rest again. Replaces the whole current state."""
        totals: dict[str, float] = {}
        for asset, value in balances.items():
            if isinstance(value, Mapping):
                total = float(value.get("free", 0.0) or 0.0) + float(value.get("locked", 0.0) or 0.0)
            else:
                total = float(value)
            if not math.isfinite(total) or total < 0:
                raise ValueError(f"restore: balance of {asset} must be finite and >= 0, got {total!r}")
            totals[str(asset)] = total
        self._quote_total = totals.pop(QUOTE, 0.0)
        self._base_total = {a: t for a, t in totals.items() if t > 0}
        self._orders.clear()
        self._open.clear()
        self._by_symbol.clear()
        self._watched = frozenset()
        self._touch.clear()
        dropped: list[Order] = []
        for order in open_orders:
            cid = order.client_order_id
            if cid in self._orders:
                continue
            if not order.status.is_open:
                self._orders[cid] = order
                continue
            problem = self._validate_restored(order)
            asset = base_asset(order.symbol) or ""
            triggered = order.type is OrderType.STOP and order.filled_quantity > 0
            rate = 0.0
            if problem is None:
                rem = order.remaining
                if order.side is Side.BUY:
                    rate = self._buy_rate(order, remaining=rem, triggered=triggered)
                    free = self.quote_free()
                    if not math.isfinite(rate) or rem * rate > free:
                        problem = (f"insufficient {QUOTE} to restore: need {_money(rem * rate)}, "
                                   f"free {_money(max(free, 0.0))}")
                else:
                    free = self.base_free(asset)
                    if rem > free * (1.0 + SELL_TOLERANCE):
                        problem = f"insufficient {asset} to restore: need {rem:g}, free {max(free, 0.0):g}"
            if problem is not None:
                c = order.with_(status=CANCELED, reason=f"restore: {problem}")
                self._orders[cid] = c
                dropped.append(c)
                continue
            status = PARTIAL if order.filled_quantity > 0 else NEW
            self._seq += 1
            self._add_open(_Open(order.with_(status=status), self._seq, asset, rate,
                                 taking=order.type is OrderType.MARKET or triggered))
        for c in dropped:
            self._emit_order(c)
        return dropped

    def _validate_restored(self, order: Order) -> str | None:
        if base_asset(order.symbol) is None:
            return f"unsupported symbol {order.symbol}"
        problem = shape_problem(order)
        if problem:
            return problem
        fq = order.filled_quantity
        if not (isinstance(fq, (int, float)) and math.isfinite(fq) and 0 <= fq < order.quantity):
            return f"invalid filled quantity {fq!r}"
        return None


__all__ = ["PaperExchange", "base_asset"]
