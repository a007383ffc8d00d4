"""Historical klines from Binance's public REST API, and the CSV files `spikeguard data fetch`
writes.

KlinePager pages through GET /api/v3/klines (1000 candles a request) and validates every
row (core/market/binance_messages.parse_kline): a bad row is counted and skipped, never
written, never a crash. It retries what may pass on its own (timeouts, 5xx, a bad answer,
429 after its Retry-After) and gives up at once on what will not (other 4xx, and 418: an IP
ban that more requests would only lengthen). The live feed's backfill uses it too.

`fetch_csv` writes Binance's 12-column kline layout without a header, the files
data.binance.vision serves and `spikeguard replay` reads, one page per write, closed candles
only. It resumes: an existing FILE continues after its last complete row, and a torn last row
(a download killed mid-write) is cut off first, so a row is never duplicated nor half there.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from core.events import iso_utc
from core.market.binance_messages import BadFrame, Candle, ProblemTally, parse_kline, show
from core.market.ticks import EARLIEST_MS, LATEST_MS
from core.redact import one_line

PAGE = 1000  # the most klines Binance answers in one request
# fixed-length intervals only: a month ("1M") has no one length to page by
INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")
_LONGEST_ROW = 4096  # bytes: a kline row is about 150; a longer last line is not a kline file


class HistoryError(Exception):
    """A download that cannot go on, as one line."""


class BadArgument(HistoryError):
    """What the user asked for cannot be fetched (unknown symbol, bad interval, a FILE that is
    not an earlier download of the same candles)."""


def backoff_seconds(failures: int, low: float, high: float, rand: Callable[[], float] = random.random) -> float:
    """The wait before retry number `failures` (1, 2, ...): uniform between `low` and a cap
    that doubles with each failure up to `high` ("full jitter": clients that lost the same
    server do not all come back in step)."""
    cap = min(high, low * 2.0 ** min(failures - 1, 60))
    return low + (cap - low) * rand()


def interval_ms(name: str) -> int:
    from binance.helpers import interval_to_milliseconds

    if name not in INTERVALS:
        raise BadArgument(f"interval {name[:20]!r} is not one of {', '.join(INTERVALS)}")
    return interval_to_milliseconds(name)


def _retry_after(exc: Any) -> float | None:
    try:
        return max(0.0, float(exc.response.headers["Retry-After"]))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


class KlinePager:
    def __init__(self, client: Any, tally: ProblemTally, *, attempts: int = 5, low: float = 0.5,
                 high: float = 30.0) -> None:
        self.client = client
        self.tally = tally
        self.attempts = attempts
        self.low, self.high = low, high

    async def pages(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> AsyncIterator[list[Candle]]:
        """Valid candles opening in [start_ms, end_ms), oldest first, one list per request;
        every open time after the one before it."""
        step = interval_ms(interval)
        cursor, last = start_ms, start_ms - 1
        while cursor < end_ms:
            rows = await self._page(symbol, interval, cursor, end_ms - 1)
            candles = []
            for row in rows:
                candle = parse_kline(row)
                if type(candle) is BadFrame:
                    self.tally.add(candle.kind, f"{symbol}: {candle.detail}")
                elif candle.open_ms <= last or candle.open_ms >= end_ms:
                    self.tally.add("kline_out_of_order", f"{symbol}: a candle at {iso_utc(candle.open_ms)} after "
                                                         f"{iso_utc(last)}, or past the end")
                else:
                    candles.append(candle)
                    last = candle.open_ms
            if candles:
                yield candles
            if len(rows) < PAGE:
                return
            # past this page even when its last rows were bad: a page of bad rows is not asked twice
            last = max(last, _open_time(rows[-1], last))
            cursor = last + step

    async def _page(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[Any]:
        from aiohttp import ClientError
        from binance.exceptions import BinanceAPIException, BinanceRequestException

        attempt = 0
        while True:
            attempt += 1
            wait = None
            try:
                answer = await self.client.get_klines(symbol=symbol, interval=interval, startTime=start_ms,
                                                      endTime=end_ms, limit=PAGE)
                if type(answer) is list:
                    return answer
                problem = f"not a list of klines: {show(answer)}"
                self.tally.add("bad_klines_answer", f"{symbol}: {problem}")
            except BinanceAPIException as exc:
                problem = f"HTTP {exc.status_code}, code {exc.code}: {one_line(str(exc.message), 200)}"
                if exc.code in (-1120, -1121):  # invalid interval or symbol
                    raise BadArgument(f"klines {symbol} {interval}: {problem}") from None
                if exc.status_code == 418:
                    ban = _retry_after(exc)
                    raise HistoryError(f"klines {symbol}: Binance banned this IP (HTTP 418"
                                       f"{f', for {ban:g} s' if ban is not None else ''}): stopped") from None
                if exc.status_code != 429 and 400 <= exc.status_code < 500:
                    raise HistoryError(f"klines {symbol}: {problem}") from None
                wait = _retry_after(exc) if exc.status_code == 429 else None
            except (ClientError, OSError, BinanceRequestException) as exc:  # OSError: TimeoutError too
                problem = one_line(f"{type(exc).__name__}: {getattr(exc, 'message', exc)}", 200)
            if attempt >= self.attempts:
                raise HistoryError(f"klines {symbol} from {iso_utc(start_ms)}: {problem} "
                                   f"({self.attempts} attempts)")
            await asyncio.sleep(wait if wait is not None else backoff_seconds(attempt, self.low, self.high))


def _open_time(row: Any, default: int) -> int:
    try:
        value = row[0]
    except (TypeError, IndexError, KeyError):
        return default
    return value if type(value) is int else default


# ---------------------------------------------------------------------------- data fetch
def parse_time(text: str, name: str) -> int:
    """Epoch milliseconds from an ISO 8601 date or time (UTC unless it says otherwise) or
    from epoch milliseconds."""
    s = text.strip()
    try:
        if s.isascii() and s.isdigit():
            t = int(s)
        else:
            moment = datetime.fromisoformat(s)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            t = int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise BadArgument(f"{name} {text[:40]!r} is not a date or time (e.g. 2021-05-19 or "
                          f"2021-05-19T12:00, UTC) nor epoch milliseconds") from None
    if not EARLIEST_MS <= t <= LATEST_MS:
        raise BadArgument(f"{name} {text[:40]!r} is not between 2009-01-03 and 2100")
    return t


def prepare_resume(path: Path, step_ms: int) -> int | None:
    """The open time of the last complete row of an earlier download into `path` (None when
    there is none or it is empty), after cutting off a torn last row."""
    try:
        handle = path.open("r+b")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadArgument(f"{path}: cannot open: {exc.strerror or exc}") from None
    with handle:
        size = handle.seek(0, 2)
        start = max(0, size - _LONGEST_ROW)
        handle.seek(start)
        tail = handle.read()
        cut = tail.rfind(b"\n")
        if cut < 0 and start > 0:
            raise BadArgument(f"{path}: not a kline CSV (its last line is longer than any kline row); "
                              f"remove it or choose another -o")
        complete = start + cut + 1
        if complete < size:
            handle.truncate(complete)  # a row the last run did not finish
        if complete == 0:
            return None
        last = tail[: cut].rsplit(b"\n", 1)[-1].decode("ascii", "replace").split(",")
    try:
        open_ms, close_ms = int(last[0]), int(last[6])
        if len(last) != 12:
            raise ValueError
    except (ValueError, IndexError):
        raise BadArgument(f"{path}: its last row is not a 12-column kline row; remove it or choose "
                          f"another -o") from None
    if close_ms + 1 - open_ms != step_ms:
        raise BadArgument(f"{path}: holds {(close_ms + 1 - open_ms) // 1000} s candles, not {step_ms // 1000} s "
                          f"ones; choose another -o")
    return open_ms


class Fetched(NamedTuple):
    rows: int  # written by this run
    resumed_after_ms: int | None  # the open time of the last row that was already there
    last_open_ms: int | None  # of the file's last row now
    end_ms: int  # candles opening before this were asked for (--end, or the candle now in progress)


async def fetch_csv(client: Any, symbol: str, interval: str, start_ms: int, end_ms: int, path: Path,
                    tally: ProblemTally, on_rows: Callable[[int, int], None] | None = None) -> Fetched:
    """Append the closed candles opening in [start_ms, end_ms) to `path`, after what an earlier
    run wrote. `on_rows(done, total)` follows the progress, in candles."""
    step = interval_ms(interval)
    if end_ms <= start_ms:
        raise BadArgument(f"--end {iso_utc(end_ms)} is not after --start {iso_utc(start_ms)}")
    after = prepare_resume(path, step)
    if after is not None and after < start_ms:
        raise BadArgument(f"{path}: its last row opens at {iso_utc(after)}, before --start {iso_utc(start_ms)}: "
                          f"not a part of this download; remove it or choose another -o")
    server_now = (await client.get_server_time())["serverTime"]
    end = min(end_ms, server_now // step * step)  # the candle in progress is not written: it would change
    begin = start_ms if after is None else after + step
    total = max(0, -(-(end - start_ms) // step))
    done = 0 if after is None else min(total, (after - start_ms) // step + 1)
    if on_rows:
        on_rows(done, total)
    written, last = 0, after
    if begin < end:
        pager = KlinePager(client, tally)
        with path.open("ab") as out:
            async for page in pager.pages(symbol, interval, begin, end):
                out.write("".join(",".join(map(str, c.row)) + "\n" for c in page).encode("ascii"))
                out.flush()
                written += len(page)
                last = page[-1].open_ms
                if on_rows:
                    on_rows(min(total, (last - start_ms) // step + 1), total)
    return Fetched(written, after, last, end)


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None] | None]:
    """fetch_csv's `on_rows` as a rich progress bar on stderr when it is a terminal; None (and
    no output at all) when it is a pipe or a file."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TextColumn("candles"),
                        TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    task = progress.add_task(description, total=None)
    with progress:
        yield lambda done, total: progress.update(task, completed=done, total=total)


__all__ = ["INTERVALS", "PAGE", "BadArgument", "Fetched", "HistoryError", "KlinePager", "backoff_seconds",
           "fetch_csv", "interval_ms", "parse_time", "prepare_resume", "progress_bar"]
