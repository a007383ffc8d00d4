"""The flight recorder: every TRIGGERED leaves a self-contained record in the journal.

While the session runs, the recorder keeps, for every symbol the market holds (the
references and the breadth set), the last `ticks_minutes` of raw ticks (at most
`max_ticks_per_symbol`) and one-minute bars for `bars_minutes` before them: one deque
append per tick, a bar updated in place. At a trip it takes the windows' state, the rule
that fired and the halt's cancels, and holds the tapes from `ticks_minutes` before the trip.
Until it closes (`after_minutes` of market time, the next transition or the session's end,
whichever comes first) it adds the policy's actions, the order updates, the transitions and
the reasoning lines (from ten minutes before the trip). At the close it takes the tapes,
two hours before the trip to the close, and the record is compressed (zlib, base64) into
one `incidents` row of the journal.

Cost on the tick path: the trip copies no ticks (the policy acts right after it); the
close copies the tapes by reference (C-level tuple copies). The JSON and the compression
run on the recorder's own worker thread, in pieces, so the engine's thread never waits long
for it (orjson holds the GIL while it runs, zlib does not), and without making an object
per tick (millions of them would start the garbage collector, which stops every thread).

Threads: ticks and the bus arrive on the loop; a breaker change, an order update or a
policy action may come from any thread (an agent's escalation runs in the crew's thread).
A lock guards opening and closing a record; the tapes are only written by the loop and
only ever copied whole elsewhere.

`export_pack` writes a record as files `replay` reads back: per symbol, its bars as a
1-minute kline CSV and its raw ticks as an aggTrades CSV (the bars end where the raw ticks
begin, at a minute boundary: replay plays both files of a symbol as one stream), and the
breaker settings in force as config.yaml, so the trip replays at the same time, for the
same reason.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from core.events import BreakerChanged, BreakerStatus, ReasoningLine, Tick, iso_utc
from core.market.state import MarketState
from core.market.windows import MINUTE_MS
from core.settings import FlightRecorderSettings, Settings

log = logging.getLogger("spikeguard.incident")

REASONING_BEFORE_MS = 10 * MINUTE_MS
RECORD_VERSION = 1
MAX_RECORD_LINES = 5_000  # reasoning lines and order updates one record keeps while open
_JSON_CHUNK = 5_000  # ticks per orjson call: a few ms of GIL each
_B64_CHUNK = 3 * (1 << 20)  # bytes per base64 call (a multiple of 3: the pieces join)

# (record, its encoded form), on the recorder's worker thread; the record's tapes hold Tick
# objects: the encoded form is the one to keep
Writer = Callable[[dict[str, Any], str], None]


class IncidentError(Exception):
    """A record that cannot be read or exported: one line for the operator."""


@dataclass
class _Tape:
    """One symbol's recent ticks and the one-minute bars before them."""

    ticks: deque = field(default_factory=deque)  # Tick, oldest first
    bars: deque = field(default_factory=deque)  # [minute_ms, open, high, low, close, volume], closed minutes
    bar: list | None = None  # the minute the oldest raw ticks are leaving into
    cut_ms: int = -1  # time of the newest tick the cap pushed out while the time window would have kept it


@dataclass
class _Open:
    change: BreakerChanged
    record: dict[str, Any]
    close_at_ms: int


_NOTHING_HELD = 1 << 62  # no record open: the tapes keep `ticks_minutes` and no more


