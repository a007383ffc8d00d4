"""Binance's user data stream: order updates (executionReport) and balances
(outboundAccountPosition), over a listenKey kept alive.

python-binance 1.0.37's `user_socket()` no longer uses a listenKey: it subscribes through
the WebSocket API (ws-api.binance.com), an address outside the settings' endpoints. So the
listenKey comes from the AsyncClient's REST calls (stream_get_listen_key, stream_keepalive,
stream_close, through BinanceRest's limits), and its stream, `<stream_url>ws/<listenKey>`,
is read with `websockets`, the library python-binance itself streams with.

A stream is lost when its websocket closes (websockets' own pings find a dead peer), when
Binance says the listenKey expired, when a keep-alive fails, or when the exchange's watchdog
`suspect()`s it (an order Binance accepted whose report never came). A loss is reported once
(`on_lost`), however many reconnects it takes; each takes a fresh listenKey, backing off with
jitter, and after one succeeds `on_reconnected` runs (the exchange reconciles what the gap may
have hidden).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from core.redact import mask
from core.settings import BinanceSettings
from core.trading.binance_rest import BinanceRest, RestError, Stopped

log = logging.getLogger("spikeguard.binance")

KEEPALIVE_SECONDS = 30 * 60  # Binance: a listenKey lives 60 minutes; keep it alive every 30
PING_SECONDS = 20.0  # websocket pings: a peer that stops answering is a lost stream


FIRST_OPEN_ATTEMPTS = 3  # a slow handshake is tried again before the start fails


class UserStream:
    def __init__(self, rest: BinanceRest, stream_url: str, settings: BinanceSettings,
                 on_event: Callable[[dict[str, Any]], None], on_lost: Callable[[str], None],
                 on_reconnected: Callable[[], None]) -> None:
        self._rest = rest
        self._url = stream_url if stream_url.endswith("/") else stream_url + "/"
        self._settings = settings
        self._on_event = on_event
        self._on_lost = on_lost
        self._on_reconnected = on_reconnected
        self._ws: ClientConnection | None = None
        self._listen_key: str | None = None
        self._suspicion: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.connections = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def start(self) -> None:
        """Connect (the first connection must succeed: orders need their updates), then
        keep the stream up in the background."""
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(first), name="binance-user-stream")
        await first

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()  # a clean close frame, not the 1011 of a cancelled task
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._listen_key is not None:
            key, self._listen_key = self._listen_key, None
            try:
                await self._rest.call("close listenKey", 2, lambda: self._rest.client.stream_close(key),
                                      wait=False, signed=False)
            except RestError as exc:
                log.info("listenKey not closed: %s", exc)

    def suspect(self, why: str) -> None:
        """Treat the stream as lost now (the watchdog found it deaf): reconnect."""
        ws = self._ws
        if ws is not None and self._suspicion is None:
            self._suspicion = why
            asyncio.get_running_loop().create_task(ws.close())

    async def keepalive(self) -> bool:
        """Extend the listenKey; a failure loses the stream (its key may be gone)."""
        key = self._listen_key
        if key is None or self._ws is None:
            return False
        try:
            await self._rest.call("keep listenKey alive", 2, lambda: self._rest.client.stream_keepalive(key),
                                  wait=True, signed=False)
        except Stopped as exc:  # rate limited or banned: the key lives 60 minutes, try again next time
            log.warning("listenKey keep-alive not sent: %s", exc)
            return False
        except RestError as exc:
            self.suspect(f"the listenKey keep-alive failed: {exc}")
            return False
        return True

    async def _run(self, first: asyncio.Future[None]) -> None:
        delay = self._settings.reconnect_min_seconds
        attempts = 0
        while True:
            connections = self.connections
            attempts += 1
            try:
                why = await self._session(first)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a refused listenKey, a failed connect, a dropped socket
                why = mask(f"{type(exc).__name__}: {exc}")
                if not first.done() and attempts >= FIRST_OPEN_ATTEMPTS:
                    first.set_exception(RestError(f"the user data stream did not open: {why}"))
                    return
            if self._closing:
                return
            if self.connections > connections:  # it was up: a loss, reported once
                delay = self._settings.reconnect_min_seconds
                self._on_lost(why)
            else:
                log.warning("user stream: reconnect failed: %s", why)
            await asyncio.sleep(delay * (1 + random.random() / 2))  # jitter: reconnects do not move in step
            delay = min(delay * 2, self._settings.reconnect_max_seconds)

    async def _session(self, first: asyncio.Future[None]) -> str:
        """One listenKey and its websocket, until it ends; returns why it ended."""
        rest = self._rest
        self._listen_key = await rest.call("new listenKey", 2, rest.client.stream_get_listen_key, wait=True,
                                           signed=False)
        async with connect(self._url + "ws/" + self._listen_key, proxy=None, ping_interval=PING_SECONDS,
                           ping_timeout=PING_SECONDS, open_timeout=self._settings.request_timeout_seconds,
                           close_timeout=1.0) as ws:
            self._ws, self._suspicion = ws, None
            self.connections += 1
            keeper = asyncio.create_task(self._keep_alive())
            try:
                if first.done():
                    self._on_reconnected()
                else:
                    first.set_result(None)
                async for raw in ws:
                    self._dispatch(raw)
            finally:
                keeper.cancel()
                self._ws = None
            return self._suspicion or "Binance closed the user data stream"

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("user stream: a frame that is not JSON (%d bytes)", len(raw))
            return
        if not isinstance(event, dict):
            return
        if event.get("e") == "listenKeyExpired":
            self.suspect("Binance says the listenKey expired")
            return
        try:
            self._on_event(event)
        except Exception:  # one bad message must not end the stream
            log.exception("user stream: event %s not applied", event.get("e"))

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            await self.keepalive()


__all__ = ["KEEPALIVE_SECONDS", "UserStream"]
