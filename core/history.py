"""What the operator reads back: the breaker's transitions, the alerts, the orders and fills,
and the operator's own actions, one line each.

The session feeds a HistoryBook live (its listeners), and at start it is filled from the
journal's newest rows, so a restart reads back what came before. Entries carry plain values;
the console formats them. Each pane is bounded; a filter is a case-insensitive substring
over the line, a symbol or a severity (`error`, `warning`).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.events import BreakerChanged, BreakerStatus
from core.trading.orders import Fill, Order, OrderStatus

PANES = ("breaker", "alerts", "orders", "operator")
PANE_TITLES = {"breaker": "Breaker", "alerts": "Alerts", "orders": "Orders", "operator": "Operator"}
MAX_ENTRIES = 1_000
LOAD_ROWS = 500  # the newest journal rows read per table at start

# the breaker transitions that are alerts too (the webhook's states, and a halt held for the operator)
ALERT_STATES = (BreakerStatus.WARNING, BreakerStatus.TRIGGERED)
ORDER_SEVERITY = {OrderStatus.DENIED: "warning", OrderStatus.REJECTED: "error", OrderStatus.UNKNOWN: "error",
                  OrderStatus.EXPIRED: "warning"}


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    pane: str
    time_ms: int
    label: str  # the state, the order status, the action: the line's second column
    text: str
    actor: str = ""
    symbol: str = ""
    severity: str = "info"  # info, warning, error
    past: bool = False  # read from the journal at start (a previous run's)

    def matches(self, query: str) -> bool:
        if not query:
            return True
        q = query.casefold()
        return any(q in part.casefold() for part in (self.label, self.text, self.actor, self.symbol, self.severity))


def _ms(iso: str | None) -> int:
    if not iso:
        return 0
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def _loads(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        out = json.loads(value) if value else {}
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


# ---------------------------------------------------------------------- one line per domain event
def breaker_entry(status: str, previous: str | None, reason: str, actor: str, epoch: int, time_ms: int,
                  symbol: str | None, past: bool = False) -> HistoryEntry:
    severity = {"TRIGGERED": "error", "WARNING": "warning"}.get(status, "info")
    came_from = f" (from {previous})" if previous and previous != "SAFE" and status != "TRIGGERED" else ""
    return HistoryEntry("breaker", time_ms, status, f"{reason}{came_from} · epoch {epoch}", actor, symbol or "",
                        severity, past)


def order_entry(order: Order, time_ms: int, past: bool = False) -> HistoryEntry:
    price = f" @ {order.price:g}" if order.price else f" stop {order.stop_price:g}" if order.stop_price else ""
    text = f"{order.side.value} {order.quantity:g} {order.symbol} {order.type.value}{price}"
    if order.filled_quantity:
        text += f" filled {order.filled_quantity:g} @ {order.average_price:g}"
    if order.reduce_only:
        text += " reduce-only"
    if order.reason and order.status in (OrderStatus.DENIED, OrderStatus.REJECTED, OrderStatus.UNKNOWN,
                                         OrderStatus.CANCELED, OrderStatus.EXPIRED):
        text += f" — {order.reason}"
    return HistoryEntry("orders", time_ms, order.status.value, text, order.origin.value, order.symbol,
                        ORDER_SEVERITY.get(order.status, "info"), past)


def fill_entry(fill: Fill, past: bool = False) -> HistoryEntry:
    text = f"{fill.side.value} {fill.quantity:g} {fill.symbol} @ {fill.price:g} fee {fill.fee:.2f} {fill.liquidity}"
    return HistoryEntry("orders", fill.time_ms, "FILL", text, "", fill.symbol, "info", past)


def action_entry(action: str, reason: str | None, details: dict[str, Any], actor: str, time_ms: int,
                 past: bool = False) -> HistoryEntry:
    """An operator action; an alert (actor "system") goes to the alerts pane."""
    if actor == "system":
        return HistoryEntry("alerts", time_ms, str(details.get("kind") or action), reason or "", actor,
                            str(details.get("symbol") or ""), str(details.get("severity") or "warning"), past)
    text = reason or ""
    target = details.get("symbol") or details.get("proposal_id") or details.get("client_order_id")
    if target and str(target) not in text:
        text = f"{text} [{target}]" if text else str(target)
    ok = details.get("ok", details.get("done", True))
    return HistoryEntry("operator", time_ms, action, text, actor, str(details.get("symbol") or ""),
                        "info" if ok is not False else "warning", past)


def alert_of_breaker(entry: HistoryEntry) -> HistoryEntry | None:
    if entry.label not in {s.value for s in ALERT_STATES}:
        return None
    return HistoryEntry("alerts", entry.time_ms, f"breaker {entry.label}", entry.text, entry.actor, entry.symbol,
                        entry.severity, entry.past)


class HistoryBook:
    """Bounded panes of entries, newest last; `version` moves on every change (the console
    repaints when it does)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._panes: dict[str, deque[HistoryEntry]] = {p: deque(maxlen=max_entries) for p in PANES}
        self.added = dict.fromkeys(PANES, 0)  # entries ever added per pane (a view's bookmark)
        self.version = 0
        self.loaded_from_journal = 0
        self._orders: dict[str, tuple[int, Order]] = {}  # the latest state of each order (by client id)

    def entries(self, pane: str, query: str = "") -> list[HistoryEntry]:
        return [e for e in self._panes[pane] if e.matches(query)]

    def tail(self, pane: str, bookmark: int) -> tuple[int, list[HistoryEntry] | None]:
        """The entries added since `bookmark` (a view's last `added`), and the new bookmark;
        None when more were added than the pane keeps (the view rebuilds)."""
        added = self.added[pane]
        new = added - bookmark
        entries = self._panes[pane]
        if new > len(entries) or new < 0:
            return added, None
        return added, list(entries)[len(entries) - new:] if new else []

    def add(self, entry: HistoryEntry) -> None:
        self._append(entry)
        if entry.pane == "breaker":
            alert = alert_of_breaker(entry)
            if alert is not None:
                self._append(alert)
        self.version += 1

    def _append(self, entry: HistoryEntry) -> None:
        self._panes[entry.pane].append(entry)
        self.added[entry.pane] += 1

    # ------------------------------------------------------------------ live, from the session's listeners
    def on_breaker(self, change: BreakerChanged) -> None:
        self.add(breaker_entry(change.status.value, change.previous.value, change.reason, change.actor.value,
                               change.epoch, change.time_ms, change.symbol))

    def on_order(self, order: Order, time_ms: int) -> None:
        self._keep_order(order, time_ms)
        self.add(order_entry(order, time_ms))

    def _keep_order(self, order: Order, time_ms: int) -> None:
        self._orders.pop(order.client_order_id, None)  # re-inserted: the dict stays in update order
        self._orders[order.client_order_id] = (time_ms, order)
        while len(self._orders) > MAX_ENTRIES:
            del self._orders[next(iter(self._orders))]

    def orders_for(self, symbol: str) -> list[tuple[int, Order]]:
        """The latest state of each of the symbol's orders, oldest update first."""
        return [(t, o) for t, o in self._orders.values() if o.symbol == symbol]

    def on_fill(self, fill: Fill) -> None:
        self.add(fill_entry(fill))

    def on_action(self, action: str, reason: str | None, details: dict[str, Any], actor: str, time_ms: int) -> None:
        self.add(action_entry(action, reason, details, actor, time_ms))

    # ------------------------------------------------------------------ from the journal, at start
    def load(self, breaker_rows: Iterable[dict[str, Any]], order_rows: Iterable[dict[str, Any]],
             fill_rows: Iterable[dict[str, Any]], action_rows: Iterable[dict[str, Any]]) -> int:
        """The journal's rows (any order; each table's newest LOAD_ROWS) as past entries, in the
        order they were journaled (the hash chain's sequence, across tables: the order the live
        session saw them). Returns how many entries were read."""
        past: list[tuple[int, HistoryEntry]] = []  # (chain_seq, entry)
        for r in breaker_rows:
            past.append((r["chain_seq"], breaker_entry(
                r["breaker_status"], r.get("previous_status"), r.get("reason") or "", r["actor"], r["epoch"],
                r["event_time_ms"], r.get("symbol"), past=True)))
        for r in sorted(order_rows, key=lambda row: row["chain_seq"]):  # the latest state wins
            order = Order.from_dict(_loads(r["order_json"]))
            self._keep_order(order, r["event_time_ms"])
            past.append((r["chain_seq"], order_entry(order, r["event_time_ms"], past=True)))
        for r in fill_rows:
            past.append((r["chain_seq"], fill_entry(Fill.from_dict(r), past=True)))
        for r in action_rows:
            past.append((r["chain_seq"], action_entry(r["action"], r.get("reason"), _loads(r.get("details")),
                                                      r["actor"], _ms(r["time"]), past=True)))
        past.sort(key=lambda item: item[0])
        for _, entry in past:
            self.add(entry)
        self.loaded_from_journal = len(past)
        return len(past)


async def load_from_journal(book: HistoryBook, journal: Any, rows: int = LOAD_ROWS) -> int:
    """Fill `book` from the journal's newest rows (before the session's own)."""
    return book.load(await journal.recent("circuit_breaker_events", rows), await journal.recent("orders", rows),
                     await journal.recent("fills", rows), await journal.recent("operator_actions", rows))


__all__ = ["HistoryBook", "HistoryEntry", "PANES", "PANE_TITLES", "load_from_journal"]
