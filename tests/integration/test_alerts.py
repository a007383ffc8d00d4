"""Alerts: breaker transitions to WARNING or TRIGGERED are posted to a webhook (a local
HTTP receiver here) and the delivery is journaled as user_notified."""

from __future__ import annotations

import asyncio
import sqlite3
import time

from aiohttp import web

from core.config import load_config
from core.events import Actor, BreakerChanged, BreakerStatus
from core.notify import payload
from core.session import Session
from tests.helpers import ListFeed, path


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


async def test_transitions_are_posted_and_journaled(tmp_path):
    runner, port, got = await receiver()
    try:
        settings = load_config(env={}, dotenv_paths=[], overrides=[
            f"monitoring.webhook_url=http://127.0.0.1:{port}/hooks/desk", "monitoring.webhook_style=json"]).settings
        feed = ListFeed(path("BTCUSDT", [(0, 100.0), (15, 100.0), (35, 83.0)]))
        db = tmp_path / "j.db"
        session = Session(settings, feed, journal_path=db)
        await session.run()
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # let the user_notified update land before closing
        await session.close()
    finally:
        await runner.cleanup()
    assert [g["body"]["to"] for g in got] == ["WARNING", "TRIGGERED"]
    assert got[1]["body"]["event"] == "circuit_breaker_transition" and got[1]["body"]["symbol"] == "BTCUSDT"
    assert got[1]["path"] == "/hooks/desk"
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT status, user_notified FROM circuit_breaker_events ORDER BY id").fetchall()
    assert rows == [("warning", 1), ("triggered", 1)]


async def test_a_dead_webhook_does_not_stop_the_engine(tmp_path):
    settings = load_config(env={}, dotenv_paths=[], overrides=[
        "monitoring.webhook_url=http://127.0.0.1:9/unreachable"]).settings
    session = Session(settings, ListFeed(path("BTCUSDT", [(0, 100.0), (15, 100.0), (35, 83.0)])),
                      journal_path=tmp_path / "j.db")
    await session.run()
    await asyncio.sleep(0.3)
    assert session.breaker.status is BreakerStatus.TRIGGERED
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
