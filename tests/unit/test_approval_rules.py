"""The approval queue's rules, each with a test that fails when the rule is removed or
weakened: drift, the epoch fence on the send, the expiry boundary, only pending proposals
are approvable, a trip voids what was proposed before it. And the session's: auto-approval
only on paper, spikes blocked by the breaker never reach the desk."""

from __future__ import annotations

import asyncio

import pytest

from core.config import load_config
from core.desk.proposal import ProposalStatus, TradeProposal
from core.desk.rules_proposer import Skip
from core.events import SpikeDetected, SpikeType
from core.session import Session
from core.trading.orders import OrderStatus
from core.trading.paper import PaperExchange
from tests.helpers import MIN, T0, ListFeed, path

WALL0 = 1_767_225_600_000


class Clock:
    def __init__(self) -> None:
        self.t = WALL0

    def __call__(self) -> int:
        return self.t


class VenueStandIn(PaperExchange):
    """A paper book that says it is another venue (the session's badge reads the exchange)."""

    def __init__(self, name: str, *args) -> None:
        super().__init__(*args)
        self.name = name


def make_session(clock: Clock, venue: str = "paper", **execution) -> Session:
    settings = load_config(env={}, dotenv_paths=[]).settings
    if execution:  # model_copy does not validate: a test may build what the config would refuse
        settings = settings.model_copy(update={"execution": settings.execution.model_copy(update=execution)})
    factory = None if venue == "paper" else (lambda st, market, clock_: VenueStandIn(venue, st.execution.paper,
                                                                                    market, clock_))
    s = Session(settings, ListFeed(), wall_clock=clock, exchange_factory=factory)
    s.engine.process(path("ETHUSDT", [(0, 3_000.0), (10, 3_000.0)]))
    return s


def proposal(s: Session, clock: Clock, qty: float = 0.1, ttl_s: float = 120) -> TradeProposal:
    return TradeProposal(
        created_ms=clock.t, expires_ms=clock.t + int(ttl_s * 1000), symbol="ETHUSDT", side="BUY", quantity=qty,
        entry_type="limit", entry_price=2_995.0, stop_loss=2_900.0, take_profit=3_100.0, reference_price=3_000.0,
        breaker_epoch=s.breaker.epoch, breaker_status=s.breaker.status.value, confidence=0.7, risk_usd=9.5,
        notional_usd=299.5, reward_risk=1.1, rationale="test", source="rules").sealed()


def approve(s: Session, p: TradeProposal):
    return asyncio.run(s.approve(p.proposal_id, p.content_hash))


def test_an_intact_pending_proposal_is_sent():
    clock = Clock()
    s = make_session(clock)
    p = proposal(s, clock)
    s.approvals.add(p)
    result = approve(s, p)
    assert result.ok and result.order.status is OrderStatus.NEW
    assert s.approvals.status[p.proposal_id] is ProposalStatus.EXECUTED


def test_a_price_that_drifted_past_the_limit_is_refused():
    clock = Clock()
    s = make_session(clock)
    p = proposal(s, clock)
    s.approvals.add(p)
    s.engine.process(path("ETHUSDT", [(10.1, 3_000.0 * 1.015), (10.2, 3_000.0 * 1.015)]))  # +1.5%, limit 1%
    assert s.approvals.status[p.proposal_id] is ProposalStatus.EXPIRED  # by itself, as the price moved
    assert s.approvals.notes[p.proposal_id].startswith("moved +1.50% (limit 1%)")
    result = approve(s, p)
    assert not result.ok and "moved +1.50%" in result.message
    assert s.gate.sent == 0


def test_the_preview_refuses_for_the_reason_approval_would():
    clock = Clock()
    s = make_session(clock)
    p = proposal(s, clock)
    s.approvals.add(p)
    assert s.approvals.preview(p.proposal_id).refusal is None
    s.engine.process(path("ETHUSDT", [(10.1, 3_000.0 * 1.008)]))  # +0.8%: inside the drift limit
    assert s.approvals.preview(p.proposal_id).refusal is None
    s.force_trigger("halt")
    pv = s.approvals.preview(p.proposal_id)
    assert pv.refusal is not None and pv.refusal == approve(s, p).message


def test_a_proposal_whose_price_passed_its_stop_expires_by_itself():
    clock = Clock()
    s = make_session(clock)
    p = proposal(s, clock)
    s.approvals.add(p)
    s.approvals.on_price(p.symbol, p.stop_loss * 0.999)
    assert s.approvals.status[p.proposal_id] is ProposalStatus.EXPIRED
    assert s.approvals.notes[p.proposal_id].startswith(f"passed its stop: the price {p.stop_loss * 0.999:g}")


