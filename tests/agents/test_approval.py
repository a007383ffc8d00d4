"""Approving a crew proposal: refused when its content changed or when it expired."""

from __future__ import annotations

from core.desk.proposal import ProposalStatus, TradeProposal
from core.trading.orders import OrderStatus
from tests.agents.conftest import dump_spike


async def _crew_proposal(session, desk) -> TradeProposal:
    decision = await desk.handle_spike(dump_spike(session))
    assert isinstance(decision, TradeProposal), decision
    session.approvals.add(decision)
    return decision


async def test_a_changed_hash_is_refused(session, desk):
    p = await _crew_proposal(session, desk)
    result = await session.approve(p.proposal_id, "0" * 64)
    assert not result.ok and "content hash differs" in result.message
    # content altered behind the operator's back (same id, same stored hash): refused too
    tampered = p.model_copy(update={"quantity": p.quantity * 50})
    assert not tampered.intact()
    session.approvals.proposals[p.proposal_id] = tampered
    result = await session.approve(p.proposal_id, p.content_hash)
    assert not result.ok and "content hash differs" in result.message
    assert session.approvals.status[p.proposal_id] is ProposalStatus.PENDING
    assert session.gate.sent == 0


async def test_an_expired_proposal_is_refused(session, desk, clock):
    p = await _crew_proposal(session, desk)
    clock.t = p.expires_ms + 1
    result = await session.approve(p.proposal_id, p.content_hash)
    assert not result.ok and result.message == "refused: the proposal expired"
    assert session.approvals.status[p.proposal_id] is ProposalStatus.EXPIRED
    assert session.gate.sent == 0


async def test_the_intact_proposal_goes_through_the_gate(session, desk):
    p = await _crew_proposal(session, desk)
    result = await session.approve(p.proposal_id, p.content_hash)
    assert result.ok, result.message
    assert session.approvals.status[p.proposal_id] is ProposalStatus.EXECUTED
    assert result.order is not None and result.order.status in (OrderStatus.NEW, OrderStatus.FILLED)
    assert result.order.quantity == p.quantity and result.order.price == p.entry_price


async def test_the_approval_dialog_shows_who_agreed_and_who_dissented(session, desk):
    import html
    import re

    from textual.app import App

    from console.screens.approve import ApproveScreen

    p = await _crew_proposal(session, desk)
    preview = session.approvals.preview(p.proposal_id)

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(ApproveScreen(preview))

    app = Host()
    async with app.run_test(size=(140, 60)) as pilot:
        await pilot.pause()
        text = html.unescape(re.sub(r"<[^>]+>", "", app.export_screenshot())).replace("\xa0", " ")
    rows = [ln.strip("█ ▊▎▌") for ln in text.splitlines()]
    assert any(re.fullmatch(rf"dissent\s+{p.dissent_score:.2f} \(.+\)", r) for r in rows), rows
    assert any(r.startswith("bull") and p.bull_case[:40] in r for r in rows)
    assert any(r.startswith("bear") and p.bear_case[:40] in r for r in rows)
    # one line per agent: each starts a row of its own, its continuation is not wrapped onto the next
    agents = [r for r in rows if re.match(r"(agreed|dissented)?\s*(Market|Context|Risk|Strategy) \w+: [A-Z_]+ ", r)]
    assert len(agents) == len(p.agreed) + len(p.dissented) == 5, agents
    last = max(i for i, r in enumerate(rows) if r in agents)
    first = min(i for i, r in enumerate(rows) if r in agents)
    assert rows[first:last + 1] == agents, "no agent's line wraps onto a second row"
    assert any(r.startswith("dissented") and "Market Guardian: CAUTION 0.35" in r for r in rows)
    assert any(r.startswith("agreed") and "Market Scanner: CONFIRM" in r for r in rows)
