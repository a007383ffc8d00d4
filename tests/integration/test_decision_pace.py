"""A paced sim or replay slows to `testing.decision_speed` while a proposal waits for the
operator, and goes back to its own speed when none does; a live feed and a max-speed run are
never touched."""

from __future__ import annotations

from core.config import load_config
from core.market.feed import MAX_SPEED
from core.market.sim import SimFeed
from core.session import Session
from tests.console.conftest import dump_spike


def session_over(speed: float, **testing) -> Session:
    overrides = [f"testing.{k}={v}" for k, v in testing.items()]
    settings = load_config(env={}, dotenv_paths=[], overrides=overrides).settings
    return Session(settings, SimFeed(scenario="calm", seed=1, speed=speed), wall_clock=lambda: 1_767_225_600_000)


def test_a_waiting_proposal_slows_the_sim_and_its_end_restores_the_speed():
    s = session_over(30.0)
    dump_spike(s)
    [proposal] = s.approvals.pending()
    assert s.feed.speed == 2.0 and s.slowed_for_decision
    s.reject(proposal.proposal_id, "not now")
    assert s.feed.speed == 30.0 and not s.slowed_for_decision


def test_a_sim_slower_than_the_decision_speed_is_not_sped_up():
    s = session_over(1.0)
    dump_spike(s)
    assert s.approvals.pending() and s.feed.speed == 1.0


def test_max_speed_and_a_zero_decision_speed_leave_the_pace_alone():
    fast = session_over(MAX_SPEED)
    dump_spike(fast)
    assert fast.approvals.pending() and fast.feed.speed == MAX_SPEED
    off = session_over(30.0, decision_speed=0)
    dump_spike(off)
    assert off.approvals.pending() and off.feed.speed == 30.0
