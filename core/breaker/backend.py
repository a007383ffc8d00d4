"""The storage interface every breaker backend implements, and the in-memory backend."""

from __future__ import annotations

import copy
import threading
from typing import Protocol

from core.breaker.machine import BreakerRecord


class BackendUnavailable(Exception):
    """The backend did not answer (refused, reset, timed out): its state is unknown here."""


class StateMissing(Exception):
    """The backend answers but holds no breaker state (a shared store restarted empty)."""


class BreakerBackend(Protocol):
    name: str

    def load(self) -> BreakerRecord:
        """The stored record (the memory backend: a fresh SAFE record when nothing is stored).
        May raise BackendUnavailable or StateMissing."""

    def compare_and_set(self, expected_epoch: int, record: BreakerRecord) -> bool:
        """Store `record` only if the stored epoch is still `expected_epoch` (fencing). A
        shared backend lets an escalation to TRIGGERED win regardless, and sets `record.epoch`
        to the epoch it stored. May raise BackendUnavailable."""


class MemoryBackend:
    name = "memory"

    def __init__(self, record: BreakerRecord | None = None) -> None:
        self._record = record or BreakerRecord()
        self._lock = threading.Lock()

    def load(self) -> BreakerRecord:
        with self._lock:
            return copy.deepcopy(self._record)

    def compare_and_set(self, expected_epoch: int, record: BreakerRecord) -> bool:
        with self._lock:
            if self._record.epoch != expected_epoch:
                return False
            self._record = copy.deepcopy(record)
            return True
