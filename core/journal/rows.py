"""Building journal rows: domain objects (spikes, breaker changes, orders, fills, proposals,
agent decisions and performance, operator actions) turned into row dicts.

Holds the value helpers, Req (what a builder hands the writer), RowBuilder (one builder per
request kind; runs on the caller's thread, so a row is a snapshot taken when it is
submitted) and the breaker-episode bookkeeping the writer applies in transition order.
Every value is normalised to what SQLite will give back, so a row's hash computed before
the insert equals the one the verifier computes from the stored row, and every text value
(JSON columns included) has the known secrets masked (core.redact) before it is hashed.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.events import BreakerChanged, BreakerStatus, SpikeDetected, iso_utc
from core.journal import audit
from core.journal.audit import MUTABLE
from core.journal.schema import JournalError
from core.redact import mask
from core.trading.orders import Fill, Order

BREAKER_STATUS_MAP: dict[BreakerStatus, str] = {
    BreakerStatus.TRIGGERED: "triggered",
    BreakerStatus.RECOVERING: "recovering",
    BreakerStatus.SAFE: "cleared",
    BreakerStatus.WARNING: "warning",
}

# a batch holding one of these is committed with synchronous=FULL
DURABLE_KINDS = frozenset({"breaker", "breaker_notified", "order", "fill", "operator_action"})

SPIKE_MUTABLE = MUTABLE["spike_events"]
PROPOSAL_MUTABLE = MUTABLE["proposals"]

BARRIER = "barrier"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _json(obj: Any) -> str | None:
    if obj is None:
        return None
    if isinstance(obj, str):
        return obj  # already JSON (or a plain note): stored as given
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _iso(t: int | float | str | None) -> str | None:
    if t is None or isinstance(t, str):
        return t
    return iso_utc(int(t))


def _num(d: dict[str, Any] | None, *keys: str) -> Any:
    if not d:
        return None
    for k in keys:
        v = d.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v
    return None


def _affinity(decl: str) -> str:
    """SQLite's type affinity rules, for the declared types this schema uses."""
    d = (decl or "").upper()
    if "INT" in d:
        return "INTEGER"
    if "CHAR" in d or "CLOB" in d or "TEXT" in d:
        return "TEXT"
    if "REAL" in d or "FLOA" in d or "DOUB" in d:
        return "REAL"
    return "BLOB" if not d or "BLOB" in d else "NUMERIC"


