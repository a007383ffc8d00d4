"""Market state: the rolling windows of every symbol the feed provides."""

from __future__ import annotations

from core.market.windows import TIMEFRAMES_MIN, SymbolWindows


class TooManySymbols(Exception):
    pass


class MarketState:
    def __init__(self, timeframes_min: tuple[int, ...] = TIMEFRAMES_MIN, max_symbols: int = 200,
                 long_minutes: tuple[int, ...] = ()) -> None:
        self.timeframes_min = timeframes_min
        self.long_minutes = tuple(sorted(set(long_minutes)))  # the slow-crash rules' horizons
        self.max_symbols = max_symbols
        self.symbols: dict[str, SymbolWindows] = {}
        self.ended: set[str] = set()
        self.marks: dict[str, tuple[float, int]] = {}  # futures mark price and its time

    def windows(self, symbol: str) -> SymbolWindows:
        w = self.symbols.get(symbol)
        if w is None:
            if len(self.symbols) >= self.max_symbols:
                raise TooManySymbols(f"more than performance.max_symbols={self.max_symbols} symbols")
            w = self.symbols[symbol] = SymbolWindows(symbol, self.timeframes_min,
                                                             long_horizons_min=self.long_minutes)
        return w

    def last_prices(self) -> dict[str, float]:
        return {s: w.last_price for s, w in self.symbols.items() if w.ticks}
