"""The agent desk: the seed's five CrewAI agents analyse each spike and propose a trade.

Importing this package (or any module in it) does not import crewai: the console must start
in under a second. `AgentDesk.start()` loads crewai in a worker thread, offline
(core.agents.offline), and builds the model (`llm: rules` by default: a deterministic
analyst that drives the same agents through CrewAI, core.agents.llm).

Modules
- offline.py   offline environment, storage folder, lazy `load_crewai()`
- context.py   DeskContext (the engine objects the tools read) and RunState (one crew run)
- tools/       the seed's circuit-breaker, Binance, analysis and risk tools (JSON results)
- analyst.py   the deterministic analyst behind `llm: rules` (pure Python)
- llm.py       RulesLLM (a crewai.BaseLLM with native tool calls) and make_llm()
- crew.py      agents, the guardian and spike trading crews, validation into TradeProposal
- desk.py      AgentDesk: dedupe, rate limit, concurrency, guards, guardian scheduling
- streaming.py RunStream: CrewAI's events, per run and in order, as ReasoningLine on the bus
- bookkeeping.py Bookkeeper: agent_decisions and agent_performance rows; model prices
- untrusted.py quoting of untrusted text (news, social) as delimited data

Wiring (a Session):
    desk = AgentDesk(session, session.settings, session.journal, session.bus, storage_dir)
    await desk.start()                      # ~2-6 s in a thread, the loop keeps running
    session.decision_maker = desk.decision_maker()
    # decide(spike, id) returns a Skip at once, or an awaitable of TradeProposal | Skip:
    # Session._decide schedules it and applies the result when it is done
    ...
    await desk.close()                      # before the journal closes
"""

from __future__ import annotations

from typing import Any

__all__ = ["AgentDesk", "DeskContext", "make_llm", "load_crewai"]


def __getattr__(name: str) -> Any:
    if name == "AgentDesk":
        from core.agents.desk import AgentDesk

        return AgentDesk
    if name == "DeskContext":
        from core.agents.context import DeskContext

        return DeskContext
    if name == "make_llm":
        from core.agents.llm import make_llm

        return make_llm
    if name == "load_crewai":
        from core.agents.offline import load_crewai

        return load_crewai
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
