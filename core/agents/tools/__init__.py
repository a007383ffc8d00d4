"""The desk's CrewAI tools: the seed's circuit-breaker, Binance, analysis and risk tools.

The logic lives in plain functions (core.agents.tools.breaker, binance, analysis, risk)
that import nothing from crewai. The CrewAI classes (`BinanceWebSocketTool`, ...) are built
on first use, after crewai was loaded (core.agents.offline.load_crewai): `build_tools(ctx,
names, role)` returns instances bound to a DeskContext, and the seed's class names are
importable from this package (`from core.agents.tools import BinanceWebSocketTool`), which
imports crewai at that moment.

Each tool returns a JSON string; a source that is not configured or not reachable answers
{"status": "unavailable", ...} and a failure answers {"status": "error", ...}: a tool
never raises into CrewAI.
"""

from __future__ import annotations

import threading
from typing import Any

from core.agents.context import DeskContext
from core.agents.tools import analysis, binance, breaker, risk
from core.agents.tools.common import ToolSpec, dumps, error, run_spec

SPECS: dict[str, ToolSpec] = {s.name: s for s in [*breaker.SPECS, *binance.SPECS, *analysis.SPECS, *risk.SPECS]}
BY_CLASS: dict[str, ToolSpec] = {s.class_name: s for s in SPECS.values()}
BREAKER_TOOLS: list[str] = list(breaker.BREAKER_TOOL_NAMES)

_classes: dict[str, type] = {}
_lock = threading.Lock()


def _base() -> type:
    base = _classes.get("__base__")
    if base is not None:
        return base
    from crewai.tools import BaseTool
    from pydantic import PrivateAttr

    class DeskTool(BaseTool):
        """A spec bound to a DeskContext (and to the role of the agent that holds it)."""

        spec_name: str = ""
        _ctx: Any = PrivateAttr(default=None)
        _role: str | None = PrivateAttr(default=None)

        def run(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().run(*args, **kwargs)
            except Exception as exc:  # argument validation and anything else: JSON, never an exception
                return dumps(error(f"{type(exc).__name__}: {str(exc)[:400]}", tool=self.spec_name))

        def _run(self, *args: Any, **kwargs: Any) -> str:
            if args and not kwargs and isinstance(args[0], dict):
                kwargs = dict(args[0])
            return run_spec(self._ctx, SPECS[self.spec_name], kwargs, self._role)

    _classes["__base__"] = DeskTool
    return DeskTool


def tool_class(spec: ToolSpec) -> type:
    with _lock:
        cls = _classes.get(spec.name)
        if cls is None:
            base = _base()
            cls = type(spec.class_name, (base,), {
                "__module__": __name__,
                "__doc__": spec.description,
                "__annotations__": {"name": str, "description": str, "args_schema": type, "spec_name": str},
                "name": spec.name,
                "description": spec.description,
                "args_schema": spec.args,
                "spec_name": spec.name,
            })
            _classes[spec.name] = cls
        return cls


def build_tools(ctx: DeskContext, names: list[str], role: str | None = None) -> list[Any]:
    """CrewAI tool instances for `names`, bound to ctx (crewai must be loaded)."""
    out = []
    for name in names:
        spec = SPECS[name]
        extra: dict[str, Any] = {}
        if name == "check_circuit_breaker_status":
            # a usage limit makes CrewAI run a batch of tool calls holding it one by one, in the order the
            # model asked for them, instead of in parallel threads: the breaker check really comes first
            extra["max_usage_count"] = 1000
        tool = tool_class(spec)(cache_function=_never_cache, **extra)
        tool._ctx = ctx
        tool._role = role
        out.append(tool)
    return out


def _never_cache(args: Any = None, result: Any = None) -> bool:
    return False  # market data goes stale in seconds: never serve a tool result from CrewAI's cache


def __getattr__(name: str) -> Any:
    spec = BY_CLASS.get(name)
    if spec is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from core.agents.offline import load_crewai

    load_crewai()
    return tool_class(spec)


__all__ = ["SPECS", "BY_CLASS", "BREAKER_TOOLS", "build_tools", "tool_class", "run_spec"]
