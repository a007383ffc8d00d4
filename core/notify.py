"""Alerts: a breaker transition to WARNING or TRIGGERED is posted to a webhook.

Styles: `json` (the transition as data), `slack` ({"text"}), `telegram` ({"chat_id",
"text"}, chat_id from the URL's query), `ntfy` (ntfy's JSON publish: topic from the URL's
path). The URL can carry a token, so it is never logged. A delivery is journaled as
`user_notified` on the transition's row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp

from core.events import BreakerChanged, BreakerStatus, iso_utc

log = logging.getLogger("spikeguard.notify")
ALERT_STATES = (BreakerStatus.WARNING, BreakerStatus.TRIGGERED)


def payload(change: BreakerChanged, style: str, url: str) -> tuple[str, dict[str, Any]]:
    """The (url, JSON body) to post for one transition in the given style."""
    headline = f"spikeguard breaker {change.previous.value} -> {change.status.value}"
    text = f"{headline}: {change.reason} (epoch {change.epoch}, by {change.actor.value}, {iso_utc(change.time_ms)})"
    if style == "slack":
        return url, {"text": text}
    if style == "telegram":
        parts = urlsplit(url)
        chat = parse_qs(parts.query).get("chat_id", [None])[0]
        return urlunsplit(parts._replace(query="")), {"chat_id": chat, "text": text}
    if style == "ntfy":
        parts = urlsplit(url)
        topic = parts.path.strip("/").split("/")[-1] or "spikeguard"
        root = urlunsplit(parts._replace(path="/", query=""))
        urgent = change.status is BreakerStatus.TRIGGERED
        return root, {"topic": topic, "title": headline, "message": text, "priority": 5 if urgent else 4,
                      "tags": ["rotating_light" if urgent else "warning"]}
    return url, {
        "event": "circuit_breaker_transition", "from": change.previous.value, "to": change.status.value,
        "reason": change.reason, "epoch": change.epoch, "actor": change.actor.value, "symbol": change.symbol,
        "trigger_type": change.trigger_type, "time": iso_utc(change.time_ms), "details": change.details,
    }


class WebhookNotifier:
    def __init__(self, url: str, style: str = "json", timeout_s: float = 5.0,
                 on_delivered: Callable[[BreakerChanged], Awaitable[None] | None] | None = None) -> None:
        self.url = url
        self.style = style
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.on_delivered = on_delivered
        self.delivered = 0
        self.failed = 0

    async def notify(self, change: BreakerChanged) -> bool:
        if change.status not in ALERT_STATES:
            return False
        url, body = payload(change, self.style, self.url)
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as http:
                async with http.post(url, json=body) as resp:
                    ok = 200 <= resp.status < 300
                    if not ok:
                        log.warning("webhook answered HTTP %d for epoch %d", resp.status, change.epoch)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("webhook delivery failed for epoch %d: %s", change.epoch, type(exc).__name__)
            ok = False
        if ok:
            self.delivered += 1
            if self.on_delivered is not None:
                result = self.on_delivered(change)
                if asyncio.iscoroutine(result):
                    await result
        else:
            self.failed += 1
        return ok
