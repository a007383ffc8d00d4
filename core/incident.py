"""The flight recorder: every TRIGGERED leaves a self-contained record in the journal.

While the session runs, the recorder keeps, for every symbol the market holds (the
references and the breadth set), the last `ticks_minutes` of raw ticks (at most
`max_ticks_per_symbol`) and one-minute bars for `bars_minutes` before them: one deque
append per tick, a bar updated in place. At a trip it takes those, the windows' state and
the rule that fired; until it closes (`after_minutes` of market time, the next transition
or the session's end, whichever comes first) it adds the policy's actions, the orders the
halt cancelled, the transitions and the reasoning lines from ten minutes before the trip.
Then the record is compressed (zlib, base64) into one `incidents` row of the journal.

`export_pack` writes it as files `replay` reads back: per symbol, its bars as a 1-minute
kline CSV and its raw ticks as an aggTrades CSV (the bars end where the raw ticks begin, at
a minute boundary), and the breaker settings in force as config.yaml, so the trip replays
at the same time, for the same reason.
"""

from __future__ import annotations

import base64
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from core.events import BreakerChanged, BreakerStatus, ReasoningLine, Tick, iso_utc
from core.market.state import MarketState
from core.market.windows import MINUTE_MS
from core.settings import FlightRecorderSettings, Settings

REASONING_BEFORE_MS = 10 * MINUTE_MS
RECORD_VERSION = 1


class IncidentError(Exception):
    """A record that cannot be read or exported: one line for the operator."""


@dataclass
class _Tape:
    """One symbol's recent ticks and the one-minute bars before them."""

    ticks: deque = field(default_factory=deque)  # (time_ms, price, qty)
    bars: deque = field(default_factory=deque)  # [minute_ms, open, high, low, close, volume], closed minutes
    bar: list | None = None  # the open minute
    dropped: bool = False  # the tick cap cut ticks the time window would have kept


@dataclass
class _Open:
    change: BreakerChanged
    record: dict[str, Any]
    close_at_ms: int


class FlightRecorder:
    def __init__(self, settings: Settings, market: MarketState, write: Callable[[dict[str, Any]], None]) -> None:
        self.cfg: FlightRecorderSettings = settings.flight_recorder
        self.settings = settings
        self.market = market
        self.write = write  # called with each closed record (the session journals it)
        self.tapes: dict[str, _Tape] = {}
        self.reasoning: deque = deque(maxlen=2_000)  # (time_ms, role, text)
        self.open: _Open | None = None
        self._keep_ms = int(self.cfg.ticks_minutes * MINUTE_MS)
        self._cancels: deque = deque(maxlen=500)  # cancels not yet in a record
        self._changes: deque = deque(maxlen=100)  # recent transitions: the ones the record's span covers go in
        self._max = self.cfg.max_ticks_per_symbol

    # ------------------------------------------------------------------ the tape (hot path)
    def on_tick(self, tick: Tick) -> None:
        if self._cancels:
            self._cancels.clear()  # a halt's cancels are taken by its record within the tick that tripped
        tape = self.tapes.get(tick.symbol)
        if tape is None:
            tape = self.tapes[tick.symbol] = _Tape()
        t, p, q = tick.time_ms, tick.price, tick.qty
        ticks = tape.ticks
        ticks.append((t, p, q))
        cutoff = t - self._keep_ms
        while ticks[0][0] < cutoff or len(ticks) > self._max:
            old = ticks.popleft()
            if old[0] >= cutoff:
                tape.dropped = True
            self._into_bars(tape, old)
        if self.open is not None and t >= self.open.close_at_ms:
            self.close("after_minutes passed", t)

    def _into_bars(self, tape: _Tape, tick: tuple[int, float, float]) -> None:
        """A tick leaving the raw tape joins its minute's bar."""
        t, p, q = tick
        minute = t - t % MINUTE_MS
        bar = tape.bar
        if bar is None or bar[0] != minute:
            if bar is not None:
                tape.bars.append(bar)
                horizon = minute - self.cfg.bars_minutes * MINUTE_MS
                while tape.bars and tape.bars[0][0] < horizon:
                    tape.bars.popleft()
            tape.bar = [minute, p, p, p, p, q]
            return
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
        if self.open is not None:
            self.open.record["reasoning"].append(list(line))

    # ------------------------------------------------------------------ an incident
    def on_breaker(self, change: BreakerChanged) -> None:
        self._changes.append(change)
        if self.open is not None:
            self.open.record["transitions"].append(_transition(change))
            self.close(f"the breaker moved to {change.status.value}", change.time_ms)
        if change.status is BreakerStatus.TRIGGERED:
            self._start(change)

    def on_order(self, order: Any) -> None:
        """The policy's orders and the cancels: the halt cancels before anyone hears of the
        trip, so the last cancels wait here for a record to open."""
        origin = getattr(order.origin, "value", order.origin)
        if origin != "policy" and order.status.value != "CANCELED":
            return
        if self.open is not None:
            self.open.record["orders"].append(order.to_dict())
        else:
            self._cancels.append(order)

    def on_policy(self, action: Any) -> None:
        if self.open is not None:
            self.open.record["policy_actions"].append({"time": iso_utc(action.time_ms), "kind": action.kind,
                                                       "reason": action.reason, **action.details()})

    def _start(self, change: BreakerChanged) -> None:
        t = change.time_ms
        record: dict[str, Any] = {
            "version": RECORD_VERSION,
            "trigger": {**_transition(change), "details": change.details, "epoch": change.epoch,
                        "actor": change.actor.value, "market_snapshot": change.market_snapshot},
            "windows": {s: _windows_state(w) for s, w in self.market.symbols.items() if w.ticks},
            "tapes": {s: self._tape_data(tape, self.market.symbols.get(s)) for s, tape in self.tapes.items()},
            "transitions": [_transition(c) for c in self._changes
                            if c.time_ms >= t - (self.cfg.bars_minutes + self.cfg.ticks_minutes) * MINUTE_MS],
            "policy_actions": [], "orders": [o.to_dict() for o in self._cancels],
            "reasoning": [[ts, role, text] for ts, role, text in self.reasoning if ts >= t - REASONING_BEFORE_MS],
            "circuit_breaker": self.settings.circuit_breaker.model_dump(mode="json"),
            "flight_recorder": self.cfg.model_dump(mode="json"),
        }
        self._cancels.clear()
        self.open = _Open(change, record, t + int(self.cfg.after_minutes * MINUTE_MS))

    def _tape_data(self, tape: _Tape, w: Any) -> dict[str, Any]:
        ticks = list(tape.ticks)
        if w is not None and w.ticks and (not ticks or ticks[-1] != w.last_tick()):
            ticks.append(w.last_tick())  # the tick that tripped: the rules ran before the tape took it
        bars = [list(b) for b in tape.bars] + ([list(tape.bar)] if tape.bar is not None else [])
        # the raw ticks start at a minute boundary, so the bars before them are whole minutes
        if ticks and bars and bars[-1][0] == ticks[0][0] - ticks[0][0] % MINUTE_MS:
            minute = bars[-1][0]
            bar = bars[-1]
            for t, p, q in ticks:
                if t >= minute + MINUTE_MS:
                    break
                bar[2], bar[3], bar[4], bar[5] = max(bar[2], p), min(bar[3], p), p, bar[5] + q
            ticks = [x for x in ticks if x[0] >= minute + MINUTE_MS]
        return {"ticks": [list(x) for x in ticks], "bars": bars, "truncated": tape.dropped}

    def close(self, why: str, time_ms: int) -> None:
        rec = self.open
        if rec is None:
            return
        self.open = None
        rec.record["closed"] = {"time": iso_utc(time_ms), "why": why}
        self.write(rec.record)


