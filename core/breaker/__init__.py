"""The circuit breaker: a small state machine behind one interface with two backends."""

from core.breaker.machine import LEGAL_TRANSITIONS, BreakerRecord, IllegalTransition
from core.breaker.state import (
    CircuitBreakerState,
    CircuitBreakerStatus,
    configure_circuit_breaker,
    get_circuit_breaker_state,
)

__all__ = [
    "BreakerRecord",
    "CircuitBreakerState",
    "CircuitBreakerStatus",
    "IllegalTransition",
    "LEGAL_TRANSITIONS",
    "configure_circuit_breaker",
    "get_circuit_breaker_state",
]
