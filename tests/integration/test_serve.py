"""`spikeguard serve`: the console in a browser over textual-serve, on loopback only."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import aiohttp

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_serve_runs_the_console_for_a_browser(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "console.cli", "--data-dir", str(tmp_path), "serve", "--port", str(port),
         "--scenario", "calm"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            page = ""
            while time.monotonic() < deadline:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/") as resp:
                        page = await resp.text()
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            assert "textual.js" in page
            seen = b""
            async with http.ws_connect(f"http://127.0.0.1:{port}/ws?width=120&height=36") as ws:
                while time.monotonic() < deadline and b"BTCUSDT" not in seen:
                    msg = await asyncio.wait_for(ws.receive(), timeout=max(0.1, deadline - time.monotonic()))
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        seen += msg.data
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        seen += msg.data.encode()
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
            assert b"BTCUSDT" in seen, seen[-500:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    # the console the server started notices its server is gone and ends
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _consoles(tmp_path):
        await asyncio.sleep(0.1)
    assert _consoles(tmp_path) == []


def _consoles(data_dir) -> list[int]:
    from tests.e2e.test_tmux import running

    return running(data_dir)


def test_serve_refuses_a_bad_port():
    from tests.conftest import run_cli

    result = run_cli("serve", "--port", "70000")
    assert result.returncode == 2 and "port must be 1-65535" in result.stderr
