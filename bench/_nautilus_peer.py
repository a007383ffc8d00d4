"""NautilusTrader's BacktestEngine with the plain loop's detector: bench_peers' third row.
Imported only when the optional `bench` extra is installed (an ImportError tells
bench_peers it is absent)."""

from __future__ import annotations

import logging
import time
from collections import deque
from decimal import Decimal

from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig
from nautilus_trader.model.currencies import BTC, USDT
from nautilus_trader.model.data import TradeTick
from nautilus_trader.model.enums import AccountType, AggressorSide, OmsType
from nautilus_trader.model.identifiers import InstrumentId, Symbol, TradeId, Venue
from nautilus_trader.model.instruments import CurrencyPair
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.trading.strategy import Strategy

VENUE = Venue("BINANCE")
PRECISION = 8


class RollingMaxDetector(Strategy):
    """The plain loop's detector as a strategy: a 60-minute rolling max per instrument and a
    15% drop flag, on every trade tick."""

    def __init__(self, instruments: list[InstrumentId], window_ms: int, drop_percent: float) -> None:
        super().__init__()
        self.instruments = instruments
        self.window_ns = window_ms * 1_000_000
        self.drop = drop_percent
        self.highs: dict[InstrumentId, deque] = {i: deque() for i in instruments}
        self.flagged = 0

    def on_start(self) -> None:
        for instrument_id in self.instruments:
            self.subscribe_trade_ticks(instrument_id)

    def on_trade_tick(self, tick: TradeTick) -> None:
        d = self.highs[tick.instrument_id]
        p, t = tick.price.as_double(), tick.ts_event
        while d and d[-1][0] <= p:
            d.pop()
        d.append((p, t))
        while d[0][1] <= t - self.window_ns:
            d.popleft()
        if (d[0][0] - p) / d[0][0] * 100.0 >= self.drop:
            self.flagged += 1


def _pair(name: str) -> CurrencyPair:
    increment = "0." + "0" * (PRECISION - 1) + "1"
    return CurrencyPair(InstrumentId(Symbol(name), VENUE), Symbol(name), BTC, USDT, PRECISION, PRECISION,
                        Price.from_str(increment), Quantity.from_str(increment), 0, 0,
                        maker_fee=Decimal("0.001"), taker_fee=Decimal("0.001"))


def run(ticks: list, window_ms: int, drop_percent: float) -> tuple[float, int]:
    """Seconds for BacktestEngine.run() over `ticks` (core.events.Tick, time-ordered); the
    TradeTicks are built before the clock starts, as the other rows' ticks are."""
    logging.getLogger("nautilus_trader").setLevel(logging.ERROR)
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR", bypass_logging=True)))
    engine.add_venue(VENUE, oms_type=OmsType.NETTING, account_type=AccountType.CASH, base_currency=None,
                     starting_balances=[Money(1_000_000, USDT), Money(1_000, BTC)])
    instruments = {name: _pair(name) for name in dict.fromkeys(t.symbol for t in ticks)}
    for instrument in instruments.values():
        engine.add_instrument(instrument)
    data = [TradeTick(instruments[t.symbol].id, Price(t.price, PRECISION), Quantity(max(t.qty, 1e-8), PRECISION),
                      AggressorSide.NO_AGGRESSOR, TradeId(str(n)), t.time_ms * 1_000_000, t.time_ms * 1_000_000)
            for n, t in enumerate(ticks)]
    engine.add_data(data)
    strategy = RollingMaxDetector([i.id for i in instruments.values()], window_ms, drop_percent)
    engine.add_strategy(strategy)
    started = time.perf_counter()
    engine.run()
    elapsed = time.perf_counter() - started
    flagged = strategy.flagged
    engine.dispose()
    return elapsed, flagged
