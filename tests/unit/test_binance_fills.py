"""Binance trades as the portfolio counts them: the commission in the quote, in the base (out of
the quantity, so the position matches the balance) or in a third asset (BNB) at its price."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.trading.binance_messages import Trade, to_fill
from core.trading.orders import Side


def trade(commission: str, asset: str | None) -> Trade:
    return Trade("BTCUSDT", 7, Decimal("100000"), Decimal("0.01"), Decimal(commission), asset, 1, False)


def test_a_quote_commission_is_the_fee():
    fill, counted = to_fill(trade("1.0", "USDT"), "c", Side.BUY, "BTC", "USDT")
    assert counted and fill.quantity == 0.01 and fill.fee == 1.0


def test_a_base_commission_comes_out_of_the_quantity_and_costs_its_value():
    fill, counted = to_fill(trade("0.00001", "BTC"), "c", Side.BUY, "BTC", "USDT")
    assert counted and fill.quantity == pytest.approx(0.00999) and fill.fee == pytest.approx(1.0)


def test_a_bnb_commission_is_counted_at_the_bnb_price():
    fill, counted = to_fill(trade("0.0025", "BNB"), "c", Side.BUY, "BTC", "USDT", Decimal("600"))
    assert counted and fill.quantity == 0.01 and fill.fee == pytest.approx(1.5)


def test_a_bnb_commission_without_a_price_is_said_to_be_uncounted():
    fill, counted = to_fill(trade("0.0025", "BNB"), "c", Side.BUY, "BTC", "USDT")
    assert not counted and fill.fee == 0.0


def test_the_book_prices_a_bnb_commission_from_the_market():
    from core.trading.binance_book import OrderBook
    from core.trading.binance_messages import OrderState
    from core.trading.orders import Order, OrderStatus, OrderType

    asked: list[tuple[str, str]] = []

    def bnb_price(asset: str, quote: str) -> Decimal | None:
        asked.append((asset, quote))
        return Decimal("600")

    book = OrderBook(lambda symbol: ("BTC", "USDT"), bnb_price)
    fills: list = []
    book.fill_listeners.append(fills.append)
    order = book.adopt(Order(symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=0.01,
                             client_order_id="sg-bnb", status=OrderStatus.NEW))
    state = OrderState("BTCUSDT", order.client_order_id, "1", OrderStatus.FILLED, Decimal("0.01"),
                       Decimal("1000"), Side.BUY, "MARKET", Decimal("0.01"), None, None, 1)
    book.apply(state, [trade("0.0025", "BNB")])
    assert asked == [("BNB", "USDT")] and fills[0].fee == pytest.approx(1.5)
