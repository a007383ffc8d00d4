"""REST calls to Binance, within its rate limits and its clock.

Every call the exchange makes goes through `BinanceRest.call`, which

* throttles itself below `max_weight_fraction` of the minute's request-weight limit
  (exchangeInfo's REQUEST_WEIGHT), tracking what Binance says is used: the
  X-MBX-USED-WEIGHT-1M header of every answer, errors included;
* obeys a 429: no call until its Retry-After has passed;
* stops every call after a 418 (an IP ban) until its Retry-After, and reports the ban and
  its end as alarms;
* answers -1021 (timestamp outside recvWindow) by re-syncing the clock offset, which
  python-binance sets only in create(), and retrying once.

A call that would have to wait for a back-off or the weight budget waits only when the
caller allows it (`wait=True`: cancels, lookups, exits); otherwise it fails at once with
`Stopped`, so an entry is never sent late on a stale decision.

The errors say what is known of the request: `Stopped` (not executed: never sent, or
turned away by a rate limit), `Refused` (Binance answered with an error code: not
executed), `Unknown` (a 5xx, a timeout, a lost connection: it may have been executed).
Their texts pass core.redact.mask.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import aiohttp
from binance.exceptions import BinanceAPIException, BinanceRequestException

from core.redact import mask
from core.settings import BinanceSettings
from core.trading.binance_alarms import Alarm

log = logging.getLogger("spikeguard.binance")

DEFAULT_WEIGHT_LIMIT = 6000  # Binance spot's REQUEST_WEIGHT per minute, if exchangeInfo does not say
DEFAULT_RETRY_AFTER_S = 60  # a 429 or 418 without Retry-After (Binance always sends one)
SKEW_CONFIRMATIONS = 2  # syncs in a row beyond max_clock_skew_ms before the skew counts as persistent
TIMESTAMP_OUTSIDE_WINDOW = -1021
WINDOW_MARGIN_MS = 50  # wait this much past the minute boundary: the server's and our clock differ by jitter


def now_ms() -> int:
    """Wall-clock milliseconds: the base python-binance adds timestamp_offset to."""
    return time.time_ns() // 1_000_000


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%H:%M:%S UTC")


class RestError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(mask(message))


class Stopped(RestError):
    """Not executed: never sent (a ban, a back-off, the weight budget) or turned away by a rate limit."""


class Refused(RestError):
    """Binance answered with an error code: the request was not executed."""

    def __init__(self, code: int, message: str, status: int) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.status = status


class Unknown(RestError):
    """No answer that says what happened: the request may have been executed."""


class BinanceRest:
    def __init__(self, client: Any, settings: BinanceSettings, alarm: Callable[[Alarm, str], None]) -> None:
        self.client = client
        self.settings = settings
        self._alarm = alarm
        self.weight_limit = DEFAULT_WEIGHT_LIMIT
        self._used = 0  # request weight used in `_used_minute` (server time)
        self._used_minute = -1
        self._banned_until = 0  # local ms
        self._backoff_until = 0
        self._ban_lift: asyncio.TimerHandle | None = None
        self._skewed_syncs = 0

    # ------------------------------------------------------------------ limits
    def set_limits(self, exchange_info: dict[str, Any]) -> None:
        """The request-weight limit per minute from exchangeInfo's rateLimits."""
        for limit in exchange_info.get("rateLimits", []):
            if (limit.get("rateLimitType") == "REQUEST_WEIGHT" and limit.get("interval") == "MINUTE"
                    and limit.get("intervalNum", 1) == 1):
                self.weight_limit = int(limit["limit"])

    @property
    def weight_budget(self) -> int:
        return int(self.weight_limit * self.settings.max_weight_fraction)

    @property
    def used_weight(self) -> int:
        return self._used if self._used_minute == self._server_minute() else 0

    @property
    def backoff_until(self) -> int:
        """Local ms until which a 429 holds calls back."""
        return self._backoff_until

    def _server_minute(self) -> int:
        return (now_ms() + self.client.timestamp_offset) // 60_000

    # ------------------------------------------------------------------ the call
    async def call(self, name: str, weight: int, request: Callable[[], Awaitable[Any]], *, wait: bool,
                   signed: bool = True) -> Any:
        """`request()` (one python-binance coroutine call) within the limits; `name` says
        what it is in messages."""
        resynced = waited_429 = False
        while True:
            await self._admit(name, weight, wait)
            try:
                result = await request()
            except BinanceAPIException as exc:
                self._note_weight(exc.response)
                status = exc.status_code
                if status == 418:
                    raise Stopped(self._ban(name, _retry_after(exc))) from None
                if status == 429:
                    why = self._back_off(name, _retry_after(exc))
                    if wait and not waited_429:
                        waited_429 = True
                        continue
                    raise Stopped(why) from None
                if exc.code == TIMESTAMP_OUTSIDE_WINDOW and signed:
                    if not resynced:
                        resynced = True
                        await self.sync_clock()
                        continue
                    self._alarm(Alarm.CLOCK_SKEW, f"{name}: Binance still says -1021 (timestamp outside recvWindow) "
                                                  f"right after a clock re-sync (offset {self.client.timestamp_offset} ms)")
                if status >= 500:
                    raise Unknown(f"{name}: Binance answered {status} ({exc.message})") from None
                raise Refused(exc.code, f"{name}: {exc.message}", status) from None
            except (asyncio.TimeoutError, aiohttp.ClientError, BinanceRequestException) as exc:
                raise Unknown(f"{name}: {type(exc).__name__} {exc}".rstrip()) from None
            self._note_weight(self.client.response)
            return result

    async def _admit(self, name: str, weight: int, wait: bool) -> None:
        """Return when a call of `weight` may be sent; Stopped when it may not wait for that."""
        while True:
            now = now_ms()
            if now < self._banned_until:
                raise Stopped(f"{name} not sent: REST calls are stopped by Binance's 418 until "
                              f"{utc(self._banned_until)}")
            if now < self._backoff_until:
                if not wait:
                    raise Stopped(f"{name} not sent: backing off Binance's 429 until {utc(self._backoff_until)}")
                await asyncio.sleep((self._backoff_until - now) / 1000)
                continue
            used = self.used_weight
            if used and used + weight > self.weight_budget:  # a fresh minute takes any one call
                if not wait:
                    raise Stopped(f"{name} not sent: request weight {used} of {self.weight_limit} used this minute "
                                  f"(budget {self.weight_budget})")
                server_now = now + self.client.timestamp_offset
                await asyncio.sleep((60_000 - server_now % 60_000 + WINDOW_MARGIN_MS) / 1000)
                continue
            self._count(weight)
            return

    def _count(self, weight: int) -> None:
        minute = self._server_minute()
        if minute != self._used_minute:
            self._used_minute, self._used = minute, 0
        self._used += weight

    def _note_weight(self, response: Any) -> None:
        headers = getattr(response, "headers", None) or {}
        value = headers.get("X-MBX-USED-WEIGHT-1M")
        if value is None or not str(value).isdigit():
            return
        minute = self._server_minute()
        if minute != self._used_minute:
            self._used_minute, self._used = minute, int(value)
        else:  # answers of concurrent calls arrive in any order: the largest is the latest
            self._used = max(self._used, int(value))

    def _ban(self, name: str, seconds: int) -> str:
        self._banned_until = max(self._banned_until, now_ms() + seconds * 1000)
        why = f"Binance answered 418 to {name}: every REST call is stopped until {utc(self._banned_until)} ({seconds}s)"
        if self._ban_lift is not None:
            self._ban_lift.cancel()
        delay = (self._banned_until - now_ms()) / 1000
        self._ban_lift = asyncio.get_running_loop().call_later(delay, self._lift_ban)
        self._alarm(Alarm.IP_BANNED, why)
        return why

    def _lift_ban(self) -> None:
        self._ban_lift = None
        self._alarm(Alarm.IP_BAN_LIFTED, f"Binance's 418 ban ended at {utc(self._banned_until)}: REST calls resume")

    def _back_off(self, name: str, seconds: int) -> str:
        self._backoff_until = max(self._backoff_until, now_ms() + seconds * 1000)
        why = f"Binance answered 429 to {name}: backing off until {utc(self._backoff_until)} ({seconds}s)"
        self._alarm(Alarm.RATE_LIMITED, why)
        return why

    def close(self) -> None:
        if self._ban_lift is not None:
            self._ban_lift.cancel()
            self._ban_lift = None

    # ------------------------------------------------------------------ the clock
    async def sync_clock(self) -> int:
        """Measure Binance's clock against ours (half the round trip corrects the answer's
        age), set python-binance's timestamp_offset, and report a persistent skew."""
        sent = now_ms()
        answer = await self.call("server time", 1, self.client.get_server_time, wait=True, signed=False)
        received = now_ms()
        offset = int(answer["serverTime"]) - (sent + received) // 2
        self.client.timestamp_offset = offset
        limit = self.settings.max_clock_skew_ms
        if abs(offset) > limit:
            self._skewed_syncs += 1
            if self._skewed_syncs == SKEW_CONFIRMATIONS:
                self._alarm(Alarm.CLOCK_SKEW, f"the local clock is {offset:+d} ms off Binance's at "
                                              f"{SKEW_CONFIRMATIONS} syncs in a row (limit {limit} ms)")
        else:
            if self._skewed_syncs >= SKEW_CONFIRMATIONS:
                self._alarm(Alarm.CLOCK_OK, f"the local clock is back within {limit} ms of Binance's ({offset:+d} ms)")
            self._skewed_syncs = 0
        log.info("Binance clock offset %+d ms (round trip %d ms)", offset, received - sent)
        return offset


def _retry_after(exc: BinanceAPIException) -> int:
    headers = getattr(exc.response, "headers", None) or {}
    value = str(headers.get("Retry-After", ""))
    return int(value) if value.isdigit() else DEFAULT_RETRY_AFTER_S


__all__ = ["BinanceRest", "Refused", "RestError", "Stopped", "Unknown", "now_ms"]
