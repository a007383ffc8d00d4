"""An exchange that keeps its own book (Binance), brought into a session and kept there, fail closed.

Start-up (`VenueLink.start`), before any entry can be sent:
1. the breaker holds TRIGGERED (trigger_type startup), journaled, unless the journal's
   halt or recovery holds it already; the gate blocks entries until step 5 either way, and
   the exchange itself refuses orders until it has reconciled;
2. the exchange connects (clock, filters, user data stream);
3. live only: the key's permissions are read and live trading is refused if the key can
   withdraw or transfer, or is not IP-restricted; then the operator types the account's
   confirmation phrase (`LIVE <uid>`);
4. the exchange reconciles its book with the journal's unfinished orders and its fills;
5. the gate restores the open orders (an entry it refuses now is cancelled on the
   exchange); the portfolio's cash becomes the account's quote balance;
6. the hold is released: RECOVERING (reduced size), SAFE after the usual cool-down.
Any step that fails raises VenueError with one line, and the breaker stays TRIGGERED.

While the session runs, the exchange's alarms become breaker holds and entry blocks:
- ip_banned: the breaker at least WARNING until ip_ban_lifted;
- clock_skew: TRIGGERED until clock_ok, then a recovery like any halt;
- user_stream_lost: entries blocked (order updates may be missed) until user_stream_restored,
  which comes after the exchange reconciled the gap;
- halt_incomplete and order_unresolved: loud notices (an unresolved order blocks entries in
  the gate already); rate_limited: a notice.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.detect.guardian import VenueHold
from core.events import BreakerStatus, VenueAlarm
from core.redact import mask
from core.trading.binance_alarms import Alarm
from core.trading.exchange import ExchangeError
from core.trading.orders import Fill, Order
from core.trading.paper import QUOTE

if TYPE_CHECKING:
    from core.session import Session

log = logging.getLogger("spikeguard.venue")

USER_STREAM_BLOCK = "user_stream"
STARTUP_BLOCK = "startup"
# alarms that hold the breaker (at that state), and the alarm that releases each hold
_HOLDS = {Alarm.IP_BANNED: BreakerStatus.WARNING, Alarm.CLOCK_SKEW: BreakerStatus.TRIGGERED}
_RELEASES = {Alarm.IP_BAN_LIFTED: Alarm.IP_BANNED.value, Alarm.CLOCK_OK: Alarm.CLOCK_SKEW.value}
_SEVERITY = {Alarm.IP_BANNED: "error", Alarm.CLOCK_SKEW: "error", Alarm.HALT_INCOMPLETE: "error",
             Alarm.ORDER_UNRESOLVED: "error", Alarm.USER_STREAM_LOST: "error", Alarm.RATE_LIMITED: "warning",
             Alarm.IP_BAN_LIFTED: "information", Alarm.CLOCK_OK: "information",
             Alarm.USER_STREAM_RESTORED: "information"}


class VenueError(Exception):
    """The exchange could not be brought into the session: one line for the operator."""


@dataclass(frozen=True)
class LiveAccount:
    """The live account a key trades, as the operator confirms it."""

    uid: str
    environment: str
    api_url: str

    @property
    def phrase(self) -> str:
        return f"LIVE {self.uid}"


ConfirmLive = Callable[[LiveAccount], "bool | Awaitable[bool]"]


class VenueLink:
    """The session's hold on an exchange's life cycle (start, reconcile, alarms, close).
    Orders still go through the gate only: this never places one."""

    def __init__(self, session: "Session", exchange: Any) -> None:
        self.session = session
        self.exchange = exchange
        self.environment: str = exchange.name
        self.journal_orders: list[Order] = []  # the journal's unfinished orders, for the reconcile
        self.journal_fills: list[Fill] = []
        self.report: Any = None  # the start-up reconcile's ReconcileReport
        self.problems: dict[str, str] = {}  # what is wrong with the venue now, for the status bar
        self.started = False
        self._closed = False
        exchange.add_alarm_listener(self._on_alarm)
        # the breaker's start-up hold does not cover a halt restored as RECOVERING: the gate's block does
        session.gate.block_entries(STARTUP_BLOCK, f"start-up: not reconciled with Binance {self.environment} yet")

    # ------------------------------------------------------------------ start-up
    async def start(self, confirm_live: ConfirmLive | None = None) -> Any:
        """Steps 1-6 of the module's docstring; returns the ReconcileReport."""
        if self.started:
            return self.report
        session, guardian = self.session, self.session.engine.guardian
        name = f"Binance {self.environment}"
        guardian.hold_for_startup(session.engine.now_ms(), f"start-up: reconciling with {name} before any order")
        try:
            await self.exchange.start()
        except ExchangeError as exc:
            raise VenueError(mask(str(exc))) from None
        self.started = True
        if self.environment == "live":
            await self._check_live(confirm_live)
        try:
            report = await self.exchange.reconcile(self.journal_orders, self.journal_fills)
        except Exception as exc:  # RestError and whatever the network says: nothing is allowed yet
            raise VenueError(mask(f"reconciling with {name} failed: {exc}")) from None
        self.report = report
        refused = session.gate.restore(self.exchange.balances(), report.open_orders)
        quote = report.balances.get(QUOTE)
        if quote is not None:
            session.portfolio.cash = float(quote.get("free", 0.0)) + float(quote.get("locked", 0.0))
        summary = report.summary() + (f"; {len(refused)} cancelled by the gate" if refused else "")
        session.record_action("exchange_reconciled", f"{name}: {summary}", {
            "environment": self.environment, "open_orders": len(report.open_orders),
            "changed": len(report.changed), "new_fills": len(report.new_fills), "adopted": len(report.adopted),
            "unresolved": [o.client_order_id for o in report.unresolved],
            "missing_fills": [f.fill_id for f in report.missing_fills],
            "cancelled_by_gate": [o.client_order_id for o in refused]})
        for order in report.unresolved:
            self._notice(Alarm.ORDER_UNRESOLVED, f"{order.client_order_id} {order.symbol}: its result is unknown; "
                                                 f"entries stay blocked until Binance settles it")
        session.gate.unblock_entries(STARTUP_BLOCK)
        guardian.release_startup(session.engine.now_ms(), f"reconciled with {name}: {summary}",
                                 {"reconcile": summary, "environment": self.environment})
        return report

    async def _check_live(self, confirm_live: ConfirmLive | None) -> None:
        try:
            permissions = await self.exchange.key_permissions()
            uid = await self.exchange.account_uid()
        except ExchangeError as exc:
            raise VenueError(f"live trading refused: {mask(str(exc))}") from None
        problems = permissions.live_problems()
        if problems:
            raise VenueError("live trading refused: " + "; ".join(problems)
                             + " (change the key's restrictions on Binance, or trade on the testnet)")
        if not uid:
            raise VenueError("live trading refused: Binance did not say which account this key trades (no uid)")
        account = LiveAccount(uid, self.environment, self.exchange.endpoints.api_url)
        if confirm_live is None:
            raise VenueError("live trading needs the operator to type the account's confirmation phrase at start-up")
        answer = confirm_live(account)
        if inspect.isawaitable(answer):
            answer = await answer
        if answer is not True:
            raise VenueError(f"live trading not confirmed: the phrase {account.phrase!r} was not typed")
        self.session.record_action("live_confirmed", f"live trading confirmed for account {uid}",
                                   {"uid": uid, "api_url": account.api_url})

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.exchange.close()

    # ------------------------------------------------------------------ alarms
    def _on_alarm(self, kind: Alarm, detail: str) -> None:
        guardian, gate, now = self.session.engine.guardian, self.session.gate, self.session.engine.now_ms()
        if kind in _HOLDS:
            guardian.hold_venue(VenueHold(kind.value, _HOLDS[kind], f"Binance {kind.value}: {detail}"), now)
            self.problems[kind.value] = kind.value.replace("_", " ")
        elif kind in _RELEASES:
            guardian.release_venue(_RELEASES[kind], now)
            self.problems.pop(_RELEASES[kind], None)
        elif kind is Alarm.USER_STREAM_LOST:
            gate.block_entries(USER_STREAM_BLOCK, "Binance user data stream lost: order updates may be missed")
            self.problems[USER_STREAM_BLOCK] = "user stream lost"
        elif kind is Alarm.USER_STREAM_RESTORED:
            gate.unblock_entries(USER_STREAM_BLOCK)
            self.problems.pop(USER_STREAM_BLOCK, None)
        self._notice(kind, detail)

    def _notice(self, kind: Alarm, detail: str) -> None:
        severity = _SEVERITY.get(kind, "warning")
        text = f"Binance {self.environment} {kind.value.replace('_', ' ')}: {detail}"
        self.session.alert(f"venue {kind.value}", text, severity)
        self.session.bus.publish(VenueAlarm(kind.value, detail, severity, self.session.engine.now_ms()))

    def status(self) -> str:
        """The status bar's word on the venue: empty while all is well."""
        return ", ".join(self.problems.values())


__all__ = ["ConfirmLive", "LiveAccount", "VenueError", "VenueLink"]
