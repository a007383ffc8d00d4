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
- A held coin that crashes on its own (the breaker sees BTC, ETH and breadth) is cut to
  `triggered_exposure` when its drop from its own high over `held_symbol.horizon_minutes`
  crosses `drop_percent`, and comes back the same confirmed way once the drop is back
  under `clear_percent`. Each symbol holds the lower of its tier and its own cap.
- A restart resumes from the last journaled action (`resume`): the same baseline and
  exposure, a book held above what the restored breaker state allows is cut again on its
  symbol's first tick, and any wait for re-entry starts over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from core.events import BreakerChanged, BreakerStatus
from core.market.state import MarketState
from core.market.windows import MINUTE_MS
from core.settings import ProtectionPolicySettings
from core.trading.orders import Order, OrderType, Origin, Side

_DUST = 1e-9  # a relative quantity difference below this is rounding, not an order


@dataclass(frozen=True)
class PolicyAction:
    """One decision: what the policy does now and why (journaled as actor=policy)."""

    kind: str  # "cut" or "reenter"
    status: BreakerStatus
    exposure_from: float  # the breaker tier's fraction before and after (a symbol's own rule leaves it)
    exposure_to: float
    reason: str
    time_ms: int
    orders: tuple[Order, ...] = ()
    baseline: tuple[tuple[str, float], ...] = ()  # the positions before the first cut (what resume needs)
    caps: tuple[tuple[str, float], ...] = ()  # symbols held down by their own crash, and to what fraction
    calm_sigma: tuple[tuple[str, float], ...] = ()  # each capped symbol's volatility before its crash

    def details(self, ids: bool = True) -> dict:
        """As journaled; without `ids` (random per run) for a report that must repeat exactly."""
        return {"status": self.status.value, "exposure_from": round(self.exposure_from, 4),
                "exposure_to": round(self.exposure_to, 4), "baseline": dict(self.baseline), "caps": dict(self.caps),
                "calm_sigma": dict(self.calm_sigma),
                "orders": [{"symbol": o.symbol, "side": o.side.value, "quantity": o.quantity,
                            **({"client_order_id": o.client_order_id} if ids else {})} for o in self.orders]}


