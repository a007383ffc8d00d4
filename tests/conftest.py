"""Shared fixtures. Tests never touch the user's real directories or the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SPIKEGUARD_SHARED", REPO.parent / "shared"))
MARKET_DATA = SHARED / "data" / "market"
CRASHLABELS = SHARED / "tools" / "crashlabels.py"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    for var in ("CREWAI_CONFIG_PATH", "CIRCUIT_BREAKER_BTC_DUMP_1H", "CIRCUIT_BREAKER_ETH_DUMP_1H",
                "BINANCE_API_KEY", "BINANCE_SECRET_KEY", "OPENAI_API_KEY", "REDIS_ENABLED"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def market_data() -> Path:
    """../shared/data/market: real Binance candles. CI lays shared/ beside the clone;
    a missing folder is an error, not a skip."""
    if not MARKET_DATA.is_dir():
        pytest.fail(f"market data not found at {MARKET_DATA}: put shared/ beside the repository "
                    f"or set SPIKEGUARD_SHARED")
    return MARKET_DATA


@pytest.fixture(scope="session")
def crash_labels(market_data: Path) -> dict[str, dict]:
    """The independent labeller's expectations for every kline file."""
    files = sorted(str(p) for p in market_data.glob("*.csv") if p.name != "events.csv")
    out = subprocess.run([sys.executable, str(CRASHLABELS), *files], check=True, capture_output=True, text=True)
    labels = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return {row["file"]: row for row in labels}


@pytest.fixture
def settings():
    from core.config import load_config

    return load_config(env={}, dotenv_paths=[]).settings


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `spikeguard` entry point in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


@pytest.fixture
async def fake_binance():
    """A local Binance (tests/fakes/binance) on a free loopback port, stopped after the test."""
    from tests.fakes.binance import FakeBinance

    server = FakeBinance()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
