"""Typed settings: the schema of config/*.yaml.

Every model forbids unknown keys, so a typo is an error that names the key instead of a
silently ignored setting. Loading and precedence live in core.config.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Percent = float

# Upper bounds of money, quantities and counts. No desk comes near them; they turn a typo
# (three zeros too many, 1e300) into an error that names the key, and they keep every
# product the gate forms (quantity x price, sums of notionals and fees) finite and exact
# to the cent in a float (2**53 cents is about 9e13 USD).
MAX_USD = 1e9  # a billion dollars: more than one API key's account, one order or one day's loss
MAX_QUANTITY = 1e12  # base units: room for tokens priced at a millionth of a dollar (1e12 of them is $1M)
MAX_ORDERS_PER_MINUTE = 600  # Binance spot's own order limit is 100 per 10 seconds
MAX_OPEN_POSITIONS = 1000  # well above performance.max_symbols' default of 200 watched symbols
MAX_BPS = 1000.0  # 10%: a spread or slippage model beyond that is no market to trade

Usd = Annotated[float, Field(gt=0, le=MAX_USD)]
Quantity = Annotated[float, Field(gt=0, le=MAX_QUANTITY)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------- breaker
class ReferenceThresholds(Strict):
    """Per reference symbol (BTC, ETH): percent drops from the trailing high."""

    dump_1h_percent: Percent = Field(15.0, gt=0, lt=100)
    warning_1h_percent: Percent = Field(10.0, gt=0, lt=100)
    warning_5m_percent: Percent = Field(5.0, gt=0, lt=100)
    trigger_type: str = "reference_dump"

    @model_validator(mode="after")
    def _ordered(self) -> "ReferenceThresholds":
        if self.warning_1h_percent >= self.dump_1h_percent:
            raise ValueError(
                f"warning_1h_percent ({self.warning_1h_percent}) must be below dump_1h_percent ({self.dump_1h_percent})"
            )
        return self


class MarketWide(Strict):
    enabled: bool = True
    min_symbols: int = Field(5, ge=2)
    breadth_fraction: float = Field(0.6, gt=0, le=1)
    dump_1h_percent: Percent = Field(8.0, gt=0, lt=100)
    warning_dump_1h_percent: Percent = Field(5.0, gt=0, lt=100)

    @model_validator(mode="after")
    def _ordered(self) -> "MarketWide":
        if self.warning_dump_1h_percent >= self.dump_1h_percent:
            raise ValueError("warning_dump_1h_percent must be below dump_1h_percent")
        return self


class Recovery(Strict):
    no_new_low_minutes: float = Field(15.0, gt=0)
    rebound_percent: Percent = Field(3.0, gt=0, lt=100)
    cooldown_minutes: float = Field(30.0, gt=0)
    # RECOVERING -> SAFE also needs the market stable: no new low for this long...
    stable_minutes: float = Field(60.0, ge=0, le=1440)
    # ...and one-minute volatility back under this multiple of its pre-crash level
    volatility_multiple: float = Field(2.0, ge=1, le=100)


class SlowHorizon(Strict):
    """A drawdown from the highest price of a long horizon (minute-granular)."""

    minutes: int = Field(gt=60, le=10_080)  # longer than the 60-minute rules, at most a week
    warning_percent: Percent = Field(gt=0, lt=100)
    trigger_percent: Percent = Field(gt=0, lt=100)

    @model_validator(mode="after")
    def _ordered(self) -> "SlowHorizon":
        if self.warning_percent >= self.trigger_percent:
            raise ValueError(f"warning_percent ({self.warning_percent:g}) must be below trigger_percent "
                             f"({self.trigger_percent:g})")
        return self


class SlowBreadth(Strict):
    """Market-wide over a long horizon: market_wide's min_symbols and breadth_fraction, each
    symbol down this far from its high over `horizon`."""

    horizon: str = "24h"
    warning_percent: Percent = Field(12.0, gt=0, lt=100)
    trigger_percent: Percent = Field(24.0, gt=0, lt=100)

    @model_validator(mode="after")
    def _ordered(self) -> "SlowBreadth":
        if self.warning_percent >= self.trigger_percent:
            raise ValueError("warning_percent must be below trigger_percent")
        return self


class SlowCrash(Strict):
    """Falls too slow for the 60-minute rules: drawdowns from the 4- and 24-hour highs."""

    enabled: bool = True
    horizons: dict[str, SlowHorizon] = Field(default_factory=lambda: {
        "4h": SlowHorizon(minutes=240, warning_percent=6.0, trigger_percent=12.0),
        "24h": SlowHorizon(minutes=1440, warning_percent=8.0, trigger_percent=16.0),
    })
    market_wide: SlowBreadth = SlowBreadth()

    @model_validator(mode="after")
    def _breadth_horizon_known(self) -> "SlowCrash":
        if self.horizons and self.market_wide.horizon not in self.horizons:
            raise ValueError(f"market_wide.horizon {self.market_wide.horizon!r} is not one of the horizons "
                             f"({', '.join(self.horizons)})")
        minutes = [h.minutes for h in self.horizons.values()]
        if len(set(minutes)) != len(minutes):
            raise ValueError("two horizons have the same minutes")
        return self

    def long_minutes(self) -> tuple[int, ...]:
        return tuple(sorted(h.minutes for h in self.horizons.values())) if self.enabled else ()


class WarningClear(Strict):
    """Hysteresis: a WARNING clears only when every drop has stayed below `ratio` of its
    warning level for `minutes` of event time."""

    ratio: float = Field(0.7, gt=0, lt=1)
    minutes: float = Field(10.0, ge=0)


class StaleData(Strict):
    enabled: bool = True
    seconds: float = Field(30.0, gt=0, le=3600)  # an hour of silence unnoticed is no stale check
    cadence_multiple: float = Field(3.0, ge=1, le=100)
    # a live reference silent this long is a blind feed: TRIGGERED (trigger_type feed_blind)
    blind_seconds: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _blind_after_stale(self) -> "StaleData":
        if self.blind_seconds <= self.seconds:
            raise ValueError(f"blind_seconds ({self.blind_seconds:g}) must be above seconds ({self.seconds:g})")
        return self


class CircuitBreakerSettings(Strict):
    enabled: bool = True
    backend: Literal["memory", "redis"] = "memory"
    auto_resume: bool = True
    deep_level_percent: Percent = Field(20.0, gt=0, lt=100)
    # after an operator clears, agents may not re-trigger the same episode (no new low since) for this long
    agent_holdoff_minutes: float = Field(15.0, ge=0, le=1440)
    references: dict[str, ReferenceThresholds] = Field(
        default_factory=lambda: {
            "BTCUSDT": ReferenceThresholds(trigger_type="btc_dump"),
            "ETHUSDT": ReferenceThresholds(trigger_type="eth_dump"),
        }
    )
    market_wide: MarketWide = MarketWide()
    slow_crash: SlowCrash = SlowCrash()
    recovery: Recovery = Recovery()
    warning_clear: WarningClear = WarningClear()
    stale_data: StaleData = StaleData()

    @field_validator("references")
    @classmethod
    def _symbols_upper(cls, value: dict[str, ReferenceThresholds]) -> dict[str, ReferenceThresholds]:
        for symbol in value:
            if not symbol.isalnum() or symbol.upper() != symbol:
                raise ValueError(f"reference symbol {symbol!r} must be an upper-case Binance symbol like BTCUSDT")
        return value


# ---------------------------------------------------------------------------- spikes
class MoveThresholds(Strict):
    """Percent move (from the window's low for pumps, from its high for dumps) per timeframe."""

    m1: Percent = Field(3.0, gt=0)
    m5: Percent = Field(5.0, gt=0)
    m15: Percent = Field(7.0, gt=0)
    m60: Percent = Field(10.0, gt=0)

    def by_minutes(self) -> dict[int, float]:
        return {1: self.m1, 5: self.m5, 15: self.m15, 60: self.m60}


class PairThresholds(Strict):
    move_percent: MoveThresholds = MoveThresholds()
    zscore: float = Field(8.0, gt=0)
    # a z-score alert still needs this fraction of the percent threshold: in calm markets
    # a tiny sigma makes z-scores of noise large
    zscore_min_move_fraction: float = Field(0.6, gt=0, le=1)
    volume_multiple: float = Field(8.0, gt=1)


class VolumeExplosion(Strict):
    enabled: bool = True
    timeframe_minutes: int = 5
    # a volume burst alone is not a spike: it must come with a price move of at least this
    # fraction of the pair's 5-minute move threshold
    min_move_fraction: float = Field(0.5, ge=0, le=1)
    warmup_minutes: float = Field(60.0, ge=0)


class FuturesDivergence(Strict):
    enabled: bool = True
    threshold_percent: Percent = Field(1.0, gt=0)
    max_age_seconds: float = Field(10.0, gt=0)


class LiquidationCascade(Strict):
    enabled: bool = True
    window_minutes: float = Field(5.0, gt=0)
    min_notional_usd: float = Field(5_000_000.0, gt=0, le=1e12)  # a market-wide threshold, above MAX_USD
    min_count: int = Field(20, ge=1, le=1_000_000)


class SpikeTypes(Strict):
    spot_price_spike: bool = True
    volume_explosion: VolumeExplosion = VolumeExplosion()
    futures_spot_divergence: FuturesDivergence = FuturesDivergence()
    liquidation_cascade: LiquidationCascade = LiquidationCascade()


class SpikeDetectionSettings(Strict):
    enabled: bool = True
    check_circuit_breaker: bool = True
    cooldown_minutes: float = Field(15.0, ge=0)
    warmup_minutes: float = Field(1.0, ge=0)
    zscore_warmup_minutes: float = Field(60.0, ge=0)
    default_thresholds: PairThresholds = PairThresholds()
    pairs: dict[str, PairThresholds] = Field(default_factory=dict)
    spike_types: SpikeTypes = SpikeTypes()

    def thresholds_for(self, symbol: str) -> PairThresholds:
        return self.pairs.get(symbol, self.default_thresholds)


# ---------------------------------------------------------------------------- agents
class AgentSettings(Strict):
    enabled: bool = True
    role: str
    goal: str
    backstory: str = ""
    llm: str | None = None  # None: the crew's model
    max_iterations: int = Field(6, ge=1, le=50)


class AgentsSettings(Strict):
    market_guardian: AgentSettings
    market_scanner: AgentSettings
    context_analyzer: AgentSettings
    risk_assessment: AgentSettings
    strategy_executor: AgentSettings


class CrewLimits(Strict):
    """Every model call and every run is bounded (core.agents.limits)."""

    call_timeout_seconds: float = Field(30.0, gt=0, le=600)  # one model call, streaming included
    call_max_retries: int = Field(1, ge=0, le=5)  # the provider SDK's retries of a failed call
    max_tokens: int = Field(1024, ge=16, le=32_768)  # an answer's length, sent with every call
    run_deadline_seconds: float = Field(45.0, gt=0, le=3600)  # a spike's whole run; below the proposal TTL
    pause_after_failures: int = Field(3, ge=1, le=100)  # runs in a row failing on the provider
    pause_seconds: float = Field(60.0, gt=0, le=86_400)  # the first pause; it doubles
    pause_max_seconds: float = Field(900.0, gt=0, le=86_400)


class CrewBudget(Strict):
    """Spending beyond the run's own budget (crew.token_budget_per_proposal, ...)."""

    session_tokens: int = Field(2_000_000, ge=100, le=1_000_000_000)
    session_usd: float = Field(5.0, ge=0, le=10_000)
    day_tokens: int = Field(5_000_000, ge=100, le=1_000_000_000)
    day_usd: float = Field(10.0, ge=0, le=10_000)
    # a remote model missing from the price table must be priced here (USD per million tokens)
    price_in_per_million_usd: float | None = Field(None, ge=0, le=1_000)
    price_out_per_million_usd: float | None = Field(None, ge=0, le=1_000)

    @model_validator(mode="after")
    def _both_prices_or_neither(self) -> "CrewBudget":
        if (self.price_in_per_million_usd is None) != (self.price_out_per_million_usd is None):
            raise ValueError("price_in_per_million_usd and price_out_per_million_usd go together")
        return self


class CrewSettings(Strict):
    enabled: bool = True
    process: Literal["sequential"] = "sequential"
    llm_provider: str = "rules"
    llm_model: str = "rules"
    llm_base_url: str | None = None
    limits: CrewLimits = CrewLimits()
    budget: CrewBudget = CrewBudget()
    max_concurrent_runs: int = Field(2, ge=1, le=16)
    max_runs_per_minute: int = Field(6, ge=1, le=600)  # each run may call a paid model
    # a five-agent run costs ~15k tokens on the rules model and ~25k on a remote one (tool schemas)
    token_budget_per_proposal: int = Field(60_000, ge=100, le=10_000_000)
    cost_budget_usd_per_proposal: float = Field(0.50, ge=0, le=100)  # gpt-4o spends ~0.1 USD on a run
    guardian_interval_seconds: float = Field(60.0, gt=0)
    news_feeds: list[str] = Field(default_factory=list)
    # the outcome loop (core.agents.outcomes): market time a decision is followed for (a week at most),
    # and the band of returns after fees that counts as neutral (a round trip's fees alone are 0.2%)
    outcome_horizon_minutes: float = Field(60.0, gt=0, le=10_080)
    outcome_neutral_band_percent: float = Field(0.25, ge=0, lt=50)


# ---------------------------------------------------------------------------- trading
class CoinDropRule(Strict):
    """A coin's own drop from its high over `horizon_minutes` (the breaker watches the
    market; these rules watch one coin)."""

    enabled: bool = True
    horizon_minutes: int = Field(1440, ge=60, le=10_080)
    drop_percent: float = Field(15.0, gt=0, lt=100)

    def long_minutes(self) -> tuple[int, ...]:
        return (self.horizon_minutes,) if self.enabled else ()


class FallingCoin(CoinDropRule):
    """No new long into a coin `drop_percent` below its high, whatever the breaker's state."""


class RiskSettings(Strict):
    account_equity_usd: Usd = 10_000.0
    risk_per_trade_percent: Percent = Field(0.5, gt=0, le=10)
    max_order_notional_usd: Usd = 1_000.0
    # proposals are sized this far under the notional cap, so a price that moves within the approval drift
    # limit (and a market entry's spread) does not push them over it at approval
    sizing_headroom_percent: float = Field(2.0, ge=0, lt=50)
    # an entry smaller than this is dust no exchange fills (Binance's MIN_NOTIONAL is 5 USDT on most pairs)
    min_order_notional_usd: float = Field(5.0, ge=0, le=1_000)
    max_order_quantity: dict[str, Quantity] = Field(default_factory=lambda: {"BTCUSDT": 0.05, "ETHUSDT": 1.0})
    max_position_notional_usd: Usd = 2_500.0
    max_open_positions: int = Field(3, ge=1, le=MAX_OPEN_POSITIONS)
    price_collar_percent: Percent = Field(2.0, gt=0, lt=50)
    max_orders_per_minute: int = Field(10, ge=1, le=MAX_ORDERS_PER_MINUTE)
    daily_loss_limit_usd: Usd = 200.0
    weekly_loss_limit_usd: Usd = 500.0
    warning_size_factor: float = Field(0.5, gt=0, le=1)
    recovering_size_factor: float = Field(0.25, gt=0, le=1)
    stop_loss_percent: Percent = Field(2.0, gt=0, lt=50)
    take_profit_percent: Percent = Field(4.0, gt=0, lt=500)
    falling_coin: FallingCoin = FallingCoin()


class PaperSettings(Strict):
    starting_balance_usd: Usd = 10_000.0
    taker_fee: float = Field(0.001, ge=0, lt=0.05)
    maker_fee: float = Field(0.001, ge=0, lt=0.05)
    spread_bps: float = Field(2.0, ge=0, le=MAX_BPS)
    slippage_bps_per_10k_usd: float = Field(1.0, ge=0, le=MAX_BPS)


class ExecutionSettings(Strict):
    # auto: the Binance testnet when Binance keys are given and the feed is Binance, else paper;
    # live needs this, the --live flag and the account's confirmation phrase typed at start-up
    mode: Literal["auto", "paper", "testnet", "live"] = "auto"
    default_order_type: Literal["market", "limit", "post_only"] = "limit"
    proposal_ttl_seconds: float = Field(120.0, gt=0, le=3600)  # an hour-old price is no basis for an order
    # approving refuses a proposal whose price moved more than this since it was made
    max_approval_drift_percent: float = Field(1.0, gt=0, lt=50)
    auto_approve_paper: bool = False
    paper: PaperSettings = PaperSettings()

    @model_validator(mode="after")
    def _auto_approve_only_on_paper(self) -> "ExecutionSettings":
        if self.auto_approve_paper and self.mode not in ("paper", "auto"):
            raise ValueError(f"auto_approve_paper is allowed only on paper (mode is {self.mode})")
        return self


class ReEntry(Strict):
    """Exposure comes back only after a confirmed recovery: the better state has held this
    long with no new low in a reference, once per step."""

    confirm_minutes: float = Field(120.0, ge=0, le=1440)
    steps: int = Field(2, ge=1, le=10)


class HeldSymbolRule(CoinDropRule):
    """A held coin `drop_percent` below its high is cut to triggered_exposure: the breaker
    watches BTC, ETH and breadth, so a position in a coin that falls alone would ride it."""

    clear_percent: float = Field(7.5, ge=0, lt=100)  # comes back (confirmed, in steps) once back under this
    volatility_multiple: float = Field(2.0, ge=1, le=20)  # and its 1-minute volatility is under this x its pre-crash level

    @model_validator(mode="after")
    def _clear_below_drop(self) -> "HeldSymbolRule":
        if self.clear_percent >= self.drop_percent:
            raise ValueError(f"clear_percent ({self.clear_percent:g}) must be below drop_percent "
                             f"({self.drop_percent:g})")
        return self


class ProtectionPolicySettings(Strict):
    """De-risking tiers: the session cuts long exposure by reduce-only orders through the gate
    as the breaker escalates (journaled as actor=policy), and restores it after recovery."""

    enabled: bool = True  # on paper and the testnet
    live: bool = False  # on live Binance only when the operator turns this on too
    warning_exposure: float = Field(0.0, ge=0, le=1)  # the fraction of each position kept at WARNING
    triggered_exposure: float = Field(0.0, ge=0, le=1)  # kept at TRIGGERED (0 flattens)
    recovering_exposure: float = Field(0.25, ge=0, le=1)  # at most this while RECOVERING; all of it only at SAFE
    reentry: ReEntry = ReEntry()
    held_symbol: HeldSymbolRule = HeldSymbolRule()

    @model_validator(mode="after")
    def _tiers_descend(self) -> "ProtectionPolicySettings":
        if self.triggered_exposure > self.warning_exposure:
            raise ValueError(f"triggered_exposure ({self.triggered_exposure:g}) must not exceed warning_exposure "
                             f"({self.warning_exposure:g})")
        if self.triggered_exposure > self.recovering_exposure:
            raise ValueError(f"triggered_exposure ({self.triggered_exposure:g}) must not exceed recovering_exposure "
                             f"({self.recovering_exposure:g})")
        return self


class FlightRecorderSettings(Strict):
    """Every TRIGGERED writes a self-contained record into the journal (core.incident)."""

    enabled: bool = True
    ticks_minutes: float = Field(120.0, ge=60, le=1440)  # raw ticks kept before a trip (the 60-minute rules see them)
    bars_minutes: int = Field(1440, ge=0, le=10_080)  # one-minute bars before those (the slow rules' context)
    after_minutes: float = Field(5.0, ge=0, le=240)  # the record closes this long after the trip, or at the next move
    max_ticks_per_symbol: int = Field(200_000, ge=1_000, le=5_000_000)  # a bound on memory for a busy feed


# ---------------------------------------------------------------------------- ops
class MonitoringSettings(Strict):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_max_bytes: int = Field(5_000_000, ge=10_000, le=1_000_000_000)
    log_backups: int = Field(5, ge=0, le=100)
    terminal_bell: bool = True
    webhook_url: str | None = None
    webhook_style: Literal["slack", "telegram", "ntfy", "json"] = "json"


class PerformanceSettings(Strict):
    # sizes of buffers held in memory: bounded so that a typo cannot ask for more than the machine has
    max_symbols: int = Field(200, ge=1, le=5000)  # Binance lists a few thousand spot symbols
    ui_fps: int = Field(10, ge=1, le=60)
    max_spike_queue_rows: int = Field(200, ge=10, le=100_000)
    decision_latency_sample: int = Field(1_000_000, ge=1000, le=10_000_000)  # 8 bytes each


class SimSettings(Strict):
    scenario: str = "flash-crash"
    seed: int = 7
    speed: float = Field(30.0, gt=0)
    tick_interval_ms: int = Field(500, ge=10)


class TestingSettings(Strict):
    __test__ = False  # not a pytest class
    feed: Literal["sim", "replay", "binance"] = "sim"
    sim: SimSettings = SimSettings()
    # a paced sim or replay runs at this market speed while a proposal waits for the operator
    # (0: unchanged), so its drift and stop rules leave a human time to read and decide
    decision_speed: float = Field(2.0, ge=0)


class BinanceEndpoints(Strict):
    """Where one Binance environment answers (python-binance's URL attributes)."""

    api_url: str
    stream_url: str
    futures_api_url: str
    futures_stream_url: str


class BinanceSettings(Strict):
    """The Binance feed and exchange (`--feed binance`; execution on the testnet or live)."""

    # streamed symbols; the breaker's references are always added
    symbols: list[str] = Field(default_factory=lambda: ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT",
                                                        "DOGEUSDT", "ADAUSDT", "AVAXUSDT"], max_length=200)
    futures: bool = True  # futures markPrice and forceOrder streams (divergence, liquidation cascades)
    depth_levels: Literal[5, 10, 20] = 5
    backfill_minutes: int = Field(60, ge=0, le=1440)  # REST klines at start-up and after a gap
    watchdog_seconds: float = Field(10.0, gt=0, le=600)  # a stream silent this long is closed and reopened
    reconnect_min_seconds: float = Field(0.5, gt=0, le=60)
    reconnect_max_seconds: float = Field(30.0, gt=0, le=600)
    request_timeout_seconds: float = Field(10.0, gt=0, le=120)
    recv_window_ms: int = Field(5_000, ge=1, le=60_000)
    max_weight_fraction: float = Field(0.8, gt=0, le=1)  # throttle REST calls below this share of the limit
    max_clock_skew_ms: int = Field(1_000, ge=1, le=60_000)  # past it, persistently: TRIGGERED
    testnet: BinanceEndpoints = BinanceEndpoints(
        api_url="https://testnet.binance.vision/api", stream_url="wss://stream.testnet.binance.vision/",
        futures_api_url="https://testnet.binancefuture.com/fapi", futures_stream_url="wss://fstream.binancefuture.com/")
    live: BinanceEndpoints = BinanceEndpoints(
        api_url="https://api.binance.com/api", stream_url="wss://stream.binance.com:9443/",
        futures_api_url="https://fapi.binance.com/fapi", futures_stream_url="wss://fstream.binance.com/")

    @field_validator("symbols")
    @classmethod
    def _symbols_upper(cls, value: list[str]) -> list[str]:
        for symbol in value:
            if not symbol.isalnum() or symbol.upper() != symbol:
                raise ValueError(f"symbol {symbol!r} must be an upper-case Binance symbol like BTCUSDT")
        return value

    @model_validator(mode="after")
    def _backoff_ordered(self) -> "BinanceSettings":
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ValueError("reconnect_max_seconds must be at least reconnect_min_seconds")
        return self


