"""CircuitBreakerState: the seed's API over a backend, safe from threads and tasks.

Reads come from a local copy of the record, so the order gate's check is a plain
attribute read. Every transition bumps the epoch and is written to the backend with
compare-and-set. Then, in this order and inside the same call:

1. the halt: on a transition to TRIGGERED, every halt step (the order gates of this
   process) runs first: new entries are denied from this moment and resting entries are
   cancelled, before anyone else hears of the change;
2. the subscribers (journal, console, guardian, desk), in subscription order;
3. the log line.

Lock order: a transition holds this breaker's lock while the halt takes a gate's lock, so
nothing may take this lock while holding a gate's (the gate reads `current()`, which
takes no lock).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from core.breaker.backend import BackendUnavailable, BreakerBackend, MemoryBackend, StateMissing
from core.breaker.machine import STATE_POLICY, BreakerRecord, IllegalTransition, check_transition
from core.events import Actor, BreakerChanged, BreakerStatus

CircuitBreakerStatus = BreakerStatus  # the seed's name for the enum

log = logging.getLogger("spikeguard.breaker")
Subscriber = Callable[[BreakerChanged], None]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class CircuitBreakerState:
    def __init__(self, backend: BreakerBackend | None = None, history_size: int = 500) -> None:
        self._backend = backend or MemoryBackend()
        self._lock = threading.RLock()
        # a shared backend that cannot be read now: a SAFE record here, with new entries held by
        # whoever keeps it in sync (core.breaker.redis_sync) until it can be
        self.backend_problem: str | None = None
        # a trip made here while the shared backend could not be written: pushed when it can
        self.unsynced: BreakerRecord | None = None
        try:
            self._record = self._backend.load()
        except (BackendUnavailable, StateMissing) as exc:
            self._record, self.backend_problem = BreakerRecord(), str(exc)
        self._subscribers: list[Subscriber] = []
        self._halt_steps: list[Subscriber] = []
        # asked before an agent may TRIGGER: a reason to refuse (an operator's recent clear), or None
        self.agent_trigger_guard: Callable[[int], str | None] | None = None
        self.history: deque[BreakerChanged] = deque(maxlen=history_size)

    # ------------------------------------------------------------------ reads
    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def backend(self) -> BreakerBackend:
        return self._backend

    @property
    def status(self) -> BreakerStatus:
        return self._record.status

    @property
    def epoch(self) -> int:
        return self._record.epoch

    def current(self) -> tuple[BreakerStatus, int]:
        """Status and epoch of one and the same record, without taking the lock."""
        record = self._record
        return record.status, record.epoch

    def get_status(self) -> BreakerStatus:
        return self._record.status

    def is_active(self) -> bool:
        """True while the breaker is tripped and not yet cleared (TRIGGERED or RECOVERING)."""
        return self._record.status in (BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING)

    def is_safe(self) -> bool:
        return self._record.status is BreakerStatus.SAFE

    def snapshot(self) -> BreakerRecord:
        with self._lock:
            return copy.deepcopy(self._record)

    def get_full_state(self) -> dict[str, Any]:
        with self._lock:
            data = self._record.to_dict()
        data["is_safe"] = data["status"] == BreakerStatus.SAFE.value
        data["is_active"] = data["status"] in (BreakerStatus.TRIGGERED.value, BreakerStatus.RECOVERING.value)
        data["blocks"] = STATE_POLICY[BreakerStatus(data["status"])]
        data["backend"] = self._backend.name
        return data

    def get_trigger_info(self) -> dict[str, Any]:
        with self._lock:
            r = self._record
            return {
                "status": r.status.value,
                "triggered_at_ms": r.triggered_at_ms,
                "trigger_reason": r.trigger_reason,
                "trigger_type": r.trigger_type if r.triggered_at_ms is not None else None,
                "trigger_actor": r.trigger_actor.value if r.trigger_actor else None,
                "recovery_started_at_ms": r.recovery_started_at_ms,
                "details": copy.deepcopy(r.details) if r.status is not BreakerStatus.SAFE else {},
            }

    def get_stats(self) -> dict[str, Any]:
        with self._lock:
            r = self._record
            return {
                "epoch": r.epoch,
                "triggers": r.triggers,
                "warnings": r.warnings,
                "recoveries": r.recoveries,
                "clears": r.clears,
                "total_downtime_seconds": r.total_downtime_ms / 1000.0,
                "capital_saved_total": r.capital_saved_total,
                "last_cleared_at_ms": r.last_cleared_at_ms,
            }

    # ------------------------------------------------------------------ subscribers
    def subscribe(self, fn: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(fn)

    def unsubscribe(self, fn: Subscriber) -> None:
        with self._lock:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

    def add_halt_step(self, halt: Subscriber) -> None:
        """Run `halt` first on every move to TRIGGERED, before any subscriber (an order gate)."""
        with self._lock:
            self._halt_steps.append(halt)

    # ------------------------------------------------------------------ the seed's transitions
    def trigger(
        self,
        reason: str,
        details: dict[str, Any] | None = None,
        market_snapshot: dict[str, Any] | None = None,
        *,
        actor: Actor = Actor.RULE,
        time_ms: int | None = None,
        symbol: str | None = None,
        trigger_type: str | None = None,
    ) -> bool:
        """Halt trading. False when already TRIGGERED."""
        return self._move(
            BreakerStatus.TRIGGERED, reason, actor, details, market_snapshot, time_ms, symbol,
            trigger_type or ("operator" if actor is Actor.OPERATOR else "manual"),
        ) is not None

    def set_warning(
        self,
        reason: str,
        details: dict[str, Any] | None = None,
        *,
        actor: Actor = Actor.RULE,
        time_ms: int | None = None,
        symbol: str | None = None,
        trigger_type: str | None = None,
        market_snapshot: dict[str, Any] | None = None,
    ) -> bool:
        """SAFE -> WARNING. False in any other state (a warning never lowers a halt)."""
        with self._lock:
            if self._record.status is not BreakerStatus.SAFE:
                return False
            return self._move(
                BreakerStatus.WARNING, reason, actor, details, market_snapshot, time_ms, symbol, trigger_type
            ) is not None

    def start_recovery(
        self,
        reason: str = "recovery conditions met",
        details: dict[str, Any] | None = None,
        *,
        actor: Actor = Actor.RULE,
        time_ms: int | None = None,
    ) -> bool:
        """TRIGGERED -> RECOVERING. False in any other state."""
        with self._lock:
            if self._record.status is not BreakerStatus.TRIGGERED:
                return False
            return self._move(BreakerStatus.RECOVERING, reason, actor, details, None, time_ms, None, None) is not None

    def clear(
        self,
        capital_saved: float = 0.0,
        *,
        reason: str = "cleared",
        actor: Actor = Actor.OPERATOR,
        time_ms: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> bool:
        """Back to SAFE. False when already SAFE. Raises IllegalTransition when the actor
        may not clear from the current state (an agent never may; a rule only from
        WARNING or RECOVERING)."""
        with self._lock:
            if self._record.status is BreakerStatus.SAFE:
                return False
            extra = dict(details or {})
            extra["capital_saved"] = capital_saved
            return self._move(BreakerStatus.SAFE, reason, actor, extra, None, time_ms, None, None,
                              capital_saved=capital_saved) is not None

    # ------------------------------------------------------------------ the one place state changes
    def _move(
        self,
        target: BreakerStatus,
        reason: str,
        actor: Actor,
        details: dict[str, Any] | None,
        snapshot: dict[str, Any] | None,
        time_ms: int | None,
        symbol: str | None,
        trigger_type: str | None,
        capital_saved: float = 0.0,
    ) -> BreakerChanged | None:
        if not isinstance(actor, Actor):
            actor = Actor(actor)
        when = _now_ms() if time_ms is None else int(time_ms)
        with self._lock:
            current = self._record
            if current.status is target:
                return None
            check_transition(current.status, target, actor)
            if actor is Actor.AGENT and target is BreakerStatus.TRIGGERED and self.agent_trigger_guard is not None:
                refusal = self.agent_trigger_guard(when)
                if refusal:
                    raise IllegalTransition(refusal)
            new = copy.deepcopy(current)
            new.status = target
            new.epoch = current.epoch + 1
            new.since_ms = when
            new.reason = reason
            new.actor = actor
            new.symbol = symbol
            new.details = dict(details or {})
            new.market_snapshot = dict(snapshot or {})
            if trigger_type is not None or target is not BreakerStatus.RECOVERING:
                new.trigger_type = trigger_type
            if target is BreakerStatus.TRIGGERED:
                new.triggers += 1
                if current.status is not BreakerStatus.RECOVERING or current.triggered_at_ms is None:
                    new.triggered_at_ms = when
                new.trigger_reason = reason
                new.trigger_actor = actor
                new.recovery_started_at_ms = None
            elif target is BreakerStatus.WARNING:
                new.warnings += 1
            elif target is BreakerStatus.RECOVERING:
                new.recoveries += 1
                new.recovery_started_at_ms = when
                new.symbol = current.symbol
                new.trigger_type = current.trigger_type
            elif target is BreakerStatus.SAFE:
                if current.status in (BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING) and \
                        current.triggered_at_ms is not None:
                    new.total_downtime_ms += max(0, when - current.triggered_at_ms)
                new.clears += 1
                new.capital_saved_total += float(capital_saved or 0.0)
                new.last_cleared_at_ms = when
                new.triggered_at_ms = None
                new.trigger_reason = None
                new.trigger_actor = None
                new.recovery_started_at_ms = None
            try:
                stored = self._backend.compare_and_set(current.epoch, new)
            except BackendUnavailable as exc:
                if target is not BreakerStatus.TRIGGERED:
                    raise IllegalTransition(f"{exc}: the breaker cannot be moved to {target.value} now "
                                            f"(a trip still can)") from None
                stored, self.unsynced = True, new  # a trip is never lost: here now, in the backend later
            if not stored:
                # another process moved the breaker first: take its state (announced), fail closed
                try:
                    self._take_from_backend(current)
                except (BackendUnavailable, StateMissing) as exc:
                    raise IllegalTransition(f"{exc}: the breaker cannot be moved to {target.value} now") from None
                if target is BreakerStatus.TRIGGERED and self._record.status is BreakerStatus.TRIGGERED:
                    return None  # TRIGGERED by someone else first: the trip stands
                raise IllegalTransition(
                    f"breaker moved concurrently (epoch {current.epoch} is stale, now {self._record.epoch})"
                )
            self._record = new
            change = BreakerChanged(
                epoch=new.epoch, previous=current.status, status=target, reason=reason, actor=actor,
                time_ms=when, symbol=new.symbol, trigger_type=new.trigger_type, details=new.details,
                market_snapshot=new.market_snapshot, wall_ns=time.perf_counter_ns(),
            )
            self._announce(change)
            return change

    def _announce(self, change: BreakerChanged) -> None:
        """The halt first, then the subscribers, then the log line (under the lock)."""
        self.history.append(change)
        if change.status is BreakerStatus.TRIGGERED:
            for halt in list(self._halt_steps):
                try:
                    halt(change)
                except Exception:  # new entries are denied by the state already; the cancels failed
                    log.critical("breaker halt step %r failed: resting orders may remain", halt, exc_info=True)
        for fn in list(self._subscribers):
            try:
                fn(change)
            except Exception:  # a faulty subscriber must not stop the change reaching the others
                log.exception("breaker subscriber %r failed", fn)
        log.info("breaker %s -> %s epoch=%d actor=%s symbol=%s reason=%s", change.previous.value,
                 change.status.value, change.epoch, change.actor.value, change.symbol, change.reason)

    def adopt(self, record: BreakerRecord, source: str = "journal") -> BreakerChanged | None:
        """Take a record from elsewhere (the journal at restart, a shared backend) as the
        current state, announced like any transition (a TRIGGERED record halts first).

        Epochs only move forward: a record at or below the current epoch, or with a negative
        epoch, is refused. One epoch ahead, the step must be a legal transition for the
        record's actor; further ahead, the steps in between were made elsewhere and the
        record is taken as the outcome. Raises IllegalTransition; None if it is the current
        record already."""
        if not isinstance(record, BreakerRecord) or not isinstance(record.status, BreakerStatus) \
                or not isinstance(record.actor, Actor):
            raise IllegalTransition(f"cannot adopt {record!r}: not a breaker record")
        if not isinstance(record.epoch, int) or isinstance(record.epoch, bool) or record.epoch < 0:
            raise IllegalTransition(f"cannot adopt a record with epoch {record.epoch!r}")
        with self._lock:
            current = self._record
            if record.epoch == current.epoch and record.status is current.status:
                return None
            if record.epoch <= current.epoch:
                raise IllegalTransition(f"cannot adopt {record.status.value} epoch {record.epoch} from the {source}: "
                                        f"the breaker is at {current.status.value} epoch {current.epoch} "
                                        f"(epochs only move forward)")
            if record.epoch == current.epoch + 1 and record.status is not current.status:
                check_transition(current.status, record.status, record.actor)
            if source != self._backend.name and not self._backend.compare_and_set(current.epoch, record):
                self._take_from_backend(current)
                raise IllegalTransition(f"breaker moved concurrently while adopting (now epoch {self._record.epoch})")
            return self._install(current, copy.deepcopy(record), source)

    def push_unsynced(self) -> bool:
        """Write a trip made while the backend could not be written (True once it is there, or
        the backend is TRIGGERED anyway). May raise BackendUnavailable."""
        with self._lock:
            record = self.unsynced
            if record is None:
                return True
            pushed = copy.deepcopy(record)
            if self._backend.compare_and_set(record.epoch - 1, pushed):
                self.unsynced = None
                if pushed.epoch != self._record.epoch and self._record is record:
                    self._record = pushed  # the backend numbered it after what happened elsewhere
                return True
            stored = self._backend.load()
            if stored.status is BreakerStatus.TRIGGERED:
                self.unsynced = None
                return True
            return False

    def _take_from_backend(self, current: BreakerRecord) -> None:
        """The backend holds a newer record than ours (another process moved it): it becomes
        ours, announced like any transition, so this process's gate halts on a TRIGGERED one."""
        stored = self._backend.load()
        if stored.epoch != current.epoch or stored.status is not current.status:
            self._install(current, stored, "backend")

    def _install(self, current: BreakerRecord, record: BreakerRecord, source: str) -> BreakerChanged:
        self._record = record
        change = BreakerChanged(
            epoch=record.epoch, previous=current.status, status=record.status,
            reason=f"restored from the {source}: {record.reason}", actor=record.actor,
            time_ms=record.since_ms, symbol=record.symbol, trigger_type=record.trigger_type,
            details={**record.details, "adopted_from": source}, market_snapshot=dict(record.market_snapshot),
            wall_ns=time.perf_counter_ns(),
        )
        self._announce(change)
        return change


_singleton: CircuitBreakerState | None = None
_singleton_lock = threading.Lock()


def get_circuit_breaker_state() -> CircuitBreakerState:
    """The process-wide breaker (in memory until configure_circuit_breaker() says otherwise)."""
    global _singleton
    with _singleton_lock:
        if _singleton is None:
            _singleton = CircuitBreakerState()
        return _singleton


def configure_circuit_breaker(state: CircuitBreakerState | None) -> CircuitBreakerState | None:
    """Install (or, with None, forget) the process-wide breaker. Returns the previous one."""
    global _singleton
    with _singleton_lock:
        previous, _singleton = _singleton, state
        return previous


__all__ = ["CircuitBreakerState", "CircuitBreakerStatus", "IllegalTransition",
           "get_circuit_breaker_state", "configure_circuit_breaker"]
