"""The circuit breaker against its own rules: a Hypothesis state machine plus plain tests.

The model predicts every call's outcome from LEGAL_TRANSITIONS and the documented
semantics of the seed's API:
  * trigger()        -> False when already TRIGGERED, else a move to TRIGGERED;
  * set_warning()    -> False unless SAFE, else SAFE -> WARNING;
  * start_recovery() -> False unless TRIGGERED, else TRIGGERED -> RECOVERING;
  * clear()          -> False when SAFE, else a move to SAFE;
and a move the actor may not make raises IllegalTransition and changes nothing.
"""

from __future__ import annotations

import random
import sys
import threading

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from core.breaker.backend import MemoryBackend
from core.breaker.machine import (
    LEGAL_TRANSITIONS,
    STATE_POLICY,
    BreakerRecord,
    IllegalTransition,
    check_transition,
)
from core.breaker.state import CircuitBreakerState, configure_circuit_breaker, get_circuit_breaker_state
from core.events import Actor, BreakerChanged, BreakerStatus

S, W, T, R = BreakerStatus.SAFE, BreakerStatus.WARNING, BreakerStatus.TRIGGERED, BreakerStatus.RECOVERING
RAISE = object()  # expected outcome: IllegalTransition

actors = st.sampled_from(list(Actor))
reasons = st.text(max_size=30)
steps = st.integers(min_value=0, max_value=3_600_000)


def legal(current: BreakerStatus, target: BreakerStatus, actor: Actor) -> bool:
    allowed = LEGAL_TRANSITIONS.get((current, target))
    return allowed is not None and actor in allowed


def assert_legal_chain(changes: list[BreakerChanged], final_status: BreakerStatus, final_epoch: int) -> None:
    """Gap-free epochs 1..N, each change legal for its actor and starting where the last ended."""
    assert [c.epoch for c in changes] == list(range(1, len(changes) + 1))
    assert final_epoch == len(changes)
    previous = S
    for c in changes:
        assert c.previous is previous, f"epoch {c.epoch}: from {c.previous}, but the breaker was {previous}"
        assert (c.previous, c.status) in LEGAL_TRANSITIONS, f"epoch {c.epoch}: {c.previous} -> {c.status}"
        assert c.actor in LEGAL_TRANSITIONS[(c.previous, c.status)], f"epoch {c.epoch}: actor {c.actor}"
        check_transition(c.previous, c.status, c.actor)  # the implementation's own check agrees
        previous = c.status
    assert previous is final_status


def counts(changes: list[BreakerChanged]) -> dict[str, int]:
    return {
        "triggers": sum(c.status is T for c in changes),
        "warnings": sum(c.status is W for c in changes),
        "recoveries": sum(c.status is R for c in changes),
        "clears": sum(c.status is S for c in changes),
    }


