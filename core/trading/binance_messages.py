"""Binance's order and trade messages, read into one shape whatever their source.

An order's state arrives in REST answers (create, query, cancel, openOrders) and in the
user stream's executionReport, each spelling the fields its own way; a trade arrives in a
FULL create answer, in myTrades and in an executionReport of execution type TRADE. Both
are read here into `OrderState` and `Trade`, in Decimal, so the book merges them in one
place and counts every trade once by its id.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.trading.orders import Fill, OrderStatus, OrderType, Side

D0 = Decimal(0)

STATUSES = {
    "NEW": OrderStatus.NEW, "PENDING_NEW": OrderStatus.NEW, "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
    "PENDING_CANCEL": OrderStatus.NEW, "FILLED": OrderStatus.FILLED, "CANCELED": OrderStatus.CANCELED,
    "REJECTED": OrderStatus.REJECTED, "EXPIRED": OrderStatus.EXPIRED, "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
}
# our order type for each Binance one, for orders the book adopts (placed elsewhere, or before a lost journal)
ORDER_TYPES = {"MARKET": OrderType.MARKET, "LIMIT": OrderType.LIMIT, "LIMIT_MAKER": OrderType.POST_ONLY,
               "STOP_LOSS": OrderType.STOP, "STOP_LOSS_LIMIT": OrderType.STOP}


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else D0


@dataclass(frozen=True)
class OrderState:
    """What Binance says of one order at one moment."""

    symbol: str
    client_order_id: str
    exchange_order_id: str
    status: OrderStatus
    executed: Decimal  # base quantity filled, before commission
    cum_quote: Decimal  # quote quantity filled: executed x the average price
    side: Side
    binance_type: str
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    time_ms: int
    reason: str | None = None  # why Binance rejected or expired it, when it says

    def __post_init__(self) -> None:
        # PENDING_CANCEL and friends say nothing of fills: what executed does
        if self.status is OrderStatus.NEW and self.executed > 0:
            object.__setattr__(self, "status", OrderStatus.PARTIALLY_FILLED)

    @property
    def average_price(self) -> float:
        return float(self.cum_quote / self.executed) if self.executed > 0 else 0.0


def _price(value: Any) -> Decimal | None:
    d = _dec(value)
    return d if d > 0 else None


def order_state(d: dict[str, Any], id_field: str = "clientOrderId") -> OrderState:
    """A REST answer about one order (a cancel's names the order in `origClientOrderId`)."""
    status = d.get("status", "NEW")
    return OrderState(
        symbol=d["symbol"], client_order_id=d[id_field], exchange_order_id=str(d["orderId"]),
        status=STATUSES.get(status, OrderStatus.NEW), executed=_dec(d.get("executedQty")),
        cum_quote=_dec(d.get("cummulativeQuoteQty")), side=Side(d.get("side", "BUY")),
        binance_type=d.get("type", "LIMIT"), quantity=_dec(d.get("origQty")), price=_price(d.get("price")),
        stop_price=_price(d.get("stopPrice")), time_ms=int(d.get("updateTime") or d.get("transactTime") or 0),
        reason=f"Binance: {status}" if status in ("REJECTED", "EXPIRED", "EXPIRED_IN_MATCH") else None)


def report_state(ev: dict[str, Any]) -> OrderState:
    """An executionReport. A cancel's report names the cancel request in `c` and the
    order it cancelled in `C`."""
    status = ev["X"]
    reason = None
    if status in ("REJECTED", "EXPIRED", "EXPIRED_IN_MATCH"):
        reason = f"Binance: {status}" + (f" ({ev['r']})" if ev.get("r") not in (None, "", "NONE") else "")
    return OrderState(
        symbol=ev["s"], client_order_id=ev.get("C") or ev["c"], exchange_order_id=str(ev["i"]),
        status=STATUSES.get(status, OrderStatus.NEW), executed=_dec(ev.get("z")), cum_quote=_dec(ev.get("Z")),
        side=Side(ev["S"]), binance_type=ev.get("o", "LIMIT"), quantity=_dec(ev.get("q")), price=_price(ev.get("p")),
        stop_price=_price(ev.get("P")), time_ms=int(ev.get("T") or ev.get("E") or 0), reason=reason)


@dataclass(frozen=True)
class Trade:
    """One execution of one order."""

    symbol: str
    trade_id: int
    price: Decimal
    qty: Decimal  # before commission
    commission: Decimal
    commission_asset: str | None
    time_ms: int
    maker: bool

    @property
    def fill_id(self) -> str:
        """Binance's trade ids are unique per symbol: this is the fill's id everywhere (journal included)."""
        return f"{self.symbol}-{self.trade_id}"


def report_trade(ev: dict[str, Any]) -> Trade | None:
    if ev.get("x") != "TRADE":
        return None
    return Trade(ev["s"], int(ev["t"]), _dec(ev["L"]), _dec(ev["l"]), _dec(ev.get("n")), ev.get("N"),
                 int(ev.get("T") or ev.get("E") or 0), bool(ev.get("m")))


def answer_trades(answer: dict[str, Any]) -> list[Trade]:
    """The fills of a FULL create answer: taker executions at creation."""
    time_ms = int(answer.get("transactTime") or 0)
    return [Trade(answer["symbol"], int(f["tradeId"]), _dec(f["price"]), _dec(f["qty"]), _dec(f.get("commission")),
                  f.get("commissionAsset"), time_ms, False) for f in answer.get("fills", [])]


def rest_trade(d: dict[str, Any]) -> Trade:
    """One element of myTrades."""
    return Trade(d["symbol"], int(d["id"]), _dec(d["price"]), _dec(d["qty"]), _dec(d.get("commission")),
                 d.get("commissionAsset"), int(d.get("time") or 0), bool(d.get("isMaker")))


def to_fill(trade: Trade, client_order_id: str, side: Side, base: str, quote: str,
            third_asset_price: Decimal | None = None) -> tuple[Fill, bool]:
    """The trade as the portfolio counts it (fees in the quote asset), and whether its
    commission could be counted. A commission in the base asset is taken out of what
    the account got (a buy) or gave (a sell), so the position matches the balance: a buy of
    q with commission c in base is a fill of q - c whose fee is c x price, which costs the
    same q x price in quote. A commission in a third asset (BNB) is counted at
    `third_asset_price` (that asset's price in the quote), and not at all without one."""
    qty, fee, counted = trade.qty, D0, True
    if trade.commission > 0:
        if trade.commission_asset == quote:
            fee = trade.commission
        elif trade.commission_asset == base:
            fee = trade.commission * trade.price
            qty = qty - trade.commission if side is Side.BUY else qty + trade.commission
        elif third_asset_price is not None and third_asset_price > 0:
            fee = trade.commission * third_asset_price
        else:
            counted = False
    fill = Fill(client_order_id=client_order_id, symbol=trade.symbol, side=side, quantity=float(qty),
                price=float(trade.price), fee=float(fee), liquidity="maker" if trade.maker else "taker",
                time_ms=trade.time_ms, fill_id=trade.fill_id)
    return fill, counted


__all__ = ["ORDER_TYPES", "OrderState", "Trade", "answer_trades", "order_state", "report_state", "report_trade",
           "rest_trade", "to_fill"]
