"""What bounds the crew's model calls: prices, spending budgets, and the provider's health.

- Prices: a model is priced from the table (PRICES), from the
  config (`crew.budget.price_*_per_million_usd`), or free when it runs locally; a remote
  model with no price is refused when the desk starts (its spending could not be bounded).
- Budgets, in tokens and USD, per run (`crew.token_budget_per_proposal`,
  `crew.cost_budget_usd_per_proposal`), per session and per UTC day (`crew.budget`). A call
  is refused before it is made when its prompt plus `max_tokens` of answer could pass one
  of them (`SpendLedger.refusal`), never after the money is spent.
- Provider health: `crew.limits.pause_after_failures` runs in a row failing on the
  provider (429, 5xx, time-outs, refused connections) pause the crew for a back-off that
  doubles up to `pause_max_seconds`; the rules proposer answers meanwhile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# USD per million tokens (input, output); a remote model not here must be priced in the config
PRICES: dict[str, tuple[float, float]] = {
    "rules": (0.0, 0.0), "openai/gpt-4o-mini": (0.15, 0.60), "openai/gpt-4o": (2.50, 10.0),
    "openai/gpt-4.1-mini": (0.40, 1.60), "openai/gpt-4.1": (2.0, 8.0), "openai/gpt-4.1-nano": (0.10, 0.40),
    "anthropic/claude-3-5-haiku-latest": (0.80, 4.0), "anthropic/claude-3-5-sonnet-latest": (3.0, 15.0),
    "anthropic/claude-sonnet-4-0": (3.0, 15.0), "anthropic/claude-haiku-4-5": (1.0, 5.0),
}
LOCAL_PROVIDERS = ("rules", "ollama", "ollama_chat", "openai_compatible", "local", "vllm", "lmstudio")

# exception class names (anywhere in the cause chain) that say the provider failed, not the crew
_PROVIDER_FAILURES = ("RateLimit", "APIStatus", "APITimeout", "APIConnection", "InternalServer", "ServiceUnavailable",
                      "Timeout", "ConnectError", "ReadError", "RemoteProtocol", "APIError", "Overloaded")


class PriceUnknown(ValueError):
    """A remote model with no price: one line naming the keys to set."""


def price_for(settings: Any, label: str) -> tuple[float, float]:
    """USD per million tokens (input, output) of `label` ("rules", "openai/gpt-4o")."""
    budget = settings.crew.budget
    if budget.price_in_per_million_usd is not None and budget.price_out_per_million_usd is not None:
        return budget.price_in_per_million_usd, budget.price_out_per_million_usd
    if label in PRICES:
        return PRICES[label]
    if label.split("/", 1)[0].lower() in LOCAL_PROVIDERS:
        return 0.0, 0.0
    raise PriceUnknown(f"no price for model {label}: set crew.budget.price_in_per_million_usd and "
                       f"crew.budget.price_out_per_million_usd")


def utc_day(wall_ms: int) -> str:
    return datetime.fromtimestamp(wall_ms / 1000, timezone.utc).strftime("%Y-%m-%d")


@dataclass
class SpendLedger:
    """Tokens and USD spent by this session and today (wall-clock UTC day: it is real money)."""

    session_tokens_max: int
    session_usd_max: float
    day_tokens_max: int
    day_usd_max: float
    session_tokens: int = 0
    session_usd: float = 0.0
    day: str = ""
    day_tokens: int = 0
    day_usd: float = 0.0

    @classmethod
    def from_settings(cls, settings: Any) -> "SpendLedger":
        b = settings.crew.budget
        return cls(b.session_tokens, b.session_usd, b.day_tokens, b.day_usd)

    def _roll(self, wall_ms: int) -> None:
        today = utc_day(wall_ms)
        if today != self.day:
            self.day, self.day_tokens, self.day_usd = today, 0, 0.0

    def refusal(self, tokens: int, usd: float, wall_ms: int) -> str | None:
        """Why spending `tokens` and `usd` more now would pass a session or day budget, or None."""
        self._roll(wall_ms)
        if self.session_tokens + tokens > self.session_tokens_max:
            return f"session token budget: {self.session_tokens:,} spent of {self.session_tokens_max:,}"
        if self.session_usd + usd > self.session_usd_max:
            return f"session cost budget: {self.session_usd:.4f} of {self.session_usd_max:g} USD spent"
        if self.day_tokens + tokens > self.day_tokens_max:
            return f"daily token budget: {self.day_tokens:,} spent of {self.day_tokens_max:,} today"
        if self.day_usd + usd > self.day_usd_max:
            return f"daily cost budget: {self.day_usd:.4f} of {self.day_usd_max:g} USD spent today"
        return None

    def spend(self, tokens: int, usd: float, wall_ms: int) -> None:
        self._roll(wall_ms)
        self.session_tokens += tokens
        self.session_usd += usd
        self.day_tokens += tokens
        self.day_usd += usd


def is_provider_failure(exc: BaseException | None) -> bool:
    """Whether an exception (or one in its cause chain) is the model provider failing."""
    seen = 0
    while exc is not None and seen < 8:
        name = type(exc).__name__
        if name != "LoopTimeout" and any(part in name for part in _PROVIDER_FAILURES):  # LoopTimeout: our tools
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


@dataclass
class ProviderHealth:
    """Consecutive provider failures, and the pause they cause."""

    pause_after: int
    pause_seconds: float
    pause_max_seconds: float
    clock: Any = field(default=time.monotonic)
    failures: int = 0
    pauses: int = 0
    paused_until: float = 0.0
    last_error: str = ""

    def failed(self, why: str) -> float | None:
        """Count a failed run; the pause's length when this failure starts one."""
        self.failures += 1
        self.last_error = why
        if self.failures < self.pause_after:
            return None
        seconds = min(self.pause_max_seconds, self.pause_seconds * 2 ** self.pauses)
        self.pauses += 1
        self.failures = 0
        self.paused_until = self.clock() + seconds
        return seconds

    def answered(self) -> None:
        """A run the provider answered: the count and the back-off start again."""
        self.failures = 0
        self.pauses = 0

    def paused_for(self) -> float:
        """Seconds left in the pause (0: not paused)."""
        return max(0.0, self.paused_until - self.clock())


__all__ = ["LOCAL_PROVIDERS", "PRICES", "PriceUnknown", "ProviderHealth", "SpendLedger", "is_provider_failure", "price_for", "utc_day"]
