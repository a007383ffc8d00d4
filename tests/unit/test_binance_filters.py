"""Binance's symbol filters, applied in Decimal before an order is sent: rounding to the lot
step and the tick, and a refusal that names the filter and the numbers for each filter."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.trading.binance_filters import FilterRefusal, SymbolRules, shape, text
from core.trading.orders import Order, OrderType, Side
from tests.fakes.binance.server import FakeSymbol


def rules(**overrides) -> SymbolRules:
    """BTCUSDT as the fake exchange (and Binance) describes it, with `overrides` per filter."""
    filters = {f["filterType"]: f for f in FakeSymbol("BTCUSDT", "BTC", "USDT", 100_000.0).filters()}
    for name, fields in overrides.items():
        if fields is None:
            filters.pop(name, None)
        else:
            filters[name] = {"filterType": name, **fields}
    return SymbolRules.from_exchange_info({
        "symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT",
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS"], "filters": list(filters.values())})


def order(side=Side.BUY, type=OrderType.LIMIT, qty=0.001, price=100_000.0, stop=None) -> Order:
    return Order(symbol="BTCUSDT", side=side, type=type, quantity=qty, price=price, stop_price=stop)


def refusal(o: Order, r: SymbolRules | None = None, ref: float | None = 100_000.0) -> str:
    with pytest.raises(FilterRefusal) as err:
        shape(o, r or rules(), ref)
    return str(err.value)


def test_quantity_is_rounded_down_to_the_step_and_sent_as_plain_digits():
    shaped = shape(order(qty=0.0012345678), rules(), 100_000.0)
    assert shaped.quantity == Decimal("0.00123")
    assert shaped.params() == {"type": "LIMIT", "quantity": "0.00123", "price": "100000", "timeInForce": "GTC"}


def test_a_float_that_is_not_exact_in_binary_still_lands_on_the_step():
    # 0.3 is 0.29999999999999998889... in binary: read through its shortest repr it is 0.3
    assert shape(order(qty=0.3), rules(), 100_000.0).quantity == Decimal("0.3")


def test_the_step_grid_starts_at_the_minimum_quantity():
    r = rules(LOT_SIZE={"minQty": "0.015", "maxQty": "100", "stepSize": "0.01"})
    assert shape(order(qty=0.0399), r, 100_000.0).quantity == Decimal("0.035")


def test_a_buy_price_rounds_down_to_the_tick_and_a_sell_price_up():
    assert shape(order(price=100_000.129), rules(), 100_000.0).price == Decimal("100000.12")
    sell = shape(order(side=Side.SELL, price=100_000.121), rules(), 100_000.0)
    assert sell.price == Decimal("100000.13")


def test_a_stop_price_follows_the_same_rule():
    shaped = shape(order(side=Side.SELL, type=OrderType.STOP, price=None, stop=95_000.001), rules(), 100_000.0)
    assert shaped.params() == {"type": "STOP_LOSS", "quantity": "0.001", "stopPrice": "95000.01"}


def test_post_only_is_binance_limit_maker_without_a_time_in_force():
    assert shape(order(type=OrderType.POST_ONLY), rules(), None).params()["type"] == "LIMIT_MAKER"
    assert "timeInForce" not in shape(order(type=OrderType.POST_ONLY), rules(), None).params()


def test_tiny_and_huge_values_are_written_without_an_exponent():
    assert text(Decimal("1E-8")) == "0.00000001"
    assert text(Decimal("1.5E+6")) == "1500000"
    assert text(Decimal("100.000")) == "100"


def test_lot_size_below_the_minimum_after_rounding():
    reason = refusal(order(qty=0.000009))
    assert reason == ("LOT_SIZE: quantity 0.000009 is below the minimum 0.00001 BTC once rounded down to the "
                      "step 0.00001")


def test_lot_size_above_the_maximum():
    assert refusal(order(qty=9001.0)) == "LOT_SIZE: quantity 9001 is above the maximum 9000 BTC"


def test_market_lot_size_applies_to_market_orders_only():
    r = rules(MARKET_LOT_SIZE={"minQty": "0", "maxQty": "0.5", "stepSize": "0"})
    reason = refusal(order(type=OrderType.MARKET, price=None, qty=0.6), r)
    assert reason == "MARKET_LOT_SIZE: quantity 0.6 is above the maximum 0.5 BTC"
    assert shape(order(qty=0.6, price=100_000.0), r, 100_000.0).quantity == Decimal("0.6")


def test_price_filter_minimum_and_maximum():
    assert refusal(order(price=0.004), ref=None) == "PRICE_FILTER: price 0.004 is below the minimum 0.01 (tick 0.01)"
    assert refusal(order(price=2_000_000.0), ref=None) == "PRICE_FILTER: price 2000000 is above the maximum 1000000"


def test_a_zero_bound_in_the_price_filter_is_no_bound():
    r = rules(PRICE_FILTER={"minPrice": "0", "maxPrice": "0", "tickSize": "0.01"})
    assert shape(order(price=2_000_000.005), r, None).price == Decimal("2000000")


def test_notional_below_the_minimum_names_the_numbers():
    reason = refusal(order(qty=0.00004))
    assert reason == "NOTIONAL: 4 USDT (0.00004 x 100000) is below the minimum 5 USDT"


def test_notional_above_the_maximum():
    r = rules(NOTIONAL={"minNotional": "5", "applyMinToMarket": True, "maxNotional": "1000", "applyMaxToMarket": False})
    assert refusal(order(qty=0.011), r) == "NOTIONAL: 1100 USDT (0.011 x 100000) is above the maximum 1000 USDT"
    # the maximum does not apply to market orders unless the filter says so
    assert shape(order(type=OrderType.MARKET, price=None, qty=0.011), r, 100_000.0).quantity == Decimal("0.011")


def test_a_market_order_is_counted_at_the_reference_price():
    reason = refusal(order(type=OrderType.MARKET, price=None, qty=0.00004), ref=100_000.0)
    assert reason == "NOTIONAL: 4 USDT (0.00004 x 100000) is below the minimum 5 USDT"


def test_a_market_order_without_a_reference_leaves_the_notional_to_the_exchange():
    assert shape(order(type=OrderType.MARKET, price=None, qty=0.00004), rules(), None).quantity == Decimal("0.00004")


def test_min_to_market_off_lets_a_small_market_order_through():
    r = rules(NOTIONAL={"minNotional": "5", "applyMinToMarket": False, "maxNotional": "9000000"})
    assert shape(order(type=OrderType.MARKET, price=None, qty=0.00004), r, 100_000.0).quantity == Decimal("0.00004")


def test_the_legacy_min_notional_filter():
    r = rules(NOTIONAL=None, MIN_NOTIONAL={"minNotional": "10", "applyToMarket": True, "avgPriceMins": 5})
    assert refusal(order(qty=0.00009), r) == "MIN_NOTIONAL: 9 USDT (0.00009 x 100000) is below the minimum 10 USDT"


def test_the_notional_uses_the_rounded_quantity():
    # 0.0000549 x 100000 = 5.49 as asked, but 0.00005 x 100000 = 5 once on the step: still fine;
    # 0.0000499 rounds to 0.00004 = 4 USDT: refused although the asked quantity came to 4.99
    assert shape(order(qty=0.0000549), rules(), 100_000.0).quantity == Decimal("0.00005")
    assert "4 USDT (0.00004 x 100000)" in refusal(order(qty=0.0000499))


def test_percent_price_by_side_for_a_buy():
    r = rules(PERCENT_PRICE_BY_SIDE={"bidMultiplierUp": "1.05", "bidMultiplierDown": "0.9",
                                     "askMultiplierUp": "1.1", "askMultiplierDown": "0.95"})
    assert refusal(order(price=105_001.0), r) == ("PERCENT_PRICE_BY_SIDE: buy price 105001 is above 105000 "
                                                  "(reference 100000 x bidMultiplierUp 1.05)")
    assert refusal(order(price=89_999.0), r) == ("PERCENT_PRICE_BY_SIDE: buy price 89999 is below 90000 "
                                                 "(reference 100000 x bidMultiplierDown 0.9)")
    assert shape(order(price=105_000.0), r, 100_000.0).price == Decimal("105000")


def test_percent_price_by_side_for_a_sell_uses_the_ask_multipliers():
    r = rules(PERCENT_PRICE_BY_SIDE={"bidMultiplierUp": "1.05", "bidMultiplierDown": "0.9",
                                     "askMultiplierUp": "1.1", "askMultiplierDown": "0.95"})
    assert shape(order(side=Side.SELL, price=109_000.0), r, 100_000.0).price == Decimal("109000")
    assert refusal(order(side=Side.SELL, price=94_000.0), r) == (
        "PERCENT_PRICE_BY_SIDE: sell price 94000 is below 95000 (reference 100000 x askMultiplierDown 0.95)")


def test_percent_price_needs_a_reference():
    r = rules(PERCENT_PRICE_BY_SIDE={"bidMultiplierUp": "1.05", "bidMultiplierDown": "0.9",
                                     "askMultiplierUp": "1.1", "askMultiplierDown": "0.95"})
    assert shape(order(price=200_000.0), r, None).price == Decimal("200000")


def test_the_legacy_percent_price_filter_bounds_both_sides():
    r = rules(PERCENT_PRICE_BY_SIDE=None, PERCENT_PRICE={"multiplierUp": "1.2", "multiplierDown": "0.8"})
    assert "above 120000" in refusal(order(price=120_001.0), r)
    assert "below 80000" in refusal(order(side=Side.SELL, price=79_999.0), r)


def test_a_symbol_that_is_not_trading_or_lacks_the_order_type():
    halted = SymbolRules.from_exchange_info({"symbol": "BTCUSDT", "status": "HALT", "filters": []})
    assert refusal(order(), halted) == "BTCUSDT is not trading on Binance (status HALT)"
    limits_only = SymbolRules.from_exchange_info({"symbol": "BTCUSDT", "status": "TRADING",
                                                  "orderTypes": ["LIMIT"], "filters": []})
    assert refusal(order(type=OrderType.MARKET, price=None), limits_only) == "BTCUSDT does not take MARKET orders"


def test_without_filters_an_order_goes_as_asked():
    bare = SymbolRules.from_exchange_info({"symbol": "BTCUSDT", "status": "TRADING", "filters": []})
    assert shape(order(qty=0.123456789, price=1.23456789), bare, None).params() == {
        "type": "LIMIT", "quantity": "0.123456789", "price": "1.23456789", "timeInForce": "GTC"}