# -- the state machine ----------------------------------------------------------------------
class BreakerMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.backend = MemoryBackend()
        self.state = CircuitBreakerState(self.backend)
        self.seen: list[BreakerChanged] = []
        self.state.subscribe(self.seen.append)
        self.clock = 1_700_000_000_000
        # the model
        self.status = S
        self.triggered_at: int | None = None
        self.trigger_reason: str | None = None
        self.trigger_actor: Actor | None = None
        self.recovery_started: int | None = None
        self.downtime_ms = 0
        self.capital_saved = 0.0
        self.last_cleared: int | None = None

    # ---------------------------------------------------------------- helpers
    def _tick(self, dt: int) -> int:
        self.clock += dt
        return self.clock

    def _expect(self, target: BreakerStatus, actor: Actor, no_op: bool):
        if no_op:
            return False
        return target if legal(self.status, target, actor) else RAISE

    def _run(self, call, expected, actor: Actor, reason: str, when: int, capital: float = 0.0) -> None:
        before = self.state.snapshot()
        n_seen = len(self.seen)
        if expected is RAISE:
            with pytest.raises(IllegalTransition):
                call()
            assert self.state.snapshot() == before, "a refused transition changed the state"
            assert len(self.seen) == n_seen, "a refused transition notified subscribers"
            return
        result = call()
        if expected is False:
            assert result is False
            assert self.state.snapshot() == before, "a no-op call changed the state"
            assert len(self.seen) == n_seen, "a no-op call notified subscribers"
            return
        assert result is True
        assert len(self.seen) == n_seen + 1, "one transition, one notification"
        change = self.seen[-1]
        assert change.previous is self.status
        assert change.status is expected
        assert change.actor is actor
        assert change.reason == reason
        assert change.time_ms == when
        assert change.epoch == before.epoch + 1
        self._model_move(expected, actor, reason, when, capital)

    def _model_move(self, target: BreakerStatus, actor: Actor, reason: str, when: int, capital: float) -> None:
        current = self.status
        if target is T:
            if current is not R or self.triggered_at is None:
                self.triggered_at = when
            self.trigger_reason = reason
            self.trigger_actor = actor
            self.recovery_started = None
        elif target is R:
            self.recovery_started = when
        elif target is S:
            if current in (T, R):
                self.downtime_ms += max(0, when - self.triggered_at)
            self.capital_saved += capital
            self.last_cleared = when
            self.triggered_at = None
            self.trigger_reason = None
            self.trigger_actor = None
            self.recovery_started = None
        self.status = target

    # ---------------------------------------------------------------- rules
    @rule(actor=actors, reason=reasons, dt=steps)
    def trigger(self, actor, reason, dt):
        when = self._tick(dt)
        expected = self._expect(T, actor, no_op=self.status is T)
        self._run(lambda: self.state.trigger(reason, {"k": 1}, {"BTC": 1.0}, actor=actor, time_ms=when,
                                             symbol="BTCUSDT"), expected, actor, reason, when)

    @rule(actor=actors, reason=reasons, dt=steps)
    def set_warning(self, actor, reason, dt):
        when = self._tick(dt)
        expected = self._expect(W, actor, no_op=self.status is not S)
        self._run(lambda: self.state.set_warning(reason, actor=actor, time_ms=when), expected, actor, reason, when)

    @rule(actor=actors, reason=reasons, dt=steps)
    def start_recovery(self, actor, reason, dt):
        when = self._tick(dt)
        expected = self._expect(R, actor, no_op=self.status is not T)
        self._run(lambda: self.state.start_recovery(reason, actor=actor, time_ms=when),
                  expected, actor, reason, when)

    @rule(actor=actors, reason=reasons, dt=steps,
          capital=st.floats(min_value=0.0, max_value=1e7, allow_nan=False, allow_infinity=False))
    def clear(self, actor, reason, dt, capital):
        when = self._tick(dt)
        expected = self._expect(S, actor, no_op=self.status is S)
        self._run(lambda: self.state.clear(capital, reason=reason, actor=actor, time_ms=when),
                  expected, actor, reason, when, capital)

    # ---------------------------------------------------------------- invariants
    @invariant()
    def status_matches_model(self):
        st_ = self.state.status
        assert st_ in (S, W, T, R)
        assert st_ is self.status
        assert self.state.get_status() is st_
        assert self.state.is_safe() == (st_ is S)
        assert self.state.is_active() == (st_ in (T, R))

    @invariant()
    def observed_changes_are_legal_and_gap_free(self):
        assert_legal_chain(self.seen, self.state.status, self.state.epoch)
        assert list(self.state.history) == self.seen[-self.state.history.maxlen:]

    @invariant()
    def full_state_agrees(self):
        full = self.state.get_full_state()
        st_ = self.state.status
        assert full["status"] == st_.value
        assert full["epoch"] == self.state.epoch
        assert full["is_safe"] == (st_ is S)
        assert full["is_active"] == (st_ in (T, R))
        assert full["blocks"] == STATE_POLICY[st_]
        assert full["backend"] == "memory"

    @invariant()
    def stats_count_transitions(self):
        stats = self.state.get_stats()
        assert stats["epoch"] == self.state.epoch == len(self.seen)
        for key, value in counts(self.seen).items():
            assert stats[key] == value, key
        assert stats["capital_saved_total"] == pytest.approx(self.capital_saved)
        assert stats["total_downtime_seconds"] == pytest.approx(self.downtime_ms / 1000.0)
        assert stats["last_cleared_at_ms"] == self.last_cleared

    @invariant()
    def trigger_info_agrees(self):
        info = self.state.get_trigger_info()
        st_ = self.state.status
        assert info["status"] == st_.value
        # a trigger time exists exactly while tripped (TRIGGERED or RECOVERING); WARNING is
        # only reachable from SAFE, which has none
        assert (info["triggered_at_ms"] is None) == (st_ in (S, W))
        assert info["triggered_at_ms"] == self.triggered_at
        assert info["trigger_reason"] == self.trigger_reason
        assert info["trigger_actor"] == (self.trigger_actor.value if self.trigger_actor else None)
        assert (info["recovery_started_at_ms"] is None) == (st_ is not R)
        assert info["recovery_started_at_ms"] == self.recovery_started
        if st_ is S:
            assert info["details"] == {}
            assert info["trigger_type"] is None

    @invariant()
    def backend_holds_the_same_record(self):
        assert self.backend.load() == self.state.snapshot()


BreakerMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestBreakerMachine = BreakerMachine.TestCase


# -- the legal-transition table itself ------------------------------------------------------
@pytest.mark.parametrize("current", list(BreakerStatus))
@pytest.mark.parametrize("target", list(BreakerStatus))
@pytest.mark.parametrize("actor", list(Actor))
def test_check_transition_follows_the_table(current, target, actor):
    if legal(current, target, actor):
        check_transition(current, target, actor)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(current, target, actor)


def test_table_encodes_the_documented_policy():
    for (current, target), allowed in LEGAL_TRANSITIONS.items():
        if target in (S, R):  # loosening: never the agent
            assert Actor.AGENT not in allowed, (current, target)
    assert LEGAL_TRANSITIONS[(T, S)] == frozenset({Actor.OPERATOR})
    assert all(current is not target for current, target in LEGAL_TRANSITIONS)


# -- plain tests ------------------------------------------------------------------------------
def test_seed_example_flow():
    state = CircuitBreakerState()
    assert state.status is S and state.is_safe() and not state.is_active()
    assert state.trigger("BTC dumped 5% in 1h", {"drop_pct": 5.2}) is True
    assert state.status is T and state.is_active()
    assert state.trigger("again") is False
    assert state.clear(capital_saved=1000.0) is True
    assert state.status is S
    stats = state.get_stats()
    assert stats["capital_saved_total"] == 1000.0
    assert stats["triggers"] == 1 and stats["clears"] == 1 and stats["epoch"] == 2
    assert state.clear() is False


def test_agent_may_never_clear_or_start_recovery():
    state = CircuitBreakerState()
    assert state.trigger("agent sees a crash", actor=Actor.AGENT) is True
    with pytest.raises(IllegalTransition):
        state.start_recovery(actor=Actor.AGENT)
    with pytest.raises(IllegalTransition):
        state.clear(actor=Actor.AGENT)
    with pytest.raises(IllegalTransition):
        state.clear(actor=Actor.RULE)  # TRIGGERED -> SAFE is the operator's alone
    assert state.status is T and state.epoch == 1
    assert state.start_recovery(actor=Actor.RULE) is True
    with pytest.raises(IllegalTransition):
        state.clear(actor=Actor.AGENT)
    assert state.clear(actor=Actor.RULE) is True
    assert state.set_warning("agent is nervous", actor=Actor.AGENT) is True
    with pytest.raises(IllegalTransition):
        state.clear(actor=Actor.AGENT)
    assert state.status is W


