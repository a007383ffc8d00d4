"""Consoles attached to one shared breaker, in tmux, with a guardian daemon and the breaker
command beside them, all on a real redis-server: a trip from the command reaches both
consoles, a clear typed in one reaches the other, and the guardian's spikes show in them."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import run_cli
from tests.e2e.test_tmux import REPO, Tmux
from tests.redis_server import redis_server  # noqa: F401  (the fixture)

PREFIX = "sgattach"


def console(tmp_path, name: str, url: str) -> Tmux:
    term = Tmux(tmp_path / name)
    (tmp_path / name).mkdir()
    term.start(f"{sys.executable} -m console.cli --data-dir {tmp_path / name / 'data'} --set redis.key_prefix={PREFIX} "
               f"console --scenario pump-and-dump --speed 60 --attach {url}")
    return term


def test_a_trip_and_a_clear_reach_every_attached_console(redis_server, tmp_path):
    url = redis_server.url
    assert run_cli("--set", f"redis.key_prefix={PREFIX}", "breaker", "clear", "--reason", "armed", "--redis", url,
                   timeout=30).returncode == 0
    guardian = subprocess.Popen([sys.executable, "-m", "console.cli", "--data-dir", str(tmp_path / "g"), "--set",
                                 f"redis.key_prefix={PREFIX}", "guardian", "--redis", url, "--scenario",
                                 "pump-and-dump", "--speed", "60"], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    one, two = console(tmp_path, "one", url), console(tmp_path, "two", url)
    try:
        for term in (one, two):
            term.wait_for("BTCUSDT", "SAFE by operator", "SCANNER PAUSED", timeout=60)
        tripped = run_cli("--set", f"redis.key_prefix={PREFIX}", "breaker", "trigger", "--reason", "cron halt",
                          "--redis", url, timeout=30)
        assert tripped.returncode == 0, tripped.stderr
        for term in (one, two):
            term.wait_for("TRIGGERED by operator", "cron halt", timeout=5)
        one.keys("C")
        one.wait_for("Clear the circuit breaker?")
        one.keys("all clear", "Enter")
        one.wait_for("SAFE by operator", "all clear")
        two.wait_for("SAFE by operator", "all clear", timeout=5)
        # the guardian's spikes (its scanner runs; the consoles' are paused): the pump shows in both
        for term in (one, two):
            term.wait_for("DOGEUSDT  ▲", timeout=90)
        for term in (one, two):
            term.keys("q")
            term.wait_for("SPIKEGUARD-EXIT=0", timeout=15)
    finally:
        one.kill()
        two.kill()
        guardian.terminate()
        guardian.wait(15)