# ---------------------------------------------------------------------------- records
def _transition(change: BreakerChanged) -> dict[str, Any]:
    return {"time": iso_utc(change.time_ms), "time_ms": change.time_ms, "from": change.previous.value,
            "to": change.status.value, "reason": change.reason, "trigger_type": change.trigger_type,
            "symbol": change.symbol}


def _windows_state(w: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"price": w.last_price, "last_time": iso_utc(w.last_time),
                           "sigma_1m_percent": round(w.sigma_1m() * 100, 5),
                           "sigma_1m_slow_percent": round(w.sigma_1m_slow() * 100, 5)}
    for k, ms in enumerate(w.windows_ms):
        m = ms // MINUTE_MS
        out[f"{m}m"] = {"high": w.high(k), "low": w.low(k), "drop_percent": round(w.drop_pct(k), 4),
                        "volume_multiple": round(w.volume_multiple(k), 3)}
    for j, m in enumerate(w.long_minutes):
        out[f"{m}m"] = {"high": w.long_high(j), "drop_percent": round(w.long_drop_pct(j), 4)}
    return out


def encode(record: dict[str, Any]) -> str:
    return base64.b64encode(zlib.compress(orjson.dumps(record), 6)).decode("ascii")


def decode(text: str) -> dict[str, Any]:
    try:
        record = orjson.loads(zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True)))
    except (ValueError, zlib.error, orjson.JSONDecodeError, UnicodeEncodeError) as exc:
        raise IncidentError(f"the record cannot be read ({type(exc).__name__}): the journal row is damaged") from None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise IncidentError("the record is not a flight record this spikeguard reads")
    return record


# ---------------------------------------------------------------------------- the pack
def export_pack(record: dict[str, Any], out: Path) -> list[Path]:
    """Write the record as CSV files replay reads, plus config.yaml and incident.json."""
    import yaml

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise IncidentError(f"{out}: exists and is not an empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for symbol, tape in sorted(record["tapes"].items()):
            if tape["bars"]:
                path = out / f"{symbol}-1m-before.csv"
                lines = ["open_time,open,high,low,close,volume,close_time"]
                lines += [f"{b[0]},{b[1]!r},{b[2]!r},{b[3]!r},{b[4]!r},{b[5]!r},{b[0] + MINUTE_MS - 1}"
                          for b in tape["bars"]]
                path.write_text("\n".join(lines) + "\n")
                written.append(path)
            if tape["ticks"]:
                path = out / f"{symbol}-aggTrades-incident.csv"
                lines = ["agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"]
                lines += [f"{i},{p!r},{q!r},{i},{i},{t},false" for i, (t, p, q) in enumerate(tape["ticks"])]
                path.write_text("\n".join(lines) + "\n")
                written.append(path)
        (out / "config.yaml").write_text(yaml.safe_dump({"circuit_breaker": record["circuit_breaker"]},
                                                          sort_keys=False))
        meta = {k: record[k] for k in ("trigger", "transitions", "policy_actions", "closed") if k in record}
        (out / "incident.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise IncidentError(f"{out}: cannot write the pack: {exc.strerror or exc}") from None
    return written
