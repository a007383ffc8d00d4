"""The reasoning stream: CrewAI's event bus, routed per run, becomes ReasoningLine on the engine's bus.

CrewAI emits its events (agent starts, tool calls and results, streamed thoughts, answers,
errors) on its own handler threads, for every crew in the process. A RunStream routes each
event to its run with the CURRENT_RUN context variable, sorts a run's events by
emission_sequence in a short reorder window (40 ms, up to 90 ms when CrewAI's handler threads
run late) and publishes them on the engine's loop as
ReasoningLine(role=<agent role>, kind, text, time_ms, run_id, sequence).

Kept apart from the desk because it is the only part that runs on CrewAI's threads: it must
never raise into the crew and never block it. Importing it does not import crewai.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.agents.context import CURRENT_RUN, DeskContext, RunState
from core.agents.crew import decision_fields
from core.agents.llm import estimate_tokens
from core.events import ReasoningLine

log = logging.getLogger("spikeguard.agents")

REORDER_WINDOW_S = 0.04  # a line waits this long after its emission for earlier ones to land...
MAX_REORDER_WINDOW_S = 0.09  # ...longer when CrewAI's handler threads run late, never past this
MAX_LINE = 400


@dataclass
class _Route:
    """Per-run routing state for the reasoning stream (touched on the loop only, except `pending`)."""

    pending: list[tuple[int, str, str, str, str, float]] = field(default_factory=list)  # seq, kind, role, text, call, t
    armed: bool = False
    streams: dict[str, list[Any]] = field(default_factory=dict)  # call id -> [role, text, last seq]
    lock: threading.Lock = field(default_factory=threading.Lock)


class RunStream:
    """The desk's reasoning stream: `open(run)` before a crew runs, `drain(run)` after it."""

    def __init__(self, ctx: DeskContext, bus: Any) -> None:
        self.ctx = ctx
        self.bus = bus
        self.forward_latency_ms: deque[float] = deque(maxlen=10_000)
        self.lines_published = 0
        self._routes: dict[str, _Route] = {}
        self._handlers: list[tuple[type, Callable[..., Any]]] = []
        self._handler_lag = 0.0  # a decaying max of how late CrewAI's handler threads run (seconds)
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ wiring
    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Subscribe to CrewAI's event bus (crewai must be loaded); lines are published on `loop`."""
        self._loop = loop
        from crewai.events import crewai_event_bus

        for cls in self._event_classes().values():
            crewai_event_bus.on(cls)(self._on_crewai_event)
            self._handlers.append((cls, self._on_crewai_event))

    def uninstall(self) -> None:
        if not self._handlers:
            return
        from crewai.events import crewai_event_bus

        for cls, fn in self._handlers:
            try:
                crewai_event_bus.off(cls, fn)
            except Exception:
                pass
        self._handlers.clear()

    def open(self, run: RunState) -> None:
        """Route this run's events from now on (events of runs not open are dropped)."""
        self._routes[run.run_id] = _Route()

    def reason(self, run: RunState, role: str, kind: str, text: str) -> None:
        """A line of the desk's own (sequence 0), published at once."""
        if self.bus is None:
            return
        self.bus.publish(ReasoningLine(role, kind, text, self.ctx.now_ms(), run.run_id, 0))

    async def drain(self, run: RunState) -> None:
        """Let CrewAI's handler threads finish this run's events, then publish what is left."""
        try:
            from crewai.events import crewai_event_bus

            await asyncio.to_thread(crewai_event_bus.flush, 2.0)
        except Exception:
            pass
        await asyncio.sleep(0)
        self._flush(run, final=True)
        self._routes.pop(run.run_id, None)  # later stragglers of this run are dropped

    @property
    def reorder_window(self) -> float:
        return min(MAX_REORDER_WINDOW_S, max(REORDER_WINDOW_S, self._handler_lag + 0.01))

    # ------------------------------------------------------------------ CrewAI events -> ReasoningLine
    def _event_classes(self) -> dict[str, type]:
        import crewai.events as ev

        names = ["AgentExecutionStartedEvent", "ToolUsageStartedEvent", "ToolUsageFinishedEvent", "ToolUsageErrorEvent",
                 "LLMStreamChunkEvent", "LLMCallCompletedEvent", "LLMCallFailedEvent", "TaskCompletedEvent",
                 "TaskFailedEvent", "AgentExecutionErrorEvent"]
        return {n: getattr(ev, n) for n in names if hasattr(ev, n)}

    def _on_crewai_event(self, source: Any, event: Any) -> None:
        """CrewAI handler thread: classify, queue for the loop. Never raises."""
        try:
            run = CURRENT_RUN.get()
            if run is None:
                return
            route = self._routes.get(run.run_id)
            if route is None:
                return
            item = self._classify(run, event)
            if item is None:
                return
            lag = time.time() - item[5]
            self._handler_lag = max(lag, self._handler_lag * 0.9)
            with route.lock:
                route.pending.append(item)
                arm = not route.armed
                route.armed = True
            if arm and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._arm_flush, run)
        except Exception:  # the stream is best effort; the crew must not notice
            log.debug("event routing failed", exc_info=True)

    def _classify(self, run: RunState, event: Any) -> tuple[int, str, str, str, str, float] | None:
        item = self._classify_event(run, event)
        if item is None:
            return None
        stamp = getattr(event, "timestamp", None)
        try:
            t = stamp.timestamp() if stamp is not None else time.time()
        except Exception:
            t = time.time()
        return (*item, t)

    def _classify_event(self, run: RunState, event: Any) -> tuple[int, str, str, str, str] | None:
        seq = int(getattr(event, "emission_sequence", 0) or 0)
        kind = type(event).__name__
        if kind == "LLMStreamChunkEvent":
            if getattr(event, "tool_call", None) is not None:
                return None
            return seq, "chunk", _role_of(event), str(getattr(event, "chunk", "") or ""), str(getattr(event, "call_id", ""))
        if kind == "LLMCallCompletedEvent":
            usage = getattr(event, "usage", None) or {}
            response = getattr(event, "response", None)
            out_tokens = estimate_tokens(response if isinstance(response, str) else str(response or ""))
            reported = int(usage.get("total_tokens") or 0) if isinstance(usage, dict) else 0
            run.add_tokens(tokens_out=out_tokens, reported=reported)
            return seq, "call_done", _role_of(event), "", str(getattr(event, "call_id", ""))
        if kind == "AgentExecutionStartedEvent":
            task = getattr(event, "task", None)
            return seq, "thought", _role_of(event), f"starts {getattr(task, 'name', None) or 'a task'}", ""
        if kind == "ToolUsageStartedEvent":
            return seq, "tool_call", _role_of(event), f"{event.tool_name}({_compact(event.tool_args, 160)})", ""
        if kind == "ToolUsageFinishedEvent":
            return seq, "tool_result", _role_of(event), f"{event.tool_name} -> {_summarise_result(event.output)}", ""
        if kind in ("ToolUsageErrorEvent",):
            return seq, "error", _role_of(event), f"{event.tool_name} failed: {str(getattr(event, 'error', ''))[:200]}", ""
        if kind == "LLMCallFailedEvent":
            return seq, "error", _role_of(event), f"model call failed: {str(getattr(event, 'error', ''))[:200]}", ""
        if kind == "TaskCompletedEvent":
            output = getattr(event, "output", None)
            raw = str(getattr(output, "raw", "") or "")
            decision, confidence, data = decision_fields(raw)
            role = str(getattr(output, "agent", "") or "") or _role_of(event)
            text = f"{getattr(output, 'name', '') or 'task'}: {decision}"
            if confidence is not None:
                text += f" (confidence {confidence:.2f})"
            reason = (data or {}).get("reason") or (data or {}).get("recommendation")
            if reason:
                text += f": {reason}"
            return seq, "answer", role, text, ""
        if kind in ("TaskFailedEvent", "AgentExecutionErrorEvent"):
            return seq, "error", _role_of(event), f"failed: {str(getattr(event, 'error', ''))[:300]}", ""
        return None

    def _arm_flush(self, run: RunState, delay: float | None = None) -> None:
        loop = self._loop
        if loop is None:
            return
        loop.call_later(max(0.0, self.reorder_window if delay is None else delay), self._flush, run)

    def _flush(self, run: RunState, final: bool = False) -> None:
        """On the loop: publish, in emission_sequence order, what was emitted at least one reorder
        window ago (a handler thread that ran late still lands in order); re-arm for the rest."""
        route = self._routes.get(run.run_id)
        if route is None:
            return
        now = time.time()
        window = self.reorder_window
        with route.lock:
            if final:
                items, route.pending = route.pending, []
            else:
                cutoff = now - window
                items = [x for x in route.pending if x[5] <= cutoff]
                route.pending = [x for x in route.pending if x[5] > cutoff]
            route.armed = bool(route.pending)
            next_due = min((x[5] for x in route.pending), default=None)
        if next_due is not None and not final:
            self._arm_flush(run, next_due + window - now + 0.001)
        items.sort(key=lambda x: x[0])
        for seq, kind, role, text, call, t in items:
            if kind == "chunk":
                buf = route.streams.setdefault(call, [role, "", seq, t])
                buf[1] += text
                buf[2] = seq
                while "\n" in buf[1] or len(buf[1]) > MAX_LINE:
                    if "\n" in buf[1]:
                        line, buf[1] = buf[1].split("\n", 1)
                    else:
                        cut = buf[1].rfind(" ", 0, MAX_LINE)
                        cut = cut if cut > 40 else MAX_LINE
                        line, buf[1] = buf[1][:cut], buf[1][cut:].lstrip()
                    self._emit_thought(run, role, line, seq, buf[3])
                    buf[3] = t
            elif kind == "call_done":
                buf = route.streams.pop(call, None)
                if buf is not None and buf[1].strip():
                    self._emit_thought(run, buf[0] or role, buf[1], seq, buf[3])
            else:
                self._publish(run, role, kind, text, seq, t)
        if final:
            for buf in list(route.streams.values()):
                if buf[1].strip():
                    self._emit_thought(run, buf[0], buf[1], buf[2], buf[3])
            route.streams.clear()

    def _emit_thought(self, run: RunState, role: str, line: str, seq: int, t: float) -> None:
        line = line.strip()
        if not line or line.startswith("DECISION:"):
            return  # the task's decision line is published once, from TaskCompletedEvent
        self._publish(run, role, "thought", line, seq, t)

    def _publish(self, run: RunState, role: str, kind: str, text: str, seq: int, t: float | None = None) -> None:
        if t is not None:
            self.forward_latency_ms.append((time.time() - t) * 1000.0)
        if self.bus is None:
            return
        text = text if len(text) <= MAX_LINE else text[: MAX_LINE - 1] + "…"
        self.lines_published += 1
        self.bus.publish(ReasoningLine(role or "agent", kind, text, self.ctx.now_ms(), run.run_id, seq))