def test_threads_see_a_gap_free_legal_sequence():
    state = CircuitBreakerState()
    seen: list[BreakerChanged] = []
    state.subscribe(seen.append)
    n_threads, per_thread = 8, 250  # 2,000 calls in total
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []
    successes = [0] * n_threads

    def worker(i: int) -> None:
        rng = random.Random(i)
        try:
            barrier.wait()
            for j in range(per_thread):
                op = rng.randrange(4)
                if op == 0:
                    ok = state.trigger(f"t{i}.{j}", actor=Actor.OPERATOR)
                elif op == 1:
                    ok = state.clear(float(j), reason=f"c{i}.{j}", actor=Actor.OPERATOR)
                elif op == 2:
                    ok = state.set_warning(f"w{i}.{j}", actor=Actor.OPERATOR)
                else:
                    ok = state.start_recovery(f"r{i}.{j}", actor=Actor.OPERATOR)
                assert ok in (True, False)
                successes[i] += ok
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the threads as much as possible
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert not any(th.is_alive() for th in threads)
    finally:
        sys.setswitchinterval(old_interval)

    assert errors == []
    n = len(seen)
    assert n > 100, "the threads should have moved the breaker many times"
    assert n == state.epoch == sum(successes)
    assert_legal_chain(seen, state.status, state.epoch)
    stats = state.get_stats()
    for key, value in counts(seen).items():
        assert stats[key] == value, key


def test_raising_subscriber_does_not_stop_later_ones():
    state = CircuitBreakerState()
    before: list[BreakerChanged] = []
    after: list[BreakerChanged] = []

    def broken(change: BreakerChanged) -> None:
        raise RuntimeError("subscriber bug")

    state.subscribe(before.append)
    state.subscribe(broken)
    state.subscribe(after.append)
    assert state.trigger("dump") is True
    assert state.status is T
    assert [c.status for c in before] == [T]
    assert [c.status for c in after] == [T]
    assert state.clear() is True
    assert [c.status for c in after] == [T, S]
    assert [c.epoch for c in after] == [1, 2]


def test_unsubscribe_stops_notifications():
    state = CircuitBreakerState()
    got: list[BreakerChanged] = []
    state.subscribe(got.append)
    state.trigger("x")
    state.unsubscribe(got.append)
    state.clear()
    assert [c.status for c in got] == [T]


def test_singleton_and_reset():
    original = configure_circuit_breaker(None)
    try:
        a = get_circuit_breaker_state()
        assert get_circuit_breaker_state() is a
        assert isinstance(a, CircuitBreakerState)
        previous = configure_circuit_breaker(None)
        assert previous is a
        b = get_circuit_breaker_state()
        assert b is not a
        assert get_circuit_breaker_state() is b
        assert b.status is S and b.epoch == 0
        mine = CircuitBreakerState()
        assert configure_circuit_breaker(mine) is b
        assert get_circuit_breaker_state() is mine
    finally:
        configure_circuit_breaker(original)


def test_memory_backend_refuses_stale_epoch():
    backend = MemoryBackend()
    fresh = backend.load()
    assert fresh.status is S and fresh.epoch == 0
    first = BreakerRecord(status=T, epoch=1, reason="first")
    assert backend.compare_and_set(0, first) is True
    assert backend.load() == first
    stale = BreakerRecord(status=W, epoch=1, reason="stale writer")
    assert backend.compare_and_set(0, stale) is False
    assert backend.load() == first
    first.status = S  # the backend keeps its own copy
    assert backend.load().status is T
    loaded = backend.load()
    loaded.status = R  # and hands out copies
    assert backend.load().status is T
    assert backend.compare_and_set(1, BreakerRecord(status=R, epoch=2)) is True
    assert backend.load().epoch == 2


