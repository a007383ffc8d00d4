"""How the rules analyst turns evidence into a confidence (pure functions, no I/O).

Every confidence is a documented function of numbers the tools returned, bounded, and
monotone where that makes sense. A number that is unavailable scores 0 ("no evidence"):
it lowers the confidence and is named in the agent's reasoning, it is never read as calm.

Scanner (spike_detection_task): conf = 0.05 + 0.90 * sum(weight * score)
  zscore         0.30  ramp(move in sigmas over the spike window, 1 -> 4)
  volume         0.30  ramp(ln(volume multiple), ln 1 -> ln 5)      more volume backing -> more
  held           0.20  ramp(share of the move still held, 0.5 -> 1)  a move given back -> less
  isolation      0.10  1 - share of other symbols moving the same way
  decorrelation  0.10  1 - max(0, correlation of 1m returns with BTC)
  DISCARD when the move is not backed (z < 1 and volume < x1), mostly given back (held < 0.5),
  or the confidence is below SCANNER_FLOOR.

Executor (execution_task): conf = min(detector's, scanner * stability * context * thesis)
  stability  STABLE 1, CAUTION 0.8, no answer 0.7
  context    ISOLATED 1, NEWS_DRIVEN 1 (pump) / 0.6 (dump), MARKET_WIDE 0.7, no answer 0.7;
             times (1 - 0.5 * manipulation score)
  thesis     pump (momentum): ramp(last minute's z with the move, 0.5 -> 2)
                              * (1 - 0.6 * ramp(move in sigmas, 4 -> 10))  chasing an extended move -> less
             dump (fade): 1
"""

from __future__ import annotations

import math
from typing import Any

SCANNER_WEIGHTS: dict[str, float] = {"zscore": 0.30, "volume": 0.30, "held": 0.20, "isolation": 0.10,
                                     "decorrelation": 0.10}
SCANNER_FLOOR = 0.35  # below this the spike is too weakly evidenced to act on
MIN_BACKING_Z = 1.0  # a move under one sigma...
MIN_BACKING_VOLUME = 1.0  # ...on less than baseline volume is noise
MIN_HELD = 0.5  # more than half of the move given back: it has reversed
MOMENTUM_MIN_Z = 0.5  # a momentum entry needs the last minute still moving with the pump
TRADE_FLOOR = 0.25  # the executor skips a trade whose combined confidence is below a quarter

STABILITY_FACTOR = {"STABLE": 1.0, "CAUTION": 0.8}
CONTEXT_FACTOR = {"ISOLATED": 1.0, "MARKET_WIDE": 0.7}
MISSING_FACTOR = 0.7  # an agent that gave no usable answer: unknown, not support


def number(x: Any) -> float | None:
    """x as a finite float, or None (bools, strings, NaN and infinities are not evidence)."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def ramp(x: float | None, lo: float, hi: float) -> float | None:
    """0 at or below lo, 1 at or above hi, linear between; None stays None."""
    if x is None:
        return None
    if hi <= lo:
        return 1.0 if x >= hi else 0.0
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def move_sigmas(move_pct: float | None, sigma_1m_pct: float | None, minutes: float) -> float | None:
    """The move over `minutes` in units of the 1-minute sigma scaled to that horizon."""
    move, sigma = number(move_pct), number(sigma_1m_pct)
    if move is None or sigma is None or sigma <= 0 or minutes <= 0:
        return None
    return move / (sigma * math.sqrt(minutes))


FLAT_HISTORY_SIGMAS = 10.0  # what a move out of a perfectly flat, measured history scores as
FLAT_MIN_SAMPLES = 5  # ...measured: at least this many one-minute returns (0 samples is no history, unknown)


def flat_history(sigma_1m_pct: Any, samples: Any) -> bool:
    sigma, n = number(sigma_1m_pct), number(samples)
    return sigma == 0.0 and n is not None and n >= FLAT_MIN_SAMPLES


def scanner_scores(z: float | None, volume_multiple: float | None, held: float | None,
                   breadth_fraction: float | None, correlation: float | None) -> dict[str, float | None]:
    vm = number(volume_multiple)
    b = number(breadth_fraction)
    c = number(correlation)
    return {
        "zscore": ramp(number(z), 1.0, 4.0),
        "volume": ramp(math.log(vm), 0.0, math.log(5.0)) if vm is not None and vm > 0 else (0.0 if vm == 0 else None),
        "held": ramp(number(held), MIN_HELD, 1.0),
        "isolation": None if b is None else 1.0 - min(1.0, max(0.0, b)),
        "decorrelation": None if c is None else 1.0 - min(1.0, max(0.0, c)),
    }


def weighted_confidence(scores: dict[str, float | None], weights: dict[str, float], lo: float = 0.05,
                        hi: float = 0.95) -> float:
    """lo + (hi - lo) * the weighted share of the evidence that is present and supportive."""
    total = sum(weights.values())
    got = sum(w * (scores.get(k) or 0.0) for k, w in weights.items())
    return round(lo + (hi - lo) * got / total, 4)


def unknown_names(scores: dict[str, float | None]) -> list[str]:
    return [k for k, v in scores.items() if v is None]


def momentum_factor(momentum_z: float | None, sigmas: float | None) -> float:
    """How much a momentum entry on a pump is still backed: the last minute must still move with it,
    and the further the move already ran (in sigmas), the less is left to chase."""
    backing = ramp(number(momentum_z), MOMENTUM_MIN_Z, 2.0) or 0.0
    extension = ramp(number(sigmas), 4.0, 10.0) or 0.0
    return backing * (1.0 - 0.6 * extension)


def context_factor(decision: str | None, direction: str, manipulation_score: float | None) -> float:
    if decision is None:
        return MISSING_FACTOR
    if decision == "NEWS_DRIVEN":
        base = 1.0 if direction == "pump" else 0.6  # a move with a cause is momentum, not a flush to fade
    else:
        base = CONTEXT_FACTOR.get(decision, MISSING_FACTOR)
    m = number(manipulation_score)
    return base * (1.0 - 0.5 * min(1.0, max(0.0, m if m is not None else 0.0)))


def stability_factor(decision: str | None) -> float:
    return STABILITY_FACTOR.get(decision or "", MISSING_FACTOR)


__all__ = ["SCANNER_WEIGHTS", "SCANNER_FLOOR", "MIN_BACKING_Z", "MIN_BACKING_VOLUME", "MIN_HELD", "MOMENTUM_MIN_Z",
           "TRADE_FLOOR", "FLAT_HISTORY_SIGMAS", "flat_history", "number", "ramp", "move_sigmas", "scanner_scores", "weighted_confidence", "unknown_names",
           "momentum_factor", "context_factor", "stability_factor"]