@dataclass
class ExposurePolicy:
    settings: ProtectionPolicySettings
    references: tuple[str, ...]
    holdings: Callable[[], dict[str, float]]  # symbol -> long quantity now
    last_price: Callable[[str], float | None]
    own: "SymbolView | None" = None  # each symbol's own drop and volatility (held_symbol)
    exposure: float = 1.0  # the breaker tier's fraction of the baseline
    status: BreakerStatus = BreakerStatus.SAFE
    baseline: dict[str, float] = field(default_factory=dict)
    troughs: dict[str, float] = field(default_factory=dict)  # lowest price since the cut began
    better_since: int | None = None  # when the wait for the next step began
    actions: list[PolicyAction] = field(default_factory=list)
    resume_due: set[str] = field(default_factory=set)  # symbols to cut again on their first tick after a restart
    wait_from_next_tick: bool = False  # the re-entry wait starts at the next tick's market time
    caps: dict[str, float] = field(default_factory=dict)  # symbol -> fraction its own crash allows (held_symbol)
    crashed: set[str] = field(default_factory=set)  # symbols past drop_percent, until back under clear_percent
    cap_since: dict[str, int] = field(default_factory=dict)  # a capped symbol's wait for its next step
    calm_sigma: dict[str, float] = field(default_factory=dict)  # a capped symbol's volatility before its crash

    def allowed(self, status: BreakerStatus | None = None) -> float:
        s = self.settings
        return {BreakerStatus.WARNING: s.warning_exposure, BreakerStatus.TRIGGERED: s.triggered_exposure,
                BreakerStatus.RECOVERING: s.recovering_exposure}.get(status or self.status, 1.0)

    def target(self, symbol: str) -> float:
        """The fraction of its baseline `symbol` may hold now: the tier's and its own rule's lower."""
        return min(self.exposure, self.caps.get(symbol, 1.0))

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
        """A held symbol's own crash, the troughs, and the next re-entry step when it is due."""
        if self.own is not None and self.settings.held_symbol.enabled:
            action = self._own_rule(symbol, price, t)
            if action is not None:
                return action
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
            if symbol in self.cap_since:
                self.cap_since[symbol] = t
            return None
        confirm = self.settings.reentry.confirm_minutes * MINUTE_MS
        since = self.cap_since.get(symbol)
        if since is not None and t - since >= confirm and self._settled(symbol):
            return self._reenter_symbol(symbol, t)
        since = self.better_since
        if since is None or t - since < confirm:
            return None
        allowed = self.allowed()
        if allowed <= self.exposure + _DUST:
            self.better_since = None
            return None
        return self._reenter(min(allowed, self.exposure + 1.0 / self.settings.reentry.steps), t)

    def _own_rule(self, symbol: str, price: float, t: int) -> PolicyAction | None:
        """held_symbol: fires on the crossing (a coin bought after its fall is the operator's
        choice), re-arms once the drop is back under clear_percent, which starts the wait."""
        drop = self.own.drop(symbol)  # type: ignore[union-attr]
        if drop is None:
            return None
        rule = self.settings.held_symbol
        if symbol in self.crashed:
            if drop < rule.clear_percent:
                self.crashed.discard(symbol)
                if symbol in self.caps and symbol not in self.cap_since:
                    self.cap_since[symbol] = t
            return None
        if drop < rule.drop_percent:
            return None
        self.crashed.add(symbol)
        self.cap_since.pop(symbol, None)
        held = self.holdings().get(symbol, 0.0)
        if held <= 0 and symbol not in self.baseline:
            return None
        cap = self.settings.triggered_exposure
        if self.caps.get(symbol, 1.0) <= cap + _DUST:
            return None
        base = self.baseline.setdefault(symbol, held)
        self.troughs[symbol] = price
        self.caps[symbol] = cap
        self.calm_sigma[symbol] = self.own.calm_sigma(symbol)  # type: ignore[union-attr]
        order = self._order(symbol, Side.SELL, held - base * self.target(symbol), reduce_only=True)
        return self._record("cut", f"{symbol} {drop:.1f}% below its {rule.horizon_minutes // 60:g}-hour high: "
                            f"cut to {cap:.0%} of the position", t, self.exposure, (order,))

    def resume(self, last: dict | None, status: BreakerStatus) -> None:
        """Take up where the journal left off (`last`: the details of the newest policy action,
        or None). The restored breaker state decides what may be held; a book above that is
        cut again per symbol on its first tick (a market order needs a price), and it never
        buys here: re-entry waits a whole confirmation from the first tick after the restart."""
        self.status = status
        allowed = self.allowed()
        held = self.holdings()
        baseline, exposure, caps, calm = _journaled_state(last)
        if baseline and (exposure < 1.0 - _DUST or caps):
            self.baseline, self.exposure, self.caps, self.calm_sigma = baseline, exposure, caps, calm
            self.crashed = set(caps)  # their wait starts over once each is back under clear_percent
        elif allowed < 1.0 - _DUST and any(q > 0 for q in held.values()):
            self.baseline = {s: q for s, q in held.items() if q > 0}  # tripped before the policy could cut
            self.exposure = 1.0
        if not self.baseline:
            return
        self.troughs = {}
        self.exposure = min(allowed, self.exposure)
        self.resume_due = {s for s, base in self.baseline.items()
                           if held.get(s, 0.0) > base * self.target(s) * (1 + _DUST) + _DUST}
        self.wait_from_next_tick = allowed > self.exposure + _DUST

    # ------------------------------------------------------------------ decisions
    def _recut(self, symbol: str, t: int) -> PolicyAction | None:
        base = self.baseline[symbol]
        held = min(self.holdings().get(symbol, 0.0), base)  # what was bought since is not the policy's
        order = self._order(symbol, Side.SELL, held - base * self.target(symbol), reduce_only=True)
        if order is None:
            return None
        return self._record("cut", f"restart in {self.status.value}: {symbol} held above the policy's "
                            f"{self.target(symbol):.0%}, cut again", t, self.exposure, (order,))

    def _cut(self, to: float, status: BreakerStatus, time_ms: int) -> PolicyAction | None:
        held = self.holdings()
        fresh = {s: q for s, q in held.items() if q > 0 and s not in self.baseline}
        if not self.baseline and not fresh:
            return None  # nothing held: nothing to cut, nothing to take back later
        if not self.baseline or fresh:
            self.troughs.update({s: p for s in (*self.references, *fresh) if s not in self.troughs
                                 and (p := self.last_price(s)) is not None})
        self.baseline.update(fresh)
        exposure_from, self.exposure = self.exposure, to
        orders = [self._order(s, Side.SELL, held.get(s, 0.0) - base * self.target(s), reduce_only=True)
                  for s, base in sorted(self.baseline.items())]
        self.better_since, self.wait_from_next_tick = None, False
        return self._record("cut", f"{status.value}: exposure cut to {to:.0%} of the positions before the cut",
                            time_ms, exposure_from, orders)

    def _reenter(self, to: float, t: int) -> PolicyAction:
        held = self.holdings()
        exposure_from, self.exposure = self.exposure, to
        orders = [self._order(s, Side.BUY, base * self.target(s) - held.get(s, 0.0))
                  for s, base in sorted(self.baseline.items())]
        minutes = self.settings.reentry.confirm_minutes
        self.better_since = t if to < 1.0 - _DUST else None
        return self._record("reenter", f"{self.status.value} held {minutes:g} min with no new low: exposure back "
                            f"to {to:.0%}", t, exposure_from, orders)

    def _settled(self, symbol: str) -> bool:
        """A capped coin's volatility is back under volatility_multiple x its level before the
        crash (a pump's swings are no recovery to buy back into)."""
        calm = self.calm_sigma.get(symbol, 0.0)
        return calm <= 0 or self.own.sigma(symbol) <= self.settings.held_symbol.volatility_multiple * calm  # type: ignore[union-attr]

    def _reenter_symbol(self, symbol: str, t: int) -> PolicyAction:
        cap = min(1.0, self.caps[symbol] + 1.0 / self.settings.reentry.steps)
        if cap >= 1.0 - _DUST:
            del self.caps[symbol], self.cap_since[symbol]
            self.calm_sigma.pop(symbol, None)
        else:
            self.caps[symbol], self.cap_since[symbol] = cap, t
        base = self.baseline[symbol]
        order = self._order(symbol, Side.BUY, base * self.target(symbol) - self.holdings().get(symbol, 0.0))
        minutes = self.settings.reentry.confirm_minutes
        return self._record("reenter", f"{symbol} back under {self.settings.held_symbol.clear_percent:g}% off its "
                            f"high for {minutes:g} min with no new low: back to {cap:.0%}", t, self.exposure, (order,))

    def _record(self, kind: str, reason: str, t: int, exposure_from: float,
                orders: list[Order | None] | tuple[Order | None, ...]) -> PolicyAction:
        action = PolicyAction(kind, self.status, exposure_from, self.exposure, reason, t,
                              tuple(o for o in orders if o is not None), tuple(sorted(self.baseline.items())),
                              tuple(sorted(self.caps.items())), tuple(sorted(self.calm_sigma.items())))
        if self.exposure >= 1.0 - _DUST and not self.caps:
            self.baseline, self.troughs, self.exposure = {}, {}, 1.0  # whole again: the book is the operator's
        self.actions.append(action)
        return action

    @staticmethod
    def _order(symbol: str, side: Side, quantity: float, reduce_only: bool = False) -> Order | None:
        if quantity <= 0 or not quantity > _DUST * max(1.0, abs(quantity)):
            return None
        return Order(symbol=symbol, side=side, type=OrderType.MARKET, quantity=quantity, reduce_only=reduce_only,
                     origin=Origin.POLICY)


