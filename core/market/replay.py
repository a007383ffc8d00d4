"""Replay Binance CSV files (klines or aggTrades) as one time-ordered tick stream.

Klines come with or without a header, with 7 columns (open_time, open, high, low, close,
volume, close_time) or Binance's 12. Each candle becomes four ticks along the path the
bar most likely traced: open, low, high, close for an up bar and open, high, low, close
for a down bar, a quarter of the bar apart. Files stream lazily and merge by time, so a
replay's memory does not grow with its length. A malformed row is counted, reported with
its file and line, and skipped: it never stops the replay.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from core.events import FeedProblem, MarketEvent, SymbolEnded, Tick
from core.market.feed import MAX_SPEED, Feed
from core.market.symbols import QUOTE_ASSETS

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")
_INTERVAL_MS = {"1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
                "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "1d": 86_400_000}
_KLINE_HEADER = {"open_time", "open", "high", "low", "close"}
_AGG_HEADER = {"price", "quantity", "transact_time"}
_GIVE_UP_AFTER = 50  # bad rows before the first good one: the file is something else


class ReplayInputError(Exception):
    """A file that cannot be replayed at all (missing, unreadable, no symbol in its name)."""


def symbol_from_path(path: Path) -> str:
    """BTCUSDT-1m-2021-05-19.csv (Binance) or BTC_USDT-1m.csv / BTC_USDT_USDT-5m-futures (freqtrade)."""
    stem = path.name.split(".")[0]
    first = stem.split("-")[0].upper()
    parts = first.split("_")
    if len(parts) >= 2 and parts[1] in QUOTE_ASSETS:
        candidate = parts[0] + parts[1]
    else:
        candidate = parts[0]
    if not _SYMBOL_RE.match(candidate):
        raise ReplayInputError(f"{path}: cannot tell the symbol from the file name (expected e.g. BTCUSDT-1m-....csv)")
    return candidate


def interval_from_path(path: Path) -> int | None:
    for part in path.name.split(".")[0].split("-")[1:]:
        if part in _INTERVAL_MS:
            return _INTERVAL_MS[part]
    return None


def _ms(value: str) -> int:
    v = int(value)
    if v >= 100_000_000_000_000:  # microseconds (Binance spot files from 2025 on)
        v //= 1000
    return v


def _price(value: str, name: str) -> float:
    x = float(value)
    if not math.isfinite(x) or x <= 0.0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return x


def _qty(value: str, name: str) -> float:
    x = float(value)
    if not math.isfinite(x) or x < 0.0:
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return x


class CsvSource:
    """One file: sniffs its layout, then yields ticks and records bad rows."""

    def __init__(self, path: Path, problems: list[FeedProblem] | None = None, symbol: str | None = None) -> None:
        self.path = path
        if not path.exists():
            raise ReplayInputError(f"{path}: file not found")
        if not path.is_file():
            raise ReplayInputError(f"{path}: not a regular file")
        self.symbol = symbol or symbol_from_path(path)
        self.market = "futures" if "futures" in path.name.lower() else "spot"
        self.interval_ms = interval_from_path(path)
        self.kind = "unknown"
        self.rows = 0
        self.bad_rows = 0
        self._report = (problems.append if problems is not None else (lambda p: None))
        self.on_bad_row = None  # optional callback(FeedProblem) for live counting

    def _bad(self, line: int, error: str) -> None:
        self.bad_rows += 1
        problem = FeedProblem(str(self.path), line, error)
        if self.on_bad_row is not None:
            self.on_bad_row(problem)
        else:
            self._report(problem)

    def _sniff(self, fields: list[str]) -> tuple[str, dict[str, int] | None]:
        """Return (kind, header column map or None when the row is data)."""
        first = fields[0].strip().lower()
        if first and not first.lstrip("-").isdigit():
            names = [f.strip().lower() for f in fields]
            if _KLINE_HEADER <= set(names):
                return "kline", {n: i for i, n in enumerate(names)}
            if _AGG_HEADER <= set(names):
                return "aggtrades", {n: i for i, n in enumerate(names)}
            return "unknown", {}
        if len(fields) in (7, 8) and fields[6].strip().lower() in ("true", "false"):
            return "aggtrades", None
        if len(fields) in (7, 12):
            return "kline", None
        return "unknown", None

    def ticks(self) -> Iterator[Tick]:
        try:
            handle = self.path.open("r", encoding="utf-8", errors="replace", newline="")
        except OSError as exc:
            self._bad(0, f"cannot open: {exc}")
            return
        with handle:
            cols: dict[str, int] | None = None
            prev_time = -1
            for lineno, raw in enumerate(handle, start=1):
                if self.rows == 0 and self.bad_rows >= _GIVE_UP_AFTER:
                    self._bad(lineno, f"no usable row in the first {_GIVE_UP_AFTER} lines: not a Binance CSV; "
                                      f"the rest of the file is skipped")
                    return
                line = raw.strip()
                if not line:
                    continue
                if "\x00" in line:
                    self._bad(lineno, "NUL byte in row")
                    continue
                fields = line.split(",")
                if self.kind == "unknown":
                    self.kind, header = self._sniff(fields)
                    if self.kind == "unknown":
                        self._bad(lineno, f"unrecognised layout ({len(fields)} columns): not a Binance kline or aggTrades row")
                        if header is not None or lineno > 20:
                            return
                        continue
                    if header is not None:
                        cols = header
                        continue
                try:
                    if self.kind == "kline":
                        out = self._kline(fields, cols, prev_time)
                        prev_time = out[0]
                        self.rows += 1
                        for tick in out[1]:
                            yield tick
                    else:
                        tick = self._aggtrade(fields, cols, prev_time)
                        prev_time = tick.time_ms
                        self.rows += 1
                        yield tick
                except (ValueError, IndexError) as exc:
                    msg = str(exc) if isinstance(exc, ValueError) and str(exc) else f"{type(exc).__name__}: {exc}"
                    if "could not convert" in msg or "invalid literal" in msg:
                        msg = f"non-numeric field: {msg.split(':', 1)[-1].strip()}"
                    self._bad(lineno, msg)
        if self.rows == 0 and self.bad_rows == 0:
            self._bad(0, "no data rows")

    def _kline(self, f: list[str], cols: dict[str, int] | None, prev_time: int) -> tuple[int, list[Tick]]:
        if cols is None:
            if len(f) not in (7, 12):
                raise ValueError(f"expected 7 or 12 columns, got {len(f)}")
            t0, o, h, lo, c, v = _ms(f[0]), f[1], f[2], f[3], f[4], f[5]
            close_time = _ms(f[6])
        else:
            if len(f) < len(cols):
                raise ValueError(f"expected {len(cols)} columns, got {len(f)}")
            t0 = _ms(f[cols["open_time"]])
            o, h, lo, c = f[cols["open"]], f[cols["high"]], f[cols["low"]], f[cols["close"]]
            v = f[cols["volume"]] if "volume" in cols else "0"
            close_time = _ms(f[cols["close_time"]]) if "close_time" in cols else -1
        op, hi, low, cl = _price(o, "open"), _price(h, "high"), _price(lo, "low"), _price(c, "close")
        vol = _qty(v, "volume")
        if low > hi or op < low or op > hi or cl < low or cl > hi:
            raise ValueError(f"inconsistent candle: low {low} high {hi} open {op} close {cl}")
        if t0 <= prev_time:
            raise ValueError(f"open_time {t0} is not after the previous row's {prev_time} (duplicate or out of order)")
        step = close_time + 1 - t0 if close_time > t0 else (self.interval_ms or 0)
        if step <= 0:
            raise ValueError("cannot tell the candle interval (close_time missing or not after open_time)")
        if self.interval_ms is None:
            self.interval_ms = step
        sym, mkt, q = self.symbol, self.market, vol / 4.0
        path = (op, low, hi, cl) if cl >= op else (op, hi, low, cl)
        return t0, [Tick(sym, path[k], q, t0 + k * step // 4, mkt) for k in range(4)]

    def _aggtrade(self, f: list[str], cols: dict[str, int] | None, prev_time: int) -> Tick:
        if cols is None:
            if len(f) not in (7, 8):
                raise ValueError(f"expected 7 or 8 aggTrades columns, got {len(f)}")
            price, qty, t = f[1], f[2], _ms(f[5])
        else:
            price, qty, t = f[cols["price"]], f[cols["quantity"]], _ms(f[cols["transact_time"]])
        if t < prev_time:
            raise ValueError(f"transact_time {t} is before the previous trade's {prev_time}")
        return Tick(self.symbol, _price(price, "price"), _qty(qty, "quantity"), t, self.market)


class ReplayFeed(Feed):
    name = "replay"

    def __init__(self, paths: Sequence[str | Path], speed: float = MAX_SPEED, **kwargs) -> None:
        super().__init__(speed=speed, **kwargs)
        if not paths:
            raise ReplayInputError("no files to replay")
        self.sources = [CsvSource(Path(p)) for p in paths]
        for src in self.sources:
            src.on_bad_row = self.stats.record_problem
        self.symbols = tuple(dict.fromkeys(s.symbol for s in self.sources))
        intervals = [s.interval_ms for s in self.sources if s.interval_ms]
        # four ticks per candle: a symbol's natural cadence is a quarter of its interval
        self.cadence_ms = max(1, min(intervals) // 4) if intervals else 1000

    def _source_events(self, src: CsvSource) -> Iterator[MarketEvent]:
        last = None
        for tick in src.ticks():
            last = tick.time_ms
            yield tick
        yield SymbolEnded(src.symbol, last if last is not None else 0)

    def _events(self) -> Iterator[MarketEvent]:
        streams = [self._source_events(s) for s in self.sources]
        if len(streams) == 1:
            yield from streams[0]
        else:
            yield from heapq.merge(*streams, key=lambda e: e.time_ms)
