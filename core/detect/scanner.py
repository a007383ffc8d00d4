"""The scanner: spikes from rolling windows, with per-pair thresholds.

- spot_price_spike: the move off a window's low (pump) or high (dump), over 1, 5, 15 and
  60 minutes, beyond the pair's percent threshold, or beyond its z-score threshold while
  also past a floor fraction of the percent threshold (a calm market's tiny sigma makes
  the z-score of noise large). The timeframe reported is the one furthest past its bar.
- volume_explosion: window volume a multiple of the EWMA baseline, with a price move.
- futures_spot_divergence: mark price away from spot (needs a futures feed).
- liquidation_cascade: liquidation notional and count in a window (needs liquidations).
Duplicates are suppressed per symbol, type and direction for `cooldown_minutes`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from core.events import Liquidation, MarkPrice, SpikeDetected, SpikeType
from core.market.state import MarketState
from core.market.windows import MINUTE_MS, SymbolWindows, log_ratio
from core.settings import PairThresholds, SpikeDetectionSettings

SpikeSink = Callable[[SpikeDetected], None]


class _PairRules:
    """Thresholds flattened into tuples indexed like the windows, for the hot path."""

    __slots__ = ("move", "minutes", "z", "z_floor", "floor", "vol_multiple", "vol_k", "vol_min_move")

    def __init__(self, t: PairThresholds, timeframes: tuple[int, ...], vol_tf: int, vol_min_move_fraction: float) -> None:
        by_min = t.move_percent.by_minutes()
        missing = [m for m in timeframes if m not in by_min]
        if missing:
            raise ValueError(f"no move threshold for timeframes {missing}")
        self.minutes = timeframes
        self.move = tuple(by_min[m] / 100.0 for m in timeframes)
        self.z = t.zscore
        self.z_floor = tuple(by_min[m] / 100.0 * t.zscore_min_move_fraction for m in timeframes)
        self.floor = min(self.z_floor)  # below this on every window nothing can fire
        self.vol_multiple = t.volume_multiple
        self.vol_k = timeframes.index(vol_tf)
        self.vol_min_move = by_min[vol_tf] / 100.0 * vol_min_move_fraction


class Scanner:
    def __init__(self, settings: SpikeDetectionSettings, market: MarketState, sink: SpikeSink) -> None:
        self.settings = settings
        self.market = market
        self.sink = sink
        self.enabled = settings.enabled
        self.paused = False
        self.timeframes = market.timeframes_min
        vx = settings.spike_types.volume_explosion
        if vx.timeframe_minutes not in self.timeframes:
            raise ValueError(f"volume_explosion.timeframe_minutes must be one of {self.timeframes}")
        self._rules: dict[str, _PairRules] = {}
        self._cooldown_ms = settings.cooldown_minutes * MINUTE_MS
        self._warmup_ms = settings.warmup_minutes * MINUTE_MS
        self._z_warmup_samples = int(settings.zscore_warmup_minutes)
        self._vol_warmup_samples = int(vx.warmup_minutes)
        self._last_alert: dict[tuple[str, SpikeType, str], int] = {}
        self._liqs: dict[str, deque[tuple[int, float]]] = {}
        self._liq_sums: dict[str, float] = {}
        self.tick_started_ns = 0  # set by the engine at the start of each tick's processing
        self.spikes_emitted = 0

    def rules_for(self, symbol: str) -> _PairRules:
        r = self._rules.get(symbol)
        if r is None:
            vx = self.settings.spike_types.volume_explosion
            r = self._rules[symbol] = _PairRules(
                self.settings.thresholds_for(symbol), self.timeframes, vx.timeframe_minutes, vx.min_move_fraction
            )
        return r

    # ------------------------------------------------------------------ spot ticks (hot path)
    def on_tick(self, w: SymbolWindows, t: int) -> None:
        if not self.enabled or self.paused or t - w.first_time < self._warmup_ms:
            return
        r = self._rules.get(w.symbol) or self.rules_for(w.symbol)
        p = w.last_price
        n = w.n - 1
        lo60 = w.low(n)
        hi60 = w.high(n)
        rise = p / lo60 - 1.0
        drop = 1.0 - p / hi60
        floor = r.floor
        if rise >= floor or drop >= floor:
            if self.settings.spike_types.spot_price_spike:
                self._price_spike(w, r, t, rise >= floor, drop >= floor)
        vk = r.vol_k
        if w.vol_samples >= self._vol_warmup_samples and w.vol_baseline > 0.0:
            vm = w.volume_multiple(vk)
            if vm >= r.vol_multiple and self.settings.spike_types.volume_explosion.enabled:
                self._volume_spike(w, r, t, vm)

    def _price_spike(self, w: SymbolWindows, r: _PairRules, t: int, pumps: bool, dumps: bool) -> None:
        """`pumps`, `dumps`: the 60-minute move that way is past the floor. The windows nest, so
        no shorter window moves further: a direction below it can fire on none."""
        p = w.last_price
        sigma = w.sigma_1m() if w.ret_samples >= self._z_warmup_samples else 0.0
        for direction in ("pump", "dump"):
            if not (pumps if direction == "pump" else dumps):
                continue
            best = None  # (score, k, move, z)
            confirming = 0
            for k in range(w.n):
                if direction == "pump":
                    ref = w.low(k)
                    move = p / ref - 1.0
                else:
                    ref = w.high(k)
                    move = 1.0 - p / ref
                if move <= 0.0:
                    continue
                # the log return from the quotient of prices: a move that rounds to -100% has one too
                z = abs(log_ratio(p, ref)) / (sigma * math.sqrt(r.minutes[k])) if sigma > 0 else 0.0
                hit = move >= r.move[k] or (z >= r.z and move >= r.z_floor[k])
                if hit:
                    confirming += 1
                    score = move / r.move[k]
                    if best is None or score > best[0]:
                        best = (score, k, move, z, ref)
            if best is None:
                continue
            score, k, move, z, ref = best
            vm = w.volume_multiple(k)
            confidence = self._confidence(score, confirming, vm, z, r.z)
            self._emit(w, SpikeType.SPOT_PRICE_SPIKE, direction, move * 100.0, r.minutes[k], vm, ref, p,
                       confidence, t, z, {"timeframes_confirming": confirming, "threshold_percent": r.move[k] * 100})

    def _volume_spike(self, w: SymbolWindows, r: _PairRules, t: int, vm: float) -> None:
        k = r.vol_k
        first = w.first_price(k)
        change = w.last_price / first - 1.0
        if abs(change) < r.vol_min_move:
            return
        direction = "pump" if change > 0 else "dump"
        confidence = min(0.95, 0.5 + 0.1 * math.log2(vm / r.vol_multiple + 1.0) + abs(change) / (4 * r.move[k]))
        self._emit(w, SpikeType.VOLUME_EXPLOSION, direction, abs(change) * 100.0, r.minutes[k], vm, first,
                   w.last_price, confidence, t, 0.0, {"volume_multiple_threshold": r.vol_multiple})

    @staticmethod
    def _confidence(score: float, confirming: int, vm: float, z: float, z_thr: float) -> float:
        c = 1.0 - 0.5 / max(score, 1e-9) if score >= 1.0 else 0.35 + 0.15 * min(z / z_thr, 1.0)
        c += 0.04 * (confirming - 1)
        if vm >= 3.0:
            c += 0.05
        return round(min(max(c, 0.05), 0.99), 4)

    # ------------------------------------------------------------------ futures and liquidations
    def on_mark_price(self, event: MarkPrice) -> None:
        cfg = self.settings.spike_types.futures_spot_divergence
        if not self.enabled or self.paused or not cfg.enabled:
            return
        self.market.marks[event.symbol] = (event.mark_price, event.time_ms)
        w = self.market.symbols.get(event.symbol)
        if w is None or not w.ticks or event.time_ms - w.last_time > cfg.max_age_seconds * 1000:
            return
        div = (event.mark_price / w.last_price - 1.0) * 100.0
        if abs(div) >= cfg.threshold_percent:
            direction = "pump" if div > 0 else "dump"
            conf = min(0.95, 0.5 + 0.1 * abs(div) / cfg.threshold_percent)
            self._emit(w, SpikeType.FUTURES_SPOT_DIVERGENCE, direction, abs(div), 0, 0.0, w.last_price,
                       event.mark_price, conf, event.time_ms, 0.0, {"mark_price": event.mark_price, "spot": w.last_price})

    def on_liquidation(self, event: Liquidation) -> None:
        cfg = self.settings.spike_types.liquidation_cascade
        if not self.enabled or not cfg.enabled:
            return
        q = self._liqs.setdefault(event.symbol, deque())
        notional = event.price * event.qty
        q.append((event.time_ms, notional if event.side == "SELL" else -notional))
        total = self._liq_sums.get(event.symbol, 0.0) + abs(notional)
        cutoff = event.time_ms - cfg.window_minutes * MINUTE_MS
        while q and q[0][0] <= cutoff:
            total -= abs(q.popleft()[1])
        if not total < math.inf:  # the running sum overflowed (and inf - inf is NaN): recount the window
            total = sum(abs(n) for _, n in q)
        self._liq_sums[event.symbol] = total
        if self.paused or total < cfg.min_notional_usd or len(q) < cfg.min_count:
            return
        net = sum(n for _, n in q)
        direction = "dump" if net > 0 else "pump"  # longs liquidated push the price down
        w = self.market.symbols.get(event.symbol)
        price = w.last_price if w is not None and w.ticks else event.price
        conf = min(0.95, 0.5 + 0.1 * math.log2(total / cfg.min_notional_usd + 1.0))
        if w is None:
            w = self.market.windows(event.symbol)
        self._emit(w, SpikeType.LIQUIDATION_CASCADE, direction, 0.0, int(cfg.window_minutes), 0.0, price, price,
                   conf, event.time_ms, 0.0, {"liquidated_notional_usd": round(total, 2), "count": len(q)})

    # ------------------------------------------------------------------ output
    def _emit(self, w: SymbolWindows, kind: SpikeType, direction: str, magnitude_pct: float, timeframe: int,
              vm: float, price_from: float, price_to: float, confidence: float, t: int, z: float,
              details: dict) -> None:
        key = (w.symbol, kind, direction)
        last = self._last_alert.get(key)
        if last is not None and t - last < self._cooldown_ms:
            return
        self._last_alert[key] = t
        latency_ms = (time.perf_counter_ns() - self.tick_started_ns) / 1e6 if self.tick_started_ns else 0.0
        self.spikes_emitted += 1
        self.sink(SpikeDetected(
            symbol=w.symbol, spike_type=kind, direction=direction, magnitude_pct=round(magnitude_pct, 4),
            timeframe_minutes=timeframe, volume_multiple=round(vm, 3), price_from=price_from, price_to=price_to,
            confidence=confidence, time_ms=t, detection_latency_ms=round(latency_ms, 4), zscore=round(z, 3),
            details=details,
        ))
