"""De-risking tiers: how much of its long exposure a book keeps in each breaker state.

The policy decides; its caller sends the orders through the order gate (the session on
the live exchange, core.protection on paper books), so every cap and the halt still apply.

- The allowed exposure is 1 in SAFE, `warning_exposure` in WARNING, `triggered_exposure`
  in TRIGGERED and `recovering_exposure` in RECOVERING, as fractions of each position as
  it was before the first cut (its baseline). All of it comes back only at SAFE, which
  the guardian grants only once the market is stable (core.detect.guardian).
- A cut is immediate: reduce-only sells down to the allowed fraction.
- Exposure comes back only after a confirmed recovery: the state that allows more has
  held `reentry.confirm_minutes` of market time with no new low in any reference or held
  symbol since the cut began, then one step of 1/`steps` of the baseline; each further
  step waits another confirmation. A new low restarts the wait.
- It only ever takes back what it cut: it never adds to a position beyond its baseline,
  and once exposure is whole again the baseline is forgotten (the book is the operator's).
- A restart resumes from the last journaled action (`resume`): the same baseline and
  exposure, a book held above what the restored breaker state allows is cut again on its
  symbol's first tick, and any wait for re-entry starts over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from core.events import BreakerChanged, BreakerStatus
from core.market.windows import MINUTE_MS
from core.settings import ProtectionPolicySettings
from core.trading.orders import Order, OrderType, Origin, Side

_DUST = 1e-9  # a relative quantity difference below this is rounding, not an order


@dataclass(frozen=True)
class PolicyAction:
    """One decision: what the policy does now and why (journaled as actor=policy)."""

    kind: str  # "cut" or "reenter"
    status: BreakerStatus
    exposure_from: float
    exposure_to: float
    reason: str
    time_ms: int
    orders: tuple[Order, ...] = ()
    baseline: tuple[tuple[str, float], ...] = ()  # the positions before the first cut (what resume needs)

    def details(self, ids: bool = True) -> dict:
        """As journaled; without `ids` (random per run) for a report that must repeat exactly."""
        return {"status": self.status.value, "exposure_from": round(self.exposure_from, 4),
                "exposure_to": round(self.exposure_to, 4), "baseline": dict(self.baseline),
                "orders": [{"symbol": o.symbol, "side": o.side.value, "quantity": o.quantity,
                            **({"client_order_id": o.client_order_id} if ids else {})} for o in self.orders]}


@dataclass
class ExposurePolicy:
    settings: ProtectionPolicySettings
    references: tuple[str, ...]
    holdings: Callable[[], dict[str, float]]  # symbol -> long quantity now
    last_price: Callable[[str], float | None]
    exposure: float = 1.0  # the fraction of the baseline the book holds
    status: BreakerStatus = BreakerStatus.SAFE
    baseline: dict[str, float] = field(default_factory=dict)
    troughs: dict[str, float] = field(default_factory=dict)  # lowest price since the cut began
    better_since: int | None = None  # when the wait for the next step began
    actions: list[PolicyAction] = field(default_factory=list)
    resume_due: set[str] = field(default_factory=set)  # symbols to cut again on their first tick after a restart
    wait_from_next_tick: bool = False  # the re-entry wait starts at the next tick's market time

    def allowed(self, status: BreakerStatus | None = None) -> float:
        s = self.settings
        return {BreakerStatus.WARNING: s.warning_exposure, BreakerStatus.TRIGGERED: s.triggered_exposure,
                BreakerStatus.RECOVERING: s.recovering_exposure}.get(status or self.status, 1.0)

    # ------------------------------------------------------------------ inputs
    def on_breaker(self, change: BreakerChanged) -> PolicyAction | None:
        self.status = change.status
        allowed = self.allowed()
        if allowed < self.exposure - _DUST:
            return self._cut(allowed, change.status, change.time_ms)
        if allowed > self.exposure + _DUST:
            if self.better_since is None:  # the wait starts with the first better state, on market time
                self.wait_from_next_tick = True  # (an operator's change carries the wall clock)
        else:
            self.better_since, self.wait_from_next_tick = None, False
        return None

    def on_price(self, symbol: str, price: float, t: int) -> PolicyAction | None:
        """Follow the troughs and take the next re-entry step when it is due."""
        if not self.baseline:
            return None
        if self.wait_from_next_tick:
            self.wait_from_next_tick = False
            self.better_since = t
        if symbol in self.resume_due:
            self.resume_due.discard(symbol)
            return self._recut(symbol, t)
        trough = self.troughs.get(symbol)
        if trough is None and (symbol in self.baseline or symbol in self.references):
            self.troughs[symbol] = price  # resumed: the lows before the restart are not known
            return None
        if trough is not None and price < trough:
            self.troughs[symbol] = price
            if self.better_since is not None:
                self.better_since = t  # a new low: the recovery is not confirmed
            return None
        since = self.better_since
        if since is None or t - since < self.settings.reentry.confirm_minutes * MINUTE_MS:
            return None
        allowed = self.allowed()
        if allowed <= self.exposure + _DUST:
            self.better_since = None
            return None
        return self._reenter(min(allowed, self.exposure + 1.0 / self.settings.reentry.steps), t)

    def resume(self, last: dict | None, status: BreakerStatus) -> None:
        """Take up where the journal left off (`last`: the details of the newest policy action,
        or None). The restored breaker state decides what may be held; a book above that is
        cut again per symbol on its first tick (a market order needs a price), and it never
        buys here: re-entry waits a whole confirmation from the first tick after the restart."""
        self.status = status
        allowed = self.allowed()
        held = self.holdings()
        baseline, exposure = _journaled_state(last)
        if baseline and exposure < 1.0 - _DUST:
            self.baseline, self.exposure = baseline, exposure
        elif allowed < 1.0 - _DUST and any(q > 0 for q in held.values()):
            self.baseline = {s: q for s, q in held.items() if q > 0}  # tripped before the policy could cut
            self.exposure = 1.0
        if not self.baseline:
            return
        self.troughs = {}
        to = min(allowed, self.exposure)
        self.resume_due = {s for s, base in self.baseline.items() if held.get(s, 0.0) > base * to * (1 + _DUST) + _DUST}
        self.exposure = to
        self.wait_from_next_tick = allowed > to + _DUST

    # ------------------------------------------------------------------ decisions
    def _recut(self, symbol: str, t: int) -> PolicyAction | None:
        base = self.baseline[symbol]
        held = min(self.holdings().get(symbol, 0.0), base)  # what was bought since is not the policy's
        order = self._order(symbol, Side.SELL, held - base * self.exposure, reduce_only=True)
        if order is None:
            return None
        action = PolicyAction("cut", self.status, self.exposure, self.exposure,
                              f"restart in {self.status.value}: {symbol} held above the policy's "
                              f"{self.exposure:.0%}, cut again", t, (order,), tuple(sorted(self.baseline.items())))
        self.actions.append(action)
        return action

    def _cut(self, to: float, status: BreakerStatus, time_ms: int) -> PolicyAction | None:
        held = self.holdings()
        if not self.baseline:
            if not any(q > 0 for q in held.values()):
                return None  # nothing held: nothing to cut, nothing to take back later
            self.baseline = {s: q for s, q in held.items() if q > 0}
            self.troughs = {s: p for s in (*self.references, *self.baseline)
                            if (p := self.last_price(s)) is not None}
        orders = [self._order(s, Side.SELL, held.get(s, 0.0) - base * to, reduce_only=True)
                  for s, base in sorted(self.baseline.items())]
        action = PolicyAction("cut", status, self.exposure, to,
                              f"{status.value}: exposure cut to {to:.0%} of the positions before the cut",
                              time_ms, tuple(o for o in orders if o is not None), tuple(sorted(self.baseline.items())))
        self.exposure = to
        self.better_since, self.wait_from_next_tick = None, False
        self.actions.append(action)
        return action

    def _reenter(self, to: float, t: int) -> PolicyAction:
        held = self.holdings()
        orders = [self._order(s, Side.BUY, base * to - held.get(s, 0.0)) for s, base in sorted(self.baseline.items())]
        minutes = self.settings.reentry.confirm_minutes
        action = PolicyAction("reenter", self.status, self.exposure, to,
                              f"{self.status.value} held {minutes:g} min with no new low: exposure back to {to:.0%}",
                              t, tuple(o for o in orders if o is not None), tuple(sorted(self.baseline.items())))
        self.exposure = to
        self.better_since = t if to < 1.0 - _DUST else None
        if to >= 1.0 - _DUST:
            self.baseline, self.troughs, self.exposure = {}, {}, 1.0
        self.actions.append(action)
        return action

    @staticmethod
    def _order(symbol: str, side: Side, quantity: float, reduce_only: bool = False) -> Order | None:
        if quantity <= 0 or not quantity > _DUST * max(1.0, abs(quantity)):
            return None
        return Order(symbol=symbol, side=side, type=OrderType.MARKET, quantity=quantity, reduce_only=reduce_only,
                     origin=Origin.POLICY)


def _journaled_state(last: object) -> tuple[dict[str, float], float]:
    """The baseline and exposure a journaled action left; nothing if it cannot be read (then
    the restored breaker state alone decides, which never buys)."""
    try:
        exposure = float(last["exposure_to"])  # type: ignore[index]
        baseline = {str(s): float(q) for s, q in dict(last["baseline"]).items()}  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return {}, 1.0
    if not 0.0 <= exposure <= 1.0:
        return {}, 1.0
    return {s: q for s, q in baseline.items() if q > 0 and q == q and q != float("inf")}, exposure


def policy_applies(settings: ProtectionPolicySettings, live: bool) -> bool:
    """Off on live Binance unless the operator turned it on there too."""
    return settings.enabled and (settings.live or not live)


def describe(settings: ProtectionPolicySettings, active: bool, short: bool = False) -> str:
    """The banner's words for the policy."""
    if not active:
        return "de-risk off" if short else "de-risking off"
    s = settings
    if short:
        return f"de-risk {s.warning_exposure:.0%}/{s.triggered_exposure:.0%}/{s.recovering_exposure:.0%}"
    floor = "flatten" if s.triggered_exposure == 0 else f"keep {s.triggered_exposure:.0%}"
    return (f"de-risking: WARNING keep {s.warning_exposure:.0%}, TRIGGERED {floor}, RECOVERING "
            f"<= {s.recovering_exposure:.0%}, re-entry after {s.reentry.confirm_minutes:g} min x{s.reentry.steps}")