def test_state_adopts_newer_record_when_backend_moved():
    backend = MemoryBackend()
    mine = CircuitBreakerState(backend)
    other = CircuitBreakerState(backend)  # another process sharing the store
    mine_seen: list[BreakerChanged] = []
    mine.subscribe(mine_seen.append)

    assert other.trigger("other process saw a dump", actor=Actor.RULE, time_ms=5_000) is True
    assert mine.status is S  # local copy is stale until the next transition
    with pytest.raises(IllegalTransition):
        mine.set_warning("late warning", time_ms=6_000)
    assert mine.status is T and mine.epoch == 1
    assert mine.snapshot() == backend.load()
    assert mine.get_trigger_info()["triggered_at_ms"] == 5_000
    # the refused move changed nothing, but taking the other's TRIGGERED is announced (a gate halts on it)
    assert [(c.previous, c.status, c.epoch, c.details.get("adopted_from")) for c in mine_seen] == \
        [(S, T, 1, "backend")]
    mine_seen.clear()

    # having adopted the record, the next move succeeds from it
    assert mine.start_recovery(time_ms=7_000) is True
    assert mine.epoch == 2 and backend.load().status is R
    assert [(c.previous, c.status, c.epoch) for c in mine_seen] == [(T, R, 2)]

    # now the other side is stale, and fails closed the same way
    with pytest.raises(IllegalTransition):
        other.clear(reason="stale operator", actor=Actor.OPERATOR, time_ms=8_000)
    assert other.status is R and other.epoch == 2
    assert backend.load().status is R


def test_downtime_counts_a_trigger_at_event_time_zero():
    """Event times are epoch ms and a replay/sim may start at 0 (SimFeed accepts start_ms=0).
    A trigger at time 0 cleared at 5,000 ms was down for 5 s; the code tests the trigger time
    for truthiness (`and current.triggered_at_ms`) and so adds nothing."""
    state = CircuitBreakerState()
    assert state.trigger("dump at t=0", time_ms=0) is True
    assert state.get_trigger_info()["triggered_at_ms"] == 0
    assert state.clear(time_ms=5_000) is True
    assert state.get_stats()["total_downtime_seconds"] == 5.0


def test_adopt_refuses_what_would_move_epochs_backwards_or_skip_the_rules():
    state = CircuitBreakerState()
    seen: list[BreakerChanged] = []
    halted: list[int] = []
    state.subscribe(seen.append)
    state.add_halt_step(lambda change: halted.append(change.epoch))
    assert state.trigger("crash", time_ms=1_000)
    with pytest.raises(IllegalTransition, match="epochs only move forward"):
        state.adopt(BreakerRecord(status=S, epoch=0))  # SAFE epoch 0 over TRIGGERED epoch 1
    with pytest.raises(IllegalTransition, match="epoch -5"):
        state.adopt(BreakerRecord(status=S, epoch=-5))
    with pytest.raises(IllegalTransition, match="agent may not move the breaker TRIGGERED -> SAFE"):
        state.adopt(BreakerRecord(status=S, epoch=2, actor=Actor.AGENT))  # one step: must be legal
    assert state.status is T and state.epoch == 1 and len(seen) == 1


def test_adopt_announces_the_record_and_a_triggered_one_halts_first():
    state = CircuitBreakerState()
    order: list[str] = []
    state.subscribe(lambda change: order.append(f"subscriber {change.status.value}"))
    state.add_halt_step(lambda change: order.append(f"halt {change.epoch}"))
    change = state.adopt(BreakerRecord(status=T, epoch=4, reason="journal said so", actor=Actor.OPERATOR))
    assert change is not None and change.previous is S and change.details["adopted_from"] == "journal"
    assert order == ["halt 4", "subscriber TRIGGERED"]
    assert state.status is T and state.epoch == 4
    # further ahead than one step: the steps between were made elsewhere, the outcome is taken
    assert state.adopt(BreakerRecord(status=S, epoch=9, reason="cleared elsewhere")) is not None
    assert state.status is S and state.epoch == 9