def test_a_proposal_whose_price_passed_its_target_expires_by_itself():
    clock = Clock()
    s = make_session(clock)
    p = proposal(s, clock)
    s.approvals.add(p)
    s.approvals.on_price(p.symbol, p.take_profit * 1.001)
    assert s.approvals.status[p.proposal_id] is ProposalStatus.EXPIRED
    assert "passed its target" in s.approvals.notes[p.proposal_id]


def test_a_breaker_move_between_the_preview_and_the_send_is_fenced():
    clock = Clock()
    s = make_session(clock)
    p = proposal(s, clock)
    s.approvals.add(p)

    def move_on_approval(prop, status, note):  # runs between the preview and the send
        if status is ProposalStatus.APPROVED:
            s.breaker.set_warning("moved under the operator's hand", time_ms=T0 + 11 * MIN)

    s.approvals.on_status.append(move_on_approval)
    result = approve(s, p)
    assert not result.ok and "stale breaker epoch" in result.message
    assert s.gate.sent == 0


def test_a_proposal_is_expired_at_exactly_its_expiry():
    clock = Clock()
    s = make_session(clock)
    p = proposal(s, clock)
    s.approvals.add(p)
    clock.t = p.expires_ms
    result = approve(s, p)
    assert not result.ok and result.message == "refused: the proposal expired"
    assert s.approvals.status[p.proposal_id] is ProposalStatus.EXPIRED


@pytest.mark.parametrize("final", ["reject", "skip", "expire"])
def test_only_a_pending_proposal_can_be_approved(final):
    clock = Clock()
    s = make_session(clock)
    p = proposal(s, clock)
    s.approvals.add(p)
    if final == "reject":
        assert s.approvals.reject(p.proposal_id, "no")
    elif final == "skip":
        s.approvals.skip(p, "stale")
    else:
        clock.t = p.expires_ms + 1
        s.approvals.expire_due()
        clock.t = WALL0  # even back inside its time to live
    result = approve(s, p)
    status = s.approvals.status[p.proposal_id].value
    assert not result.ok and result.message.startswith(f"refused: the proposal is {status} (")
    assert s.gate.sent == 0


def test_a_trip_voids_pending_proposals():
    clock = Clock()
    s = make_session(clock)
    p = proposal(s, clock)
    s.approvals.add(p)
    s.force_trigger("crash")
    assert s.approvals.status[p.proposal_id] is ProposalStatus.SKIPPED
    assert "TRIGGERED" in s.approvals.notes[p.proposal_id]
    assert not approve(s, p).ok


def test_auto_approval_is_only_ever_on_paper():
    clock = Clock()
    assert make_session(clock, auto_approve_paper=True).auto_approve
    assert not make_session(clock, "testnet", auto_approve_paper=True).auto_approve
    assert not make_session(clock, "live", auto_approve_paper=True).auto_approve
    assert not make_session(clock).auto_approve


def test_the_badge_is_the_exchange_actually_wired_not_the_config():
    clock = Clock()
    assert make_session(clock, mode="live").mode == "PAPER"
    assert make_session(clock, "testnet").mode == "TESTNET"


def spike(symbol: str = "ETHUSDT") -> SpikeDetected:
    return SpikeDetected(symbol, SpikeType.SPOT_PRICE_SPIKE, "dump", 4.0, 1, 3.0, 3_000.0, 2_880.0, 0.8,
                         T0 + 10 * MIN, 0.1)


def test_a_spike_blocked_by_the_breaker_never_reaches_the_desk():
    clock = Clock()
    s = make_session(clock)
    asked = []
    s.decision_maker.decide = lambda sp, row: asked.append(sp) or Skip("noted")
    s.engine._on_spike(spike())
    assert len(asked) == 1
    s.force_trigger("crash")
    s.engine._on_spike(spike())
    assert len(asked) == 1, "a spike blocked by the breaker was sent to the desk"


def test_a_proposal_sized_at_the_cap_still_fits_it_after_a_move_inside_the_drift_limit():
    """Sized to exactly the 1,000 USD cap, any uptick made the gate refuse it at approval."""
    from core.desk.sizing import size_long
    from core.trading.orders import Order, OrderType, Side

    clock = Clock()
    s = make_session(clock)
    risk = s.settings.risk_management
    w = s.engine.market.symbols["ETHUSDT"]
    sizing = size_long(risk, w, w.last_price, 1_000_000.0)  # rich: only the notional cap binds
    assert sizing.capped_by == "max_order_notional_usd"
    assert sizing.notional_usd <= risk.max_order_notional_usd * (1 - risk.sizing_headroom_percent / 100) + 1e-6
    drift = s.settings.execution.max_approval_drift_percent
    moved = w.last_price * (1 + drift * 0.99 / 100)
    s.engine.process(path("ETHUSDT", [(10.1, moved)]))
    check = s.gate.check(Order(symbol="ETHUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=sizing.quantity))
    assert check.allowed, check.reason