class FlightRecorder:
    def __init__(self, settings: Settings, market: MarketState, breaker: Any, write: Writer) -> None:
        self.cfg: FlightRecorderSettings = settings.flight_recorder
        self.settings = settings
        self.market = market
        self.breaker = breaker  # read only: which epoch a cancel belongs to
        self.write = write
        self.tapes: dict[str, _Tape] = {}
        self.reasoning: deque = deque(maxlen=2_000)  # (time_ms, role, text)
        self.open: _Open | None = None
        self._keep_ms = int(self.cfg.ticks_minutes * MINUTE_MS)
        self._max = self.cfg.max_ticks_per_symbol
        self._bars_ms = self.cfg.bars_minutes * MINUTE_MS
        # while a record is open the tapes hold from `ticks_minutes` before its trip: the record
        # takes them at its close, so the trip itself copies nothing
        self._hold_ms = _NOTHING_HELD
        self._halt_cancels: deque = deque(maxlen=500)  # (epoch, order dict): the halt cancels before the trip is heard
        self._changes: deque = deque(maxlen=100)  # recent transitions: the ones the record's span covers go in
        self._lock = threading.Lock()
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[concurrent.futures.Future] = []

    # ------------------------------------------------------------------ the tape (hot path)
    def on_tick(self, tick: Tick) -> None:
        tape = self.tapes.get(tick.symbol)
        if tape is None:
            tape = self.tapes[tick.symbol] = _Tape()
        ticks = tape.ticks
        ticks.append(tick)
        t = tick.time_ms
        floor = t - self._keep_ms
        if floor > self._hold_ms:
            floor = self._hold_ms
        if ticks[0].time_ms < floor or len(ticks) > self._max:
            self._evict(tape, floor)
        rec = self.open
        if rec is not None and t >= rec.close_at_ms:
            self._close(rec, "after_minutes passed", t)

    def _evict(self, tape: _Tape, floor: int) -> None:
        """Ticks leaving the raw tape (older than the window, or over the cap) join their minute's bar."""
        ticks = tape.ticks
        while ticks[0].time_ms < floor or len(ticks) > self._max:
            old = ticks.popleft()
            t, p, q = old.time_ms, old.price, old.qty
            if t >= floor:
                tape.cut_ms = t
            minute = t - t % MINUTE_MS
            bar = tape.bar
            if bar is None or bar[0] != minute:
                if bar is not None:
                    tape.bars.append(bar)
                    while tape.bars and tape.bars[0][0] < minute - self._bars_ms:
                        tape.bars.popleft()
                tape.bar = [minute, p, p, p, p, q]
                continue
            if p > bar[2]:
                bar[2] = p
            if p < bar[3]:
                bar[3] = p
            bar[4] = p
            bar[5] += q

    def on_event(self, event: Any) -> None:
        """The bus's events: the reasoning lines (the agents', the guardian's, the operator's)."""
        if type(event) is not ReasoningLine:
            return
        line = (event.time_ms, event.role, event.text)
        self.reasoning.append(line)
        rec = self.open
        if rec is not None and len(rec.record["reasoning"]) < MAX_RECORD_LINES:
            rec.record["reasoning"].append(line)

    # ------------------------------------------------------------------ an incident
    def on_breaker(self, change: BreakerChanged) -> None:
        self._changes.append(change)
        rec = self.open
        if rec is not None:
            self._close(rec, f"the breaker moved to {change.status.value}", change.time_ms, change)
        if change.status is BreakerStatus.TRIGGERED:
            self._start(change)

    def on_order(self, order: Any) -> None:
        """The policy's orders (origin "policy") and the cancels. The halt cancels inside the
        transition, before anyone hears of the trip: those wait here under their epoch."""
        cancelled = order.status.value == "CANCELED"
        if not cancelled and getattr(order.origin, "value", order.origin) != "policy":
            return
        rec = self.open
        if rec is not None:
            if len(rec.record["orders"]) < MAX_RECORD_LINES:
                rec.record["orders"].append(order.to_dict())
        elif cancelled:
            status, epoch = self.breaker.current()
            if status is BreakerStatus.TRIGGERED:
                self._halt_cancels.append((epoch, order.to_dict()))

    def on_policy(self, action: Any) -> None:
        rec = self.open
        if rec is not None:
            rec.record["policy_actions"].append({"time": iso_utc(action.time_ms), "kind": action.kind,
                                                 "reason": action.reason, **action.details()})

    def _start(self, change: BreakerChanged) -> None:
        t = change.time_ms
        span_ms = self._bars_ms + self._keep_ms
        windows = list(self.market.symbols.items())  # list(): one C call, safe beside the loop adding a symbol
        lines = list(self.reasoning)
        full = len(lines) == self.reasoning.maxlen and lines[0][0] >= t - REASONING_BEFORE_MS
        record: dict[str, Any] = {
            "version": RECORD_VERSION,
            "trigger": {**_transition(change), "details": change.details, "epoch": change.epoch,
                        "actor": change.actor.value, "market_snapshot": change.market_snapshot},
            "windows": {s: _windows_state(w) for s, w in windows if w.ticks},
            "transitions": [_transition(c) for c in list(self._changes) if c.time_ms >= t - span_ms],
            "policy_actions": [],
            "orders": [o for epoch, o in list(self._halt_cancels) if epoch == change.epoch],
            "reasoning": [x for x in lines if x[0] >= t - REASONING_BEFORE_MS],
            "reasoning_cut": full,  # more lines came in those ten minutes than the recorder keeps
            "circuit_breaker": self.settings.circuit_breaker.model_dump(mode="json"),
            "flight_recorder": self.cfg.model_dump(mode="json"),
        }
        with self._lock:
            self._halt_cancels.clear()
            self.open = _Open(change, record, t + int(self.cfg.after_minutes * MINUTE_MS))
            self._hold_ms = t - self._keep_ms

    def close(self, why: str, time_ms: int) -> concurrent.futures.Future | None:
        """Close the open record (if any): it is written on the worker thread. Returns that work."""
        rec = self.open
        return self._close(rec, why, time_ms) if rec is not None else None

    def _close(self, rec: _Open, why: str, time_ms: int,
               change: BreakerChanged | None = None) -> concurrent.futures.Future | None:
        with self._lock:
            if self.open is not rec:
                return None  # closed already (by another thread)
            self.open = None
            self._hold_ms = _NOTHING_HELD
        record = rec.record
        if change is not None:
            record["transitions"].append(_transition(change))
        record["closed"] = {"time": iso_utc(time_ms), "time_ms": time_ms, "why": why}
        # the tapes by reference (C-level copies: Ticks and closed bars never change); the open bar by value
        tapes = {s: (tuple(tape.ticks), tuple(tape.bars), list(tape.bar) if tape.bar is not None else None,
                     tape.cut_ms) for s, tape in list(self.tapes.items())}
        if self._worker is None:
            self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="flight-recorder")
        fut = self._worker.submit(self._finish, rec, tapes)
        self._pending = [f for f in self._pending if not f.done()] + [fut]
        return fut

    def _finish(self, rec: _Open, tapes: dict[str, tuple]) -> None:
        """On the worker thread: the record encoded, handed to the writer."""
        record = rec.record
        start = rec.change.time_ms - self._keep_ms
        record["tapes"] = {s: _tape_record(*tapes[s], start) for s in sorted(tapes)}
        self.write(record, encode(record))

    def pending(self) -> list[concurrent.futures.Future]:
        return [f for f in self._pending if not f.done()]

    async def flushed(self) -> None:
        """Wait until every closed record has been handed to the writer (a failure is logged:
        the journal reports its own)."""
        for fut in list(self._pending):
            try:
                await asyncio.wrap_future(fut)
            except Exception:
                log.exception("a flight record could not be written")
        self._pending = self.pending()


