"""The trading half of the fake Binance (see server.py): the signed spot REST endpoints,
the user data stream and the faults a test scripts on them.

It is an oracle, written from Binance's documented behaviour and independent of
core/trading: it applies the symbols' filters itself (-1013 with Binance's message),
balances (-2010), the timestamp against its own clock and recvWindow (-1021; signatures are
checked for presence only), request weight (X-MBX-USED-WEIGHT-1M on every answer, 429 past
the limit), and matches resting orders against `server.set_price` trades (a trade smaller
than the order fills it partially). Commission is charged as Binance does without BNB: in
the base asset on buys, in the quote asset on sells.

`accepted` lists every order it ever accepted, in order: a test asserts no duplicate.
`arrivals` holds (server time, method, path) of every REST request.

Faults (`server.faults.add(name, arg, times)`):

  http_429                    {"retry_after": s, "path": p or None}: 429 with Retry-After
  http_418                    same, 418 (an IP ban)
  http_error                  {"status": s, "path": p or None}: that status (a 5xx: Binance's -1001)
  order_5xx                   status: POST /api/v3/order fails before accepting
  order_5xx_after_accept      status: the order is accepted, the answer is a 5xx
  order_timeout_after_accept  seconds: accepted, then the answer hangs that long
  order_timeout_before_accept seconds: hangs first; the timestamp is checked again after
                              (as Binance's matching engine does) and the order lands if
                              it is still inside recvWindow
  timestamp_1021              True: the next signed request answers -1021 whatever its timestamp
  query_5xx                   status: GET /api/v3/order fails
  query_not_found             a client order id (or True: any): GET /api/v3/order says -2013
                              although the order exists
  cancel_5xx                  status: DELETE /api/v3/order fails without cancelling
  fill_on_cancel              fraction: the cancel races a trade that fills that fraction of
                              the remainder first; its executionReport comes after the
                              CANCELED one (1.0: filled, the cancel answers -2011)
  market_fill_fraction        fraction: a MARKET order fills that much (two trades), the rest
                              EXPIRES
  keepalive_fail              True: PUT /api/v3/userDataStream answers -1125
  user_stream_refuse          True: the user data stream's websocket is refused (503) once per take

`drop_user_streams()` cuts every user websocket; `muted` swallows user stream events;
`push(event)` sends one (again: Binance may repeat or reorder reports).

Its middleware records every REST request (`server.requests`, and `arrivals` here) and sets
the weight header on every answer, the market half's included.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from tests.fakes.binance.server import FakeBinance, FakeSymbol

D0 = Decimal(0)
COMMISSION = Decimal("0.001")
WEIGHT_LIMIT = 6000  # REQUEST_WEIGHT per minute, as Binance's exchangeInfo states it
SIGNED_PATHS = {"/api/v3/order", "/api/v3/order/test", "/api/v3/openOrders", "/api/v3/myTrades",
                "/api/v3/account", "/sapi/v1/account/apiRestrictions"}
WEIGHTS = {("GET", "/api/v3/order"): 4, ("GET", "/api/v3/myTrades"): 20, ("GET", "/api/v3/account"): 20,
           ("GET", "/api/v3/openOrders"): 6, ("GET", "/api/v3/exchangeInfo"): 20, ("POST", "/api/v3/userDataStream"): 2,
           ("PUT", "/api/v3/userDataStream"): 2, ("DELETE", "/api/v3/userDataStream"): 2}
NOT_FINAL = ("NEW", "PARTIALLY_FILLED")
PARAMS = web.RequestKey("params", dict)  # a request's query and form fields, merged


def amount(d: Decimal) -> str:
    return f"{d:.8f}"


def binance_error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)


@dataclass
class FakeOrder:
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    type: str
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    time_ms: int
    status: str = "NEW"
    executed: Decimal = D0
    cum_quote: Decimal = D0
    locked: Decimal = D0  # what the order holds of the account (quote for buys, base for sells)
    triggered: bool = False  # a stop whose trigger traded

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.executed

    def rest(self) -> dict[str, Any]:
        """GET /api/v3/order's answer."""
        return {"symbol": self.symbol, "orderId": self.order_id, "orderListId": -1,
                "clientOrderId": self.client_order_id, "price": amount(self.price or D0),
                "origQty": amount(self.quantity), "executedQty": amount(self.executed),
                "cummulativeQuoteQty": amount(self.cum_quote), "status": self.status,
                "timeInForce": "GTC", "type": self.type, "side": self.side,
                "stopPrice": amount(self.stop_price or D0), "icebergQty": amount(D0), "time": self.time_ms,
                "updateTime": self.time_ms, "isWorking": self.type != "STOP_LOSS" or self.triggered,
                "workingTime": self.time_ms, "origQuoteOrderQty": amount(D0),
                "selfTradePreventionMode": "EXPIRE_MAKER"}