def _normalise(value: Any, affinity: str) -> Any:
    """The value exactly as SQLite will give it back, so the hash computed before the
    insert equals the one the verifier computes from the stored row."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and math.isnan(value):
        return None  # SQLite stores NaN as NULL
    if affinity == "REAL":
        if isinstance(value, int):
            return float(value)
    elif affinity == "INTEGER":
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            return int(value)
    elif affinity == "TEXT":
        if isinstance(value, (int, float)):
            value = str(value)
    if isinstance(value, (dict, list, tuple)):
        value = _json(value)
    elif not isinstance(value, (int, float, str, bytes)):
        value = str(value)
    return mask(value) if isinstance(value, str) else value


@dataclass
class Req:
    kind: str
    table: str | None
    row: dict[str, Any] | None = None  # an insert: every column but id and the chain columns
    update: tuple[str, Any, dict[str, Any]] | None = None  # (table, row id or proposal_id, changes)
    meta: dict[str, Any] = field(default_factory=dict)
    fut: Any = None  # asyncio.Future or concurrent.futures.Future

    @property
    def durable(self) -> bool:
        return self.kind in DURABLE_KINDS


class RowBuilder:
    """The builders need each table's columns and their affinities, read from the file at
    open (a migration may have added columns); that, and the matching INSERT, is all the
    state this holds."""

    def __init__(self) -> None:
        self.columns: dict[str, list[str]] = {}
        self.affinity: dict[str, dict[str, str]] = {}
        self.insert_sql: dict[str, str] = {}

    def add_table(self, table: str, info: Any) -> None:
        """`info` is the table's PRAGMA table_info rows."""
        cols = [r[1] for r in info]
        self.columns[table] = cols
        self.affinity[table] = {r[1]: _affinity(r[2]) for r in info}
        self.insert_sql[table] = (f'INSERT INTO "{table}" ({", ".join(cols)}) '
                                  f'VALUES ({", ".join("?" for _ in cols)})')

    def _row(self, table: str, values: dict[str, Any]) -> dict[str, Any]:
        """A full row (every column, normalised to what SQLite stores) plus audit_initial."""
        aff = self.affinity[table]
        unknown = set(values) - set(aff)
        if unknown:
            raise JournalError(f"{table} has no column(s) {', '.join(sorted(unknown))}")
        row = {c: _normalise(values.get(c), aff[c]) for c in self.columns[table]
               if c not in ("id", "chain_seq", "prev_hash", "row_hash")}
        if table in MUTABLE:
            row["audit_initial"] = audit.canonical_json({c: row.get(c) for c in MUTABLE[table]})
        return row

    def _changes(self, table: str, changes: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
        bad = set(changes) - set(allowed)
        if bad:
            raise JournalError(f"{table}: {', '.join(sorted(bad))} cannot be changed "
                               f"(mutable columns: {', '.join(allowed)})")
        if not changes:
            raise JournalError(f"{table}: nothing to update")
        aff = self.affinity[table]
        out = {}
        for c, v in changes.items():
            if isinstance(v, (dict, list)):
                v = _json(v)
            out[c] = _normalise(v, aff[c])
        return out

    def row_update(self, table: str, row_id: int, changes: dict[str, Any], time_ms: int | None) -> dict[str, Any]:
        """The row_updates row recording an applied change (built by the writer, inside the
        transaction, once it knows the row id)."""
        return self._row("row_updates", {"time": iso_utc(time_ms or now_ms()), "table_name": table,
                                         "row_id": row_id, "changes": _json(changes)})

    def build(self, kind: str, payload: dict[str, Any]) -> Req:
        builder = self._BUILDERS.get(kind)
        if builder is None:
            raise JournalError(f"unknown journal request kind {kind!r} (known: {', '.join(sorted(self._BUILDERS))})")
        try:
            return builder(self, **payload)
        except (TypeError, ValueError, OverflowError, OSError) as e:  # a value no row can hold (a time past
            # year 9999 is an OSError from the C library): this request's fault
            raise JournalError(f"journal {kind} row refused: {e}") from None

    # ------------------------------------------------------------------ one builder per kind
    def _b_spike(self, spike: SpikeDetected, agent_detected_by: str = "scanner", status: str = "detected",
                 context_analysis: Any = None, risk_assessment: Any = None, trade_id: str | None = None,
                 outcome: str | None = None, pnl: float | None = None) -> Req:
        row = self._row("spike_events", {
            "timestamp": iso_utc(spike.time_ms), "trading_pair": spike.symbol,
            "spike_type": getattr(spike.spike_type, "value", spike.spike_type), "direction": spike.direction,
            "magnitude_percent": spike.magnitude_pct, "timeframe_minutes": spike.timeframe_minutes,
            "volume_multiplier": spike.volume_multiple, "price_from": spike.price_from, "price_to": spike.price_to,
            "confidence_score": spike.confidence, "detection_latency_ms": spike.detection_latency_ms,
            "agent_detected_by": agent_detected_by, "status": status,
            "context_analysis": _json(context_analysis), "risk_assessment": _json(risk_assessment),
            "trade_id": trade_id, "outcome": outcome, "pnl": pnl, "time_ms": spike.time_ms, "zscore": spike.zscore,
            "details": _json(spike.details or {}),
        })
        return Req("spike", "spike_events", row)

    def _b_spike_update(self, spike_id: int, time_ms: int | None = None, **changes: Any) -> Req:
        return Req("spike_update", None, update=("spike_events", int(spike_id),
                                                 self._changes("spike_events", changes, SPIKE_MUTABLE)),
                   meta={"time_ms": time_ms})

    def _b_breaker(self, change: BreakerChanged, record: dict[str, Any] | None = None, user_notified: bool = False,
                   notes: str | None = None) -> Req:
        """The episode columns (triggered_at, cleared_at, ...) are filled later by
        complete_breaker_row, in transition order; `meta` carries what that needs."""
        details = dict(change.details or {})
        snap = dict(change.market_snapshot or {})
        refs = snap.get("references") if isinstance(snap.get("references"), dict) else {}
        btc = next((v for k, v in refs.items() if str(k).upper().startswith("BTC") and isinstance(v, dict)), None)
        eth = next((v for k, v in refs.items() if str(k).upper().startswith("ETH") and isinstance(v, dict)), None)
        status = BreakerStatus(change.status)
        previous = BreakerStatus(change.previous)
        rcm = details.get("recovery_conditions_met", details.get("recovery"))
        if rcm is not None and isinstance(details.get("legs"), dict):  # Guardian.assess_recovery() shape
            rcm = {"met": rcm, "legs": details["legs"]}
        row = self._row("circuit_breaker_events", {
            "trigger_reason": change.reason, "trigger_type": change.trigger_type,
            "status": BREAKER_STATUS_MAP[status],
            "btc_price_at_trigger": _num(btc, "price"), "eth_price_at_trigger": _num(eth, "price"),
            "btc_drop_percent": _num(btc, "drop_60m_percent", "drop_percent"),
            "eth_drop_percent": _num(eth, "drop_60m_percent", "drop_percent"),
            "market_cap_drop_percent": _num(details, "market_cap_drop_percent") or _num(snap, "market_cap_drop_percent"),
            "liquidations_1h": _num(details, "liquidations_1h") or _num(snap, "liquidations_1h"),
            "fear_greed_index": _num(details, "fear_greed_index") or _num(snap, "fear_greed_index"),
            "trigger_details": _json(details), "market_snapshot": _json(snap),
            "downtime_seconds": _num(details, "downtime_seconds") if status is BreakerStatus.SAFE else None,
            "capital_saved": _num(details, "capital_saved") if status is BreakerStatus.SAFE else None,
            "orders_cancelled": _num(details, "orders_cancelled"),
            "positions_affected": _num(details, "positions_affected"),
            "recovery_time_seconds": _num(details, "recovery_time_seconds") if status is BreakerStatus.SAFE else None,
            "recovery_conditions_met": _json(rcm) if rcm is not None else None,
            "user_notified": bool(user_notified), "notes": notes if notes is not None else details.get("notes"),
            "event_time": iso_utc(change.time_ms), "event_time_ms": change.time_ms, "epoch": change.epoch,
            "previous_status": previous.value, "breaker_status": status.value,
            "actor": getattr(change.actor, "value", change.actor), "symbol": change.symbol, "reason": change.reason,
            "breaker_record": _json(record) if record is not None else None,
        })
        meta = {"status": status, "previous": previous, "time_ms": change.time_ms, "reason": change.reason,
                "record": json.loads(row["breaker_record"]) if row["breaker_record"] else None}
        return Req("breaker", "circuit_breaker_events", row, meta=meta)

    def _b_breaker_notified(self, breaker_event_id: int, notified: bool = True, time_ms: int | None = None) -> Req:
        return Req("breaker_notified", None,
                   update=("circuit_breaker_events", int(breaker_event_id),
                           self._changes("circuit_breaker_events", {"user_notified": bool(notified)},
                                         MUTABLE["circuit_breaker_events"])),
                   meta={"time_ms": time_ms})

    def _b_agent_decision(self, agent_name: str, decision_type: str, decision: str | None = None, *,
                          agent_role: str | None = None, confidence: float | None = None,
                          reasoning: str | None = None, input_data: Any = None, output_data: Any = None,
                          execution_time_ms: float | None = None, spike_event_id: int | None = None,
                          circuit_breaker_event_id: int | None = None, trade_id: str | None = None,
                          time_ms: int | None = None) -> Req:
        row = self._row("agent_decisions", {
            "timestamp": iso_utc(time_ms if time_ms is not None else now_ms()), "agent_name": agent_name,
            "agent_role": agent_role, "decision_type": decision_type, "decision": decision,
            "confidence": confidence, "reasoning": reasoning, "input_data": _json(input_data),
            "output_data": _json(output_data), "execution_time_ms": execution_time_ms,
            "spike_event_id": spike_event_id, "circuit_breaker_event_id": circuit_breaker_event_id,
            "trade_id": trade_id,
        })
        return Req("agent_decision", "agent_decisions", row)

    def _b_agent_performance(self, agent_name: str, period: str, *, total_decisions: int = 0,
                             correct_decisions: int = 0, incorrect_decisions: int = 0,
                             accuracy_percent: float | None = None, avg_confidence: float | None = None,
                             avg_execution_time_ms: float | None = None, total_spikes_detected: int = 0,
                             true_positives: int = 0, false_positives: int = 0, false_negatives: int = 0,
                             circuit_breaker_triggers: int = 0, false_circuit_breaker_triggers: int = 0,
                             notes: str | None = None, time_ms: int | None = None) -> Req:
        judged = (correct_decisions or 0) + (incorrect_decisions or 0)
        if accuracy_percent is None and judged:
            accuracy_percent = correct_decisions / judged * 100.0
        row = self._row("agent_performance", {
            "timestamp": iso_utc(time_ms if time_ms is not None else now_ms()), "agent_name": agent_name,
            "period": period, "total_decisions": total_decisions, "correct_decisions": correct_decisions,
            "incorrect_decisions": incorrect_decisions, "accuracy_percent": accuracy_percent,
            "avg_confidence": avg_confidence, "avg_execution_time_ms": avg_execution_time_ms,
            "total_spikes_detected": total_spikes_detected, "true_positives": true_positives,
            "false_positives": false_positives, "false_negatives": false_negatives,
            "circuit_breaker_triggers": circuit_breaker_triggers,
            "false_circuit_breaker_triggers": false_circuit_breaker_triggers, "notes": notes,
        })
        return Req("agent_performance", "agent_performance", row)

    def _b_order(self, order: Order, event_time_ms: int | None = None) -> Req:
        t = event_time_ms if event_time_ms is not None else (order.created_ms or now_ms())
        d = order.to_dict()
        row = self._row("orders", {
            "client_order_id": order.client_order_id, "symbol": order.symbol, "side": d["side"], "type": d["type"],
            "quantity": order.quantity, "price": order.price, "stop_price": order.stop_price,
            "reduce_only": order.reduce_only, "origin": d["origin"], "proposal_id": order.proposal_id,
            "status": d["status"], "filled_quantity": order.filled_quantity, "average_price": order.average_price,
            "exchange_order_id": order.exchange_order_id, "reason": order.reason, "event_time": iso_utc(t),
            "event_time_ms": t, "order_json": _json(d),
        })
        return Req("order", "orders", row)

    def _b_fill(self, fill: Fill) -> Req:
        row = self._row("fills", {
            "fill_id": fill.fill_id, "client_order_id": fill.client_order_id, "symbol": fill.symbol,
            "side": fill.side.value, "quantity": fill.quantity, "price": fill.price, "fee": fill.fee,
            "liquidity": fill.liquidity, "time": iso_utc(fill.time_ms), "time_ms": fill.time_ms,
        })
        return Req("fill", "fills", row)

    def _b_proposal(self, proposal: Any = None, *, status: str = "pending", spike_event_id: int | None = None,
                    **fields: Any) -> Req:
        """`proposal` is a TradeProposal (anything with model_dump()) or a dict; or pass the
        fields as keywords. The whole proposal is kept in `payload`."""
        if proposal is None:
            data = dict(fields)
        elif hasattr(proposal, "model_dump"):
            data = {**proposal.model_dump(mode="json"), **fields}
        else:
            data = {**dict(proposal), **fields}
        if not data.get("proposal_id"):
            raise JournalError("a proposal needs a proposal_id")
        content_hash = data.get("content_hash") or hashlib.sha256(audit.canonical_json(
            {k: data.get(k) for k in ("proposal_id", "symbol", "side", "quantity", "entry_type", "entry_price",
                                      "stop_loss", "take_profit")}).encode()).hexdigest()
        created = data.get("created_ms", data.get("created_at"))
        expires = data.get("expires_ms", data.get("expires_at"))
        row = self._row("proposals", {
            "proposal_id": data["proposal_id"], "created_at": _iso(created if created is not None else now_ms()),
            "symbol": data.get("symbol"), "side": data.get("side"), "quantity": data.get("quantity"),
            "entry_type": data.get("entry_type"), "entry_price": data.get("entry_price"),
            "stop_loss": data.get("stop_loss"), "take_profit": data.get("take_profit"),
            "status": getattr(status, "value", status), "content_hash": content_hash,
            "spike_event_id": spike_event_id if spike_event_id is not None else data.get("spike_event_id"),
            "expires_at": _iso(expires), "payload": _json(data),
            "decided_by": data.get("decided_by"), "decision_reason": data.get("decision_reason"),
            "decided_at": _iso(data.get("decided_at")),
        })
        return Req("proposal", "proposals", row)

    def _b_proposal_update(self, proposal_id: str, status: str | None = None, decided_by: str | None = None,
                           decision_reason: str | None = None, decided_at_ms: int | None = None,
                           time_ms: int | None = None) -> Req:
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = getattr(status, "value", status)
        if decided_by is not None:
            changes["decided_by"] = decided_by
        if decision_reason is not None:
            changes["decision_reason"] = decision_reason
        if decided_at_ms is not None or decided_by is not None:
            changes["decided_at"] = iso_utc(decided_at_ms if decided_at_ms is not None else (time_ms or now_ms()))
        return Req("proposal_update", None,
                   update=("proposals", str(proposal_id), self._changes("proposals", changes, PROPOSAL_MUTABLE)),
                   meta={"time_ms": time_ms})

    def _b_operator_action(self, action: str, reason: str | None = None, details: Any = None,
                           actor: str = "operator", time_ms: int | None = None) -> Req:
        row = self._row("operator_actions", {
            "time": iso_utc(time_ms if time_ms is not None else now_ms()),
            "actor": getattr(actor, "value", actor), "action": action, "reason": reason, "details": _json(details),
        })
        return Req("operator_action", "operator_actions", row)

    def _b_incident(self, time_ms: int, reason: str, record: str, trigger_type: str | None = None,
                    symbol: str | None = None) -> Req:
        row = self._row("incidents", {"time": iso_utc(time_ms), "trigger_type": trigger_type, "symbol": symbol,
                                      "reason": reason, "record": record})
        return Req("incident", "incidents", row)

    def _b_barrier(self) -> Req:
        return Req(BARRIER, None)

    _BUILDERS: dict[str, Callable[..., Req]] = {
        "spike": _b_spike, "spike_update": _b_spike_update, "breaker": _b_breaker,
        "breaker_notified": _b_breaker_notified, "agent_decision": _b_agent_decision,
        "agent_performance": _b_agent_performance, "order": _b_order, "fill": _b_fill, "proposal": _b_proposal,
        "proposal_update": _b_proposal_update, "operator_action": _b_operator_action, "incident": _b_incident,
        BARRIER: _b_barrier,
    }

    # ------------------------------------------------------------------ the open breaker episode
    def complete_breaker_row(self, row: dict[str, Any], meta: dict[str, Any],
                             episode: dict[str, Any]) -> dict[str, Any]:
        """Fill the episode columns (triggered_at, cleared_at, downtime, recovery time) from
        the open episode; returns the episode after this transition. The writer calls it in
        transition order, which the caller's thread cannot know."""
        status: BreakerStatus = meta["status"]
        previous: BreakerStatus = meta["previous"]
        t = meta["time_ms"]
        rec = meta.get("record") or {}
        ep = episode
        aff = self.affinity["circuit_breaker_events"]
        if status is BreakerStatus.TRIGGERED:
            t0 = rec.get("triggered_at_ms")
            if t0 is None:
                t0 = ep.get("triggered_ms") if previous is BreakerStatus.RECOVERING and ep.get("triggered_ms") else t
            reason = rec.get("trigger_reason") or meta["reason"]
            episode = {"triggered_ms": t0, "triggered_at": _iso(t0), "reason": reason, "recovery_ms": None}
            row["triggered_at"], row["trigger_reason"] = _iso(t0), reason
        elif status is BreakerStatus.RECOVERING:
            t0 = rec.get("triggered_at_ms") or ep.get("triggered_ms")
            started = rec.get("recovery_started_at_ms") or t
            reason = rec.get("trigger_reason") or ep.get("reason")
            episode = {"triggered_ms": t0, "triggered_at": _iso(t0) if t0 else ep.get("triggered_at"),
                       "reason": reason, "recovery_ms": started}
            row["triggered_at"], row["trigger_reason"] = episode["triggered_at"], reason
        elif status is BreakerStatus.SAFE:
            row["cleared_at"] = _iso(t)
            if previous in (BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING):
                row["triggered_at"] = ep.get("triggered_at")
                row["trigger_reason"] = ep.get("reason") or row.get("trigger_reason")
                t0 = ep.get("triggered_ms")
                if row.get("downtime_seconds") is None and t0 is not None:
                    row["downtime_seconds"] = _normalise(max(0, t - t0) / 1000.0, aff["downtime_seconds"])
                if row.get("recovery_time_seconds") is None and ep.get("recovery_ms") is not None:
                    row["recovery_time_seconds"] = _normalise(max(0, t - ep["recovery_ms"]) / 1000.0,
                                                              aff["recovery_time_seconds"])
            episode = {}
        return episode


def episode_from_last_row(last: Any) -> dict[str, Any]:
    """The open episode, recovered from the newest breaker row (breaker_status, triggered_at,
    trigger_reason, event_time_ms, breaker_record); {} when the breaker is not halted."""
    if last is None or last[0] not in (BreakerStatus.TRIGGERED.value, BreakerStatus.RECOVERING.value):
        return {}
    rec = json.loads(last[4]) if last[4] else {}
    episode = {
        "triggered_ms": rec.get("triggered_at_ms"), "triggered_at": last[1], "reason": last[2],
        "recovery_ms": rec.get("recovery_started_at_ms")
        if last[0] == BreakerStatus.RECOVERING.value else None,
    }
    if last[0] == BreakerStatus.RECOVERING.value and episode["recovery_ms"] is None:
        episode["recovery_ms"] = last[3]
    return episode
