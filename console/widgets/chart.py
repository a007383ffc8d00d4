"""Text renderers of a price series, pure functions: the board's sparklines and the detail
view's braille chart. Both show percent from the series' first value (the window's open)."""

from __future__ import annotations

import math
from collections.abc import Sequence

SPARK_CHARS = "▁▂▃▄▅▆▇█"  # one to eight eighths high
SCALE_FLOOR_PCT = 1.0  # calm noise stays flat: no scale is finer than ±1%

# braille dots by (column, row) in a 2x4 cell
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


def fmt_price(p: float) -> str:
    if p != p:
        return "-"
    if p >= 1000:
        return f"{p:,.2f}"
    if p >= 1:
        return f"{p:.4f}"
    return f"{p:.6f}"


def percents(values: Sequence[float]) -> list[float]:
    """Each value as percent from the first (NaN where either is not a positive finite price)."""
    if not values:
        return []
    base = values[0]
    if not (math.isfinite(base) and base > 0):
        return [math.nan] * len(values)
    return [(v / base - 1.0) * 100.0 if math.isfinite(v) else math.nan for v in values]


def extent(pcts: Sequence[float]) -> float:
    """The largest |percent| of a series (0 when it has none)."""
    return max((abs(p) for p in pcts if p == p), default=0.0)


def nice_scale(pct: float) -> float:
    """The smallest of 1, 2, 2.5, 5, 10, 20, 25, 50, 100, … percent at or above `pct` (1 at
    least): a crash's -22% is drawn on ±25%, not squeezed into ±50%."""
    if not pct > SCALE_FLOOR_PCT:  # NaN too
        return SCALE_FLOOR_PCT
    if pct == math.inf:
        return pct
    step = 1.0
    while True:
        for m in (1.0, 2.0, 2.5, 5.0):
            if pct <= m * step:
                return m * step
        step *= 10.0


def sparkline(pcts: Sequence[float], width: int, scale: float) -> str:
    """Percents on a ±scale axis, right-aligned in `width` cells. 0% is ▄ (half height), +scale
    is █, -scale is ▁; a missing value is a blank."""
    if width <= 0:
        return ""
    top = len(SPARK_CHARS) - 1
    cells = []
    for p in pcts[-width:]:
        if p != p:
            cells.append(" ")
            continue
        eighths = 4.0 + max(-1.0, min(1.0, p / scale)) * 4.0
        cells.append(SPARK_CHARS[max(0, min(top, int(eighths + 0.5) - 1))])
    return "".join(cells).rjust(width)


def _dot_y(v: float, lo: float, hi: float, rows: int) -> float:
    """The dot row of a value, 0 at the top (the maximum); a flat series sits in the middle."""
    return (rows - 1) / 2 if hi == lo else (hi - v) / (hi - lo) * (rows - 1)


def braille_chart(values: Sequence[float], width: int, height: int) -> list[str]:
    """A line chart of `values` in `height` lines of `width` braille cells (2x4 dots each),
    from its minimum (bottom) to its maximum (top); NaN leaves a gap. A constant series is a
    line across the middle."""
    if width <= 0 or height <= 0:
        return []
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return [" " * width] * height
    cols, rows = 2 * width, 4 * height
    lo, hi = min(finite), max(finite)
    grid = [[0] * width for _ in range(height)]

    def y_of(v: float) -> float:
        return _dot_y(v, lo, hi, rows)

    def dot(x: int, y: int) -> None:
        grid[y // 4][x // 2] |= _DOTS[x % 2][y % 4]

    def segment(x0: int, y0: float, x1: int, y1: float) -> None:
        # for each dot column, the y span of the line across it, so steep moves stay joined
        for x in range(x0, x1 + 1):
            if x1 == x0:
                ya, yb = y0, y1
            else:
                a, b = max(x - 0.5, x0), min(x + 0.5, x1)
                ya, yb = (y0 + (y1 - y0) * (t - x0) / (x1 - x0) for t in (a, b))
            for y in range(int(min(ya, yb) + 0.5), int(max(ya, yb) + 0.5) + 1):
                dot(x, y)

    n = len(values)
    prev: tuple[int, float] | None = None
    for i, v in enumerate(values):
        if not math.isfinite(v):
            prev = None
            continue
        x, y = (0 if n == 1 else round(i * (cols - 1) / (n - 1))), y_of(v)
        px, py = prev if prev is not None else (x, y)
        segment(px, py, x, y)
        prev = (x, y)
    return ["".join(chr(0x2800 + c) if c else " " for c in line) for line in grid]


def chart_with_axis(values: Sequence[float], width: int, height: int) -> list[str]:
    """`braille_chart` with the maximum labelled on the top line, the minimum on the bottom
    line and the last value on its own line, each in price and percent from the first value.
    `width` is the whole line's; the labels take what they need of it."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite or height <= 0:
        return [" " * max(width, 0)] * max(height, 0)
    base, lo, hi, last = finite[0], min(finite), max(finite), finite[-1]

    def label(word: str, v: float) -> str:
        return f"{word} {fmt_price(v)} {(v / base - 1.0) * 100.0:+.2f}%"

    labels: dict[int, str] = {}
    if hi > lo:
        labels[0], labels[height - 1] = label("max", hi), label("min", lo)
    line = int(_dot_y(last, lo, hi, 4 * height) + 0.5) // 4  # the line the chart draws it on
    # the last value goes on its line, or the nearest free one (it may be the max or the min)
    free = sorted((r for r in range(height) if r not in labels), key=lambda r: abs(r - line))
    if free:
        labels[free[0]] = label("last", last)
    else:
        labels[line] += "  " + label("last", last)
    label_w = max(len(s) for s in labels.values()) + 1
    chart = braille_chart(values, max(width - label_w, 1), height)
    return [f"{row} {labels.get(i, '')}".rstrip().ljust(width) for i, row in enumerate(chart)]
