"""A local OpenAI-compatible chat-completions server for tests (aiohttp, 127.0.0.1, free port).

It answers `POST /v1/chat/completions` with either tool calls or a text answer, as chosen by
a `responder(request_body) -> Reply` callable, in the plain JSON form or, when the request
says `"stream": true`, as Server-Sent Events chunks (content deltas, tool-call deltas split
across chunks, a finish chunk, a usage chunk, then `data: [DONE]`). Every request body is
recorded in `requests` (and its headers in `headers`).

The server runs its own event loop in a daemon thread, so it serves clients that call it
synchronously from any thread (CrewAI's OpenAI provider does) while the test's loop waits.

    with OpenAIStub(responder) as stub:
        make_llm(..., base_url=stub.base_url, api_key="test")
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    """What the model says: text content, or tool calls as (name, arguments dict) pairs; or
    how it fails: an HTTP `status` (429 with `retry_after`, 500), a `delay_s` before
    answering (a hang), a `chunk_delay_s` between streamed chunks (a slow stream)."""

    content: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: int = 200
    retry_after: float | None = None
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0


Responder = Callable[[dict[str, Any]], Reply]


def _chunks(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


class OpenAIStub:
    def __init__(self, responder: Responder, model: str = "gpt-4o-mini", chunk_size: int = 12) -> None:
        self.responder = responder
        self.model = model
        self.chunk_size = chunk_size
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.errors: list[str] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "OpenAIStub":
        self._thread = threading.Thread(target=self._serve, name="openai-stub", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the OpenAI stub server did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            fut.result(5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            self._loop = None

    def __enter__(self) -> "OpenAIStub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._startup())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _startup(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        # a hung request (a scripted hang) is cut at shutdown instead of holding the stop for a minute
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ handlers
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        try:
            reply = self.responder(body)
        except Exception as exc:  # a broken responder is a test failure, reported as a 500
            self.errors.append(repr(exc))
            return web.json_response({"error": {"message": repr(exc), "type": "stub_error"}}, status=500)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.status != 200:
            headers = {"Retry-After": f"{reply.retry_after:g}"} if reply.retry_after is not None else {}
            kind = "rate_limit_exceeded" if reply.status == 429 else "server_error"
            return web.json_response({"error": {"message": f"stub {reply.status}", "type": kind, "code": kind}},
                                     status=reply.status, headers=headers)
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        finish_text = "stop"
        if limit and reply.content and len(reply.content) > int(limit) * 4:  # a provider stops at max_tokens
            reply = Reply(content=reply.content[: int(limit) * 4], completion_tokens=int(limit),
                          chunk_delay_s=reply.chunk_delay_s)
            finish_text = "length"
        prompt = reply.prompt_tokens or sum(len(json.dumps(m)) for m in body.get("messages", [])) // 4
        completion = reply.completion_tokens or (len(reply.content or "") + len(json.dumps(reply.tool_calls))) // 4
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        calls = [{"id": f"call_{uuid.uuid4().hex[:10]}", "type": "function",
                  "function": {"name": name, "arguments": json.dumps(args)}} for name, args in reply.tool_calls]
        rid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.content if not calls else None}
            if calls:
                message["tool_calls"] = calls
            return web.json_response({
                "id": rid, "object": "chat.completion", "created": created, "model": body.get("model", self.model),
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else finish_text}],
                "usage": usage,
            })
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None, extra: dict[str, Any] | None = None) -> None:
            chunk = {"id": rid, "object": "chat.completion.chunk", "created": created,
                     "model": body.get("model", self.model),
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if extra:
                chunk.update(extra)
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        if calls:
            for i, call in enumerate(calls):
                await send({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                            "function": {"name": call["function"]["name"], "arguments": ""}}]})
                for piece in _chunks(call["function"]["arguments"], self.chunk_size):
                    await send({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
            await send({}, "tool_calls")
        else:
            for piece in _chunks(reply.content or "", self.chunk_size):
                if reply.chunk_delay_s:
                    await asyncio.sleep(reply.chunk_delay_s)
                await send({"content": piece})
            await send({}, finish_text)
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(("data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created,
                                                      "model": body.get("model", self.model), "choices": [],
                                                      "usage": usage}) + "\n\n").encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


# ---------------------------------------------------------------------- scripted models
def task_of(body: dict[str, Any]) -> str | None:
    """The crew task a request belongs to ("[task: name]" in the prompt)."""
    text = user_text(body)
    start = text.rfind("[task: ")
    return text[start + 7: text.index("]", start)] if start >= 0 else None


class Script:
    """A model written by the test: for each task, the replies it gives in order (the last
    one repeats). Counts the requests per task, so a test can say which agents were called."""

    def __init__(self, replies: dict[str, list[Reply]], default: Reply | None = None) -> None:
        self.replies = replies
        self.default = default or Reply(content="DECISION: {}")
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        task = task_of(body) or "?"
        with self.lock:
            n = self.calls.get(task, 0)
            self.calls[task] = n + 1
        script = self.replies.get(task)
        if not script:
            return self.default
        return script[min(n, len(script) - 1)]


def decision(task: str, **fields: Any) -> Reply:
    """A final answer: a reasoning line and the DECISION line the crew's tasks ask for."""
    return Reply(content=f"Reasoning from the scripted model.\nDECISION: {json.dumps({'task': task, **fields})}")


# ---------------------------------------------------------------------- request helpers for responders
def system_text(body: dict[str, Any]) -> str:
    return "\n".join(_text(m.get("content")) for m in body.get("messages", []) if m.get("role") == "system")


def user_text(body: dict[str, Any]) -> str:
    return "\n".join(_text(m.get("content")) for m in body.get("messages", []) if m.get("role") == "user")


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body.get("messages", []) if m.get("role") == "tool"]


def offered_tools(body: dict[str, Any]) -> list[str]:
    return [t.get("function", {}).get("name", "") for t in body.get("tools") or []]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""
