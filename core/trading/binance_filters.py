"""Binance's symbol filters, applied to an order before it is sent.

exchangeInfo spells each symbol's filters as decimal strings; they are parsed once into
`SymbolRules` and an order is shaped to them here, in Decimal: its quantity rounded down to
the lot step, its prices to the tick (a buy's down, a sell's up: never more aggressive than
the order asked), then checked against every filter Binance would apply. An order the
filters refuse is never sent: `FilterRefusal` names the filter and the numbers.

PERCENT_PRICE_BY_SIDE (and a MARKET order's notional) need Binance's average price; the
caller's reference price (the feed's last trade) stands in for it, and without one those
checks are left to the exchange, which has the last word anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from core.trading.orders import Order, OrderType, Side

ZERO = Decimal(0)

# the Binance order type for each of ours (a STOP is a stop-market: STOP_LOSS on spot)
BINANCE_TYPES = {OrderType.MARKET: "MARKET", OrderType.LIMIT: "LIMIT", OrderType.POST_ONLY: "LIMIT_MAKER",
                 OrderType.STOP: "STOP_LOSS"}


class FilterRefusal(ValueError):
    """The order breaks one of the symbol's filters; the message says which and by how much."""


def dec(value: Any) -> Decimal:
    """A Decimal from an exchangeInfo string or a float (through its shortest repr)."""
    try:
        d = Decimal(value) if isinstance(value, str) else Decimal(repr(float(value)))
    except (InvalidOperation, TypeError, ValueError):
        raise FilterRefusal(f"not a number: {value!r}") from None
    if not d.is_finite():
        raise FilterRefusal(f"not a finite number: {value!r}")
    return d


