"""`spikeguard console --feed binance` end to end: the real command in tmux, talking over
loopback to the fake Binance (tests/fakes/binance, on a thread of this process), with canary
keys in its environment. Prices stream onto the screen under a TESTNET badge, the start-up
holds the breaker until the exchange is reconciled, a crash scripted on the server trips
it, and the keys appear nowhere: not on the screen, in the log, the journal or --help."""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.e2e.test_tmux import TIMEOUT, Tmux, running
from tests.fakes.binance.threaded import ThreadedFake

CANARY_KEY = "canary-e2e-key-3c9a71"
CANARY_SECRET = "canary-e2e-secret-88f0d2"


@pytest.fixture
def fake():
    f = ThreadedFake()
    yield f
    f.stop()


@pytest.fixture
def term(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.kill()


def config_on(fake: ThreadedFake, path: Path) -> Path:
    e = fake.server.endpoints()
    env = (f"    api_url: {e.api_url}\n    stream_url: {e.stream_url}\n"
           f"    futures_api_url: {e.futures_api_url}\n    futures_stream_url: {e.futures_stream_url}\n")
    path.write_text("binance:\n  symbols: [BTCUSDT, ETHUSDT, SOLUSDT]\n  reconnect_min_seconds: 0.05\n"
                    f"  testnet:\n{env}  live:\n{env}")
    path.chmod(0o600)
    return path


def command(data: Path, config: Path) -> str:
    return (f"env BINANCE_API_KEY={CANARY_KEY} BINANCE_SECRET_KEY={CANARY_SECRET} {sys.executable} -m console.cli "
            f"--data-dir {data} --config {config} console --feed binance")


def test_the_console_on_the_fake_testnet_streams_trips_and_never_shows_a_key(fake, term, tmp_path):
    data, config = tmp_path / "sg", config_on(fake, tmp_path / "binance.yaml")
    started = time.monotonic()
    term.start(command(data, config))
    screen = term.wait_for("TESTNET", "binance testnet", "BTCUSDT", "100,000", "RECOVERING")
    first_price_s = time.monotonic() - started
    assert "PAPER" not in screen
    for step in range(1, 17):  # BTC walks down 16% on the server
        fake.call(fake.server.set_price, "BTCUSDT", 100_000.0 * (1 - step / 100))
    screens = [term.wait_for("TRIGGERED", "BTCUSDT down")]
    screens.append(term.screen())
    term.keys("q")
    term.wait_for("SPIKEGUARD-EXIT=0", timeout=TIMEOUT)
    screens.append(term.screen())
    assert running(data) == []

    db = data / "journal.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT status, trigger_type FROM circuit_breaker_events ORDER BY id").fetchall()
        actions = [a for (a,) in con.execute("SELECT action FROM operator_actions ORDER BY id")]
    assert [(s.upper(), t) for s, t in rows] == [("TRIGGERED", "startup"), ("RECOVERING", "startup"),
                                                 ("TRIGGERED", "btc_dump_4h")]
    assert actions[0] == "exchange_reconciled" and actions[-1] == "session_end"

    # the canaries: the screens, every file the run wrote (journal, log), and --help
    seen = "".join(screens)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            seen += path.read_bytes().decode("latin-1")
    env = {**os.environ, "BINANCE_API_KEY": CANARY_KEY, "BINANCE_SECRET_KEY": CANARY_SECRET}
    for args in (["--help"], ["console", "--help"], ["config", "show"]):
        result = run_cli(*args, env=env)
        seen += result.stdout + result.stderr
    assert "Binance" in seen and "btc_dump" in seen  # the search saw the run's own words
    for canary in (CANARY_KEY, CANARY_SECRET):
        assert canary not in seen
    print(f"start-up to the first live price on screen: {first_price_s:.2f}s")


def test_a_testnet_that_cannot_be_reached_is_one_line_and_exit_2(term, tmp_path):
    config = tmp_path / "dead.yaml"
    dead = ("    api_url: http://127.0.0.1:9/api\n    stream_url: ws://127.0.0.1:9/\n"
            "    futures_api_url: http://127.0.0.1:9/fapi\n    futures_stream_url: ws://127.0.0.1:9/f/\n")
    config.write_text(f"binance:\n  request_timeout_seconds: 2\n  testnet:\n{dead}")
    config.chmod(0o600)
    term.start(command(tmp_path / "sg", config))
    term.wait_for("SPIKEGUARD-EXIT=2")
    screen = term.unwrapped()
    assert "error: cannot reach Binance testnet at http://127.0.0.1:9/api" in screen
    assert "Traceback" not in screen and CANARY_KEY not in screen
