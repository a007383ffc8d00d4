"""Portfolio: average-cost positions and PnL from fills only."""

from __future__ import annotations

import math

import pytest

from core.trading.orders import Fill, Side
from core.trading.portfolio import Portfolio, Position, sell_remainder

T0 = 1_700_000_000_000


def fill(side: Side, qty: float, price: float, fee: float = 0.0, t: int = T0, symbol: str = "BTCUSDT",
         fid: str | None = None) -> Fill:
    kw = {"fill_id": fid} if fid else {}
    return Fill(client_order_id="c1", symbol=symbol, side=side, quantity=qty, price=price, fee=fee,
                liquidity="taker", time_ms=t, **kw)


def test_buys_move_the_average_and_cash() -> None:
    p = Portfolio(10_000)
    p.apply(fill(Side.BUY, 2, 100, fee=0.2))
    p.apply(fill(Side.BUY, 1, 130, fee=0.13))
    pos = p.positions()["BTCUSDT"]
    assert pos.quantity == 3
    assert pos.average_price == pytest.approx(110.0, rel=1e-15)
    assert pos.fees == pytest.approx(0.33)
    assert p.cash == pytest.approx(10_000 - 200 - 0.2 - 130 - 0.13, abs=1e-9)
    assert p.fees_paid == pytest.approx(0.33)
    assert p.realized_pnl == 0.0
    assert p.open_symbols() == ["BTCUSDT"]


def test_sells_realise_against_the_average_and_keep_it() -> None:
    p = Portfolio(10_000)
    p.apply(fill(Side.BUY, 2, 100, fee=0.2))
    p.apply(fill(Side.SELL, 0.5, 120, fee=0.06))
    pos = p.position("BTCUSDT")
    assert pos is not None
    assert pos.quantity == 1.5 and pos.average_price == 100
    assert pos.realized_pnl == pytest.approx(10.0)  # gross: (120 - 100) * 0.5
    assert p.realized_pnl == pytest.approx(10.0)
    assert p.net_realized_pnl == pytest.approx(10.0 - 0.26)
    assert p.cash == pytest.approx(10_000 - 200.2 + 60 - 0.06, abs=1e-9)
    # closing the rest: flat, average reset, realised kept
    p.apply(fill(Side.SELL, 1.5, 90, fee=0.135))
    pos = p.positions()["BTCUSDT"]
    assert pos.quantity == 0 and pos.average_price == 0
    assert pos.realized_pnl == pytest.approx(10.0 - 15.0)
    assert p.open_symbols() == []
    assert p.positions(open_only=True) == {}
    assert p.equity({}) == pytest.approx(10_000 - 5.0 - (0.2 + 0.06 + 0.135), abs=1e-9)


def test_no_shorting() -> None:
    p = Portfolio(1_000)
    with pytest.raises(ValueError, match="no shorting"):
        p.apply(fill(Side.SELL, 0.1, 100))
    p.apply(fill(Side.BUY, 1, 100))
    with pytest.raises(ValueError, match="no shorting"):
        p.apply(fill(Side.SELL, 1.01, 100))
    assert p.quantity("BTCUSDT") == 1  # the failed sell changed nothing
    assert p.cash == 900


def test_float_dust_closes_a_position_exactly() -> None:
    p = Portfolio(1_000)
    p.apply(fill(Side.BUY, 0.1, 100))
    p.apply(fill(Side.BUY, 0.2, 100))  # 0.30000000000000004
    p.apply(fill(Side.SELL, 0.3, 100))
    assert p.quantity("BTCUSDT") == 0.0
    assert sell_remainder(0.3, 0.1 + 0.2) == 0.0
    assert sell_remainder(1.0, 0.25) == 0.75
    with pytest.raises(ValueError):
        sell_remainder(1.0, 1.001)


