"""BinanceExchange: spot execution on Binance, the testnet or live, behind the Exchange
interface (core.trading.exchange; the paper exchange is the reference for its semantics).

Life cycle: `await start()` (the client, the clock, the symbols' filters, the user data
stream), `await reconcile(journal_orders, journal_fills)` before any order (place() refuses
orders until it has run), `await close()`.

An order's client_order_id is Binance's newClientOrderId (the gate journals it before
sending), and each order is sent once:

* refused here, never sent, when its shape or the symbol's filters (binance_filters) fail,
  or when the REST budget (binance_rest) says an entry would have to wait;
* a 5xx or a timeout leaves it UNKNOWN (announced at once); it is then looked up by
  origClientOrderId with bounded, backed-off queries and never resent. "Not found" is final
  only once confirmed NOT_FOUND_CONFIRMATIONS times, the last after the request's recvWindow
  (and the clock tolerance) has run out, when Binance can no longer accept it.

Updates come from the user data stream (binance_stream); the answers to our own REST calls
(create, cancel, lookups, reconcile) go into the same book (binance_book, which merges them
monotonically). A state that counts more executed quantity than the trades seen fetches the
missing trades (myTrades) before it is applied, so no fill is lost and each precedes the
status that counts it.

Listeners run on the engine's loop. `cancel_now` (the breaker's halt, maybe on another
thread) only schedules the cancels; `last_halt` is their verification. Alarms
(binance_alarms) tell the lead what the breaker should make of a ban, a skewed clock, a
halt that did not land or a lost user stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal

from core import redact
from core.binance.client import open_client
from core.market.state import MarketState
from core.market.symbols import split_symbol
from core.settings import BinanceEndpoints, BinanceSettings
from core.trading.binance_alarms import Alarm, AlarmListener
from core.trading.binance_book import OrderBook
from core.trading.binance_filters import FilterRefusal, SymbolRules, shape
from core.trading.binance_messages import (
    ORDER_TYPES, OrderState, Trade, answer_trades, order_state, report_state, report_trade, rest_trade,
)
from core.trading.binance_reports import HaltReport, KeyPermissions, ReconcileReport
from core.trading.binance_rest import BinanceRest, Refused, RestError, Stopped, Unknown, now_ms
from core.trading.binance_stream import UserStream
from core.trading.exchange import ExchangeError, FillListener, OrderListener
from core.trading.orders import Fill, Order, OrderStatus, OrderType, Origin, Side, shape_problem

log = logging.getLogger("spikeguard.binance")

INTENT, NEW, UNKNOWN, REJECTED = OrderStatus.INTENT, OrderStatus.NEW, OrderStatus.UNKNOWN, OrderStatus.REJECTED
NO_SUCH_ORDER = -2013  # a lookup: "Order does not exist."
UNKNOWN_ORDER = -2011  # a cancel: "Unknown order sent." (already final, or never there)
# Binance's order history is eventually consistent: an order it has just accepted can answer
# "does not exist" for a moment. Only this many answers in a row, the last one after the
# request's recvWindow has run out, prove it never landed.
NOT_FOUND_CONFIRMATIONS = 3
LOOKUP_ATTEMPTS = 8  # lookups of an order whose answer was lost (errors count too)
LOOKUP_BACKOFF_S = 0.25  # before the second lookup; doubles up to LOOKUP_BACKOFF_MAX_S
LOOKUP_BACKOFF_MAX_S = 2.0
CLOCK_CHECK_SECONDS = 60.0  # the clock is re-measured this often (a persistent skew is two in a row)
# request weights of the calls made here (Binance's documentation)
WEIGHT = {"create": 1, "cancel": 1, "query": 4, "trades": 5, "open orders": 80, "account": 20,
          "exchange info": 20, "api restrictions": 1}


class BinanceExchange:
    answers_synchronously = False
    watched_symbols: frozenset[str] = frozenset()  # Binance matches the orders: no ticks needed

    def __init__(self, settings: BinanceSettings, environment: Literal["testnet", "live"], api_key: str,
                 api_secret: str, market: MarketState | None = None, endpoints: BinanceEndpoints | None = None,
                 book: Any = None) -> None:
        if environment not in ("testnet", "live"):
            raise ValueError(f"environment must be testnet or live, got {environment!r}")
        self.name = environment
        self.settings = settings
        self.endpoints = endpoints or getattr(settings, environment)
        self.market = market  # the feed's last prices stand in for Binance's average in the filters
        self.book = book  # the feed's bookTicker and depth (BinanceFeed.quotes/.book), for quotes and depth
        redact.register((api_key, api_secret))
        self._credentials: tuple[str, str] | None = (api_key, api_secret)  # until start() hands them over
        self._book = OrderBook(self._assets, self._asset_price)
        self._reported: set[str] = set()  # orders the user stream has spoken of
        self._in_flight: set[str] = set()  # creates awaiting Binance's answer (or their lookups)
        self._balances: dict[str, dict[str, float]] = {}
        self._rules: dict[str, SymbolRules] = {}
        self._alarm_listeners: list[AlarmListener] = []
        self._rest: BinanceRest | None = None
        self._stream: UserStream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.reconciled = False
        self.last_halt: Any = None  # the latest halt's verification: a Task (a concurrent Future off the loop)

    def __repr__(self) -> str:
        return f"BinanceExchange({self.name}, {self.endpoints.api_url})"

    # ------------------------------------------------------------------ listeners
    def add_listeners(self, on_order: OrderListener, on_fill: FillListener) -> None:
        self._book.order_listeners.append(on_order)
        self._book.fill_listeners.append(on_fill)

    def add_alarm_listener(self, on_alarm: AlarmListener) -> None:
        """Receive every Alarm (binance_alarms says what each one asks for)."""
        self._alarm_listeners.append(on_alarm)

    def _alarm(self, kind: Alarm, detail: str) -> None:
        detail = redact.mask(detail)
        log.warning("Binance %s alarm %s: %s", self.name, kind.value, detail)
        for fn in list(self._alarm_listeners):
            try:
                fn(kind, detail)
            except Exception:
                log.exception("alarm listener failed on %s", kind.value)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Connect: the client (it pings and reads Binance's time), the clock offset, the
        symbols' filters and the weight limit, the user data stream."""
        if self._credentials is None:
            raise ExchangeError("BinanceExchange.start() runs once")
        key, secret = self._credentials
        self._credentials = None
        self._loop = asyncio.get_running_loop()
        try:
            client = await open_client(self.settings, self.endpoints, key, secret)
        except Exception as exc:
            raise ExchangeError(redact.mask(f"cannot reach Binance {self.name} at {self.endpoints.api_url}: "
                                            f"{type(exc).__name__} {exc}")) from None
        self._rest = rest = BinanceRest(client, self.settings, self._alarm)
        try:
            await rest.sync_clock()
            info = await rest.call("exchange info", WEIGHT["exchange info"], client.get_exchange_info, wait=True,
                                   signed=False)
            rest.set_limits(info)
            self._rules = _symbol_rules(info)
            self._stream = UserStream(rest, self.endpoints.stream_url, self.settings, self._on_stream_event,
                                      self._on_stream_lost, self._on_stream_reconnected)
            await self._stream.start()
        except RestError as exc:
            await self.close()
            raise ExchangeError(f"Binance {self.name} did not start: {exc}") from None
        except BaseException:
            await self.close()
            raise
        self._spawn(self._clock_checks())
        log.info("Binance %s connected: %d symbols, weight limit %d/min", self.name, len(self._rules),
                 rest.weight_limit)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        if self._rest is not None:
            self._rest.close()
            await self._rest.client.close_connection()
            self._rest = None

    async def _clock_checks(self) -> None:
        while True:
            await asyncio.sleep(CLOCK_CHECK_SECONDS)
            await self.check_clock()

    async def check_clock(self) -> None:
        """Re-measure the offset to Binance's clock (CLOCK_SKEW after two skewed syncs in a row)."""
        try:
            await self.rest.sync_clock()
        except RestError as exc:
            log.warning("clock check failed: %s", exc)

    @property
    def rest(self) -> BinanceRest:
        if self._rest is None:
            raise ExchangeError(f"the Binance {self.name} exchange is not started")
        return self._rest

    @property
    def client(self) -> Any:
        """python-binance's AsyncClient (started)."""
        return self.rest.client

    @property
    def user_stream(self) -> UserStream | None:
        return self._stream

    # ------------------------------------------------------------------ reads
    def get_order(self, client_order_id: str) -> Order | None:
        return self._book.get(client_order_id)

    def open_orders(self) -> list[Order]:
        return self._book.open_orders()

    def balances(self) -> dict[str, dict[str, float]]:
        return {a: dict(b) for a, b in list(self._balances.items()) if b["free"] + b["locked"] > 0}

    def quotes(self, symbol: str) -> tuple[float, float] | None:
        """The feed's best bid and ask (None without a feed, or while it reconnects)."""
        q = self.book.quotes(symbol) if self.book is not None else None
        return (q.bid, q.ask) if q is not None else None

    def depth_usd(self, symbol: str) -> float:
        """USD resting in the feed's depth levels, on the thinner side (0 when unknown)."""
        depth = self.book.book(symbol) if self.book is not None else None
        if depth is None:
            return 0.0
        return min(sum(p * q for p, q in depth.bids), sum(p * q for p, q in depth.asks))

    def on_tick(self, tick: Any) -> None:
        """Nothing to do: Binance works the orders."""

    def restore(self, balances: Mapping[str, Any], open_orders: list[Order]) -> list[Order]:
        """The book after a restart is Binance's (reconcile); this only adopts the orders the
        gate keeps that the book does not hold yet, and returns those Binance no longer holds
        open (reconcile has announced them). Binance's balances are the truth: `balances`
        is not used."""
        gone = []
        for order in open_orders:
            known = self._book.get(order.client_order_id)
            if known is None:
                self._book.adopt(order)
            elif not known.status.is_open:
                gone.append(known)
        return gone

    def _asset_price(self, asset: str, quote: str) -> Decimal | None:
        """`asset`'s last price in `quote` from the feed (a commission paid in BNB)."""
        w = self.market.symbols.get(f"{asset}{quote}") if self.market is not None else None
        return Decimal(str(w.last_price)) if w is not None and w.ticks else None

    def _assets(self, symbol: str) -> tuple[str, str]:
        rules = self._rules.get(symbol)
        if rules is not None and rules.base and rules.quote:
            return rules.base, rules.quote
        return split_symbol(symbol) or (symbol, "")

    # ------------------------------------------------------------------ placing
    async def place(self, order: Order) -> Order:
        cid = order.client_order_id
        known = self._book.get(cid)
        if known is not None and known.status is not REJECTED:
            # never a second order under this id; a rejected one never reached Binance's book
            return order.with_(status=REJECTED, reason=f"duplicate client_order_id {cid}")
        problem = self._refusal(order)
        if problem is None:
            try:
                shaped = shape(order, self._rules[order.symbol], self._reference(order.symbol))
            except FilterRefusal as exc:
                problem = f"Binance filters: {exc}"
        if problem is not None:
            return self._book.record(order.with_(status=REJECTED, reason=problem))
        sent = self._book.adopt(order.with_(
            quantity=float(shaped.quantity), price=None if shaped.price is None else float(shaped.price),
            stop_price=None if shaped.stop_price is None else float(shaped.stop_price),
            created_ms=order.created_ms or now_ms(), status=INTENT, reason=None))
        params = {"symbol": order.symbol, "side": order.side.value, "newClientOrderId": cid,
                  "newOrderRespType": "FULL", **shaped.params()}
        self._in_flight.add(cid)  # a reconcile meanwhile must not judge it
        try:
            return await self._send(sent, params)
        finally:
            self._in_flight.discard(cid)

    def place_now(self, order: Order) -> Order:
        """Not here: Binance answers over the network (answers_synchronously is False)."""
        raise ExchangeError("BinanceExchange answers asynchronously: the gate awaits place()", order)

    def _refusal(self, order: Order) -> str | None:
        if self._rest is None:
            return f"the Binance {self.name} exchange is not started"
        if not self.reconciled:
            return "not reconciled with Binance yet: orders wait for the start-up reconciliation"
        problem = shape_problem(order)
        if problem:
            return problem
        if order.reduce_only and order.side is Side.BUY:
            return "reduce-only BUY would not reduce anything (spot: there are no shorts)"
        if order.symbol not in self._rules:
            return f"{order.symbol} is not listed on Binance {self.name}"
        return None

    def _reference(self, symbol: str) -> float | None:
        w = self.market.symbols.get(symbol) if self.market is not None else None
        return w.last_price if w is not None and w.ticks else None

    async def _send(self, sent: Order, params: dict[str, str]) -> Order:
        cid = sent.client_order_id
        sent_ms = now_ms()
        client = self.client
        try:
            # exits may wait out a back-off; an entry that would have to wait is refused
            answer = await self.rest.call("create order", WEIGHT["create"], lambda: client.create_order(**params),
                                          wait=sent.reduce_only)
        except Refused as exc:
            return self._book.record(sent.with_(status=REJECTED, reason=f"Binance refused it: {exc}"))
        except Stopped as exc:
            return self._book.record(sent.with_(status=REJECTED, reason=str(exc)))
        except Unknown as exc:
            if self._book[cid].status is not INTENT:
                return self._book[cid]  # the user stream has already told
            self._book.record(sent.with_(status=UNKNOWN, reason=f"answer lost ({exc}): looked up, never resent"))
            return await self._resolve(cid, sent_ms)
        self._expect_report(cid)
        return await self._settle(order_state(answer), answer_trades(answer))

    def _expect_report(self, cid: str) -> None:
        """The watchdog: Binance sends an executionReport for every order it accepts; none
        within watchdog_seconds means the stream has gone deaf."""
        def check() -> None:
            stream = self._stream
            if cid not in self._reported and stream is not None and stream.connected:
                stream.suspect(f"no executionReport for {cid} within {self.settings.watchdog_seconds:g}s "
                               "of Binance accepting it")
        asyncio.get_running_loop().call_later(self.settings.watchdog_seconds, check)

    async def _resolve(self, cid: str, sent_ms: int, new_fills: list[Fill] | None = None,
                       all_trades: bool = False) -> Order:
        """Find out what became of an order whose answer was lost: bounded lookups, never a resend."""
        misses = 0
        landed_by = sent_ms + self.settings.recv_window_ms + self.settings.max_clock_skew_ms
        for attempt in range(LOOKUP_ATTEMPTS):
            if attempt:
                await asyncio.sleep(min(LOOKUP_BACKOFF_S * 2 ** (attempt - 1), LOOKUP_BACKOFF_MAX_S))
            order = self._book[cid]
            if order.status not in (UNKNOWN, INTENT):
                return order  # the user stream told first
            try:
                state = await self._query(order)
            except Refused as exc:
                if exc.code != NO_SUCH_ORDER:
                    continue
                misses += 1
                if misses >= NOT_FOUND_CONFIRMATIONS:
                    late = landed_by - now_ms()
                    if late <= 0:
                        return self._book.record(order.with_(status=REJECTED, reason=(
                            f"Binance has no order {cid}: not found {misses} times, the last after its recvWindow "
                            "ran out, so the create never landed")))
                    await asyncio.sleep(late / 1000)  # until Binance can no longer accept it
                continue
            except (Unknown, Stopped):
                continue
            return await self._settle(state, new_fills=new_fills, all_trades=all_trades)
        self._alarm(Alarm.ORDER_UNRESOLVED, f"{cid}: Binance's answer was lost and {LOOKUP_ATTEMPTS} lookups did "
                                            "not settle it; it stays UNKNOWN until a reconcile")
        return self._book[cid]

    async def _query(self, order: Order) -> OrderState:
        client = self.client
        answer = await self.rest.call("query order", WEIGHT["query"], lambda: client.get_order(
            symbol=order.symbol, origClientOrderId=order.client_order_id), wait=True)
        return order_state(answer)

    async def _trades(self, symbol: str, exchange_order_id: str) -> list[Trade]:
        client = self.client
        answer = await self.rest.call("my trades", WEIGHT["trades"], lambda: client.get_my_trades(
            symbol=symbol, orderId=exchange_order_id), wait=True)
        return [rest_trade(t) for t in answer]

    async def _settle(self, state: OrderState, trades: Iterable[Trade] = (), new_fills: list[Fill] | None = None,
                      all_trades: bool = False) -> Order:
        """Apply Binance's `state` to the book, first fetching the order's trades when the
        state counts more than the trades seen (or always, with all_trades)."""
        trades = list(trades)
        if self._book.lacks_trades(state, trades) or (all_trades and state.executed > 0):
            try:
                trades += await self._trades(state.symbol, state.exchange_order_id)
            except RestError as exc:
                log.warning("fills of %s not fetched (%s): the next reconcile finds them", state.client_order_id, exc)
        return self._book.apply(state, trades, new_fills)

    # ------------------------------------------------------------------ cancelling
    async def cancel(self, client_order_id: str, reason: str = "canceled on request") -> Order:
        order = self._book.get(client_order_id)
        if order is None:
            raise ExchangeError(f"unknown order {client_order_id}")
        if not order.status.is_open:
            return order
        self._book.cancelling(client_order_id, reason)
        client = self.client
        try:
            answer = await self.rest.call("cancel order", WEIGHT["cancel"], lambda: client.cancel_order(
                symbol=order.symbol, origClientOrderId=client_order_id), wait=True)
            state = order_state(answer, id_field="origClientOrderId")
        except (Unknown, Refused) as exc:
            if isinstance(exc, Refused) and exc.code != UNKNOWN_ORDER:
                raise ExchangeError(f"cancel of {client_order_id} refused: {exc}", order) from None
            # already final, never there, or the answer was lost: Binance's own word settles it
            try:
                state = await self._query(order)
            except RestError as lookup:
                raise ExchangeError(f"cancel of {client_order_id}: {exc}; lookup: {lookup}",
                                    self._book[client_order_id]) from None
        except Stopped as exc:
            raise ExchangeError(f"cancel of {client_order_id}: {exc}", order) from None
        return await self._settle(state)

    def cancel_now(self, client_order_ids: list[str], reason: str = "canceled on request") -> list[Order]:
        """Schedule cancels for these open orders and return them (their answers arrive as
        updates); `last_halt` then verifies through Binance's open orders. Safe from any thread."""
        targets = [o for cid in client_order_ids if (o := self._book.get(cid)) is not None and o.status.is_open]
        loop = self._loop
        if not targets or loop is None:
            return []
        ids = [o.client_order_id for o in targets]
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self.last_halt = self._spawn(self._halt(ids, reason))
        else:
            self.last_halt = asyncio.run_coroutine_threadsafe(self._halt(ids, reason), loop)
        return targets

    async def _halt(self, ids: list[str], reason: str) -> HaltReport:
        still, verified = ids, False
        for _ in range(2):  # the cancels, then once more for whatever Binance still shows open
            await asyncio.gather(*(self._cancel_logged(cid, reason) for cid in still))
            try:
                open_now = await self._binance_open_orders()
                for state in open_now.values():
                    if state.client_order_id in self._book:
                        await self._settle(state)
            except RestError as exc:
                log.error("halt: Binance's open orders could not be read: %s", exc)
                verified = False
                break
            verified = True
            still = [cid for cid in ids if cid in open_now]
            if not still:
                break
        report = HaltReport(tuple(ids), tuple(still), verified)
        if report.complete:
            log.warning("halt: %d cancels landed, none of them open on Binance", len(ids))
        elif verified:
            shown = ", ".join(still[:10]) + (" ..." if len(still) > 10 else "")
            self._alarm(Alarm.HALT_INCOMPLETE, f"{len(still)} of {len(ids)} orders still open on Binance after the "
                                               f"halt's cancels: {shown}")
        else:
            self._alarm(Alarm.HALT_INCOMPLETE, f"the halt's {len(ids)} cancels could not be verified: Binance's "
                                               "open orders did not answer")
        return report

    async def _cancel_logged(self, cid: str, reason: str) -> None:
        try:
            await self.cancel(cid, reason)
        except ExchangeError as exc:
            log.error("halt: %s", exc)

    async def _binance_open_orders(self) -> dict[str, OrderState]:
        """Binance's open orders on every symbol, by client id."""
        answer = await self.rest.call("open orders", WEIGHT["open orders"], self.client.get_open_orders, wait=True)
        return {s.client_order_id: s for s in map(order_state, answer)}

    # ------------------------------------------------------------------ the user data stream
    def _on_stream_event(self, event: dict[str, Any]) -> None:
        kind = event.get("e")
        if kind == "executionReport":
            state, trade = report_state(event), report_trade(event)
            cid = state.client_order_id
            self._reported.add(cid)
            if cid not in self._book:
                log.info("user stream: %s is not in the book (placed elsewhere?): the next reconcile adopts it", cid)
                return
            trades = [trade] if trade is not None else []
            if self._book.lacks_trades(state, trades):  # a trade this stream did not report: fetch it first
                self._spawn(self._settle(state, trades))
            else:
                self._book.apply(state, trades)
        elif kind == "outboundAccountPosition":
            for b in event.get("B", []):
                self._balances[b["a"]] = {"free": float(b["f"]), "locked": float(b["l"])}

    def _on_stream_lost(self, why: str) -> None:
        self._alarm(Alarm.USER_STREAM_LOST, why)

    def _on_stream_reconnected(self) -> None:
        async def reconcile_gap() -> None:
            try:
                report = await self.reconcile()
            except RestError as exc:
                self._alarm(Alarm.USER_STREAM_LOST, f"reconnected, but the reconcile failed: {exc}")
                return
            self._alarm(Alarm.USER_STREAM_RESTORED, f"user data stream reconnected; {report.summary()}")
        self._spawn(reconcile_gap())

    # ------------------------------------------------------------------ reconcile
    async def reconcile(self, journal_orders: Iterable[Order] = (),
                        journal_fills: Iterable[Fill] = ()) -> ReconcileReport:
        """Compare the journal (its orders not known final: open, UNKNOWN or INTENT; and its
        fills) and the book with Binance: balances, open orders on every symbol, each pending
        order's state and trades. Differences are announced as order updates and fills, so
        the book matches Binance, and returned. Orders are allowed once this has run.
        RestError when Binance cannot be read (call it again)."""
        client = self.client
        account = await self.rest.call("account", WEIGHT["account"], client.get_account, wait=True)
        self._balances = {b["asset"]: {"free": float(b["free"]), "locked": float(b["locked"])}
                          for b in account.get("balances", [])}
        journal_fills = list(journal_fills)
        self._book.knows_fills(journal_fills)
        for order in journal_orders:
            if order.client_order_id not in self._book and not order.status.is_final:
                self._book.adopt(order)
        report = ReconcileReport(balances=self.balances(), open_orders=[])
        binance_open = await self._binance_open_orders()
        pending = [o for o in self._book.orders() if not o.status.is_final and o.client_order_id not in self._in_flight]
        for before in pending:
            try:
                after = await self._settle_pending(before, binance_open.get(before.client_order_id), report)
            except RestError as exc:
                log.error("reconcile: %s could not be settled: %s", before.client_order_id, exc)
                report.unresolved.append(self._book[before.client_order_id])
                continue
            if after.status is UNKNOWN:
                report.unresolved.append(after)
            elif after != before:
                report.changed.append((before, after))
        for cid, state in binance_open.items():
            if cid not in self._book:
                adopted = self._book.record(self._book.adopt(_order_from(state)))
                report.adopted.append(adopted)
                await self._settle(state, new_fills=report.new_fills, all_trades=True)
        report.missing_fills = await self._missing(journal_fills)
        report.open_orders = self.open_orders()
        self.reconciled = True
        log.info("reconciled with Binance %s: %s", self.name, report.summary())
        return report

    async def _settle_pending(self, order: Order, state: OrderState | None, report: ReconcileReport) -> Order:
        """One order the journal or the book holds as not final, against Binance."""
        if state is not None:  # open on Binance
            return await self._settle(state, new_fills=report.new_fills, all_trades=True)
        if order.status in (UNKNOWN, INTENT):  # maybe never sent: the lookups and their rules
            return await self._resolve(order.client_order_id, order.created_ms, report.new_fills, all_trades=True)
        try:
            state = await self._query(order)
        except Refused as exc:
            if exc.code != NO_SUCH_ORDER:
                raise
            log.error("reconcile: Binance has no order %s that the journal holds %s", order.client_order_id,
                      order.status.value)
            return self._book.record(order.with_(status=UNKNOWN, reason="not on Binance: held until it is settled"))
        return await self._settle(state, new_fills=report.new_fills, all_trades=True)

    async def _missing(self, journal_fills: list[Fill]) -> list[Fill]:
        """Journal fills whose order's trades on Binance do not include them."""
        by_order: dict[str, list[Fill]] = {}
        for fill in journal_fills:
            by_order.setdefault(fill.client_order_id, []).append(fill)
        missing = []
        for cid, fills in by_order.items():
            order = self._book.get(cid)
            if order is None or order.exchange_order_id is None:
                continue
            ids = {t.fill_id for t in await self._trades(order.symbol, order.exchange_order_id)}
            missing += [f for f in fills if f.fill_id not in ids]
        return missing

    # ------------------------------------------------------------------ the key
    async def account_uid(self) -> str | None:
        """The account this key trades (/api/v3/account's uid), for the live confirmation phrase."""
        try:
            account = await self.rest.call("account", WEIGHT["account"], self.client.get_account, wait=True)
        except RestError as exc:
            raise ExchangeError(f"the account could not be read: {exc}") from None
        uid = account.get("uid") if isinstance(account, dict) else None
        return str(uid) if isinstance(uid, int) and not isinstance(uid, bool) and uid > 0 else None

    async def key_permissions(self) -> KeyPermissions:
        """What Binance says this API key may do (/sapi/v1/account/apiRestrictions). The
        spot testnet has no /sapi: there this raises ExchangeError."""
        client = self.client
        try:
            answer = await self.rest.call("api restrictions", WEIGHT["api restrictions"],
                                          client.get_account_api_permissions, wait=True)
        except RestError as exc:
            raise ExchangeError(f"the key's permissions could not be read: {exc}") from None
        return KeyPermissions.from_api(answer)