# ---------------------------------------------------------------------------- records
def _transition(change: BreakerChanged) -> dict[str, Any]:
    return {"time": iso_utc(change.time_ms), "time_ms": change.time_ms, "from": change.previous.value,
            "to": change.status.value, "reason": change.reason, "trigger_type": change.trigger_type,
            "symbol": change.symbol}


def _windows_state(w: Any) -> dict[str, Any]:
    try:
        out: dict[str, Any] = {"price": w.last_price, "last_time": iso_utc(w.last_time),
                               "sigma_1m_percent": round(w.sigma_1m() * 100, 5),
                               "sigma_1m_slow_percent": round(w.sigma_1m_slow() * 100, 5)}
        for k, ms in enumerate(w.windows_ms):
            m = ms // MINUTE_MS
            out[f"{m}m"] = {"high": w.high(k), "low": w.low(k), "drop_percent": round(w.drop_pct(k), 4),
                            "volume_multiple": round(w.volume_multiple(k), 3)}
        for j, m in enumerate(w.long_minutes):
            out[f"{m}m"] = {"high": w.long_high(j), "drop_percent": round(w.long_drop_pct(j), 4)}
    except (IndexError, ValueError, ZeroDivisionError):  # read from another thread mid-update: rare, not fatal
        return {"price": w.last_price, "last_time": iso_utc(w.last_time), "unreadable": True}
    return out


def _tape_record(ticks: tuple, bars: tuple, bar: list | None, cut_ms: int, start_ms: int) -> dict[str, Any]:
    """A symbol's part of the record: its Ticks (written as [time, price, qty]) and the whole
    minutes before them. No per-tick objects are made here: millions of them would wake the
    garbage collector, which stops every thread."""
    bars_out = [list(b) for b in bars] + ([bar] if bar is not None else [])
    # the raw ticks start at a minute boundary: those in the last bar's minute go into it
    if ticks and bars_out and bars_out[-1][0] == ticks[0].time_ms - ticks[0].time_ms % MINUTE_MS:
        last, end = bars_out[-1], bars_out[-1][0] + MINUTE_MS
        k = 0
        while k < len(ticks) and ticks[k].time_ms < end:
            p = ticks[k].price
            last[2], last[3], last[4], last[5] = max(last[2], p), min(last[3], p), p, last[5] + ticks[k].qty
            k += 1
        ticks = ticks[k:]
    return {"ticks": ticks, "bars": bars_out, "truncated": cut_ms >= start_ms,
            "raw_from": iso_utc(ticks[0].time_ms) if ticks else None}


def _tick_json(x: Any) -> Any:
    if type(x) is Tick:
        return [x.time_ms, x.price, x.qty]
    raise TypeError(f"cannot record a {type(x).__name__}")