@dataclass
class FakeTrade:
    trade_id: int
    order: FakeOrder
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    maker: bool

    def rest(self) -> dict[str, Any]:
        """One element of GET /api/v3/myTrades."""
        return {"symbol": self.order.symbol, "id": self.trade_id, "orderId": self.order.order_id, "orderListId": -1,
                "price": amount(self.price), "qty": amount(self.qty), "quoteQty": amount(self.price * self.qty),
                "commission": amount(self.commission), "commissionAsset": self.commission_asset,
                "time": self.time_ms, "isBuyer": self.order.side == "BUY", "isMaker": self.maker,
                "isBestMatch": True}


@dataclass
class UserSocket:
    listen_key: str
    ws: web.WebSocketResponse
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)


class FakeTrading:
    def __init__(self, server: "FakeBinance") -> None:
        self.server = server
        self.balances: dict[str, list[Decimal]] = {"USDT": [Decimal(100_000), D0]}  # asset -> [free, locked]
        for sym in server.symbols.values():
            self.balances.setdefault(sym.base, [Decimal(10), D0])
        self.accepted: list[FakeOrder] = []
        self.trades: list[FakeTrade] = []
        self.restrictions: dict[str, Any] = {
            "ipRestrict": False, "createTime": 1_700_000_000_000, "enableReading": True,
            "enableSpotAndMarginTrading": True, "enableWithdrawals": False, "enableInternalTransfer": False,
            "enableMargin": False, "enableFutures": False, "permitsUniversalTransfer": False,
            "enableVanillaOptions": False, "enablePortfolioMarginTrading": False}
        self.uid = 354_937_868  # the account's id (/api/v3/account): the live confirmation phrase names it
        self.listen_keys: set[str] = set()
        self.sockets: list[UserSocket] = []
        self.user_connections = 0  # user websockets ever opened
        self.muted = False  # the user stream stays connected but says nothing
        self.pushed: list[dict[str, Any]] = []  # every user stream event, in order
        self.swallowed: list[dict[str, Any]] = []
        self.arrivals: list[tuple[int, str, str]] = []
        self._weight: dict[int, int] = {}  # server minute -> used weight
        self._ids = itertools.count(1)
        self._trade_ids = itertools.count(1)
        self._changed: asyncio.Event | None = None
        server.price_listeners.append(self._on_trade)

    # ------------------------------------------------------------------ what tests use
    def order(self, client_order_id: str) -> FakeOrder:
        """The latest accepted order with this client id."""
        return next(o for o in reversed(self.accepted) if o.client_order_id == client_order_id)

    def open_orders(self) -> list[FakeOrder]:
        return [o for o in self.accepted if o.status in NOT_FINAL]

    def free(self, asset: str) -> Decimal:
        return self.balances.get(asset, [D0, D0])[0]

    def total(self, asset: str) -> Decimal:
        free, locked = self.balances.get(asset, [D0, D0])
        return free + locked

    def reset_weight(self) -> None:
        """A new minute for the weight budget (a benchmark's trials, each a start of its own)."""
        self._weight.clear()

    def add_weight(self, weight: int) -> None:
        """Requests from elsewhere on the same IP: they count toward the minute's weight."""
        minute = self.server.now_ms() // 60_000
        self._weight[minute] = self._weight.get(minute, 0) + weight

    async def until(self, predicate: Any, what: str, timeout: float = 30.0) -> None:
        """Wait until predicate() holds (re-checked at every change of this fake's state)."""
        async def watch() -> None:
            while not predicate():
                self._signal().clear()
                await self._signal().wait()
        try:
            await asyncio.wait_for(watch(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"the fake Binance never saw: {what}") from None

    def drop_user_streams(self, expire_keys: bool = False) -> None:
        """Cut every user websocket now (events from here on reach no one until a client
        reconnects); with expire_keys, their listenKeys are gone too."""
        dropped, self.sockets = self.sockets, []
        for sock in dropped:
            sock.queue.put_nowait(None)
        if expire_keys:
            self.listen_keys.clear()
        self._notify()

    # ------------------------------------------------------------------ signalling
    def _signal(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # ------------------------------------------------------------------ the front door
    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        if path.startswith("/ws/") and path[4:] in self.listen_keys:
            return await self._user_socket(request, path[4:])
        if not (path.startswith("/api/") or path.startswith("/sapi/")):
            return await handler(request)
        self.server.requests.append((request.method, path))
        self.arrivals.append((self.server.now_ms(), request.method, path))
        self._notify()
        response = await self._rest(request, handler)
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(self._used())
        return response

    async def _rest(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        for status, name in ((418, "http_418"), (429, "http_429")):
            fault = self._take_for_path(name, path)
            if fault is not None:
                retry = str(fault.get("retry_after", 1))
                return binance_error(status, -1003, "Way too many requests; IP banned." if status == 418 else
                                     "Too many requests; current limit of IP request weight is "
                                     f"{WEIGHT_LIMIT} per 1 MINUTE.", {"Retry-After": retry})
        fault = self._take_for_path("http_error", path)
        if fault is not None:
            return binance_error(fault["status"], -1001, "Internal error; unable to process your request.")
        self.add_weight(WEIGHTS.get((request.method, path), 1))
        if self._used() > WEIGHT_LIMIT:
            retry = 60 - self.server.now_ms() // 1000 % 60
            return binance_error(429, -1003, f"Too many requests; current limit of IP request weight is "
                                             f"{WEIGHT_LIMIT} per 1 MINUTE.", {"Retry-After": str(retry)})
        params = dict(request.query)
        if request.method in ("POST", "PUT", "DELETE"):
            params.update(await request.post())
        request[PARAMS] = params
        if path.startswith("/api/v3/userDataStream") or path in SIGNED_PATHS:
            if not request.headers.get("X-MBX-APIKEY"):
                return binance_error(401, -2014, "API-key format invalid.")
        if path in SIGNED_PATHS:
            if not params.get("signature"):
                return binance_error(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, "
                                                 "or malformed.")
            late = self._timestamp_problem(params)
            if late:
                return late
        return await handler(request)

    def _take_for_path(self, name: str, path: str) -> dict[str, Any] | None:
        queue = self.server.faults.pending.get(name)
        if not queue or queue[0].get("path") not in (None, path):
            return None
        return self.server.faults.take(name)

    def _take_for_order(self, name: str, order: FakeOrder) -> bool:
        queue = self.server.faults.pending.get(name)
        if not queue or queue[0] not in (True, order.client_order_id):
            return False
        return self.server.faults.take(name) is not None

    def _used(self) -> int:
        return self._weight.get(self.server.now_ms() // 60_000, 0)

    def _timestamp_problem(self, params: dict[str, str]) -> web.Response | None:
        try:
            ts = int(params["timestamp"])
            window = int(params.get("recvWindow", 5000))
        except (KeyError, ValueError):
            return binance_error(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, "
                                             "or malformed.")
        now = self.server.now_ms()
        if self.server.faults.take("timestamp_1021"):
            return binance_error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        if ts > now + 1000:
            return binance_error(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - ts > window:
            return binance_error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return None

    # ------------------------------------------------------------------ orders
    async def create(self, request: web.Request) -> web.Response:
        params = request[PARAMS]
        faults = self.server.faults
        status = faults.take("order_5xx")
        if status:
            return binance_error(status, -1001, "Internal error; unable to process your request. Please try again.")
        hang = faults.take("order_timeout_before_accept")
        if hang:
            await asyncio.sleep(hang)
            late = self._timestamp_problem(params)
            if late:
                return late
        order = self._new_order(params)
        if isinstance(order, web.Response):
            return order
        self._accept(order)
        status = faults.take("order_5xx_after_accept")
        if status:
            return binance_error(status, -1001, "Internal error; unable to process your request. Please try again.")
        hang = faults.take("order_timeout_after_accept")
        if hang:
            await asyncio.sleep(hang)
        body = {"symbol": order.symbol, "orderId": order.order_id, "orderListId": -1,
                "clientOrderId": order.client_order_id, "transactTime": self.server.now_ms()}
        kind = params.get("newOrderRespType", "FULL" if order.type == "MARKET" else "ACK")
        if kind in ("RESULT", "FULL"):
            body.update({k: v for k, v in order.rest().items() if k not in ("time", "updateTime", "isWorking")})
        if kind == "FULL":
            body["fills"] = [{"price": amount(t.price), "qty": amount(t.qty), "commission": amount(t.commission),
                              "commissionAsset": t.commission_asset, "tradeId": t.trade_id}
                             for t in self.trades if t.order is order]
        return web.json_response(body)

    async def test_order(self, request: web.Request) -> web.Response:
        order = self._new_order(request[PARAMS], check_funds=False)
        return order if isinstance(order, web.Response) else web.json_response({})

    def _new_order(self, p: dict[str, str], check_funds: bool = True) -> FakeOrder | web.Response:
        """The order a create asks for, or Binance's refusal of it."""
        sym = self.server.symbols.get(p.get("symbol", ""))
        if sym is None:
            return binance_error(400, -1121, "Invalid symbol.")
        side, kind = p.get("side"), p.get("type")
        if side not in ("BUY", "SELL") or kind not in ("MARKET", "LIMIT", "LIMIT_MAKER", "STOP_LOSS"):
            return binance_error(400, -1116, "Invalid orderType.")
        cid = p.get("newClientOrderId") or "fake-" + secrets.token_hex(8)
        if any(o.client_order_id == cid for o in self.open_orders()):
            return binance_error(400, -2010, "Duplicate order sent.")
        try:
            qty = Decimal(p["quantity"])
            price = Decimal(p["price"]) if kind in ("LIMIT", "LIMIT_MAKER") else None
            stop = Decimal(p["stopPrice"]) if kind == "STOP_LOSS" else None
        except (KeyError, ArithmeticError):
            return binance_error(400, -1102, "Mandatory parameter was not sent, was empty/null, or malformed.")
        if kind == "LIMIT" and p.get("timeInForce") not in ("GTC", "IOC", "FOK"):
            return binance_error(400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, "
                                             "or malformed.")
        failed = _filter_failure(sym, side, qty, price, stop)
        if failed:
            return binance_error(400, -1013, f"Filter failure: {failed}")
        last = sym.decimal_price
        if kind == "LIMIT_MAKER" and _crosses(side, price, last):  # type: ignore[arg-type]
            return binance_error(400, -2010, "Order would immediately match and take.")
        if kind == "STOP_LOSS" and (last >= stop if side == "BUY" else last <= stop):  # type: ignore[operator]
            return binance_error(400, -2010, "Stop price would trigger immediately.")
        order = FakeOrder(next(self._ids), cid, sym.symbol, side, kind, qty, price, stop, self.server.now_ms())
        if check_funds:
            need = self._lock_for(order, sym, last)
            asset = sym.quote if side == "BUY" else sym.base
            if need > self.free(asset):
                return binance_error(400, -2010, "Account has insufficient balance for requested action.")
        return order

    @staticmethod
    def _lock_for(order: FakeOrder, sym: "FakeSymbol", last: Decimal) -> Decimal:
        if order.side == "SELL":
            return order.quantity
        if order.type == "STOP_LOSS":
            return D0  # funds are checked when it triggers
        return order.quantity * (order.price if order.price is not None else last)

    def _accept(self, order: FakeOrder) -> None:
        sym = self.server.symbols[order.symbol]
        order.locked = self._lock_for(order, sym, sym.decimal_price)
        self._move(sym.quote if order.side == "BUY" else sym.base, -order.locked, order.locked)
        self.accepted.append(order)
        self._report(order, "NEW")
        last = sym.decimal_price
        if order.type == "MARKET":
            fraction = self.server.faults.take("market_fill_fraction")
            if fraction is None:
                self._fill(order, order.quantity, last, maker=False)
            else:
                part = _on_step(sym, order.quantity * Decimal(str(fraction)))
                first = _on_step(sym, part / 2)
                self._fill(order, first, last, maker=False)
                self._fill(order, part - first, last * Decimal("1.001"), maker=False)
                self._finish(order, "EXPIRED")
        elif order.type == "LIMIT" and _crosses(order.side, order.price, last):  # type: ignore[arg-type]
            self._fill(order, order.quantity, last, maker=False)
        self._account(sym)

    async def query(self, request: web.Request) -> web.Response:
        p = request[PARAMS]
        status = self.server.faults.take("query_5xx")
        if status:
            return binance_error(status, -1001, "Internal error; unable to process your request. Please try again.")
        order = self._find(p)
        if order is None or self._take_for_order("query_not_found", order):
            return binance_error(400, -2013, "Order does not exist.")
        return web.json_response(order.rest())

    async def cancel(self, request: web.Request) -> web.Response:
        p = request[PARAMS]
        status = self.server.faults.take("cancel_5xx")
        if status:
            return binance_error(status, -1001, "Internal error; unable to process your request. Please try again.")
        order = self._find(p)
        if order is None or order.status not in NOT_FINAL:
            return binance_error(400, -2011, "Unknown order sent.")
        sym = self.server.symbols[order.symbol]
        late: list[dict[str, Any]] = []
        fraction = self.server.faults.take("fill_on_cancel")
        if fraction is not None:
            qty = order.remaining if fraction >= 1 else _on_step(sym, order.remaining * Decimal(str(fraction)))
            price = order.price if order.price is not None else sym.decimal_price
            self._fill(order, qty, price, maker=True, defer=late)
        cancel_id = p.get("newClientOrderId") or "cancel-" + secrets.token_hex(6)
        if order.status in NOT_FINAL:
            self._finish(order, "CANCELED", cancel_id=cancel_id)
        for event in late:  # the racing trade's report arrives after the cancel's
            self.push(event)
        self._account(sym)
        if order.status == "FILLED":
            return binance_error(400, -2011, "Unknown order sent.")
        body = {k: v for k, v in order.rest().items() if k not in ("time", "updateTime", "isWorking", "stopPrice")}
        body.update({"origClientOrderId": order.client_order_id, "clientOrderId": cancel_id,
                     "transactTime": self.server.now_ms()})
        return web.json_response(body)

    def _find(self, p: dict[str, str]) -> FakeOrder | None:
        if p.get("orderId"):
            return next((o for o in self.accepted if str(o.order_id) == p["orderId"]), None)
        cid = p.get("origClientOrderId")
        return next((o for o in reversed(self.accepted) if o.client_order_id == cid), None)

    async def open_orders_route(self, request: web.Request) -> web.Response:
        symbol = request[PARAMS].get("symbol")
        return web.json_response([o.rest() for o in self.open_orders() if symbol in (None, o.symbol)])

    async def my_trades(self, request: web.Request) -> web.Response:
        p = request[PARAMS]
        if "symbol" not in p:
            return binance_error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        trades = [t for t in self.trades if t.order.symbol == p["symbol"]
                  and ("orderId" not in p or str(t.order.order_id) == p["orderId"])]
        return web.json_response([t.rest() for t in trades])

    async def account(self, request: web.Request) -> web.Response:
        return web.json_response({
            "uid": self.uid, "makerCommission": 10, "takerCommission": 10, "canTrade": True, "canWithdraw": False,
            "canDeposit": True, "accountType": "SPOT", "updateTime": self.server.now_ms(), "permissions": ["SPOT"],
            "balances": [{"asset": a, "free": amount(f), "locked": amount(lk)} for a, (f, lk) in self.balances.items()]})

    async def api_restrictions(self, request: web.Request) -> web.Response:
        return web.json_response(self.restrictions)

    # ------------------------------------------------------------------ matching
    def _on_trade(self, symbol: str, price: float, qty: float) -> None:
        """A market trade: triggered stops take at its price, resting limits it went
        through fill at their limit out of its quantity, in time order."""
        sym = self.server.symbols[symbol]
        px, budget = Decimal(str(price)), Decimal(str(qty))
        for order in [o for o in self.open_orders() if o.symbol == symbol]:
            if order.type == "STOP_LOSS":
                if order.triggered or (px <= order.stop_price if order.side == "SELL" else px >= order.stop_price):  # type: ignore[operator]
                    order.triggered = True
                    if order.side == "BUY" and order.remaining * px > self.free(sym.quote):
                        self._finish(order, "EXPIRED")
                        continue
                    self._fill(order, order.remaining, px, maker=False)
            elif budget > 0 and _crosses(order.side, order.price, px, through=True):  # type: ignore[arg-type]
                take = min(order.remaining, budget)
                budget -= take
                self._fill(order, take, order.price, maker=True)  # type: ignore[arg-type]
        self._account(sym)

    def _fill(self, order: FakeOrder, qty: Decimal, price: Decimal, maker: bool,
              defer: list[dict[str, Any]] | None = None) -> FakeTrade:
        """One trade of `order`; its executionReport is pushed now, or kept in `defer`."""
        sym = self.server.symbols[order.symbol]
        quote = qty * price
        if order.side == "BUY":
            fee, fee_asset = qty * COMMISSION, sym.base
            spent_lock = min(order.locked, qty * order.price) if order.price is not None else min(order.locked, quote)
            order.locked -= spent_lock
            self._move(sym.quote, spent_lock - quote, -spent_lock)
            self._move(sym.base, qty - fee, D0)
        else:
            fee, fee_asset = quote * COMMISSION, sym.quote
            order.locked -= qty
            self._move(sym.base, D0, -qty)
            self._move(sym.quote, quote - fee, D0)
        order.executed += qty
        order.cum_quote += quote
        order.status = "FILLED" if order.remaining <= 0 else "PARTIALLY_FILLED"
        if order.status == "FILLED":
            self._release(order)
        trade = FakeTrade(next(self._trade_ids), order, price, qty, fee, fee_asset, self.server.now_ms(), maker)
        self.trades.append(trade)
        report = self._execution_report(order, "TRADE", trade)
        if defer is None:
            self.push(report)
        else:
            defer.append(report)
        self._notify()
        return trade

    def _finish(self, order: FakeOrder, status: str, cancel_id: str = "") -> None:
        order.status = status
        self._release(order)
        self._report(order, status, cancel_id=cancel_id)

    def _release(self, order: FakeOrder) -> None:
        sym = self.server.symbols[order.symbol]
        self._move(sym.quote if order.side == "BUY" else sym.base, order.locked, -order.locked)
        order.locked = D0

    def _move(self, asset: str, free: Decimal, locked: Decimal) -> None:
        balance = self.balances.setdefault(asset, [D0, D0])
        balance[0] += free
        balance[1] += locked

    # ------------------------------------------------------------------ the user data stream
    async def new_listen_key(self, request: web.Request) -> web.Response:
        if not self.listen_keys:
            self.listen_keys.add(secrets.token_hex(32))
        return web.json_response({"listenKey": next(iter(self.listen_keys))})

    async def keepalive(self, request: web.Request) -> web.Response:
        if self.server.faults.take("keepalive_fail") or request[PARAMS].get("listenKey") not in self.listen_keys:
            return binance_error(400, -1125, "This listenKey does not exist.")
        return web.json_response({})

    async def close_listen_key(self, request: web.Request) -> web.Response:
        key = request[PARAMS].get("listenKey")
        self.listen_keys.discard(key)  # type: ignore[arg-type]
        for sock in [s for s in self.sockets if s.listen_key == key]:
            self.sockets.remove(sock)
            sock.queue.put_nowait(None)
        return web.json_response({})

    async def _user_socket(self, request: web.Request, listen_key: str) -> web.StreamResponse:
        if self.server.faults.take("user_stream_refuse"):
            return web.Response(status=503, text="refused")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sock = UserSocket(listen_key, ws)
        self.sockets.append(sock)
        self.user_connections += 1
        self._notify()
        writer = asyncio.create_task(self._write(sock))
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            writer.cancel()
            if sock in self.sockets:
                self.sockets.remove(sock)
            self._notify()
        return ws

    @staticmethod
    async def _write(sock: UserSocket) -> None:
        while (event := await sock.queue.get()) is not None:
            await sock.ws.send_str(json.dumps(event))
        await sock.ws.close()

    def push(self, event: dict[str, Any]) -> None:
        """Send a user stream event to every connected client (a test may send one again)."""
        self.pushed.append(event)
        if self.muted:
            self.swallowed.append(event)
            return
        for sock in self.sockets:
            sock.queue.put_nowait(event)

    def _report(self, order: FakeOrder, execution: str, cancel_id: str = "") -> None:
        self.push(self._execution_report(order, execution, cancel_id=cancel_id))

    def _execution_report(self, order: FakeOrder, execution: str, trade: FakeTrade | None = None,
                          cancel_id: str = "") -> dict[str, Any]:
        """An executionReport as of now. A cancel's names the cancel request in `c` and the
        order in `C`, as Binance's does."""
        now = self.server.now_ms()
        return {
            "e": "executionReport", "E": now, "s": order.symbol, "c": cancel_id or order.client_order_id,
            "S": order.side, "o": order.type, "f": "GTC", "q": amount(order.quantity),
            "p": amount(order.price or D0), "P": amount(order.stop_price or D0), "F": amount(D0), "g": -1,
            "C": order.client_order_id if cancel_id else "", "x": execution, "X": order.status,
            "r": "NONE", "i": order.order_id, "l": amount(trade.qty if trade else D0),
            "z": amount(order.executed), "L": amount(trade.price if trade else D0),
            "n": amount(trade.commission if trade else D0), "N": trade.commission_asset if trade else None,
            "T": trade.time_ms if trade else now, "t": trade.trade_id if trade else -1, "I": 0,
            "w": order.status == "NEW", "m": trade.maker if trade else False, "M": False, "O": order.time_ms,
            "Z": amount(order.cum_quote), "Y": amount(trade.price * trade.qty if trade else D0),
            "Q": amount(D0)}

    def _account(self, sym: "FakeSymbol") -> None:
        now = self.server.now_ms()
        self.push({"e": "outboundAccountPosition", "E": now, "u": now,
                    "B": [{"a": a, "f": amount(self.balances[a][0]), "l": amount(self.balances[a][1])}
                          for a in (sym.base, sym.quote) if a in self.balances]})


# ---------------------------------------------------------------------- Binance's rules
def _crosses(side: str, limit: Decimal, price: Decimal, through: bool = False) -> bool:
    """A buy limit at or above the price (a sell at or below) takes it; a resting order is
    filled by a trade at or through its limit."""
    if through:
        return price <= limit if side == "BUY" else price >= limit
    return limit >= price if side == "BUY" else limit <= price


def _on_step(sym: "FakeSymbol", qty: Decimal) -> Decimal:
    step = Decimal(sym.step_size)
    return (qty // step) * step


def _filter_failure(sym: "FakeSymbol", side: str, qty: Decimal, price: Decimal | None,
                    stop: Decimal | None) -> str | None:
    """The name of the first filter the order fails, as Binance's -1013 says it."""
    f = {x["filterType"]: x for x in sym.filters()}
    lot = f["LOT_SIZE"]
    lo, hi, step = Decimal(lot["minQty"]), Decimal(lot["maxQty"]), Decimal(lot["stepSize"])
    if qty < lo or qty > hi or (qty - lo) % step != 0:
        return "LOT_SIZE"
    pf = f["PRICE_FILTER"]
    lo, hi, tick = Decimal(pf["minPrice"]), Decimal(pf["maxPrice"]), Decimal(pf["tickSize"])
    for p in (price, stop):
        if p is not None and (p < lo or p > hi or (p - lo) % tick != 0):
            return "PRICE_FILTER"
    avg = sym.decimal_price  # the fake's average price is its last
    basis = price if price is not None else stop if stop is not None else avg
    if qty * basis < Decimal(f["NOTIONAL"]["minNotional"]):
        return "NOTIONAL"
    if price is not None:
        band = f["PERCENT_PRICE_BY_SIDE"]
        prefix = "bid" if side == "BUY" else "ask"
        if price > avg * Decimal(band[prefix + "MultiplierUp"]) or price < avg * Decimal(band[prefix + "MultiplierDown"]):
            return "PERCENT_PRICE_BY_SIDE"
    return None


def install(server: "FakeBinance") -> FakeTrading:
    trading = FakeTrading(server)
    server.app.middlewares.append(trading.middleware)
    routes = server.app.router
    routes.add_post("/api/v3/order", trading.create)
    routes.add_get("/api/v3/order", trading.query)
    routes.add_delete("/api/v3/order", trading.cancel)
    routes.add_post("/api/v3/order/test", trading.test_order)
    routes.add_get("/api/v3/openOrders", trading.open_orders_route)
    routes.add_get("/api/v3/myTrades", trading.my_trades)
    routes.add_get("/api/v3/account", trading.account)
    routes.add_get("/sapi/v1/account/apiRestrictions", trading.api_restrictions)
    routes.add_post("/api/v3/userDataStream", trading.new_listen_key)
    routes.add_put("/api/v3/userDataStream", trading.keepalive)
    routes.add_delete("/api/v3/userDataStream", trading.close_listen_key)
    return trading


__all__ = ["FakeOrder", "FakeTrade", "FakeTrading", "install"]
