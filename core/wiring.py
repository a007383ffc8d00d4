"""The composition root: settings and the command line's choices in, a session out.

This is the one place that decides which feed, exchange, breaker backend and journal a run
uses. The console, the headless commands and the benchmarks ask it for a session and
never build those parts themselves; everything past it depends only on interfaces
(core.market.feed.Feed, core.trading.exchange.Exchange, core.breaker.backend).

The breaker: in memory, or shared on Redis (`redis.enabled` or `circuit_breaker.backend:
redis`), with a sync (core.breaker.redis_sync) that the session starts and stops.

Binance: `--feed binance` streams the environment the venue names (live prices for paper
trading, the testnet's for testnet orders); orders go to a BinanceExchange only when the
venue is testnet or live, and the session reconciles it before any order (core.venue).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.breaker.backend import MemoryBackend
from core.breaker.state import CircuitBreakerState
from core.market.feed import MAX_SPEED, Feed
from core.session import ExchangeFactory, Session, paper_exchange
from core.settings import Settings

DEFAULT_CONSOLE_REPLAY_SPEED = 60.0  # a day of candles in 24 minutes: fast, still readable


class WiringError(Exception):
    """A choice that cannot be built, as the one line the user sees."""


@dataclass(frozen=True)
class FeedChoice:
    """What the command line asked of the feed; None means the configuration decides."""

    kind: str | None = None  # "sim", "replay", "binance"
    files: Sequence[str] = ()
    symbol: str | None = None  # replay: the symbol of a file whose name has none
    scenario: str | None = None
    seed: int | None = None
    speed: float | None = None  # a factor of real time, or MAX_SPEED
    duration_s: float | None = None  # sim: stop after this much event time (headless runs)


@dataclass(frozen=True)
class BuiltFeed:
    feed: Feed
    label: str  # "sim flash-crash", "replay BTCUSDT ETHUSDT"
    speed_label: str  # "30x", "max"


@dataclass(frozen=True)
class JournalChoice:
    path: Path
    key: bytes | None = None  # the head's signing key (core.journal.keys); None: unsigned (a throwaway journal)
    force: bool = False  # open a journal whose head does not verify, and journal that it was forced

    @classmethod
    def signed(cls, path: Path, config_dir: Path, force: bool = False) -> "JournalChoice":
        """The installation's journal: signed with the key in `config_dir` (created, mode
        0600, at first use). Raises JournalError (one line) for a key that is not private."""
        from core.journal import load_or_create_key

        Path(config_dir).mkdir(parents=True, exist_ok=True)
        return cls(Path(path), load_or_create_key(config_dir), force)


def build_feed(settings: Settings, choice: FeedChoice, venue: "Venue | None" = None) -> BuiltFeed:
    kind = choice.kind or settings.testing.feed
    if kind == "binance":
        return _binance_feed(settings, choice, venue or resolve_venue(settings, kind))
    if kind == "replay":
        from core.market.replay import ReplayFeed, ReplayInputError

        if not choice.files:
            raise WiringError("--feed replay needs CSV files: spikeguard console --feed replay FILE...")
        speed = choice.speed if choice.speed is not None else DEFAULT_CONSOLE_REPLAY_SPEED
        try:
            feed: Feed = ReplayFeed(list(choice.files), speed=speed, symbol=choice.symbol)
        except ReplayInputError as exc:
            raise WiringError(str(exc)) from None
        label = "replay " + " ".join(s.symbol for s in feed.sources)  # type: ignore[attr-defined]
    else:
        from core.market.sim import SimFeed

        if choice.files or choice.symbol:
            raise WiringError("files and --symbol are only for --feed replay")
        sim = settings.testing.sim
        scenario = choice.scenario or sim.scenario
        try:
            feed = SimFeed(scenario=scenario, seed=choice.seed if choice.seed is not None else sim.seed,
                           tick_interval_ms=sim.tick_interval_ms,
                           speed=choice.speed if choice.speed is not None else sim.speed,
                           duration_s=choice.duration_s)
        except ValueError as exc:
            raise WiringError(str(exc)) from None
        label = f"sim {scenario}"
    speed_label = "max" if feed.speed == MAX_SPEED else f"{feed.speed:g}x"
    return BuiltFeed(feed, label, speed_label)


def _binance_feed(settings: Settings, choice: FeedChoice, venue: Venue) -> BuiltFeed:
    from core.market.binance_feed import BinanceFeed

    if choice.files or choice.symbol or choice.scenario or choice.seed is not None:
        raise WiringError("files, --symbol, --scenario and --seed are not for --feed binance (symbols come from "
                          "binance.symbols in the config)")
    if choice.speed is not None:
        raise WiringError("--speed is not for --feed binance: live data runs at the market's pace")
    endpoints = getattr(settings.binance, venue.market_data)
    try:
        feed = BinanceFeed(settings.binance, endpoints)
    except ValueError as exc:
        raise WiringError(f"binance.symbols: {exc}") from None
    return BuiltFeed(feed, f"binance {venue.market_data}", "live")


@dataclass(frozen=True)
class Venue:
    """Where orders go, and (for --feed binance) where prices come from."""

    exchange: str  # "paper", "testnet", "live"
    market_data: str  # the Binance environment streamed by --feed binance: "live" or "testnet"


def has_binance_keys(settings: Settings) -> bool:
    s = settings.secrets
    return bool(s.binance_api_key and s.binance_secret_key and s.binance_api_key.get_secret_value().strip()
                and s.binance_secret_key.get_secret_value().strip())


def resolve_venue(settings: Settings, feed_kind: str | None, live_flag: bool = False) -> Venue:
    """`execution.mode` against the feed, the keys and the --live flag. auto: the testnet when
    Binance keys are given and the feed is Binance, else paper (on live prices with --feed
    binance: dry run). testnet and live trade on Binance and need its feed and keys; live also
    needs --live (the confirmation phrase and the key check come at start-up)."""
    mode = settings.execution.mode
    kind = feed_kind or settings.testing.feed
    binance, keys = kind == "binance", has_binance_keys(settings)
    if live_flag and mode != "live":
        raise WiringError(f"--live needs execution.mode: live in the config (it is {mode})")
    if mode == "live" and not live_flag:
        raise WiringError("execution.mode: live also needs the --live flag on the command line")
    if mode in ("testnet", "live"):
        if not binance:
            raise WiringError(f"execution.mode: {mode} trades on Binance: it needs --feed binance (the feed is {kind})")
        if not keys:
            raise WiringError(f"execution.mode: {mode} needs BINANCE_API_KEY and BINANCE_SECRET_KEY "
                              f"(environment or a private .env)")
        return Venue(mode, mode)
    if mode == "auto" and binance and keys:
        return Venue("testnet", "testnet")
    return Venue("paper", "live")


def exchange_factory(settings: Settings, venue: Venue, feed: Feed | None = None) -> ExchangeFactory:
    """Paper, or a BinanceExchange on the venue's environment with the keys of the settings
    (the feed, when it is Binance's, lends it its quotes and depth)."""
    if venue.exchange == "paper":
        return paper_exchange
    if not has_binance_keys(settings):
        raise WiringError(f"trading on the Binance {venue.exchange} needs BINANCE_API_KEY and BINANCE_SECRET_KEY")
    from core.trading.binance import BinanceExchange

    secrets = settings.secrets
    key, secret = secrets.binance_api_key, secrets.binance_secret_key
    environment = venue.exchange
    book = feed if feed is not None and hasattr(feed, "quotes") and hasattr(feed, "book") else None

    def binance_exchange(settings: Settings, market: Any, clock: Callable[[], int]) -> Any:
        return BinanceExchange(settings.binance, environment, key.get_secret_value().strip(),  # type: ignore[union-attr]
                               secret.get_secret_value().strip(), market=market,  # type: ignore[union-attr]
                               endpoints=getattr(settings.binance, environment), book=book)

    return binance_exchange


def uses_redis(settings: Settings) -> bool:
    return settings.redis.enabled or settings.circuit_breaker.backend == "redis"


def redis_clients(settings: Settings) -> tuple[Any, Any]:
    """A blocking client (the breaker's writes, under its lock) and an asyncio one (the
    sync's reads and its channel), both bounded by `redis.timeout_ms`."""
    import redis
    import redis.asyncio

    cfg = settings.redis
    password = settings.secrets.redis_password.get_secret_value() if settings.secrets.redis_password else None
    timeout = cfg.timeout_ms / 1000
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "password": password,
                               "health_check_interval": 0, "retry_on_timeout": False}
    url = cfg.connection_url()
    if url.startswith("rediss://") and cfg.tls_ca_file:
        options["ssl_ca_certs"] = cfg.tls_ca_file
    try:
        blocking = redis.Redis.from_url(url, **options)
        nonblocking = redis.asyncio.Redis.from_url(url, **{**options, "socket_timeout": None})
    except ValueError as exc:
        raise WiringError(f"redis.url: {exc}") from None
    return blocking, nonblocking