def _symbol_rules(exchange_info: dict[str, Any]) -> dict[str, SymbolRules]:
    """Each symbol's filters; a symbol whose entry cannot be read is left out (its orders are
    refused as unlisted) rather than failing the start."""
    rules = {}
    for entry in exchange_info.get("symbols", []):
        try:
            rules[entry["symbol"]] = SymbolRules.from_exchange_info(entry)
        except (KeyError, TypeError, FilterRefusal) as exc:
            log.warning("exchangeInfo: %s left out: %s %s", entry.get("symbol"), type(exc).__name__, exc)
    return rules


def _order_from(state: OrderState) -> Order:
    """An order Binance holds that the journal does not (placed elsewhere, or before a lost journal)."""
    return Order(symbol=state.symbol, side=state.side, type=ORDER_TYPES.get(state.binance_type, OrderType.LIMIT),
                 quantity=float(state.quantity), price=float(state.price) if state.price is not None else None,
                 stop_price=float(state.stop_price) if state.stop_price is not None else None,
                 origin=Origin.RECONCILE, client_order_id=state.client_order_id, created_ms=state.time_ms,
                 status=NEW, exchange_order_id=state.exchange_order_id,
                 reason=f"on Binance, not in the journal ({state.binance_type})")


__all__ = ["BinanceExchange", "HaltReport", "KeyPermissions", "ReconcileReport"]
