"""Replay Binance CSV files (klines or aggTrades) as one time-ordered tick stream.

Klines come with or without a header, with 7 columns (open_time, open, high, low, close,
volume, close_time) or Binance's 12. Each candle becomes four ticks along the path the
bar most likely traced: open, low, high, close for an up bar and open, high, low, close
for a down bar, a quarter of the bar apart. Files stream lazily and merge by time, so a
replay's memory does not grow with its length.

Every value is checked against core/market/ticks.py before it becomes a tick. A file's
timestamp unit (s, ms, us or ns) is detected from its first data row. A malformed or
implausible row is counted, reported with its file and line, and skipped: it never stops
the replay. Files are read as UTF-8 with or without a byte-order mark, with any line ends.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from core.events import FeedProblem, MarketEvent, SymbolEnded, Tick, iso_utc
from core.market.feed import MAX_SPEED, PacedFeed
from core.market.symbols import QUOTE_ASSETS, check_symbol, is_symbol
from core.market.ticks import (
    MAX_PRICE,
    MAX_QTY,
    MAX_TIMESTAMP_DIGITS,
    MIN_PRICE,
    TimeUnit,
    detect_time_unit,
    plausible_price,
    plausible_qty,
    plausible_time_ms,
)

_INTERVAL_MS = {"1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
                "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "1d": 86_400_000}
_INTERVAL_NAME = {ms: name for name, ms in _INTERVAL_MS.items()}
_KLINE_HEADER = {"open_time", "open", "high", "low", "close"}
_AGG_HEADER = {"price", "quantity", "transact_time"}
_GIVE_UP_AFTER = 50  # bad rows before the first good one: the file is something else
_TIME_RANGE = "between 2009-01-03 and 2100"


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
    if not is_symbol(candidate):
        raise ReplayInputError(f"{path}: cannot tell the symbol from the file name (expected a name like "
                               f"BTCUSDT-1m-2021-05-19.csv, ending in a quote asset such as USDT); "
                               f"name it so, or give --symbol SYMBOL")
    return candidate


def interval_from_path(path: Path) -> int | None:
    for part in path.name.split(".")[0].split("-")[1:]:
        if part in _INTERVAL_MS:
            return _INTERVAL_MS[part]
    return None


def _show(text: str) -> str:
    """A field as it appears in an error message: quoted, and short even when the field is not."""
    return repr(text if len(text) <= 24 else text[:21] + "...")


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"non-numeric {name}: {_show(text.strip())}") from None


def _price(text: str, name: str) -> float:
    x = _number(text, name)
    if not plausible_price(x):
        raise ValueError(f"{name} {_show(text.strip())} is not a plausible price "
                         f"(expected a number from {MIN_PRICE:g} to {MAX_PRICE:g})")
    return x


def _qty(text: str, name: str) -> float:
    x = _number(text, name)
    if not plausible_qty(x):
        raise ValueError(f"{name} {_show(text.strip())} is not a plausible quantity "
                         f"(expected a number from 0 to {MAX_QTY:g})")
    return x


def _timestamp_digits(text: str, name: str) -> int:
    """A timestamp field as an int; what no timestamp can be is refused before it is converted."""
    s = text.strip()
    if not (s.isascii() and s.isdigit()):
        raise ValueError(f"{name} {_show(s)} is not a timestamp (expected whole epoch s, ms, us or ns)")
    if len(s) > MAX_TIMESTAMP_DIGITS:
        raise ValueError(f"{name} has {len(s)} digits: longer than any timestamp")
    return int(s)


def candle_ticks(symbol: str, market: str, open_ms: int, step_ms: int, o: float, h: float, low: float, c: float,
                 volume: float) -> list[Tick]:
    """A candle as four ticks a quarter of the bar apart, along the path it most likely traced:
    open, low, high, close for an up bar; open, high, low, close for a down bar."""
    path = (o, low, h, c) if c >= o else (o, h, low, c)
    q = volume / 4.0
    return [Tick(symbol, path[k], q, open_ms + k * step_ms // 4, market) for k in range(4)]


class CsvSource:
    """One file: sniffs its layout and time unit, then yields ticks and reports bad rows."""

    def __init__(self, path: Path, symbol: str | None = None,
                 on_bad_row: Callable[[FeedProblem], None] | None = None) -> None:
        self.path = path
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ReplayInputError(f"{path}: file not found") from None
        except OSError as exc:
            raise ReplayInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if not path.is_file():
            raise ReplayInputError(f"{path}: not a regular file")
        self.identity = (st.st_dev, st.st_ino)  # the same file under two names is still one file
        self.symbol = symbol or symbol_from_path(path)
        self.market = "futures" if "futures" in path.name.lower() else "spot"
        self.interval_ms = interval_from_path(path)
        self.kind = "unknown"
        self.time_unit: TimeUnit | None = None  # detected from the first data row
        self.rows = 0
        self.bad_rows = 0
        self.on_bad_row = on_bad_row

    def describe(self) -> dict[str, Any]:
        """What was read from this file, for the replay report."""
        ms = self.interval_ms if self.kind == "kline" else None
        return {"file": str(self.path), "symbol": self.symbol, "market": self.market, "kind": self.kind,
                "interval": _INTERVAL_NAME.get(ms, f"{ms}ms") if ms else None,
                "time_unit": self.time_unit.name if self.time_unit else None,
                "rows": self.rows, "bad_rows": self.bad_rows}

    def _bad(self, line: int, error: str) -> None:
        self.bad_rows += 1
        if self.on_bad_row is not None:
            self.on_bad_row(FeedProblem(str(self.path), line, error))

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

    def _time(self, text: str, name: str, unit: TimeUnit | None) -> tuple[TimeUnit, int, int]:
        """(unit, raw value, epoch ms) of a timestamp field. Without a unit yet, the value
        itself tells it; with one, the value must be a plausible time in it."""
        raw = _timestamp_digits(text, name)
        if unit is None:
            unit = detect_time_unit(raw)
            if unit is None:
                raise ValueError(f"{name} {raw} is not a time {_TIME_RANGE} in s, ms, us or ns")
            return unit, raw, unit.to_ms(raw)
        t = unit.to_ms(raw)
        if not plausible_time_ms(t):
            raise ValueError(f"{name} {raw} is not a time {_TIME_RANGE} in this file's unit ({unit.name})")
        return unit, raw, t

    def ticks(self) -> Iterator[Tick]:
        try:
            # utf-8-sig: an Excel export starts with a byte-order mark; newline="" splits on any line end
            handle = self.path.open("r", encoding="utf-8-sig", errors="replace", newline="")
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
                        prev_time, ticks = self._kline(fields, cols, prev_time)
                        self.rows += 1
                        yield from ticks
                    else:
                        tick = self._aggtrade(fields, cols, prev_time)
                        prev_time = tick.time_ms
                        self.rows += 1
                        yield tick
                except (ValueError, IndexError) as exc:
                    self._bad(lineno, str(exc) or type(exc).__name__)
        if self.rows == 0 and self.bad_rows == 0:
            self._bad(0, "no data rows")

    def _kline(self, f: list[str], cols: dict[str, int] | None, prev_time: int) -> tuple[int, list[Tick]]:
        if cols is None:
            if len(f) not in (7, 12):
                raise ValueError(f"expected 7 or 12 columns, got {len(f)}")
            open_text, o, h, lo, c, v, close_text = f[0], f[1], f[2], f[3], f[4], f[5], f[6]
        else:
            if len(f) < len(cols):
                raise ValueError(f"expected {len(cols)} columns, got {len(f)}")
            open_text = f[cols["open_time"]]
            o, h, lo, c = f[cols["open"]], f[cols["high"]], f[cols["low"]], f[cols["close"]]
            v = f[cols["volume"]] if "volume" in cols else "0"
            close_text = f[cols["close_time"]] if "close_time" in cols else None
        unit, open_raw, t0 = self._time(open_text, "open_time", self.time_unit)
        close_raw = self._time(close_text, "close_time", unit)[1] if close_text is not None else None
        op, hi, low, cl = _price(o, "open"), _price(h, "high"), _price(lo, "low"), _price(c, "close")
        vol = _qty(v, "volume")
        if low > hi or op < low or op > hi or cl < low or cl > hi:
            raise ValueError(f"inconsistent candle: low {low} high {hi} open {op} close {cl}")
        if t0 <= prev_time:
            raise ValueError(f"open_time {t0} is not after the previous row's {prev_time} (duplicate or out of order)")
        if close_raw is not None and close_raw > open_raw:
            step = unit.to_ms(close_raw + 1 - open_raw)
        else:
            step = self.interval_ms or 0
        if step <= 0:
            raise ValueError("cannot tell the candle interval (close_time missing or not after open_time)")
        if self.interval_ms is None:
            self.interval_ms = step
        self.time_unit = unit
        return t0, candle_ticks(self.symbol, self.market, t0, step, op, hi, low, cl, vol)

    def _aggtrade(self, f: list[str], cols: dict[str, int] | None, prev_time: int) -> Tick:
        if cols is None:
            if len(f) not in (7, 8):
                raise ValueError(f"expected 7 or 8 aggTrades columns, got {len(f)}")
            price, qty, time_text = f[1], f[2], f[5]
        else:
            if len(f) < len(cols):
                raise ValueError(f"expected {len(cols)} columns, got {len(f)}")
            price, qty, time_text = f[cols["price"]], f[cols["quantity"]], f[cols["transact_time"]]
        unit, _, t = self._time(time_text, "transact_time", self.time_unit)
        if t < prev_time:
            raise ValueError(f"transact_time {t} is before the previous trade's {prev_time}")
        tick = Tick(self.symbol, _price(price, "price"), _qty(qty, "quantity"), t, self.market)
        self.time_unit = unit
        return tick


class ReplayFeed(PacedFeed):
    name = "replay"

    def __init__(self, paths: Sequence[str | Path], speed: float = MAX_SPEED, symbol: str | None = None,
                 **kwargs) -> None:
        """`symbol` names the symbol of a single file whose name does not tell it."""
        super().__init__(speed=speed, **kwargs)
        if not paths:
            raise ReplayInputError("no files to replay")
        if symbol is not None:
            if len(paths) != 1:
                raise ReplayInputError(f"--symbol names the symbol of a single file; {len(paths)} files given")
            try:
                check_symbol(symbol)
            except ValueError as exc:
                raise ReplayInputError(f"--symbol: {exc}") from None
        self.sources = [CsvSource(Path(p), symbol, self.stats.record_problem) for p in paths]
        _refuse_repeats(self.sources)
        self.symbols = tuple(dict.fromkeys(s.symbol for s in self.sources))
        intervals = [s.interval_ms for s in self.sources if s.interval_ms]
        # four ticks per candle: a symbol's natural cadence is a quarter of its interval
        self.cadence_ms = max(1, min(intervals) // 4) if intervals else 1000

    def describe_sources(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.sources]

    def _source_events(self, index: int, src: CsvSource) -> Iterator[tuple[MarketEvent, int]]:
        last = None
        for tick in src.ticks():
            last = tick.time_ms
            yield tick, index
        yield SymbolEnded(src.symbol, last if last is not None else 0), index

    def _events(self) -> Iterator[MarketEvent]:
        """The files merged by time. Files of one symbol and market play as one stream: a
        tick at or before another file's last tick of it is an overlap (the same data under
        two names, or two files that cover the same hours) and is skipped and reported; the
        symbol has ended only when its last file has."""
        streams = [self._source_events(i, s) for i, s in enumerate(self.sources)]
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda pair: pair[0].time_ms)
        files_left = Counter(s.symbol for s in self.sources)
        last: dict[tuple[str, str], tuple[int, int]] = {}  # (symbol, market) -> (time, file) of its last tick
        overlaps: dict[int, list[int]] = {}  # file -> [count, other file, first time, last time]
        for event, index in merged:
            if type(event) is SymbolEnded:
                files_left[event.symbol] -= 1
                if not files_left[event.symbol]:
                    yield event
                continue
            key = (event.symbol, event.market)
            previous = last.get(key)
            if previous is not None and previous[1] != index and event.time_ms <= previous[0]:
                o = overlaps.setdefault(index, [0, previous[1], event.time_ms, event.time_ms])
                o[0] += 1
                o[3] = event.time_ms
                continue
            last[key] = (event.time_ms, index)
            yield event
        for index, (count, other, first, end) in overlaps.items():
            self.stats.record_problem(FeedProblem(
                str(self.sources[index].path), None,
                f"{count} ticks from {iso_utc(first)} to {iso_utc(end)} overlap {self.sources[other].path.name} "
                f"(the same {self.sources[index].symbol} hours twice): skipped"))


def _refuse_repeats(sources: list[CsvSource]) -> None:
    """One file given twice (by the same path, another path or a link) would count every tick twice."""
    seen: dict[tuple[int, int], CsvSource] = {}
    for src in sources:
        first = seen.setdefault(src.identity, src)
        if first is not src:
            same = "given twice" if src.path.resolve() == first.path.resolve() else f"the same file as {first.path}"
            raise ReplayInputError(f"{src.path}: {same}: each file may be replayed once")