def text(d: Decimal) -> str:
    """How Binance wants a decimal: plain digits, no exponent, no trailing zeros."""
    s = format(d, "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


@dataclass(frozen=True)
class Range:
    """A min/max/step triple (LOT_SIZE, MARKET_LOT_SIZE, PRICE_FILTER); 0 disables a bound."""

    low: Decimal
    high: Decimal
    step: Decimal

    def snap(self, value: Decimal, rounding: str) -> Decimal:
        """`value` on the step grid, which starts at the minimum (Binance's rule)."""
        if self.step <= 0:
            return value
        base = self.low if self.low > 0 else ZERO
        steps = ((value - base) / self.step).to_integral_value(rounding)
        return base + steps * self.step


@dataclass(frozen=True)
class SymbolRules:
    symbol: str
    base: str
    quote: str
    status: str
    order_types: frozenset[str]
    lot: Range | None
    market_lot: Range | None
    price: Range | None
    notional_filter: str  # "NOTIONAL" or the legacy "MIN_NOTIONAL"
    min_notional: Decimal | None
    min_notional_to_market: bool
    max_notional: Decimal | None
    max_notional_to_market: bool
    # PERCENT_PRICE_BY_SIDE (a legacy PERCENT_PRICE fills both sides alike): (down, up) multipliers
    buy_band: tuple[Decimal, Decimal] | None
    sell_band: tuple[Decimal, Decimal] | None

    @classmethod
    def from_exchange_info(cls, entry: dict[str, Any]) -> "SymbolRules":
        """One element of exchangeInfo's `symbols`."""
        by_type = {f.get("filterType"): f for f in entry.get("filters", [])}

        def span(name: str, low: str, high: str, step: str) -> Range | None:
            f = by_type.get(name)
            return Range(dec(f[low]), dec(f[high]), dec(f[step])) if f else None

        min_notional = max_notional = None
        to_market_min = to_market_max = False
        notional_filter = "NOTIONAL"
        if "NOTIONAL" in by_type:
            f = by_type["NOTIONAL"]
            min_notional = dec(f.get("minNotional", "0"))
            max_notional = dec(f.get("maxNotional", "0")) or None
            to_market_min = bool(f.get("applyMinToMarket", False))
            to_market_max = bool(f.get("applyMaxToMarket", False))
        elif "MIN_NOTIONAL" in by_type:
            f = by_type["MIN_NOTIONAL"]
            notional_filter = "MIN_NOTIONAL"
            min_notional = dec(f["minNotional"])
            to_market_min = bool(f.get("applyToMarket", False))

        buy_band = sell_band = None
        if "PERCENT_PRICE_BY_SIDE" in by_type:
            f = by_type["PERCENT_PRICE_BY_SIDE"]
            buy_band = (dec(f["bidMultiplierDown"]), dec(f["bidMultiplierUp"]))
            sell_band = (dec(f["askMultiplierDown"]), dec(f["askMultiplierUp"]))
        elif "PERCENT_PRICE" in by_type:
            f = by_type["PERCENT_PRICE"]
            buy_band = sell_band = (dec(f["multiplierDown"]), dec(f["multiplierUp"]))

        return cls(symbol=entry["symbol"], base=entry.get("baseAsset", ""), quote=entry.get("quoteAsset", ""),
                   status=entry.get("status", "TRADING"), order_types=frozenset(entry.get("orderTypes", ())),
                   lot=span("LOT_SIZE", "minQty", "maxQty", "stepSize"),
                   market_lot=span("MARKET_LOT_SIZE", "minQty", "maxQty", "stepSize"),
                   price=span("PRICE_FILTER", "minPrice", "maxPrice", "tickSize"),
                   notional_filter=notional_filter, min_notional=min_notional or None, min_notional_to_market=to_market_min,
                   max_notional=max_notional, max_notional_to_market=to_market_max,
                   buy_band=buy_band, sell_band=sell_band)


@dataclass(frozen=True)
class ShapedOrder:
    """An order's numbers as they will be sent."""

    binance_type: str
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None

    def params(self) -> dict[str, str]:
        out = {"type": self.binance_type, "quantity": text(self.quantity)}
        if self.price is not None:
            out["price"] = text(self.price)
        if self.stop_price is not None:
            out["stopPrice"] = text(self.stop_price)
        if self.binance_type == "LIMIT":
            out["timeInForce"] = "GTC"
        return out


def shape(order: Order, rules: SymbolRules, reference_price: float | None = None) -> ShapedOrder:
    """`order` rounded to the symbol's grid and checked against its filters; FilterRefusal
    when it breaks one (it must then not be sent)."""
    binance_type = BINANCE_TYPES[order.type]
    if rules.status != "TRADING":
        raise FilterRefusal(f"{rules.symbol} is not trading on Binance (status {rules.status})")
    if rules.order_types and binance_type not in rules.order_types:
        raise FilterRefusal(f"{rules.symbol} does not take {binance_type} orders")
    buy = order.side is Side.BUY
    qty = _quantity(order, rules, binance_type)
    price = _price("price", order.price, rules, buy)
    stop = _price("stop price", order.stop_price, rules, buy)
    ref = dec(reference_price) if reference_price is not None else None
    basis = price if price is not None else stop if stop is not None else ref
    _notional(rules, qty, basis, at_market=price is None)
    if price is not None and ref is not None:
        _band(rules, buy, price, ref)
    return ShapedOrder(binance_type, qty, price, stop)


def _quantity(order: Order, rules: SymbolRules, binance_type: str) -> Decimal:
    asked = dec(order.quantity)
    qty = asked
    lots = [("LOT_SIZE", rules.lot)]
    if binance_type == "MARKET":
        lots.append(("MARKET_LOT_SIZE", rules.market_lot))
    for name, lot in lots:
        if lot is None:
            continue
        qty = lot.snap(qty, ROUND_FLOOR)
        if qty <= 0 or (lot.low > 0 and qty < lot.low):
            raise FilterRefusal(f"{name}: quantity {text(asked)} is below the minimum {text(lot.low)} "
                                f"{rules.base} once rounded down to the step {text(lot.step)}")
        if lot.high > 0 and qty > lot.high:
            raise FilterRefusal(f"{name}: quantity {text(asked)} is above the maximum {text(lot.high)} {rules.base}")
    return qty


def _price(name: str, value: float | None, rules: SymbolRules, buy: bool) -> Decimal | None:
    if value is None:
        return None
    asked = dec(value)
    grid = rules.price
    if grid is None:
        return asked
    # a buy never pays more than it asked, a sell never takes less
    price = grid.snap(asked, ROUND_FLOOR if buy else ROUND_CEILING)
    if price <= 0 or (grid.low > 0 and price < grid.low):
        raise FilterRefusal(f"PRICE_FILTER: {name} {text(asked)} is below the minimum {text(grid.low)}"
                            f" (tick {text(grid.step)})")
    if grid.high > 0 and price > grid.high:
        raise FilterRefusal(f"PRICE_FILTER: {name} {text(asked)} is above the maximum {text(grid.high)}")
    return price


def _notional(rules: SymbolRules, qty: Decimal, price: Decimal | None, at_market: bool) -> None:
    """NOTIONAL / MIN_NOTIONAL. A MARKET order is counted at the reference (skipped without
    one), a STOP at its trigger, and each bound applies to them only if it says so."""
    if price is None:
        return
    notional = qty * price
    what = f"{rules.notional_filter}: {_amount(notional)} {rules.quote} ({text(qty)} x {text(price)})"
    low, high = rules.min_notional, rules.max_notional
    if low is not None and (not at_market or rules.min_notional_to_market) and notional < low:
        raise FilterRefusal(f"{what} is below the minimum {text(low)} {rules.quote}")
    if high is not None and (not at_market or rules.max_notional_to_market) and notional > high:
        raise FilterRefusal(f"{what} is above the maximum {text(high)} {rules.quote}")


def _band(rules: SymbolRules, buy: bool, price: Decimal, ref: Decimal) -> None:
    band = rules.buy_band if buy else rules.sell_band
    if band is None:
        return
    down, up = band
    what = f"PERCENT_PRICE_BY_SIDE: {'buy' if buy else 'sell'} price {text(price)}"
    side = "bid" if buy else "ask"
    if price > ref * up:
        raise FilterRefusal(f"{what} is above {_amount(ref * up)} (reference {text(ref)} x {side}MultiplierUp "
                            f"{text(up)})")
    if price < ref * down:
        raise FilterRefusal(f"{what} is below {_amount(ref * down)} (reference {text(ref)} x {side}MultiplierDown "
                            f"{text(down)})")


def _amount(d: Decimal) -> str:
    """A computed amount for a message: cents, or 8 decimals below 1 (within Decimal's 28 digits)."""
    return text(d.quantize(Decimal("0.01") if abs(d) >= 1 else Decimal("1e-8"), ROUND_FLOOR))


__all__ = ["BINANCE_TYPES", "FilterRefusal", "Range", "ShapedOrder", "SymbolRules", "dec", "shape", "text"]
