"""TradeProposal: the validated schema every proposer (rules or agents) must produce.

The content hash covers every field that defines the trade, and the crew's dissent when it
is present, so an approval can prove it approves exactly what the operator saw. Caps are not trusted from here: the order gate
applies them again whatever a proposal says.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ProposalStatus(str, enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    SKIPPED = "skipped"
    EXECUTED = "executed"
    FAILED = "failed"


_HASHED = ("proposal_id", "symbol", "side", "quantity", "entry_type", "entry_price", "stop_loss", "take_profit",
           "expires_ms", "spike_time_ms", "spike_type", "breaker_epoch", "reference_price", "source")
# Added later (core.agents.dissent): hashed only when set, so a proposal sealed before they existed keeps
# its hash, and a crew proposal's dissent cannot be altered after the operator saw it.
_HASHED_IF_SET = ("bull_case", "bear_case", "agreed", "dissented", "dissent_score")


class TradeProposal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    proposal_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_ms: int
    expires_ms: int
    symbol: str = Field(pattern=r"^[A-Z0-9]{2,30}$")
    side: Literal["BUY", "SELL"]
    quantity: float = Field(gt=0)
    entry_type: Literal["market", "limit", "post_only"]
    entry_price: float | None = Field(default=None, gt=0)
    stop_loss: float = Field(gt=0)
    take_profit: float = Field(gt=0)
    reference_price: float = Field(gt=0)
    breaker_epoch: int = Field(ge=0)
    breaker_status: str
    spike_time_ms: int | None = None
    spike_type: str | None = None
    spike_direction: str | None = None
    spike_event_id: int | None = None
    confidence: float = Field(ge=0, le=1)
    risk_usd: float = Field(ge=0)
    notional_usd: float = Field(ge=0)
    reward_risk: float = Field(ge=0)
    rationale: str = Field(max_length=4000)
    source: str  # "rules", "crew:rules", "crew:openai/gpt-4o-mini", ...
    # the crew's dissent (core.agents.dissent); empty for the rules proposer and for older rows
    bull_case: str = Field(default="", max_length=400)
    bear_case: str = Field(default="", max_length=600)
    agreed: tuple[str, ...] = Field(default=(), max_length=10)
    dissented: tuple[str, ...] = Field(default=(), max_length=10)
    dissent_score: float | None = Field(default=None, ge=0, le=1)
    content_hash: str = ""

    @field_validator("quantity", "entry_price", "stop_loss", "take_profit", "reference_price", "confidence",
                     "risk_usd", "notional_usd", "reward_risk", "dissent_score")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> "TradeProposal":
        if self.entry_type != "market" and self.entry_price is None:
            raise ValueError(f"a {self.entry_type} entry needs entry_price")
        entry = self.entry_price or self.reference_price
        if self.side == "BUY" and not (self.stop_loss < entry < self.take_profit):
            raise ValueError(f"a BUY needs stop_loss < entry < take_profit (got {self.stop_loss} / {entry} / "
                             f"{self.take_profit})")
        if self.side == "SELL" and not (self.take_profit < entry < self.stop_loss):
            raise ValueError("a SELL needs take_profit < entry < stop_loss")
        if self.expires_ms <= self.created_ms:
            raise ValueError("expires_ms must be after created_ms")
        return self

    def compute_hash(self) -> str:
        content = {k: getattr(self, k) for k in _HASHED}
        for k in _HASHED_IF_SET:
            value = getattr(self, k)
            if value != type(self).model_fields[k].default:
                content[k] = list(value) if isinstance(value, tuple) else value
        blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def sealed(self) -> "TradeProposal":
        """A copy carrying its content hash."""
        return self.model_copy(update={"content_hash": self.compute_hash()})

    def intact(self) -> bool:
        return bool(self.content_hash) and self.content_hash == self.compute_hash()

    def ttl_seconds(self, now_ms: int) -> float:
        return max(0.0, (self.expires_ms - now_ms) / 1000.0)

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