def build_breaker(settings: Settings) -> CircuitBreakerState:
    if not uses_redis(settings):
        return CircuitBreakerState(MemoryBackend())
    from core.breaker.redis_backend import RedisBackend

    blocking, _ = redis_clients(settings)
    return CircuitBreakerState(RedisBackend(blocking, settings.redis.key_prefix))


def attach_breaker_sync(session: Session, settings: Settings) -> None:
    """The shared breaker's sync, told to the session (it starts it in run() and stops it in
    close()); nothing for the memory backend."""
    if session.breaker.backend_name != "redis":
        return
    from core.breaker.redis_sync import RedisBreakerSync

    _, nonblocking = redis_clients(settings)
    session.breaker_sync = RedisBreakerSync(
        session.breaker, session.breaker.backend, nonblocking,  # type: ignore[arg-type]
        poll_interval_s=settings.redis.poll_interval_ms / 1000, on_problem=session.on_breaker_backend_problem,
        clock_ms=session.engine.now_ms, timeout_s=settings.redis.timeout_ms / 1000)
    if session.breaker.backend_problem:
        session.breaker_sync.held_at_start(session.breaker.backend_problem)


def build_session(settings: Settings, feed: Feed, journal: JournalChoice | None = None, *,
                  venue: Venue | None = None, wall_clock: Callable[[], int] | None = None,
                  long_minutes: tuple[int, ...] = ()) -> Session:
    """A session over `feed`, its parts chosen from the settings (`venue` from
    resolve_venue; paper when not given). The journal is opened by `open_journal` (it needs
    the running loop). `long_minutes`: horizons the market keeps for shadow breakers."""
    venue = venue or Venue("paper", "live")
    session = Session(settings, feed, breaker=build_breaker(settings),
                      exchange_factory=exchange_factory(settings, venue, feed),
                      journal_path=journal.path if journal else None, journal_key=journal.key if journal else None,
                      journal_force=journal.force if journal else False, wall_clock=wall_clock,
                      long_minutes=long_minutes)
    attach_breaker_sync(session, settings)
    return session


async def open_journal(session: Session, journal: JournalChoice) -> None:
    """Open the session's journal before anything runs: a journal that is locked by another
    process, cannot be written or does not verify is refused here, with one line
    (JournalError), before the console takes the terminal."""
    await session.open_journal(journal.path, key=journal.key, force=journal.force)


__all__ = ["BuiltFeed", "FeedChoice", "JournalChoice", "Venue", "WiringError", "attach_breaker_sync", "build_breaker",
           "build_feed", "build_session", "exchange_factory", "has_binance_keys", "open_journal", "redis_clients",
           "resolve_venue", "uses_redis"]
