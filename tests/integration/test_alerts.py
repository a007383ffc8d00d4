"""Alerts: breaker transitions to WARNING or TRIGGERED are posted to a webhook (a local
HTTP receiver here) and the delivery is journaled as user_notified."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from aiohttp import web

from core import notify
from core.config import load_config
from core.events import Actor, BreakerChanged, BreakerStatus
from core.notify import payload
from core.session import Session
from tests.helpers import ListFeed, path

GUARD_S = 30  # only ever reached when something hangs


@pytest.fixture
def alerts_done(monkeypatch: pytest.MonkeyPatch) -> asyncio.Queue:
    """(status, delivered) for each alert the session's notifier has finished: posted and,
    when delivered, journaled as user_notified."""
    done: asyncio.Queue = asyncio.Queue()

    class Observed(notify.WebhookNotifier):
        async def notify(self, change: BreakerChanged) -> bool:
            ok = await super().notify(change)
            if change.status in notify.ALERT_STATES:
                done.put_nowait((change.status, ok))
            return ok

    monkeypatch.setattr(notify, "WebhookNotifier", Observed)
    return done


async def finished(done: asyncio.Queue, n: int) -> list[tuple[BreakerStatus, bool]]:
    return [await asyncio.wait_for(done.get(), GUARD_S) for _ in range(n)]


async def receiver():
    got: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        got.append({"path": request.path, "body": await request.json()})
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, port, got


async def test_transitions_are_posted_and_journaled(tmp_path, alerts_done):
    runner, port, got = await receiver()
    db = tmp_path / "j.db"
    try:
        settings = load_config(env={}, dotenv_paths=[], overrides=[
            f"monitoring.webhook_url=http://127.0.0.1:{port}/hooks/desk", "monitoring.webhook_style=json"]).settings
        feed = ListFeed(path("BTCUSDT", [(0, 100.0), (15, 100.0), (35, 83.0)]))
        session = Session(settings, feed, journal_path=db)
        try:
            await session.run()
            assert await finished(alerts_done, 2) == [(BreakerStatus.WARNING, True), (BreakerStatus.TRIGGERED, True)]
        finally:
            await session.close()
    finally:
        await runner.cleanup()
    assert [g["body"]["to"] for g in got] == ["WARNING", "TRIGGERED"]
    assert got[1]["body"]["event"] == "circuit_breaker_transition" and got[1]["body"]["symbol"] == "BTCUSDT"
    assert got[1]["path"] == "/hooks/desk"
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT status, user_notified FROM circuit_breaker_events ORDER BY id").fetchall()
    assert rows == [("warning", 1), ("triggered", 1)]


async def test_a_dead_webhook_does_not_stop_the_engine(tmp_path, alerts_done):
    settings = load_config(env={}, dotenv_paths=[], overrides=[
        "monitoring.webhook_url=http://127.0.0.1:9/unreachable"]).settings
    session = Session(settings, ListFeed(path("BTCUSDT", [(0, 100.0), (15, 100.0), (35, 83.0)])),
                      journal_path=tmp_path / "j.db")
    try:
        await session.run()
        assert await finished(alerts_done, 2) == [(BreakerStatus.WARNING, False), (BreakerStatus.TRIGGERED, False)]
        assert session.breaker.status is BreakerStatus.TRIGGERED
    finally:
        await session.close()
    with sqlite3.connect(tmp_path / "j.db") as con:
        assert con.execute("SELECT MAX(user_notified) FROM circuit_breaker_events").fetchone()[0] == 0


def test_payload_styles():
    change = BreakerChanged(epoch=3, previous=BreakerStatus.WARNING, status=BreakerStatus.TRIGGERED,
                            reason="BTCUSDT down 16%", actor=Actor.RULE, time_ms=1_700_000_000_000, symbol="BTCUSDT")
    url, body = payload(change, "slack", "https://hooks.example/T1")
    assert url == "https://hooks.example/T1" and "TRIGGERED" in body["text"] and set(body) == {"text"}
    url, body = payload(change, "telegram", "https://api.example/botTOKEN/sendMessage?chat_id=42")
    assert url == "https://api.example/botTOKEN/sendMessage" and body["chat_id"] == "42"
    url, body = payload(change, "ntfy", "https://ntfy.example/spikeguard-alerts")
    assert url == "https://ntfy.example/" and body["topic"] == "spikeguard-alerts" and body["priority"] == 5
    url, body = payload(change, "json", "http://x/y")
    assert body["from"] == "WARNING" and body["to"] == "TRIGGERED" and body["epoch"] == 3
