"""What the Binance exchange reports back: a key's permissions, a reconciliation, a halt."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.trading.orders import Fill, Order


@dataclass(frozen=True)
class KeyPermissions:
    """What /sapi/v1/account/apiRestrictions says the API key may do."""

    withdrawals: bool
    internal_transfer: bool
    universal_transfer: bool
    ip_restricted: bool
    spot_trading: bool
    margin: bool
    futures: bool
    reading: bool

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> "KeyPermissions":
        return cls(withdrawals=bool(d.get("enableWithdrawals")), internal_transfer=bool(d.get("enableInternalTransfer")),
                   universal_transfer=bool(d.get("permitsUniversalTransfer")), ip_restricted=bool(d.get("ipRestrict")),
                   spot_trading=bool(d.get("enableSpotAndMarginTrading")), margin=bool(d.get("enableMargin")),
                   futures=bool(d.get("enableFutures")), reading=bool(d.get("enableReading")))

    def live_problems(self) -> list[str]:
        """Why this key must not trade live (empty: it may)."""
        problems = []
        if self.withdrawals:
            problems.append("the key can withdraw")
        if self.internal_transfer:
            problems.append("the key can make internal transfers")
        if self.universal_transfer:
            problems.append("the key can make universal transfers")
        if not self.ip_restricted:
            problems.append("the key is not restricted to trusted IPs")
        if not self.spot_trading:
            problems.append("the key cannot trade spot")
        return problems


@dataclass
class ReconcileReport:
    """What reconcile() found: Binance's view, and where the journal's differed."""

    balances: dict[str, dict[str, float]]
    open_orders: list[Order]  # resting on Binance now, as the book holds them
    changed: list[tuple[Order, Order]] = field(default_factory=list)  # (journal or book said, Binance says)
    new_fills: list[Fill] = field(default_factory=list)  # on Binance, not in the journal: announced
    adopted: list[Order] = field(default_factory=list)  # open on Binance, unknown to the journal: announced
    unresolved: list[Order] = field(default_factory=list)  # still UNKNOWN: Binance could not say
    missing_fills: list[Fill] = field(default_factory=list)  # journal fills Binance does not show for their order

    @property
    def clean(self) -> bool:
        return not (self.changed or self.new_fills or self.adopted or self.unresolved or self.missing_fills)

    def summary(self) -> str:
        if self.clean:
            return f"the book matches Binance ({len(self.open_orders)} open orders)"
        parts = [f"{len(v)} {k}" for k, v in (("orders changed", self.changed), ("fills added", self.new_fills),
                                               ("orders adopted", self.adopted), ("unresolved", self.unresolved),
                                               ("journal fills not on Binance", self.missing_fills)) if v]
        return ", ".join(parts)


@dataclass(frozen=True)
class HaltReport:
    """The halt's cancels, checked against Binance's open orders (all symbols)."""

    requested: tuple[str, ...]
    still_open: tuple[str, ...]
    verified: bool  # False: Binance's open orders could not be read

    @property
    def complete(self) -> bool:
        return self.verified and not self.still_open


__all__ = ["HaltReport", "KeyPermissions", "ReconcileReport"]