# ---------------------------------------------------------------------- event text
def _role_of(event: Any) -> str:
    role = getattr(event, "agent_role", None)
    if role:
        return str(role)
    for attr in ("from_agent", "agent"):
        agent = getattr(event, attr, None)
        role = getattr(agent, "role", None)
        if role:
            return str(role)
    task = getattr(event, "task", None) or getattr(event, "from_task", None)
    agent = getattr(task, "agent", None)
    return str(getattr(agent, "role", "") or "agent")


def _compact(args: Any, limit: int) -> str:
    if isinstance(args, dict):
        text = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in args.items())
    else:
        text = str(args or "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


_SKIP_KEYS = {"tool", "elapsed_ms", "untrusted_note", "quoted", "windows", "scores", "guardian_snapshot", "balances",
              "positions", "recent_transitions", "legs", "symbols", "feeds", "method", "source", "note", "policy"}


def _summarise_result(output: Any, limit: int = 240) -> str:
    import json as _json

    text = str(output or "")
    try:
        data = _json.loads(text)
    except ValueError:
        return text if len(text) <= limit else text[: limit - 1] + "…"
    if not isinstance(data, dict):
        return text[:limit]
    parts = []
    status = data.get("status")
    if status and status != "ok":
        parts.append(str(status))
        if data.get("reason"):
            parts.append(str(data["reason"]))
    # a modelled number must not read as exchange data: the caveat comes first, so truncation keeps it
    if "model" in (data.get("source"), data.get("inputs_source"), data.get("book_depth_source")):
        parts.insert(0, "[modelled, not exchange data]")
    elif data.get("source") == "feed":
        parts.insert(0, "[live book]")
    for k, v in data.items():
        if k in _SKIP_KEYS or k in ("status", "reason") or isinstance(v, (dict, list)) or v is None:
            continue
        parts.append(f"{k}={v}")
    out = ", ".join(parts)
    return out if len(out) <= limit else out[: limit - 1] + "…"


__all__ = ["RunStream", "REORDER_WINDOW_S", "MAX_REORDER_WINDOW_S", "MAX_LINE"]