class SymbolView:
    """held_symbol's inputs from the market windows: a symbol's drop from its high over the
    rule's horizon (the market must keep it), and its one-minute volatility, now and slow."""

    def __init__(self, market: MarketState, minutes: int) -> None:
        self._j = market.long_minutes.index(minutes)
        self._symbols = market.symbols

    def drop(self, symbol: str) -> float | None:
        w = self._symbols.get(symbol)
        return w.long_drop_pct(self._j) if w is not None and w.ticks else None

    def sigma(self, symbol: str) -> float:
        w = self._symbols.get(symbol)
        return w.sigma_1m() if w is not None else 0.0

    def calm_sigma(self, symbol: str) -> float:
        w = self._symbols.get(symbol)
        return w.sigma_1m_slow() if w is not None else 0.0


def symbol_view(market: MarketState, settings: ProtectionPolicySettings) -> SymbolView | None:
    rule = settings.held_symbol
    return SymbolView(market, rule.horizon_minutes) if rule.enabled and rule.horizon_minutes in market.long_minutes \
        else None


def _journaled_state(last: object) -> tuple[dict[str, float], float, dict[str, float], dict[str, float]]:
    """The baseline, tier exposure, symbol caps and their pre-crash volatility a journaled
    action left; nothing if it cannot be read (then the restored breaker state alone
    decides, which never buys)."""
    try:
        exposure = float(last["exposure_to"])  # type: ignore[index]
        baseline = {str(s): float(q) for s, q in dict(last["baseline"]).items()}  # type: ignore[index]
        caps = {str(s): float(c) for s, c in dict(last.get("caps") or {}).items()}  # type: ignore[attr-defined]
        calm = {str(s): float(c) for s, c in dict(last.get("calm_sigma") or {}).items()}  # type: ignore[attr-defined]
    except (KeyError, TypeError, ValueError, AttributeError):
        return {}, 1.0, {}, {}
    if not 0.0 <= exposure <= 1.0 or not all(0.0 <= c < 1.0 for c in caps.values()):
        return {}, 1.0, {}, {}
    baseline = {s: q for s, q in baseline.items() if 0 < q < float("inf")}
    caps = {s: c for s, c in caps.items() if s in baseline}
    return baseline, exposure, caps, {s: c for s, c in calm.items() if s in caps and 0 <= c < float("inf")}


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
