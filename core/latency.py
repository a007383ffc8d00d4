"""Latency figures without unbounded memory: exact max, percentiles from a reservoir."""

from __future__ import annotations

import random

from librt.vecs import append, vec
from mypy_extensions import i64


class LatencyRecorder:
    def __init__(self, capacity: int = 1_000_000, seed: int = 1) -> None:
        self.capacity = capacity
        self.samples = vec[i64]()  # packed, 8 bytes a sample; the compiled path appends it unboxed
        self.count = 0
        self.max_ns = 0
        self._rng = random.Random(seed)

    def record(self, ns: int) -> None:
        self.count += 1
        if ns > self.max_ns:
            self.max_ns = ns
        if len(self.samples) < self.capacity:
            self.samples = append(self.samples, ns)
        else:  # reservoir sampling keeps a uniform sample of every tick seen
            j = self._rng.randrange(self.count)
            if j < self.capacity:
                self.samples[j] = ns

    def percentile_ns(self, q: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        idx = min(len(ordered) - 1, max(0, int(round(q / 100.0 * (len(ordered) - 1)))))
        return float(ordered[idx])

    def summary_us(self) -> dict[str, float]:
        if not self.samples:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        ordered = sorted(self.samples)
        n = len(ordered) - 1
        pick = lambda q: float(ordered[min(n, int(round(q * n)))]) / 1000.0  # noqa: E731
        return {"p50": round(pick(0.50), 3), "p99": round(pick(0.99), 3), "max": round(self.max_ns / 1000.0, 3)}