def test_equity_and_unrealised() -> None:
    p = Portfolio(10_000)
    p.apply(fill(Side.BUY, 2, 100, fee=0.2))
    p.apply(fill(Side.BUY, 10, 5, fee=0.05, symbol="XRPUSDT"))
    prices = {"BTCUSDT": 110.0, "XRPUSDT": 4.0}
    assert p.unrealized_pnl(prices) == pytest.approx(20 - 10)
    assert p.equity(prices) == pytest.approx(p.cash + 220 + 40)
    # the identity: equity = start + realised - fees + unrealised
    assert p.equity(prices) == pytest.approx(10_000 + p.realized_pnl - p.fees_paid + p.unrealized_pnl(prices),
                                             abs=1e-9)
    # a missing or broken price marks at cost: never NaN
    assert p.unrealized_pnl({"BTCUSDT": math.nan}) == 0.0
    assert p.equity({}) == pytest.approx(p.cash + 200 + 50)


def test_realized_pnl_since_is_net_of_fees() -> None:
    p = Portfolio(10_000)
    p.apply(fill(Side.BUY, 2, 100, fee=0.2, t=T0))
    p.apply(fill(Side.SELL, 1, 110, fee=0.11, t=T0 + 1000))
    p.apply(fill(Side.SELL, 1, 90, fee=0.09, t=T0 + 2000))
    assert p.realized_pnl_since(T0) == pytest.approx(-0.2 + 10 - 0.11 - 10 - 0.09)
    assert p.realized_pnl_since(T0 + 1000) == pytest.approx(10 - 0.11 - 10 - 0.09)
    assert p.realized_pnl_since(T0 + 1001) == pytest.approx(-10 - 0.09)
    assert p.realized_pnl_since(T0 + 5000) == 0.0
    # out-of-order times still sum correctly
    p.apply(fill(Side.BUY, 1, 100, fee=1.0, t=T0 + 500))
    assert p.realized_pnl_since(T0 + 400) == pytest.approx(-1.0 + 10 - 0.11 - 10 - 0.09)
    assert p.realized_pnl_since(T0 + 1001) == pytest.approx(-10 - 0.09)


def test_duplicate_fill_ids_are_ignored_and_bad_fills_refused() -> None:
    p = Portfolio(1_000)
    f = fill(Side.BUY, 1, 100, fee=0.1, fid="abc")
    assert p.apply(f) is True
    assert p.apply(f) is False
    assert p.quantity("BTCUSDT") == 1 and p.fills_applied == 1
    for bad in (fill(Side.BUY, math.nan, 100), fill(Side.BUY, 1, math.inf), fill(Side.BUY, 0, 100),
                fill(Side.BUY, 1, 100, fee=-1), fill(Side.BUY, 1, 100, fee=math.nan)):
        with pytest.raises(ValueError):
            p.apply(bad)
    with pytest.raises(ValueError):
        Portfolio(math.nan)


def test_from_fills_and_snapshot() -> None:
    fills = [fill(Side.BUY, 2, 100, fee=0.2), fill(Side.SELL, 1, 120, fee=0.12, t=T0 + 1),
             fill(Side.BUY, 3, 2, fee=0.006, symbol="ADAUSDT", t=T0 + 2)]
    live = Portfolio(5_000)
    for f in fills:
        live.apply(f)
    rebuilt = Portfolio.from_fills(5_000, fills)
    assert rebuilt.positions() == live.positions()
    assert rebuilt.cash == live.cash
    snap = rebuilt.snapshot({"BTCUSDT": 130.0})
    assert snap["cash"] == live.cash and snap["fills"] == 3
    assert snap["positions"][0] == {"symbol": "ADAUSDT", "quantity": 3, "average_price": 2, "realized_pnl": 0.0,
                                    "fees": 0.006}
    assert snap["positions"][1]["realized_pnl"] == pytest.approx(20.0)
    assert snap["equity"] == pytest.approx(live.cash + 130 + 6)
    assert snap["unrealized_pnl"] == pytest.approx(30.0)
    assert "equity" not in rebuilt.snapshot()
    assert isinstance(rebuilt.positions()["BTCUSDT"], Position)
