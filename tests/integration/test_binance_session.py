"""A whole session on Binance, built by the composition root against the local fake Binance:
the Binance feed and the BinanceExchange on the testnet, the journal, the gate. Start-up
holds the breaker until the exchange is reconciled; prices stream; a crash scripted on the
server trips the breaker and the open orders are cancelled on the server; a restart picks
the orders up from Binance; the exchange's alarms hold the breaker; keys never leave.

Waits are on the session's own signals (breaker changes, order updates, ticks), never sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from core.events import BreakerStatus, Tick
from core.settings import BinanceSettings, Settings
from core.trading.binance_alarms import Alarm
from core.trading.orders import Order, OrderStatus, OrderType, Side
from core.venue import VenueError
from core.wiring import FeedChoice, JournalChoice, Venue, build_feed, build_session, open_journal, resolve_venue
from tests.fakes.binance import FakeBinance

CANARY_KEY = "canary-key-session-5b1e"
CANARY_SECRET = "canary-secret-session-9d27"
MIN = 60_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
TESTNET = Venue("testnet", "testnet")


def on_fake(settings: Settings, server: FakeBinance, mode: str = "testnet", **binance: Any) -> Settings:
    """The shipped settings with both Binance environments on the fake and canary keys."""
    fake = server.endpoints()
    values = dict(symbols=SYMBOLS, testnet=fake, live=fake, reconnect_min_seconds=0.01, reconnect_max_seconds=0.05,
                  watchdog_seconds=60, request_timeout_seconds=5)
    values.update(binance)
    return settings.model_copy(update={
        "binance": BinanceSettings(**values),
        "execution": settings.execution.model_copy(update={"mode": mode}),
        "secrets": settings.secrets.model_copy(update={"binance_api_key": SecretStr(CANARY_KEY),
                                                       "binance_secret_key": SecretStr(CANARY_SECRET)})})


class Running:
    """A session on the fake: started (reconciled), its engine running in a task."""

    def __init__(self, settings: Settings, journal: Path, venue: Venue = TESTNET) -> None:
        self.built = build_feed(settings, FeedChoice(kind="binance"), venue)
        self.session = build_session(settings, self.built.feed, JournalChoice(journal), venue=venue)
        self.journal_choice = JournalChoice(journal)
        self.run: asyncio.Task | None = None
        self._changed = asyncio.Event()
        self.session.breaker.subscribe(lambda change: self._changed.set())
        self.session.gate.listeners.append(lambda order: self._changed.set())
        self.session.engine.tick_listeners.append(lambda tick: self._changed.set())

    async def start(self, confirm_live: Callable[[Any], bool] | None = None) -> Any:
        if self.session.journal is None:
            await open_journal(self.session, self.journal_choice)
        report = await self.session.start_venue(confirm_live)
        self.run = asyncio.create_task(self.session.run())
        return report

    async def until(self, predicate: Callable[[], object], what: str) -> None:
        while not predicate():
            if self.run is not None and self.run.done():
                self.run.result()
                raise AssertionError(f"the session ended before {what}")
            self._changed.clear()
            waiter = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait([waiter, *([self.run] if self.run else [])], timeout=30,
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not waiter.done() and not predicate():
                raise AssertionError(f"timed out waiting for {what}")

    async def close(self) -> None:
        await self.session.close("test over")
        if self.run is not None:
            await asyncio.gather(self.run, return_exceptions=True)

    def states(self) -> list[str]:
        return [c.status.value for c in self.session.breaker.history]

    def live_tick_of(self, symbol: str, after_ms: int) -> Callable[[], bool]:
        w = self.session.engine.market.symbols
        return lambda: symbol in w and w[symbol].last_time >= after_ms


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def streaming(r: Running, server: FakeBinance) -> None:
    """Backfilled and live: a fresh trade of every symbol seen by the engine."""
    await r.until(lambda: r.session.feed.stats.gaps_filled >= len(SYMBOLS), "the start-up backfill")
    t = now_ms()
    for symbol in SYMBOLS:
        server.set_price(symbol, server.symbols[symbol].price)
    for symbol in SYMBOLS:
        await r.until(r.live_tick_of(symbol, t), f"a live {symbol} trade")


def resting_buy(price: float, qty: float = 0.01) -> Order:
    return Order(symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity=qty, price=price)


@pytest.fixture
async def server(fake_binance: FakeBinance):
    yield fake_binance
    accepted = [o.client_order_id for o in fake_binance.trading.accepted]
    assert len(accepted) == len(set(accepted)), f"a duplicate order reached the exchange: {accepted}"


async def test_a_session_on_the_testnet_streams_trades_and_a_crash_cancels_its_orders_on_the_server(
        server, settings, tmp_path):
    r = Running(on_fake(settings, server), tmp_path / "journal.db")
    assert r.session.mode == "TESTNET" and r.built.label == "binance testnet"
    try:
        report = await r.start()
        assert report.clean
        # held until reconciled, then RECOVERING: never SAFE before the book matched Binance
        assert r.states() == ["TRIGGERED", "RECOVERING"]
        assert r.session.breaker.history[0].trigger_type == "startup"
        assert r.session.portfolio.cash == 100_000.0  # the account's USDT, not the paper balance
        await streaming(r, server)
        assert r.session.engine.market.symbols["BTCUSDT"].span_ms() >= 59 * MIN  # backfilled from klines

        entry = await r.session.gate.submit(resting_buy(98_500.0))
        assert entry.status is OrderStatus.NEW, entry
        assert entry.quantity == pytest.approx(0.01 * settings.risk_management.recovering_size_factor)
        assert [o.client_order_id for o in server.trading.open_orders()] == [entry.client_order_id]

        for step in range(1, 17):  # ETH walks down 16% on the server; the BTC order is not touched
            server.set_price("ETHUSDT", 3_000.0 * (1 - step / 100))
        await r.until(lambda: r.session.breaker.status is BreakerStatus.TRIGGERED, "the crash's trigger")
        trip = r.session.breaker.history[-1]
        assert trip.trigger_type == "eth_dump_4h" and trip.symbol == "ETHUSDT"
        halt = await asyncio.wrap_future(r.session.gate._exchange.last_halt) if not isinstance(
            r.session.gate._exchange.last_halt, asyncio.Task) else await r.session.gate._exchange.last_halt
        assert halt.complete and halt.requested == (entry.client_order_id,)
        assert server.trading.open_orders() == []  # cancelled where it rested, and verified there
        assert r.session.gate.open_orders() == []

        denied = await r.session.gate.submit(resting_buy(98_000.0))
        assert denied.status is OrderStatus.DENIED and "TRIGGERED" in denied.reason
        assert len(server.trading.accepted) == 1  # the denied entry never reached the server
    finally:
        await r.close()

    import sqlite3

    db = sqlite3.connect(tmp_path / "journal.db")
    rows = db.execute("SELECT status, trigger_type FROM circuit_breaker_events ORDER BY id").fetchall()
    assert [(s.upper(), t) for s, t in rows] == [("TRIGGERED", "startup"), ("RECOVERING", "startup"),
                                                 ("TRIGGERED", "eth_dump_4h")]
    statuses = [s for (s,) in db.execute("SELECT status FROM orders WHERE client_order_id = ? ORDER BY id",
                                        (entry.client_order_id,))]
    assert statuses[0].upper() == "INTENT" and statuses[-1].upper() == "CANCELED"
    actions = [a for (a,) in db.execute("SELECT action FROM operator_actions ORDER BY id")]
    assert actions[0] == "exchange_reconciled" and "session_end" in actions


async def resting_entry_then_crash(settings: Settings, server: FakeBinance, journal: Path,
                                   halt: str | None = None) -> Order:
    """A session that rests an entry on Binance (and is then halted by the operator, with
    `halt`), then dies: no session end, nothing cancelled on the way out."""
    first = Running(on_fake(settings, server), journal)
    try:
        await first.start()
        await streaming(first, server)
        kept = await first.session.gate.submit(resting_buy(98_500.0))
        assert kept.status is OrderStatus.NEW
        if halt:
            first.session.force_trigger(halt)
    finally:
        first.session.engine.stop()
        await first.session.journal.close()
        await first.session.venue.close()
        if first.run is not None:
            await asyncio.gather(first.run, return_exceptions=True)
    return kept


async def test_a_restart_reconciles_with_binance_before_any_order(server, settings, tmp_path):
    journal = tmp_path / "journal.db"
    kept = await resting_entry_then_crash(settings, server, journal)
    server.set_price("BTCUSDT", 98_400.0)  # it fills while spikeguard is down
    await server.settle()

    second = Running(on_fake(settings, server), journal)
    try:
        await open_journal(second.session, second.journal_choice)
        assert second.session.breaker.status is BreakerStatus.RECOVERING  # the journal's state, restored
        before = second.session.gate.check(resting_buy(98_000.0))
        assert not before.allowed and "not reconciled with Binance testnet yet" in before.reason
        report = await second.start()
        assert [before.status for before, _after in report.changed] == [OrderStatus.NEW]
        assert report.changed[0][1].status is OrderStatus.FILLED
        trades = [t for t in server.trading.trades if t.order.client_order_id == kept.client_order_id]
        net = sum(float(t.qty - (t.commission if t.commission_asset == "BTC" else 0)) for t in trades)
        assert second.session.portfolio.quantity("BTCUSDT") == pytest.approx(net)  # the sum of Binance's fills
        assert second.session.gate.open_orders() == []
        await streaming(second, server)
        assert second.session.gate.check(resting_buy(98_000.0)).allowed
    finally:
        await second.close()


async def test_an_open_entry_the_restored_breaker_refuses_is_cancelled_on_binance(server, settings, tmp_path):
    journal = tmp_path / "journal.db"
    # the operator's halt cancels it on Binance...
    kept = await resting_entry_then_crash(settings, server, journal, halt="operator halt before a restart")
    # ... but say the cancel was lost with the process: the order is open on Binance again
    server.trading.accepted[-1].status = "NEW"
    assert [o.client_order_id for o in server.trading.open_orders()] == [kept.client_order_id]

    second = Running(on_fake(settings, server), journal)
    try:
        await second.start()
        assert second.session.breaker.status is BreakerStatus.TRIGGERED  # the journal's halt holds
        await second.until(lambda: server.trading.open_orders() == [], "the refused entry's cancel on Binance")
        await second.until(lambda: second.session.gate.open_orders() == [], "the cancel's report")
    finally:
        await second.close()


async def test_alarms_hold_the_breaker_and_block_entries(server, settings, tmp_path):
    r = Running(on_fake(settings, server), tmp_path / "journal.db")
    try:
        await r.start()
        await streaming(r, server)
        venue = r.session.venue
        venue._on_alarm(Alarm.IP_BANNED, "418 for 120s")  # RECOVERING (start-up) already limits entries...
        assert r.session.engine.guardian.venue_holds["ip_banned"].status is BreakerStatus.WARNING  # ...and stays
        venue._on_alarm(Alarm.CLOCK_SKEW, "clock 2,400 ms off, twice")
        assert r.session.breaker.status is BreakerStatus.TRIGGERED
        assert r.session.breaker.history[-1].trigger_type == "clock_skew"
        assert "clock skew" in venue.status() and "ip banned" in venue.status()
        venue._on_alarm(Alarm.CLOCK_OK, "back within 1000 ms")
        assert r.session.breaker.status is BreakerStatus.RECOVERING
        venue._on_alarm(Alarm.USER_STREAM_LOST, "no keep-alive")
        denied = await r.session.gate.submit(resting_buy(98_500.0))
        assert denied.status is OrderStatus.DENIED and "user data stream lost" in denied.reason
        venue._on_alarm(Alarm.USER_STREAM_RESTORED, "reconnected; the book matches Binance")
        allowed = await r.session.gate.submit(resting_buy(98_500.0))
        assert allowed.status is OrderStatus.NEW, allowed
    finally:
        await r.close()


async def test_a_start_that_cannot_reach_binance_is_one_line_and_stays_halted(server, settings, tmp_path):
    settings = on_fake(settings, server)
    dead = settings.binance.testnet.model_copy(update={"api_url": "http://127.0.0.1:9/api"})
    settings = settings.model_copy(update={"binance": settings.binance.model_copy(update={"testnet": dead})})
    r = Running(settings, tmp_path / "journal.db")
    await open_journal(r.session, r.journal_choice)
    with pytest.raises(VenueError) as caught:
        await r.session.start_venue()
    assert "cannot reach Binance testnet at http://127.0.0.1:9/api" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert r.session.breaker.status is BreakerStatus.TRIGGERED
    await r.session.close("start-up failed")


# ---------------------------------------------------------------------------- live
async def test_live_needs_the_typed_phrase_of_the_account(server, settings, tmp_path):
    server.trading.restrictions["ipRestrict"] = True
    settings = on_fake(settings, server, mode="live")
    venue = resolve_venue(settings, "binance", live_flag=True)
    assert venue == Venue("live", "live")
    asked: list[str] = []

    def typed_wrong(account) -> bool:
        asked.append(account.phrase)
        return False

    r = Running(settings, tmp_path / "refused.db", venue)
    await open_journal(r.session, r.journal_choice)
    with pytest.raises(VenueError, match="live trading not confirmed"):
        await r.session.start_venue(typed_wrong)
    assert asked == [f"LIVE {server.trading.uid}"]
    assert r.session.breaker.status is BreakerStatus.TRIGGERED and server.trading.accepted == []
    await r.session.close("refused")

    ok = Running(settings, tmp_path / "confirmed.db", venue)
    try:
        await ok.start(lambda account: account.phrase == f"LIVE {server.trading.uid}")
        assert ok.session.mode == "LIVE"
        assert ok.states() == ["TRIGGERED", "RECOVERING"]
    finally:
        await ok.close()


@pytest.mark.parametrize("restriction, value, why", [
    ("enableWithdrawals", True, "the key can withdraw"),
    ("enableInternalTransfer", True, "the key can make internal transfers"),
    ("ipRestrict", False, "the key is not restricted to trusted IPs"),
])
async def test_live_refuses_a_key_that_can_move_money_or_is_not_ip_restricted(server, settings, tmp_path,
                                                                               restriction, value, why):
    server.trading.restrictions.update({"ipRestrict": True, restriction: value})
    settings = on_fake(settings, server, mode="live")
    r = Running(settings, tmp_path / "journal.db", Venue("live", "live"))
    await open_journal(r.session, r.journal_choice)
    asked: list[str] = []
    with pytest.raises(VenueError) as caught:
        await r.session.start_venue(lambda account: asked.append(account.phrase) or True)
    assert why in str(caught.value) and str(caught.value).startswith("live trading refused")
    assert asked == []  # refused before the operator is even asked
    await r.session.close("refused")


# ---------------------------------------------------------------------------- secrets
async def test_the_canary_keys_never_reach_the_journal_the_log_or_a_traceback(server, settings, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    journal = tmp_path / "journal.db"
    r = Running(on_fake(settings, server), journal)
    try:
        await r.start()
        await streaming(r, server)
        await r.session.gate.submit(resting_buy(98_500.0))
        server.faults.add("order_5xx_after_accept", 503)  # an error path, with its messages and lookups
        await r.session.gate.submit(resting_buy(98_400.0))
        r.session.force_trigger("canary check")
    finally:
        await r.close()
    seen = caplog.text + "".join(str(rec.exc_info) for rec in caplog.records if rec.exc_info)
    seen += repr(r.session.gate._exchange) + repr(r.session.settings)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            seen += path.read_bytes().decode("latin-1")
    for canary in (CANARY_KEY, CANARY_SECRET):
        assert canary not in seen
    assert "canary check" in seen  # the search did see the journal's rows


# ---------------------------------------------------------------------------- no keys: paper on live prices
async def test_without_keys_the_feed_streams_live_prices_and_orders_fill_on_paper(server, settings, tmp_path):
    settings = on_fake(settings, server, mode="auto")
    settings = settings.model_copy(update={"secrets": settings.secrets.model_copy(update={
        "binance_api_key": None, "binance_secret_key": None})})
    venue = resolve_venue(settings, "binance")
    assert venue == Venue("paper", "live")  # public market data of live Binance, orders on paper
    r = Running(settings, tmp_path / "journal.db", venue)
    assert r.session.mode == "PAPER" and r.session.venue is None and r.built.label == "binance live"
    try:
        assert await r.start() is None  # nothing to reconcile on paper
        assert r.states() == []  # no start-up hold: the paper book is the journal's
        await streaming(r, server)
        server.set_price("BTCUSDT", 100_500.0)
        await r.until(lambda: r.session.engine.market.symbols["BTCUSDT"].last_price == 100_500.0, "the trade")
        bought = await r.session.gate.submit(Order(symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                                                   quantity=0.005))
        assert bought.status is OrderStatus.FILLED
        assert bought.average_price == pytest.approx(100_500.0, rel=0.001)  # filled from the real price
        assert server.trading.accepted == []  # nothing was sent to Binance
    finally:
        await r.close()
