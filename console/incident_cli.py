"""`spikeguard incident list|show|export`: the flight recorder's records (core.incident).

Reads the journal read-only, so it works beside a running console.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from core.incident import IncidentError, decode, export_pack

CHART_WIDTH = 72
CHART_HEIGHT = 12
MARKS = {"WARNING": "W", "TRIGGERED": "T", "RECOVERING": "R", "SAFE": "S"}


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("incident", parents=[common], help="the flight recorder: one record per TRIGGERED")
    p.add_argument("action", choices=("list", "show", "export"),
                   help="list: one line each; show ID: the record and its drawdown chart; export ID --out DIR: "
                        "CSV files replay reads back, and the breaker config in force")
    p.add_argument("id", nargs="?", type=int, default=None, help="the incident's id (from list)")
    p.add_argument("--db", metavar="FILE", help="the journal (default: journal.db in the data directory)")
    p.add_argument("--out", metavar="DIR", default=None, help="with export: a new or empty folder")


def check_args(args: argparse.Namespace) -> str | None:
    if args.action in ("show", "export") and args.id is None:
        return f"incident {args.action} needs an ID (spikeguard incident list shows them)"
    if args.action == "export" and not args.out:
        return "incident export needs --out DIR"
    if args.action == "list" and (args.id is not None or args.out):
        return "incident list takes no ID or --out"
    return None


def _rows(path: Path, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
    if not path.is_file():
        raise IncidentError(f"{path}: no journal here")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            con.row_factory = sqlite3.Row
            if not con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'incidents'").fetchone():
                raise IncidentError(f"{path}: no incidents table (a journal from before the flight recorder: "
                                    f"spikeguard db init --db {path} migrates it)")
            return con.execute(sql, params).fetchall()
    except sqlite3.DatabaseError as exc:
        raise IncidentError(f"{path}: cannot read the journal: {exc}") from None


def record_of(path: Path, incident_id: int) -> dict[str, Any]:
    rows = _rows(path, "SELECT record FROM incidents WHERE id = ?", (incident_id,))
    if not rows:
        raise IncidentError(f"no incident {incident_id} in {path} (spikeguard incident list shows them)")
    return decode(rows[0]["record"])


def _trigger_symbol(record: dict[str, Any]) -> str | None:
    tapes = record["tapes"]
    symbol = record["trigger"].get("symbol")
    if symbol in tapes:
        return symbol
    return next((s for s in record["circuit_breaker"].get("references", []) if s in tapes), None) or \
        next(iter(sorted(tapes)), None)


def _drawdowns(record: dict[str, Any], symbol: str | None) -> tuple[list[tuple[int, float]], float]:
    """(time, drawdown % from the running high) over the raw ticks, and the deepest."""
    ticks = record["tapes"].get(symbol, {}).get("ticks", []) if symbol else []
    out, peak, deepest = [], 0.0, 0.0
    for t, p, _ in ticks:
        peak = max(peak, p)
        dd = (peak - p) / peak * 100.0
        deepest = max(deepest, dd)
        out.append((t, dd))
    return out, deepest


def _summary(record: dict[str, Any]) -> str:
    ticks = sum(len(t["ticks"]) for t in record["tapes"].values())
    drop = record["trigger"]["details"].get("drop_percent")
    if not isinstance(drop, (int, float)):  # a rule without a drop (stale data, an operator): the tape's own
        drop = _drawdowns(record, _trigger_symbol(record))[1]
    return f"max drop {drop:5.2f}%  {ticks:>9,} ticks"


def list_lines(path: Path) -> list[str]:
    lines = []
    for row in _rows(path, "SELECT id, time, trigger_type, symbol, reason, record FROM incidents ORDER BY id"):
        try:
            extra = _summary(decode(row["record"]))
        except IncidentError as exc:
            extra = str(exc)
        except (KeyError, TypeError, ValueError, AttributeError):
            extra = "the record is damaged"
        lines.append(f"{row['id']:>4}  {row['time']}  {row['trigger_type'] or '-':<16} {row['symbol'] or '-':<10} "
                     f"{extra}  {(row['reason'] or '')[:80]}")
    return lines or ["no incidents: the breaker has not tripped in this journal"]


def chart(record: dict[str, Any], symbol: str | None = None) -> list[str]:
    """The drawdown from the running high of one symbol's raw ticks (two hours before the
    trip to the record's close), with the transitions marked under the time axis."""
    symbol = symbol or _trigger_symbol(record)
    points, deepest = _drawdowns(record, symbol)
    if len(points) < 2:
        return [f"(no ticks recorded for {symbol or 'any symbol'})"]
    t0, t1 = points[0][0], points[-1][0]
    span = max(1, t1 - t0)
    col_dd = [0.0] * CHART_WIDTH
    for t, dd in points:
        c = min(CHART_WIDTH - 1, (t - t0) * CHART_WIDTH // span)
        col_dd[c] = max(col_dd[c], dd)
    scale = deepest or 1.0
    lines = [f"{symbol}: drawdown from its running high, {_clock(t0)} to {_clock(t1)} (deepest {deepest:.2f}%)"]
    bars = record["tapes"][symbol].get("bars") or []
    if bars:
        high = max(bars, key=lambda b: b[2])
        lines.append(f"  before it: {len(bars):,} minute bars from {_clock(bars[0][0])}, high {high[2]:.10g} at "
                     f"{_clock(high[0])}")
    earlier = [tr for tr in record["transitions"] if tr["time_ms"] < t0]
    if earlier:
        lines.append("  earlier: " + ", ".join(f"{_clock(tr['time_ms'])[5:16]} {tr['from']}->{tr['to']}"
                                               for tr in earlier))
    for row in range(CHART_HEIGHT):
        level = scale * row / CHART_HEIGHT
        cells = "".join("█" if dd > level else " " for dd in col_dd)
        lines.append(f"{level:6.2f}% │{cells}")
    marks = [" "] * CHART_WIDTH
    for tr in record["transitions"]:
        if t0 <= tr["time_ms"] <= t1:
            marks[min(CHART_WIDTH - 1, (tr["time_ms"] - t0) * CHART_WIDTH // span)] = MARKS.get(tr["to"], "?")
    lines.append("        └" + "─" * CHART_WIDTH)
    lines.append("         " + "".join(marks) + "   W warning  T triggered  R recovering  S safe")
    left, right = _clock(t0)[11:16], _clock(t1)[11:16]
    lines.append("         " + left + " " * (CHART_WIDTH - len(left) - len(right)) + right)
    return lines


def show_lines(record: dict[str, Any]) -> list[str]:
    try:
        return _show_lines(record)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        raise IncidentError("the record is damaged (a field is missing or of the wrong kind)") from None


def _show_lines(record: dict[str, Any]) -> list[str]:
    trig = record["trigger"]
    closed = record.get("closed") or {}
    out = [f"TRIGGERED {trig['time']} by {trig['actor']} ({trig['trigger_type'] or '-'}): {trig['reason']}",
           f"closed {closed.get('time', '-')}: {closed.get('why', 'still open')}"]
    details = {k: v for k, v in trig["details"].items() if not isinstance(v, (dict, list))}
    if details:
        out.append("rule: " + ", ".join(f"{k}={v}" for k, v in details.items()))
    out.append("windows at the trip:")
    for symbol, w in sorted(record["windows"].items()):
        drops = "  ".join(f"{k} {v['drop_percent']:.2f}%" for k, v in w.items() if isinstance(v, dict))
        out.append(f"  {symbol:<10} {w['price']:<12g} {drops}")
    out.append("transitions: " + ", ".join(f"{t['time'][11:19]} {t['from']}->{t['to']}" for t in record["transitions"]))
    out.append(f"policy actions: {len(record['policy_actions'])}")
    out += [f"  {a['time'][11:19]} {a['kind']}: {a['reason']}" for a in record["policy_actions"]]
    cancels = [o for o in record["orders"] if o.get("status") == "CANCELED"]
    out.append(f"orders cancelled: {len(cancels)}")
    out += [f"  {o['symbol']} {o['side']} {o['type']} {o['quantity']:g}"
            + (f" @ {o['price']:g}" if o.get("price") else "") + f": {o.get('reason') or ''}" for o in cancels[:20]]
    policy_orders = {o["client_order_id"]: o for o in record["orders"] if o.get("origin") == "policy"}
    if policy_orders:  # the last update of each
        out.append(f"policy orders: {len(policy_orders)}")
        out += [f"  {o['symbol']} {o['side']} {o['quantity']:g} {o['status']}" for o in policy_orders.values()]
    truncated = [s for s, t in record["tapes"].items() if t.get("truncated")]
    if truncated:
        out.append(f"ticks cut by max_ticks_per_symbol (the oldest are minute bars): {', '.join(truncated)}")
    out.append(f"reasoning ({len(record['reasoning'])} lines; the last 15):")
    out += [f"  {_clock(t)} {role}: {text[:110]}" for t, role, text in record["reasoning"][-15:]]
    out += chart(record)
    return out


def _clock(ms: int) -> str:
    from core.events import iso_utc

    return (iso_utc(ms) or "-")[:19].replace("T", " ")


def run(args: argparse.Namespace, path: Path) -> int:
    """0 on success; raises IncidentError (one line) otherwise."""
    if args.action == "list":
        print("\n".join(list_lines(path)))
    elif args.action == "show":
        print("\n".join(show_lines(record_of(path, args.id))))
    else:
        out = Path(args.out).expanduser()
        record = record_of(path, args.id)
        try:
            files = export_pack(record, out)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            raise IncidentError("the record is damaged (a field is missing or of the wrong kind)") from None
        print(f"incident {args.id} exported to {out}: {len(files)} CSV files, config.yaml, incident.json")
        print(f"replay it: spikeguard replay --config {out / 'config.yaml'} {out}/*.csv")
    return 0
