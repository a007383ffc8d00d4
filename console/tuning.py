"""`replay --shadow` tables and `spikeguard tune`: breaker settings chosen from evidence.

tune sweeps a grid of breaker settings over a folder of Binance CSV files. Each file is
replayed once, every grid point running as a shadow breaker in that same pass (core.shadow),
and each point is scored over all files: triggers, false trips, missed crashes, the
de-risking policy's drawdown against the passive book's, its cost on quiet files, and
what the breaker saves a dip-buying bot. It prints a table, a chart and writes a CSV.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

CRASH_DRAWDOWN_PCT = 15.0  # a file whose passive book draws down this much is a crash for the ratios
QUIET_DRAWDOWN_PCT = 5.0  # and one under this is quiet: what the policy costs there is its price


class TuneError(Exception):
    """A grid or folder that cannot be swept: one line for the operator."""


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """KEY=v1,v2,... items -> [(key, [values])]."""
    grid = []
    for item in items:
        key, sep, raw = item.partition("=")
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not sep or not key.strip() or not values:
            raise TuneError(f"--grid {item!r}: expected KEY=V1,V2,..., for example "
                            f"circuit_breaker.slow_crash.horizons.4h.trigger_percent=10,12,15")
        grid.append((key.strip(), values))
    if not grid:
        raise TuneError("give at least one --grid KEY=V1,V2,...")
    return grid


def grid_points(grid: list[tuple[str, list[str]]]) -> list[list[str]]:
    keys = [k for k, _ in grid]
    return [[f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*(vs for _, vs in grid))]


@dataclass
class PointScore:
    overrides: list[str]
    triggers: int = 0
    false_trips: int = 0
    crashes: int = 0
    missed: int = 0
    round_trips: int = 0
    ratios: list[float] = field(default_factory=list)  # policy / passive max drawdown on crash files
    quiet_cost_pct: list[float] = field(default_factory=list)
    dip_saved: float = 0.0  # the dip bot's worst point, with the breaker minus without, summed

    def label(self) -> str:
        """Each override by the last two parts of its key: 4h.trigger_percent=12."""
        return " ".join(".".join(o.partition("=")[0].split(".")[-2:]) + "=" + o.partition("=")[2]
                        for o in self.overrides)

    def row(self) -> dict[str, Any]:
        return {"overrides": " ".join(self.overrides), "triggers": self.triggers, "false_trips": self.false_trips,
                "crashes": self.crashes, "missed_crashes": self.missed,
                "worst_drawdown_ratio": round(max(self.ratios), 3) if self.ratios else None,
                "mean_drawdown_ratio": round(sum(self.ratios) / len(self.ratios), 3) if self.ratios else None,
                "max_quiet_cost_pct": round(max(self.quiet_cost_pct), 3) if self.quiet_cost_pct else None,
                "round_trips": self.round_trips, "dip_buyer_saved_usd": round(self.dip_saved, 2)}


def sweep(settings: Any, files: list[Path], grid: list[tuple[str, list[str]]],
          progress: Any = None) -> list[PointScore]:
    from core.config import shadow_variant
    from core.headless import run_headless
    from core.market.replay import ReplayFeed

    points = grid_points(grid)
    variants = [(f"p{i}", shadow_variant(settings, overrides=ov)) for i, ov in enumerate(points)]
    scores = [PointScore(ov) for ov in points]
    for n, path in enumerate(files):
        if progress is not None:
            progress(n, path)
        _, report = asyncio.run(run_headless(settings, ReplayFeed([path]), journal=False, shadows=variants))
        passive = report["protection"]["books"]["passive"]
        dip_without = report["protection"]["books"]["dip_buyer_without_breaker"]
        capital = report["protection"]["starting_capital"]
        for score, shadow in zip(scores, report["shadows"][1:]):
            books = shadow["protection"]
            score.triggers += shadow["triggers"]
            score.false_trips += len(shadow["false_trips"])
            score.crashes += shadow["crashes"]
            score.missed += len(shadow["missed_crashes"])
            score.round_trips += books["policy"]["round_trips"]
            score.dip_saved += books["dip_buyer_with_breaker"]["lowest_equity"] - dip_without["lowest_equity"]
            if passive["max_drawdown_pct"] >= CRASH_DRAWDOWN_PCT:
                score.ratios.append(books["policy"]["max_drawdown_pct"] / passive["max_drawdown_pct"])
            elif passive["max_drawdown_pct"] < QUIET_DRAWDOWN_PCT:
                score.quiet_cost_pct.append((passive["equity_end"] - books["policy"]["equity_end"]) / capital * 100)
    return scores


def csv_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise TuneError(f"{folder}: not a folder of Binance CSV files")
    files = sorted(p for p in folder.glob("*.csv") if p.is_file() and p.name != "events.csv")
    if not files:
        raise TuneError(f"{folder}: no .csv files in it")
    return files


def write_csv(scores: list[PointScore], out: Path) -> None:
    rows = [s.row() for s in scores]
    try:
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise TuneError(f"{out}: cannot write the CSV: {exc.strerror or exc}") from None


def print_tune(scores: list[PointScore], files: int, console: Console) -> None:
    t = Table(title=f"Breaker grid over {files} files (policy drawdown / passive on crash files; lower is better)")
    for col, justify in (("#", "right"), ("settings", "left"), ("triggers", "right"), ("false trips", "right"),
                         ("missed", "right"), ("worst ratio", "right"), ("mean ratio", "right"),
                         ("quiet cost", "right"), ("round trips", "right"), ("dip bot saved", "right")):
        t.add_column(col, justify=justify)
    for i, s in enumerate(scores):
        r = s.row()
        t.add_row(str(i), s.label(), str(r["triggers"]), str(r["false_trips"]), f"{r['missed_crashes']}/{r['crashes']}",
                  _num(r["worst_drawdown_ratio"]), _num(r["mean_drawdown_ratio"]),
                  "-" if r["max_quiet_cost_pct"] is None else f"{r['max_quiet_cost_pct']:.2f}%",
                  str(r["round_trips"]), f"{r['dip_buyer_saved_usd']:,.0f}")
    console.print(t)
    console.print(chart(scores))


def chart(scores: list[PointScore], width: int = 40) -> Text:
    """One bar per grid point: the worst policy/passive drawdown ratio; a bar past the
    0.6 mark misses the quality bar; a point with false trips or missed crashes says so."""
    text = Text("worst drawdown ratio per grid point (| marks 0.6)\n")
    top = max([max(s.ratios) for s in scores if s.ratios] + [1.0])
    mark = round(0.6 / top * width)
    for i, s in enumerate(scores):
        worst = max(s.ratios) if s.ratios else 0.0
        n = round(worst / top * width)
        bar = "".join("█" if k < n else ("|" if k == mark else " ") for k in range(width))
        style = "red" if worst > 0.6 else "green"
        text.append(f"{i:>3} ")
        text.append(bar, style=style)
        notes = [f"{s.false_trips} false" if s.false_trips else "", f"{s.missed} missed" if s.missed else ""]
        text.append(f" {worst:.2f} {' '.join(x for x in notes if x)}\n")
    return text


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_shadows(shadows: list[dict[str, Any]], console: Console) -> None:
    """`replay --shadow`: the real breaker and each shadow, side by side."""
    t = Table(title="Shadow breakers (same ticks, never acting)")
    t.add_column("breaker", no_wrap=True, min_width=min(24, max(len(s["name"]) for s in shadows)))
    for col in ("trips", "false", "missed", "TRIG min", "WARN min", "policy dd", "policy end", "dip low"):
        t.add_column(col, justify="right")
    for s in shadows:
        books = s.get("protection") or {}
        pol, dip = books.get("policy", {}), books.get("dip_buyer_with_breaker", {})
        t.add_row(s["name"], str(s["triggers"]), str(len(s["false_trips"])),
                  f"{len(s['missed_crashes'])}/{s['crashes']}", f"{s['minutes_in_state']['TRIGGERED']:,.0f}",
                  f"{s['minutes_in_state']['WARNING']:,.0f}",
                  f"{pol['max_drawdown_pct']:.2f}%" if pol else "-", f"{pol['equity_end']:,.2f}" if pol else "-",
                  f"{dip['lowest_equity']:,.2f}" if dip else "-")
    console.print(t)
