"""What a plausible tick is: the absolute bounds every price, quantity and time must meet.

Feeds check their input against these before it becomes a Tick, and the engine checks
every Tick again, so a corrupt value is a bad row, never a crash and never a crash alert.
The bounds are deliberately loose (no real row may ever be rejected; every file in
shared/data/market is checked against them in the tests) and tight enough that the hot
path's float math stays far from overflow and underflow.
"""

from __future__ import annotations

from typing import NamedTuple

# Binance quotes prices with at most 8 decimals, so no trade is ever below 1e-8. The top is
# about 10,000x Bitcoin's price in US dollars and 250x in Turkish lira, the largest quote we
# know (core/market/symbols.py). Inside these bounds a ratio of two prices lies within
# 1e-17..1e17 and its logarithm is well defined.
MIN_PRICE = 1e-8
MAX_PRICE = 1e9
# More than the whole supply of any token Binance lists as it is (SHIB about 5.9e14, PEPE
# about 4.2e14; larger supplies trade rescaled, as 1000SATS or 1MBABYDOGE), so no real trade
# or candle's volume reaches it. With MAX_PRICE it keeps price x quantity below 1e25.
MAX_QTY = 1e16

EARLIEST_MS = 1_230_940_800_000  # 2009-01-03 00:00 UTC, the Bitcoin genesis block: no crypto trade is older
LATEST_MS = 4_102_444_800_000  # 2100-01-01 00:00 UTC
MAX_TIMESTAMP_DIGITS = 19  # 2100 in nanoseconds is 4.1e18: 19 digits


def plausible_price(x: float) -> bool:
    return MIN_PRICE <= x <= MAX_PRICE  # False for NaN too


def plausible_qty(x: float) -> bool:
    return 0.0 <= x <= MAX_QTY


class TimeUnit(NamedTuple):
    """An epoch timestamp unit and its conversion to milliseconds (value * mul // div)."""

    name: str  # "s", "ms", "us", "ns" (pandas' spellings)
    mul: int
    div: int

    def to_ms(self, value: int) -> int:
        return value * self.mul // self.div


TIME_UNITS = (TimeUnit("s", 1000, 1), TimeUnit("ms", 1, 1), TimeUnit("us", 1, 1000), TimeUnit("ns", 1, 1_000_000))


def plausible_time_ms(t: int) -> bool:
    return EARLIEST_MS <= t <= LATEST_MS


def detect_time_unit(value: int) -> TimeUnit | None:
    """The unit in which `value` is a time between EARLIEST_MS and LATEST_MS, or None.

    The four ranges lie a factor of 1000 apart and each spans less than that, so at most
    one unit fits: one timestamp is enough to tell a file's unit."""
    for unit in TIME_UNITS:
        if plausible_time_ms(unit.to_ms(value)):
            return unit
    return None


def implausible(price: float, qty: float, time_ms: int) -> str:
    """Why a tick with these values is outside the bounds (for the one-line report)."""
    if not plausible_price(price):
        return f"price {price!r} is not plausible (expected {MIN_PRICE:g} to {MAX_PRICE:g})"
    if not plausible_qty(qty):
        return f"quantity {qty!r} is not plausible (expected 0 to {MAX_QTY:g})"
    return f"time {time_ms!r} is not plausible (expected epoch ms before 2100)"