class RedisSettings(Strict):
    """The shared breaker's store (core.breaker.redis_backend). `url` (redis:// or rediss://
    for TLS) wins over host, port and db; the password comes from REDIS_PASSWORD."""

    enabled: bool = False
    url: str | None = None
    host: str = "localhost"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0, le=1_000)
    tls: bool = False
    tls_ca_file: str | None = None  # the CA that signed the server's certificate (default: the system's)
    key_prefix: str = Field("spikeguard", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    poll_interval_ms: int = Field(250, ge=10, le=60_000)  # the hash is read this often: the authority
    timeout_ms: int = Field(250, ge=10, le=60_000)  # an answer later than this counts as unreachable

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    def connection_url(self) -> str:
        if self.url:
            return self.url
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


class Secrets(Strict):
    """Secrets come only from the environment or .env, never from YAML, and never print."""

    binance_api_key: SecretStr | None = None
    binance_secret_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    redis_password: SecretStr | None = None


class Settings(Strict):
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    spike_detection: SpikeDetectionSettings = SpikeDetectionSettings()
    agents: AgentsSettings
    crew: CrewSettings = CrewSettings()
    risk_management: RiskSettings = RiskSettings()
    protection_policy: ProtectionPolicySettings = ProtectionPolicySettings()
    flight_recorder: FlightRecorderSettings = FlightRecorderSettings()
    execution: ExecutionSettings = ExecutionSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    performance: PerformanceSettings = PerformanceSettings()
    testing: TestingSettings = TestingSettings()
    redis: RedisSettings = RedisSettings()
    binance: BinanceSettings = BinanceSettings()
    secrets: Secrets = Secrets()

    def long_minutes(self) -> tuple[int, ...]:
        """Every long horizon this config's rules read: the market windows keep them all."""
        return tuple(sorted({*self.circuit_breaker.slow_crash.long_minutes(),
                             *self.protection_policy.held_symbol.long_minutes(),
                             *self.risk_management.falling_coin.long_minutes()}))

    @model_validator(mode="after")
    def _run_deadline_below_the_ttl(self) -> "Settings":
        if self.crew.limits.run_deadline_seconds >= self.execution.proposal_ttl_seconds:
            raise ValueError(f"crew.limits.run_deadline_seconds ({self.crew.limits.run_deadline_seconds:g}) must be "
                             f"below execution.proposal_ttl_seconds ({self.execution.proposal_ttl_seconds:g})")
        return self
