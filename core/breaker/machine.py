"""States, the legal transitions between them, and who may make each one.

The rules are data so that the property-based test can check the implementation against
them. An agent may only escalate; loosening (recovery, clearing) belongs to the rules and
the operator; a TRIGGERED breaker is cleared straight to SAFE only by the operator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from core.events import Actor, BreakerStatus

S, W, T, R = BreakerStatus.SAFE, BreakerStatus.WARNING, BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING

# (from, to) -> actors allowed to make that move
LEGAL_TRANSITIONS: dict[tuple[BreakerStatus, BreakerStatus], frozenset[Actor]] = {
    (S, W): frozenset({Actor.RULE, Actor.OPERATOR, Actor.AGENT}),
    (S, T): frozenset({Actor.RULE, Actor.OPERATOR, Actor.AGENT}),
    (W, T): frozenset({Actor.RULE, Actor.OPERATOR, Actor.AGENT}),
    (R, T): frozenset({Actor.RULE, Actor.OPERATOR, Actor.AGENT}),
    (W, S): frozenset({Actor.RULE, Actor.OPERATOR}),
    (T, R): frozenset({Actor.RULE, Actor.OPERATOR}),
    (R, S): frozenset({Actor.RULE, Actor.OPERATOR}),
    (T, S): frozenset({Actor.OPERATOR}),
}

# what each state blocks, in the words the console shows
STATE_POLICY: dict[BreakerStatus, str] = {
    S: "all orders allowed",
    W: "entries at reduced size",
    T: "new entries blocked; exits, stops and cancels allowed",
    R: "exits, and entries at reduced size",
}


class IllegalTransition(Exception):
    """A transition the state machine does not allow, or an actor not allowed to make it."""


def check_transition(current: BreakerStatus, target: BreakerStatus, actor: Actor) -> None:
    allowed = LEGAL_TRANSITIONS.get((current, target))
    if allowed is None:
        raise IllegalTransition(f"{current.value} -> {target.value} is not a legal transition")
    if actor not in allowed:
        raise IllegalTransition(f"{actor.value} may not move the breaker {current.value} -> {target.value}")


@dataclass
class BreakerRecord:
    """Everything the backend stores: the current state plus its trigger and statistics."""

    status: BreakerStatus = S
    epoch: int = 0
    since_ms: int = 0
    reason: str = "initial state"
    actor: Actor = Actor.RULE
    symbol: str | None = None
    trigger_type: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    market_snapshot: dict[str, Any] = field(default_factory=dict)
    triggered_at_ms: int | None = None
    trigger_reason: str | None = None
    trigger_actor: Actor | None = None
    recovery_started_at_ms: int | None = None
    # statistics
    triggers: int = 0
    warnings: int = 0
    recoveries: int = 0
    clears: int = 0
    total_downtime_ms: int = 0
    capital_saved_total: float = 0.0
    last_cleared_at_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["actor"] = self.actor.value
        data["trigger_actor"] = self.trigger_actor.value if self.trigger_actor else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BreakerRecord":
        data = dict(data)
        data["status"] = BreakerStatus(data["status"])
        data["actor"] = Actor(data["actor"])
        if data.get("trigger_actor"):
            data["trigger_actor"] = Actor(data["trigger_actor"])
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})
