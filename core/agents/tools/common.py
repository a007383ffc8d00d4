"""Tool specs: plain functions over the DeskContext, wrapped as CrewAI tools elsewhere.

A spec is a name (what the model calls), the seed's class name, a description, a pydantic
args schema and a function `fn(ctx, run, **args) -> dict`. `run_spec()` is the one way a
spec runs: it checks the run's guard, runs the function (on the engine loop when the spec
reads engine state), turns any exception into `{"status": "error", ...}`, makes the result
JSON-safe (no NaN or infinity) and records the call in the run. Nothing here imports crewai.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from core.agents.context import CURRENT_RUN, DeskContext, RunState


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Args(BaseModel):
    model_config = ConfigDict(extra="ignore")


@dataclass(frozen=True)
class ToolSpec:
    name: str  # the function name the model calls (snake_case)
    class_name: str  # the seed's class name (BinanceWebSocketTool, ...)
    description: str
    args: type[BaseModel]
    fn: Callable[..., dict[str, Any]]
    on_loop: bool = True  # reads or writes engine state: run it on the engine loop
    group: str = "market"


def unavailable(reason: str, **extra: Any) -> dict[str, Any]:
    return {"status": "unavailable", "reason": reason, **extra}


def error(reason: str, **extra: Any) -> dict[str, Any]:
    return {"status": "error", "error": reason, **extra}


# Where a number comes from. "feed": read from the exchange's own book or trades; "model": computed by
# the paper exchange's model (not exchange data, so never evidence of a deep or calm market).
SOURCE_FEED = "feed"
SOURCE_MODEL = "model"
MODEL_CAVEAT = "modelled by the paper exchange, not exchange data"
_FEED_VENUES = ("testnet", "live")  # BinanceExchange: quotes and depth come from the live feed's book


def book_source(ex: Any) -> str:
    """'feed' when the exchange's quotes and depth come from a live book, else 'model'. An exchange
    whose origin is not known is treated as a model: unknown is not measured."""
    return SOURCE_FEED if getattr(ex, "name", None) in _FEED_VENUES else SOURCE_MODEL


def finite_positive(x: Any) -> float | None:
    """x as a float when it is a finite number > 0 (hostile or broken inputs give None)."""
    if isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def num(x: Any, digits: int = 8) -> Any:
    """A JSON-safe number: NaN and infinities become None; floats keep `digits` significant digits."""
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
        return float(f"{x:.{digits}g}")
    return x


def json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, int)):
        return num(obj)
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    value = getattr(obj, "value", None)  # enums
    if isinstance(value, (str, int)):
        return value
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(json_safe(obj), separators=(",", ":"), allow_nan=False, default=str)


def windows_or_none(ctx: DeskContext, symbol: str) -> Any:
    w = ctx.market.symbols.get(symbol)
    if w is None or not w.ticks:
        return None
    return w


def window_index(w: Any, minutes: int) -> int:
    """The index of the window closest to `minutes` (windows are 1/5/15/60 minutes by default)."""
    try:
        return w.index_of(minutes)
    except KeyError:
        best = min(range(w.n), key=lambda k: abs(w.windows_ms[k] / 60_000 - minutes))
        return best


def run_spec(ctx: DeskContext, spec: ToolSpec, args: dict[str, Any], role: str | None = None) -> str:
    """Run one tool call and return its JSON text. Never raises."""
    run: RunState | None = CURRENT_RUN.get()
    t0 = time.perf_counter()
    try:
        if run is not None and run.aborted:
            result: dict[str, Any] = {"status": "aborted", "reason": run.abort_reason}
        else:
            try:
                parsed = spec.args.model_validate(args or {}).model_dump()
            except Exception as exc:
                result = error(f"invalid arguments for {spec.name}: {_short(exc)}")
            else:
                if spec.on_loop:
                    result = ctx.on_loop(spec.fn, ctx, run, **parsed)
                else:
                    result = spec.fn(ctx, run, **parsed)
                if not isinstance(result, dict):
                    result = {"status": "ok", "result": result}
                result.setdefault("status", "ok")
    except Exception as exc:  # a tool never raises into CrewAI
        result = error(f"{type(exc).__name__}: {_short(exc)}")
    result = {"tool": spec.name, **result}
    result["elapsed_ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
    if run is not None:
        run.record_tool(spec.name, role, dict(args or {}), result)
    try:
        return dumps(result)
    except Exception as exc:
        return dumps(error(f"result not serialisable: {_short(exc)}", tool=spec.name))


def _short(exc: BaseException, limit: int = 400) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["ToolSpec", "NoArgs", "Args", "unavailable", "error", "book_source", "finite_positive", "SOURCE_FEED",
           "SOURCE_MODEL", "MODEL_CAVEAT", "num", "json_safe", "dumps", "run_spec",
           "windows_or_none", "window_index"]
