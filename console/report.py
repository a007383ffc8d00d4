"""The readable replay report (the --json object, laid out for a person)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

_STATE_STYLE = {"SAFE": "green", "WARNING": "yellow", "TRIGGERED": "bold red", "RECOVERING": "blue"}


def print_report(report: dict[str, Any], title: str, console: Console | None = None) -> None:
    console = console or Console()
    stats = report["stats"]
    console.print(f"[bold]spikeguard replay[/bold]  {title}")
    table = Table(title="Circuit breaker", show_lines=False, expand=False)
    for col in ("time (UTC)", "from", "to", "epoch", "reason"):
        table.add_column(col)
    for row in report["breaker"]:
        table.add_row(_short(row["time"]), _state(row["from"]), _state(row["to"]), str(row["epoch"]), row["reason"])
    if report["breaker"]:
        console.print(table)
    else:
        console.print("Circuit breaker: SAFE throughout")
    spikes = report["spikes"]
    if spikes:
        t = Table(title=f"Spikes ({len(spikes)})")
        for col in ("time (UTC)", "symbol", "type", "dir", "move %", "tf", "conf", "vol x"):
            t.add_column(col, justify="right" if col in ("move %", "tf", "conf", "vol x") else "left")
        for s in spikes[:200]:
            t.add_row(_short(s["time"]), s["symbol"], s["type"].replace("_", " "), s["direction"], f"{s['magnitude_pct']:.2f}",
                      f"{s['timeframe_minutes']}m", f"{s['confidence']:.2f}", f"{s['volume_multiple']:.1f}")
        console.print(t)
        if len(spikes) > 200:
            console.print(f"... and {len(spikes) - 200} more (use --json for all)")
    else:
        console.print("Spikes: none")
    lat = stats["decision_latency_us"]
    console.print(
        f"{stats['ticks']:,} ticks in {stats['wall_seconds']:.2f}s ({stats['ticks_per_second']:,.0f} ticks/s); "
        f"decision latency p50 {lat['p50']:.1f}us p99 {lat['p99']:.1f}us max {lat['max']:.1f}us; "
        f"final state {_state(stats['final_state'])}"
    )
    for src in stats.get("sources", []):
        console.print(_source_line(src), highlight=False)
    if stats["bad_rows"]:
        console.print(f"[yellow]{stats['bad_rows']} bad rows skipped[/yellow]")
        for ex in stats["bad_row_examples"][:10]:
            where = f"{ex['file']}:{ex['line']}" if ex["line"] is not None else ex["file"]
            console.print(f"  {where}: {ex['error']}")
    if "protection" in report:
        console.print(protection_table(report["protection"]))
        p = report["protection"]
        console.print(f"capital saved at the passive book's lowest point ({_short(p['lowest_point_time'] or '-')}) "
                      f"by flattening at TRIGGERED: {p['capital_saved']:+,.2f} USD")
    if "shadows" in report:
        from console.tuning import print_shadows

        print_shadows(report["shadows"], console)
    if "proposals" in report:
        console.print(_desk_line(report), highlight=False)
    if stats.get("journal"):
        console.print(f"journal: {stats['journal']}")


BOOK_TITLES = {"passive": "passive", "flatten_at_trigger": "flatten at trigger", "policy": "de-risking policy",
               "dip_buyer_with_breaker": "dip buyer, breaker", "dip_buyer_without_breaker": "dip buyer, none"}


def protection_table(protection: dict[str, Any], title: str = "Capital protection") -> Table:
    """The protection books side by side (paper, after fees, spread and slippage)."""
    t = Table(title=f"{title} (paper books after fees, spread and slippage)")
    t.add_column("")
    books = protection["books"]
    for name in books:
        t.add_column(BOOK_TITLES.get(name, name), justify="right")
    t.add_row("max drawdown", *(f"{b['max_drawdown_pct']:.2f}%" for b in books.values()))
    t.add_row("lowest equity", *(f"{b['lowest_equity']:,.2f}" for b in books.values()))
    t.add_row("equity at end", *(f"{b['equity_end']:,.2f}" for b in books.values()))
    t.add_row("fees", *(f"{b['fees']:,.2f}" for b in books.values()))
    t.add_row("round trips", *(str(b["round_trips"]) for b in books.values()))
    return t


def _desk_line(report: dict[str, Any]) -> str:
    """The agent desk in one line: what it proposed and skipped, and how it would have fared."""
    from collections import Counter

    skips = Counter(s["kind"] for s in report.get("skips", []))
    outcomes = Counter(o["outcome"] for o in report.get("outcomes", []))
    parts = [f"desk: {len(report['proposals'])} proposals",
             f"{sum(skips.values())} skips ({skips['veto']} vetoes, {skips['abort']} aborts)"]
    if outcomes:
        parts.append("outcomes " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(outcomes.items())))
    return "; ".join(parts)


def _source_line(src: dict[str, Any]) -> str:
    """BTCUSDT-1m-2021-05-19.csv: BTCUSDT 1m klines, times in ms, 2,880 rows, 0 bad"""
    kind = {"kline": "klines", "aggtrades": "aggTrades"}.get(src["kind"], "rows of an unknown layout")
    what = " ".join(x for x in (src["symbol"], src["interval"], kind) if x)
    unit = src["time_unit"] or "unknown"
    bad = f"[yellow]{src['bad_rows']:,} bad[/yellow]" if src["bad_rows"] else "0 bad"
    return f"{escape(Path(src['file']).name)}: {what}, times in {unit}, {src['rows']:,} rows, {bad}"


def _short(iso: str) -> str:
    """2020-03-12T10:37:30.000Z -> 2020-03-12 10:37:30"""
    return iso[:19].replace("T", " ")


def _state(name: str) -> str:
    return f"[{_STATE_STYLE.get(name, 'white')}]{name}[/]"
