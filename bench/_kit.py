"""Shared bits of the benchmarks."""

from __future__ import annotations

import logging


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def fifty_symbols() -> list[str]:
    base = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "AVAXUSDT"]
    return base + [f"ALT{i:02d}USDT" for i in range(50 - len(base))]


def quiet_logs() -> None:
    """Figures only: no log lines on the terminal."""
    logging.getLogger().addHandler(logging.NullHandler())