def _json_pieces(record: dict[str, Any]) -> Iterator[bytes]:
    """The record's JSON in pieces: each tape's ticks a chunk at a time."""
    tapes = record.get("tapes")
    if not isinstance(tapes, dict) or not tapes:
        yield orjson.dumps(record)
        return
    head = orjson.dumps({k: v for k, v in record.items() if k != "tapes"})
    yield head[:-1] + (b',"tapes":{' if len(head) > 2 else b'"tapes":{')
    for i, (symbol, tape) in enumerate(tapes.items()):
        rest = orjson.dumps({k: v for k, v in tape.items() if k != "ticks"})
        yield (b"," if i else b"") + orjson.dumps(symbol) + b":" + rest[:-1] + (b"," if len(rest) > 2 else b"") \
            + b'"ticks":['
        ticks = tape.get("ticks") or ()
        for j in range(0, len(ticks), _JSON_CHUNK):
            yield (b"," if j else b"") + orjson.dumps(ticks[j:j + _JSON_CHUNK], default=_tick_json)[1:-1]
        yield b"]}"
    yield b"}}"


def encode(record: dict[str, Any]) -> str:
    """zlib-compressed JSON in base64 (what the journal's `incidents.record` holds)."""
    z = zlib.compressobj(1)  # level 1: a quarter of level 6's time for 7% more bytes
    data = b"".join([z.compress(piece) for piece in _json_pieces(record)] + [z.flush()])
    return b"".join(base64.b64encode(data[i:i + _B64_CHUNK]) for i in range(0, len(data), _B64_CHUNK)).decode("ascii")


def decode(text: str) -> dict[str, Any]:
    try:
        record = orjson.loads(zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True)))
    except (ValueError, zlib.error, orjson.JSONDecodeError, UnicodeEncodeError, AttributeError) as exc:
        raise IncidentError(f"the record cannot be read ({type(exc).__name__}): the journal row is damaged") from None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise IncidentError("the record is not a flight record this spikeguard reads")
    for key, kind in (("trigger", dict), ("tapes", dict), ("transitions", list), ("circuit_breaker", dict)):
        if not isinstance(record.get(key), kind):
            raise IncidentError(f"the record has no {key}: the journal row is damaged")
    return record


# ---------------------------------------------------------------------------- the pack
def export_pack(record: dict[str, Any], out: Path) -> list[Path]:
    """Write the record as CSV files replay reads, plus config.yaml and incident.json.
    Returns the CSV files. Raises IncidentError (one line) for a folder that is not new or
    empty, or cannot be written."""
    import yaml

    from core.market.replay import ReplayInputError, symbol_from_path

    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise IncidentError(f"{out}: exists and is not an empty folder")
    except OSError as exc:
        raise IncidentError(f"{out}: cannot look at it: {exc.strerror or exc}") from None
    if not any(t["ticks"] or t["bars"] for t in record["tapes"].values()) or not record["trigger"].get("time"):
        raise IncidentError("the record holds no ticks or no trip: the journal row is damaged; nothing exported")
    for symbol in record["tapes"]:
        try:
            if symbol_from_path(Path(f"{symbol}-1m.csv")) != symbol:
                raise ReplayInputError(symbol)
        except ReplayInputError:
            raise IncidentError(f"{symbol}: replay cannot tell this symbol from a file name; nothing exported") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for symbol, tape in sorted(record["tapes"].items()):
            if tape["bars"]:  # the older context, for the 4- and 24-hour rules
                path = out / f"{symbol}-1m-before.csv"
                lines = ["open_time,open,high,low,close,volume,close_time"]
                lines += [f"{b[0]},{b[1]!r},{b[2]!r},{b[3]!r},{b[4]!r},{b[5]!r},{b[0] + MINUTE_MS - 1}"
                          for b in tape["bars"]]
                path.write_text("\n".join(lines) + "\n")
                written.append(path)
            if tape["ticks"]:  # the raw ticks, as they reached the engine
                path = out / f"{symbol}-aggTrades-incident.csv"
                lines = ["agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"]
                lines += [f"{i},{p!r},{q!r},{i},{i},{t},false" for i, (t, p, q) in enumerate(tape["ticks"])]
                path.write_text("\n".join(lines) + "\n")
                written.append(path)
        (out / "config.yaml").write_text(yaml.safe_dump({"circuit_breaker": record["circuit_breaker"]},
                                                          sort_keys=False))
        meta = {k: record[k] for k in ("trigger", "transitions", "policy_actions", "orders", "closed", "windows",
                                       "flight_recorder") if k in record}
        meta["files"] = [p.name for p in written]
        meta["truncated"] = sorted(s for s, t in record["tapes"].items() if t.get("truncated"))
        (out / "incident.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise IncidentError(f"{out}: cannot write the pack: {exc.strerror or exc}") from None
    return written
