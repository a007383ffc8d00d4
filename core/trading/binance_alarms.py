"""What the Binance exchange reports to whoever runs it, and what each report asks of them.

Listeners receive `(Alarm, detail)` on the engine's loop; the detail is one line for the
log and the console (never a key: it is built from codes, counts and times).
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class Alarm(str, enum.Enum):
    IP_BANNED = "ip_banned"  # a 418: every REST call stopped until its Retry-After. Breaker: at least WARNING
    IP_BAN_LIFTED = "ip_ban_lifted"  # that Retry-After has passed: REST calls resume
    RATE_LIMITED = "rate_limited"  # a 429: calls back off for its Retry-After; entries are refused meanwhile
    CLOCK_SKEW = "clock_skew"  # the clock is persistently off Binance's beyond max_clock_skew_ms. Breaker: TRIGGERED
    CLOCK_OK = "clock_ok"  # back within max_clock_skew_ms
    HALT_INCOMPLETE = "halt_incomplete"  # orders still open (or not verifiable) after the halt's cancels
    USER_STREAM_LOST = "user_stream_lost"  # order updates may be missed until it is restored
    USER_STREAM_RESTORED = "user_stream_restored"  # reconnected, and the book reconciled with Binance
    ORDER_UNRESOLVED = "order_unresolved"  # an order's result is still unknown after the bounded lookups


AlarmListener = Callable[[Alarm, str], None]

__all__ = ["Alarm", "AlarmListener"]
