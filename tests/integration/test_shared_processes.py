"""Several processes on one real redis-server: the `spikeguard breaker` command, a
`spikeguard guardian` daemon and headless bots (tests/integration/redis_bot_child.py). A
trip anywhere blocks entries everywhere, through the channel within 50 ms; a killed server
fails every process closed while cancels still go out; SIGTERM ends the guardian cleanly."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.redis_server import redis_server  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[2]
PREFIX = "sgproc"


def cli(server, *args: str) -> subprocess.CompletedProcess:
    return run_cli("--set", f"redis.key_prefix={PREFIX}", "breaker", *args, "--redis", server.url, timeout=30)


class Child:
    """A child process whose stdout is JSON lines, read in a thread."""

    def __init__(self, argv: list[str], stdin: bool = True, events_on: str = "stdout") -> None:
        self.proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE if stdin else None,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
        self.stream = self.proc.stdout if events_on == "stdout" else self.proc.stderr
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.stream:  # type: ignore[union-attr]
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                self.lines.put({"event": "text", "text": line})

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def expect(self, event: str, timeout: float = 10.0, **match) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(item)
            if item.get("event") == event and all(item.get(k) == v for k, v in match.items()):
                return item
        raise AssertionError(f"no {event} {match} within {timeout}s; seen {self.seen[-10:]}")

    def end(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(10)
            except Exception:
                self.proc.kill()


def bot(server) -> Child:
    child = Child([sys.executable, "-m", "tests.integration.redis_bot_child", server.url, PREFIX])
    child.expect("ready", timeout=30)
    return child


def test_the_breaker_command_reads_arms_trips_and_clears_with_exit_codes(redis_server):
    missing = cli(redis_server, "status")
    assert missing.returncode == 1 and "no breaker state" in missing.stdout
    armed = cli(redis_server, "clear", "--reason", "first start")
    assert armed.returncode == 0 and armed.stdout.strip() == "SAFE epoch 1 (re-armed)", armed
    tripped = cli(redis_server, "trigger", "--reason", "cron: exchange maintenance")
    assert tripped.returncode == 0 and tripped.stdout.strip() == "TRIGGERED epoch 2"
    status = json.loads(cli(redis_server, "status", "--json").stdout)
    assert status["status"] == "TRIGGERED" and status["epoch"] == 2 and status["actor"] == "operator"
    stale = cli(redis_server, "clear", "--reason", "stale view", "--epoch", "1")
    assert stale.returncode == 1 and "clear refused" in stale.stderr and "epoch 2" in stale.stderr
    cleared = cli(redis_server, "clear", "--reason", "maintenance over", "--epoch", "2")
    assert cleared.returncode == 0 and cleared.stdout.strip() == "SAFE epoch 3"
    no_reason = cli(redis_server, "trigger")
    assert no_reason.returncode == 2 and "needs --reason" in no_reason.stderr
    redis_server.kill()
    gone = cli(redis_server, "status")
    assert gone.returncode == 1 and "breaker backend unreachable" in gone.stderr and "Traceback" not in gone.stderr


def test_a_trip_in_any_process_blocks_entries_in_all_through_the_channel(redis_server):
    assert cli(redis_server, "clear", "--reason", "armed").returncode == 0
    bots = [bot(redis_server) for _ in range(2)]
    guardian = Child([sys.executable, "-m", "console.cli", "--data-dir", str(redis_server.directory / "g"),
                      "--set", f"redis.key_prefix={PREFIX}", "guardian", "--redis", redis_server.url,
                      "--scenario", "calm", "--speed", "1"], stdin=False, events_on="stderr")
    try:
        assert guardian.expect("start", timeout=30)["breaker"] == "SAFE"  # its structured log, on stderr
        for b in bots:
            b.send("entry")
            assert b.expect("entry")["status"] == "FILLED"
        bots[0].send("trigger desk lead's kill switch")
        sent = bots[0].expect("triggered")["wall_ns"]
        heard = bots[1].expect("breaker", status="TRIGGERED")
        assert heard["adopted"] == "redis"
        latency_ms = (heard["wall_ns"] - sent) / 1e6
        assert latency_ms < 50, latency_ms  # the channel, not the 250 ms poll
        bots[1].send("entry")
        denied = bots[1].expect("entry")
        assert denied["status"] == "DENIED" and "TRIGGERED" in (denied["reason"] or "")
        status = json.loads(cli(redis_server, "status", "--json").stdout)
        assert status["status"] == "TRIGGERED"
        assert guardian.expect("breaker", status="TRIGGERED")["actor"] == "operator"  # the guardian halted too
        guardian.proc.send_signal(signal.SIGTERM)
        assert guardian.expect("stop", timeout=15)["reason"] == "SIGTERM"
        assert guardian.proc.wait(15) == 0
    finally:
        for b in bots:
            b.end()
        if guardian.proc.poll() is None:
            guardian.proc.kill()


@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_a_killed_or_frozen_server_fails_every_process_closed_and_cancels_still_work(redis_server, fault):
    assert cli(redis_server, "clear", "--reason", "armed").returncode == 0
    bots = [bot(redis_server) for _ in range(2)]
    try:
        for b in bots:
            b.send("rest")
            assert b.expect("rest")["status"] == "NEW"
        (redis_server.kill if fault == "SIGKILL" else redis_server.freeze)()
        killed = time.time_ns()
        for b in bots:
            problem = b.expect("backend", timeout=5)
            assert problem["problem"].startswith("breaker backend unreachable")
            assert (problem["wall_ns"] - killed) / 1e9 < 0.25 + 0.25 + 0.5  # an interval and a timeout
            b.send("entry")
            assert b.expect("entry")["status"] == "DENIED"
            b.send("cancel")
            assert b.expect("cancel")["status"] == "CANCELED"
        assert all(b.proc.poll() is None for b in bots)  # nothing crashed
    finally:
        if fault == "SIGSTOP":
            redis_server.thaw()
        for b in bots:
            b.end()


