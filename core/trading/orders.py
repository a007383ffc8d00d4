"""Orders and fills: the vocabulary shared by the gate, the exchanges and the journal.

Quantities and prices are floats on the paper exchange; the Binance adapter converts to
Decimal strings under the symbol's filters at its boundary.
"""

from __future__ import annotations

import enum
import math
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from core.market.ticks import MAX_PRICE, MIN_PRICE


class Side(str, enum.Enum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderType(str, enum.Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    POST_ONLY = "POST_ONLY"  # a limit order that must not take liquidity (Binance LIMIT_MAKER)
    STOP = "STOP"  # a stop-market: becomes a market order when the trigger price trades


class OrderStatus(str, enum.Enum):
    INTENT = "INTENT"  # journaled, not yet sent
    DENIED = "DENIED"  # refused by the gate; never reached an exchange
    NEW = "NEW"  # accepted by the exchange, resting
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"  # refused by the exchange
    EXPIRED = "EXPIRED"
    UNKNOWN = "UNKNOWN"  # the exchange's answer was lost (timeout/5xx): reconcile, never resend blindly

    @property
    def is_open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED, OrderStatus.UNKNOWN)

    @property
    def is_final(self) -> bool:
        return self in (OrderStatus.DENIED, OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED,
                        OrderStatus.EXPIRED)


class Origin(str, enum.Enum):
    AGENT = "agent"  # an approved agent proposal
    OPERATOR = "operator"
    RETRY = "retry"
    RECONCILE = "reconcile"
    PROTECTION = "protection"  # the replay's counterfactual books
    POLICY = "policy"  # the de-risking policy (core.trading.derisk)


def new_client_order_id(prefix: str = "sg") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


@dataclass(frozen=True)
class Order:
    symbol: str
    side: Side
    type: OrderType
    quantity: float
    price: float | None = None  # limit price (LIMIT, POST_ONLY)
    stop_price: float | None = None  # trigger (STOP)
    reduce_only: bool = False
    origin: Origin = Origin.OPERATOR
    client_order_id: str = field(default_factory=new_client_order_id)
    proposal_id: str | None = None
    operator_confirmed: bool = False  # an operator asked for this order (flatten, manual exit)
    created_ms: int = 0
    status: OrderStatus = OrderStatus.INTENT
    filled_quantity: float = 0.0
    average_price: float = 0.0
    exchange_order_id: str | None = None
    reason: str | None = None  # why it was denied, rejected or cancelled

    def with_(self, **changes: Any) -> "Order":
        return replace(self, **changes)

    @property
    def remaining(self) -> float:
        return max(0.0, self.quantity - self.filled_quantity)

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_order_id": self.client_order_id, "symbol": self.symbol, "side": self.side.value,
            "type": self.type.value, "quantity": self.quantity, "price": self.price,
            "stop_price": self.stop_price, "reduce_only": self.reduce_only, "origin": self.origin.value,
            "proposal_id": self.proposal_id, "operator_confirmed": self.operator_confirmed,
            "created_ms": self.created_ms, "status": self.status.value, "filled_quantity": self.filled_quantity,
            "average_price": self.average_price, "exchange_order_id": self.exchange_order_id,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Order":
        return cls(
            symbol=d["symbol"], side=Side(d["side"]), type=OrderType(d["type"]), quantity=float(d["quantity"]),
            price=d.get("price"), stop_price=d.get("stop_price"), reduce_only=bool(d.get("reduce_only")),
            origin=Origin(d.get("origin", "operator")), client_order_id=d["client_order_id"],
            proposal_id=d.get("proposal_id"), operator_confirmed=bool(d.get("operator_confirmed")),
            created_ms=int(d.get("created_ms") or 0), status=OrderStatus(d.get("status", "INTENT")),
            filled_quantity=float(d.get("filled_quantity") or 0.0), average_price=float(d.get("average_price") or 0.0),
            exchange_order_id=d.get("exchange_order_id"), reason=d.get("reason"),
        )


@dataclass(frozen=True)
class Fill:
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    price: float
    fee: float  # in quote currency (USDT)
    liquidity: str  # "taker" or "maker"
    time_ms: int
    fill_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @property
    def notional(self) -> float:
        return self.quantity * self.price

    def to_dict(self) -> dict[str, Any]:
        return {"fill_id": self.fill_id, "client_order_id": self.client_order_id, "symbol": self.symbol,
                "side": self.side.value, "quantity": self.quantity, "price": self.price, "fee": self.fee,
                "liquidity": self.liquidity, "time_ms": self.time_ms}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fill":
        return cls(client_order_id=d["client_order_id"], symbol=d["symbol"], side=Side(d["side"]),
                   quantity=float(d["quantity"]), price=float(d["price"]), fee=float(d["fee"]),
                   liquidity=d["liquidity"], time_ms=int(d["time_ms"]), fill_id=d["fill_id"])


# No exchange trades a quantity below one satoshi-sized lot (Binance's smallest LOT_SIZE step is
# 1e-8), nor an order of a trillion units; an order's prices must be prices a market can print
# (core.market.ticks). Values beyond them are typos or attacks.
MIN_QUANTITY = 1e-8
MAX_QUANTITY = 1e12


def finite_positive(x: object) -> bool:
    """A real number, finite and > 0 (an int too large for a float is not finite)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        v = float(x)
    except OverflowError:
        return False
    return math.isfinite(v) and v > 0


def shape_problem(order: Order) -> str | None:
    """What is wrong with an order's own fields (before any market or account check), or None.
    The gate and every exchange ask this same question."""
    if not finite_positive(order.quantity):
        return f"quantity must be a positive finite number, got {_short(order.quantity)}"
    if not MIN_QUANTITY <= order.quantity <= MAX_QUANTITY:
        return f"quantity {order.quantity:g} is outside {MIN_QUANTITY:g}..{MAX_QUANTITY:g}"
    for name, value in (("price", order.price), ("stop_price", order.stop_price)):
        if value is None:
            continue
        if not finite_positive(value):
            return f"{name} must be a positive finite number, got {_short(value)}"
        if not MIN_PRICE <= value <= MAX_PRICE:
            return f"{name} {value:g} is outside {MIN_PRICE:g}..{MAX_PRICE:g}"
    if order.type in (OrderType.LIMIT, OrderType.POST_ONLY) and order.price is None:
        return f"a {order.type.value} order needs a price"
    if order.type is OrderType.STOP and order.stop_price is None:
        return "a STOP order needs a stop_price"
    return None


def _short(value: object) -> str:
    """repr, cut: a 400-digit quantity does not belong in a one-line message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
