"""The Binance exchange's book: every order this process knows, by client_order_id, brought
up to what Binance says and announced to the listeners.

Binance speaks of one order several times and in no fixed order: the answer to our own
create or cancel, the user stream's reports (which may repeat or arrive late), lookups and
reconciliation. Merging is monotonic, so any order of arrival ends in the same book:

* a status never goes back (INTENT/UNKNOWN < NEW < PARTIALLY_FILLED < final), and a final
  status is final: a late PARTIALLY_FILLED report does not reopen a CANCELED order;
* the filled quantity only grows;
* fills are Binance's trades, one per trade id whichever source brings it first; a fill
  after a cancel is still a fill. Fills are announced before the order update that counts
  them (the gate releases an order's reservation on that update: the position must already
  hold the fill).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from decimal import Decimal

from core.trading.binance_messages import OrderState, Trade, to_fill
from core.trading.exchange import FillListener, OrderListener
from core.trading.orders import Fill, Order, OrderStatus

log = logging.getLogger("spikeguard.binance")

D0 = Decimal(0)
RANK = {OrderStatus.INTENT: 0, OrderStatus.UNKNOWN: 0, OrderStatus.NEW: 1, OrderStatus.PARTIALLY_FILLED: 2}


def rank(status: OrderStatus) -> int:
    return RANK.get(status, 3)  # every final status


class OrderBook:
    def __init__(self, assets: Callable[[str], tuple[str, str]],
                 asset_price: Callable[[str, str], Decimal | None] = lambda asset, quote: None) -> None:
        self._assets = assets  # symbol -> (base, quote)
        self._asset_price = asset_price  # (asset, quote) -> its price now, for commissions in a third asset
        self._orders: dict[str, Order] = {}
        self._traded: dict[str, Decimal] = {}  # per order: the quantity of the trades seen, before commission
        self._fills_seen: set[str] = set()
        self._cancel_reasons: dict[str, str] = {}
        self._uncounted: set[str | None] = set()  # commission assets warned about
        self.order_listeners: list[OrderListener] = []
        self.fill_listeners: list[FillListener] = []

    # ------------------------------------------------------------------ reads
    def get(self, client_order_id: str) -> Order | None:
        return self._orders.get(client_order_id)

    def __getitem__(self, client_order_id: str) -> Order:
        return self._orders[client_order_id]

    def __contains__(self, client_order_id: str) -> bool:
        return client_order_id in self._orders

    def orders(self) -> list[Order]:
        return list(self._orders.values())  # one C-level copy: safe while the loop adds orders

    def open_orders(self) -> list[Order]:
        return [o for o in self.orders() if o.status.is_open]

    def lacks_trades(self, state: OrderState, trades: Iterable[Trade] = ()) -> bool:
        """`state` counts more executed quantity than the trades seen (with `trades`)."""
        new = sum((t.qty for t in trades if t.fill_id not in self._fills_seen), D0)
        return state.executed > self._traded.get(state.client_order_id, D0) + new

    # ------------------------------------------------------------------ writes
    def adopt(self, order: Order) -> Order:
        """Hold `order` as it is (sent now, or from the journal) without announcing it."""
        self._orders[order.client_order_id] = order
        self._traded.setdefault(order.client_order_id, Decimal(str(order.filled_quantity)))
        return order

    def record(self, order: Order) -> Order:
        """A state decided here, not by Binance (a refusal, UNKNOWN): hold and announce it."""
        self._orders[order.client_order_id] = order
        self._emit_order(order)
        return order

    def knows_fills(self, fills: Iterable[Fill]) -> None:
        """Fills already journaled: their trades are not announced again."""
        self._fills_seen.update(f.fill_id for f in fills)

    def cancelling(self, client_order_id: str, reason: str) -> None:
        """The reason the CANCELED status will carry when Binance confirms it."""
        self._cancel_reasons[client_order_id] = reason

    def apply(self, state: OrderState, trades: Iterable[Trade] = (), new_fills: list[Fill] | None = None) -> Order:
        """Merge Binance's `state` and `trades` of an order the book holds; announce what is
        new (fills first). The fills announced are added to `new_fills`."""
        cid = state.client_order_id
        current = self._orders[cid]
        base, quote = self._assets(state.symbol)
        fills = []
        for trade in trades:
            if trade.fill_id in self._fills_seen:
                continue
            self._fills_seen.add(trade.fill_id)
            self._traded[cid] = self._traded.get(cid, D0) + trade.qty
            third = None
            if trade.commission > 0 and trade.commission_asset not in (base, quote, None):
                third = self._asset_price(trade.commission_asset, quote)
            fill, counted = to_fill(trade, cid, current.side, base, quote, third)
            if not counted and trade.commission_asset not in self._uncounted:
                self._uncounted.add(trade.commission_asset)
                log.warning("commission paid in %s is not counted in the fees: no %s%s price", trade.commission_asset,
                            trade.commission_asset, quote)
            fills.append(fill)
        status = current.status
        if not status.is_final and rank(state.status) >= rank(status):
            status = state.status
        filled = max(current.filled_quantity, float(state.executed))
        newer = state.executed > 0 and float(state.executed) >= current.filled_quantity
        reason = current.reason
        if status is not current.status:
            reason = None
            if status is OrderStatus.CANCELED:
                reason = self._cancel_reasons.pop(cid, None) or "canceled on Binance"
            elif status in (OrderStatus.REJECTED, OrderStatus.EXPIRED):
                reason = state.reason
        updated = current.with_(status=status, filled_quantity=filled, reason=reason,
                                average_price=state.average_price if newer else current.average_price,
                                exchange_order_id=state.exchange_order_id or current.exchange_order_id)
        self._orders[cid] = updated
        for fill in fills:
            self._emit_fill(fill)
        if new_fills is not None:
            new_fills += fills
        if updated != current:
            self._emit_order(updated)
        return updated

    # ------------------------------------------------------------------ listeners
    def _emit_order(self, order: Order) -> None:
        for fn in list(self.order_listeners):
            try:
                fn(order)
            except Exception:  # a broken listener must not corrupt the book or starve the others
                log.exception("order listener failed on %s", order.client_order_id)

    def _emit_fill(self, fill: Fill) -> None:
        for fn in list(self.fill_listeners):
            try:
                fn(fill)
            except Exception:
                log.exception("fill listener failed on %s", fill.fill_id)


__all__ = ["OrderBook", "rank"]
