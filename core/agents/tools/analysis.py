"""The seed's analysis tools: news, social and on-chain sources, correlation, manipulation.

Sources that need configuration (RSS/Atom feeds in crew.news_feeds, an X API bearer token,
an Etherscan key) answer {"status": "unavailable", "reason": ...} when it is missing or
the source cannot be reached; nothing here invents data. Third-party text comes back as
quoted, delimited DATA (core.agents.untrusted), scored with VADER's offline lexicon.
Network calls happen only when a source is configured, with short timeouts, in the tool's
worker thread (never on the engine loop).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from pydantic import Field

from core.agents.context import DeskContext, RunState
from core.agents.tools.binance import read_book
from core.agents.tools.common import (SOURCE_FEED, Args, ToolSpec, finite_positive, num, unavailable, window_index,
                                      windows_or_none)
from core.agents.untrusted import quoted
from core.market.symbols import split_symbol

FETCH_TIMEOUT_S = 3.0
MAX_FEED_BYTES = 1_000_000
FEED_CACHE_SECONDS = 60.0
USER_AGENT = "spikeguard/0.1 (+news sentiment; offline-first)"

# base asset -> words that name it in headlines
ASSET_NAMES: dict[str, tuple[str, ...]] = {
    "BTC": ("bitcoin",), "ETH": ("ethereum", "ether"), "SOL": ("solana",), "BNB": ("binance coin", "bnb chain"),
    "XRP": ("ripple",), "DOGE": ("dogecoin",), "ADA": ("cardano",), "AVAX": ("avalanche",), "LUNA": ("terra",),
    "DOT": ("polkadot",), "LINK": ("chainlink",), "LTC": ("litecoin",), "MATIC": ("polygon",), "TRX": ("tron",),
}

_analyzer = None
_analyzer_lock = threading.Lock()
_feed_cache: dict[str, tuple[float, list[dict[str, str]]]] = {}
_feed_cache_lock = threading.Lock()


def analyzer() -> Any:
    global _analyzer
    with _analyzer_lock:
        if _analyzer is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            _analyzer = SentimentIntensityAnalyzer()
        return _analyzer


def base_asset(symbol: str) -> str:
    """BTCUSDT -> BTC (the asset news and on-chain data talk about); the symbol itself otherwise."""
    parts = split_symbol(symbol)
    return parts[0] if parts is not None else symbol


def _mentions(text: str, asset: str) -> bool:
    words = (asset.lower(), f"{asset.lower()}usdt", *ASSET_NAMES.get(asset, ()))
    low = text.lower()
    return any(re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", low) for w in words)


def _sentiment(texts: list[str]) -> dict[str, Any]:
    a = analyzer()
    scores = [a.polarity_scores(t)["compound"] for t in texts]
    mean = sum(scores) / len(scores) if scores else 0.0
    label = "positive" if mean >= 0.05 else "negative" if mean <= -0.05 else "neutral"
    return {"mean_compound": num(mean, 4), "label": label, "scores": [num(s, 4) for s in scores],
            "scorer": "vaderSentiment lexicon (offline)"}


def _fetch(url: str, headers: dict[str, str] | None = None, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {scheme!r}")
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # the scheme is checked above
        data = resp.read(MAX_FEED_BYTES + 1)
    if len(data) > MAX_FEED_BYTES:
        raise ValueError(f"response larger than {MAX_FEED_BYTES} bytes")
    return data


def _feed_entries(url: str) -> list[dict[str, str]]:
    now = time.monotonic()
    with _feed_cache_lock:
        hit = _feed_cache.get(url)
        if hit is not None and now - hit[0] < FEED_CACHE_SECONDS:
            return hit[1]
    import feedparser

    parsed = feedparser.parse(_fetch(url))
    if getattr(parsed, "bozo", False) and not parsed.entries:
        raise ValueError(f"not an RSS/Atom feed ({getattr(parsed, 'bozo_exception', 'parse error')})")
    entries = [{"title": str(e.get("title", "")), "summary": str(e.get("summary", ""))[:1000],
                "published": str(e.get("published", e.get("updated", "")))} for e in parsed.entries[:100]]
    with _feed_cache_lock:
        _feed_cache[url] = (now, entries)
    return entries


class NewsArgs(Args):
    symbol: str = Field(..., description="Binance symbol, e.g. SOLUSDT")
    max_items: int = Field(10, ge=1, le=30, description="headlines to return")


def news_sentiment(ctx: DeskContext, run: RunState | None, symbol: str, max_items: int = 10) -> dict:
    feeds = list(ctx.settings.crew.news_feeds)
    if not feeds:
        return unavailable("no news feeds configured (crew.news_feeds is empty)")
    asset = base_asset(symbol.upper())
    report, entries = [], []
    for url in feeds[:10]:
        try:
            got = _feed_entries(url)
            report.append({"url": url, "status": "ok", "items": len(got)})
            entries.extend(got)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            report.append({"url": url, "status": "unreachable", "error": str(exc)[:200]})
        except Exception as exc:  # a broken feed must not break the others
            report.append({"url": url, "status": "error", "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
    if not any(r["status"] == "ok" for r in report):
        return unavailable("no configured news feed could be reached", feeds=report)
    relevant = [e for e in entries if _mentions(f"{e['title']} {e['summary']}", asset)]
    chosen = (relevant or entries)[:max_items]
    texts = [re.sub(r"<[^>]+>", " ", f"{e['title']}. {e['summary']}")[:400] for e in chosen]
    return {"status": "ok", "symbol": symbol.upper(), "asset": asset, "feeds": report,
            "headline_count": len(entries), "relevant_count": len(relevant), "about_asset": bool(relevant),
            **_sentiment(texts), **quoted(e["title"] or e["summary"] for e in chosen)}


class SocialArgs(Args):
    symbol: str = Field(..., description="Binance symbol, e.g. SOLUSDT")
    max_results: int = Field(20, ge=10, le=100, description="posts to read")


def twitter_sentiment(ctx: DeskContext, run: RunState | None, symbol: str, max_results: int = 20) -> dict:
    token = ctx.getenv("X_BEARER_TOKEN") or ctx.getenv("TWITTER_BEARER_TOKEN")
    if not token:
        return unavailable("no X API bearer token (set X_BEARER_TOKEN)")
    asset = base_asset(symbol.upper())
    names = ASSET_NAMES.get(asset, ())
    terms = [f"${asset}", f"#{asset}"] + [f'"{n}"' for n in names[:1]]
    query = f"({' OR '.join(terms)}) lang:en -is:retweet"
    base = (ctx.getenv("X_API_BASE_URL") or "https://api.twitter.com/2").rstrip("/")
    url = f"{base}/tweets/search/recent?" + urllib.parse.urlencode({"query": query, "max_results": max_results})
    try:
        data = json.loads(_fetch(url, {"Authorization": f"Bearer {token}"}, timeout=4.0))
    except urllib.error.HTTPError as exc:
        return unavailable(f"X API answered HTTP {exc.code}", query=query)
    except (OSError, ValueError) as exc:
        return unavailable(f"X API unreachable: {str(exc)[:200]}", query=query)
    posts = [str(p.get("text", "")) for p in data.get("data", []) if isinstance(p, dict)]
    if not posts:
        return {"status": "ok", "query": query, "post_count": 0, "note": "no recent posts matched"}
    return {"status": "ok", "source": "X API v2 recent search", "query": query, "post_count": len(posts),
            **_sentiment(posts), **quoted(posts[:15])}


class OnChainArgs(Args):
    symbol: str = Field(..., description="Binance symbol")
    min_value_eth: float = Field(500.0, gt=0, description="a transfer at least this large counts as a whale")


def onchain_data(ctx: DeskContext, run: RunState | None, symbol: str, min_value_eth: float = 500.0) -> dict:
    key = ctx.getenv("ETHERSCAN_API_KEY")
    if not key:
        return unavailable("no Etherscan API key (set ETHERSCAN_API_KEY)")
    base = ctx.getenv("ETHERSCAN_API_URL") or "https://api.etherscan.io/v2/api"
    params = {"chainid": "1", "module": "proxy", "action": "eth_getBlockByNumber", "tag": "latest",
              "boolean": "true", "apikey": key}
    try:
        data = json.loads(_fetch(f"{base}?{urllib.parse.urlencode(params)}", timeout=4.0))
    except urllib.error.HTTPError as exc:
        return unavailable(f"Etherscan answered HTTP {exc.code}")
    except (OSError, ValueError) as exc:
        return unavailable(f"Etherscan unreachable: {str(exc)[:200]}")
    block = data.get("result") if isinstance(data, dict) else None
    if not isinstance(block, dict):
        return unavailable(f"Etherscan gave no block: {str(data)[:200]}")
    whales = []
    txs = block.get("transactions") or []
    for tx in txs:
        try:
            value = int(tx.get("value", "0x0"), 16) / 1e18
        except (TypeError, ValueError):
            continue
        if value >= min_value_eth:
            whales.append({"hash": str(tx.get("hash"))[:66], "from": str(tx.get("from"))[:42],
                           "to": str(tx.get("to"))[:42], "value_eth": num(value, 6)})
    whales.sort(key=lambda x: -(x["value_eth"] or 0))
    return {"status": "ok", "source": "Etherscan (Ethereum mainnet, latest block, native ETH transfers)",
            "block": int(block.get("number", "0x0"), 16), "transactions": len(txs), "whale_transfers": whales[:10],
            "whale_total_eth": num(sum(w["value_eth"] or 0 for w in whales), 6),
            "relevance": "direct" if base_asset(symbol.upper()) == "ETH" else "market-wide risk appetite only"}


class CorrelationArgs(Args):
    symbol: str = Field(..., description="Binance symbol")
    reference: str = Field("BTCUSDT", description="reference symbol")
    minutes: int = Field(30, ge=5, le=60, description="one-minute returns to correlate")
    move_window_minutes: int = Field(5, description="window for the breadth count: 1, 5, 15 or 60")
    move_threshold_percent: float = Field(1.0, gt=0, description="a symbol 'moves' past this percent")


def _series(w: Any, n: int) -> list[float]:
    closes = list(w.closes) + [w.last_price]
    return closes[-(n + 1):]


def _returns(prices: list[float]) -> list[float]:
    return [math.log(b / a) for a, b in zip(prices, prices[1:]) if a > 0 and b > 0]


def _pearson(a: list[float], b: list[float]) -> float | None:
    n = min(len(a), len(b))
    a, b = a[-n:], b[-n:]
    if n < 5:
        return None
    ma, mb = sum(a) / n, sum(b) / n
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    if va <= 0 or vb <= 0:
        return None
    return sum((x - ma) * (y - mb) for x, y in zip(a, b)) / math.sqrt(va * vb)


def breadth(ctx: DeskContext, symbol: str, direction: int, minutes: int, threshold: float) -> dict[str, Any]:
    others = [w for s, w in ctx.market.symbols.items() if s != symbol and w.ticks]
    same = []
    for w in others:
        ch = w.change_pct(window_index(w, minutes))
        if direction * ch >= threshold:
            same.append(w.symbol)
    frac = len(same) / len(others) if others else 0.0
    mw = ctx.settings.circuit_breaker.market_wide
    return {"other_symbols": len(others), "moving_same_way": len(same), "fraction": num(frac, 4),
            "symbols": same[:20], "window_minutes": minutes, "threshold_percent": threshold,
            "market_wide": len(others) >= 2 and frac >= mw.breadth_fraction}


def correlation_analysis(ctx: DeskContext, run: RunState | None, symbol: str, reference: str = "BTCUSDT",
                         minutes: int = 30, move_window_minutes: int = 5, move_threshold_percent: float = 1.0) -> dict:
    symbol, reference = symbol.upper(), reference.upper()
    w = windows_or_none(ctx, symbol)
    if w is None:
        return unavailable(f"no market data for {symbol}")
    k = window_index(w, move_window_minutes)
    change = w.change_pct(k)
    direction = 1 if change >= 0 else -1
    out: dict[str, Any] = {"status": "ok", "symbol": symbol, "change_percent": num(change, 6),
                           "direction": "up" if direction > 0 else "down",
                           "breadth": breadth(ctx, symbol, direction, move_window_minutes, move_threshold_percent)}
    r = ctx.market.symbols.get(reference)
    if reference == symbol:
        out["correlation"] = {"reference": reference, "value": 1.0, "note": "the symbol is the reference"}
    elif r is None or not r.ticks:
        out["correlation"] = {"reference": reference, "value": None, "note": f"no data for {reference}"}
    else:
        ra, rb = _returns(_series(w, minutes)), _returns(_series(r, minutes))
        corr = _pearson(ra, rb)
        note = None
        if abs(w.last_time - r.last_time) > 60_000:
            note = "the two symbols' last ticks are more than a minute apart: alignment is approximate"
        if corr is None:
            note = note or ("not enough one-minute returns yet" if min(len(ra), len(rb)) < 5
                            else "no variance in one of the series")
        rk = window_index(r, move_window_minutes)
        out["correlation"] = {"reference": reference, "value": num(corr, 4) if corr is not None else None,
                              "points": min(len(ra), len(rb)), "reference_change_percent": num(r.change_pct(rk), 6),
                              "note": note}
    return out


THIN_DEPTH_SHARE = 0.10  # our order is at least this share of the resting depth: a thin book
THIN_VOLUME_SHARE = 0.10  # ...or of the last minute's traded quote volume (when the depth is not measured)


def thin_book(ctx: DeskContext, symbol: str, w: Any, notional: float) -> tuple[bool | None, str, float | None, str | None]:
    """(thin, basis, depth, depth source). A measured depth (the live book) decides; a modelled depth is
    not evidence (the paper model is at least 25k USD, so it would never call a book thin), so the
    traded volume of the last minute, which is feed data, decides instead. None when neither is known."""
    book = read_book(ctx, symbol)
    depth = book.get("depth_usd") if book.get("status") == "ok" else None
    source = book.get("source")
    if depth is not None and source == SOURCE_FEED:
        share = notional / depth
        return share >= THIN_DEPTH_SHARE, f"order {share:.1%} of the live book's depth {depth:,.0f} USD", depth, source
    k1 = window_index(w, 1)
    quote_vol = w.volume(k1) * w.last_price
    if not math.isfinite(quote_vol) or quote_vol <= 0:
        return None, "unknown: no measured depth and no traded volume in the last minute", depth, source
    share = notional / quote_vol
    why = "the book depth is modelled" if depth is not None else "no book depth"
    return (share >= THIN_VOLUME_SHARE,
            f"order {share:.1%} of the last minute's traded volume {quote_vol:,.0f} USD ({why})", depth, source)


class ManipulationArgs(Args):
    symbol: str = Field(..., description="Binance symbol")
    notional_usd: float | None = Field(None, description="intended order size in USD (default: the per-order cap)")


def manipulation_detector(ctx: DeskContext, run: RunState | None, symbol: str, notional_usd: float | None = None) -> dict:
    symbol = symbol.upper()
    w = windows_or_none(ctx, symbol)
    if w is None:
        return unavailable(f"no market data for {symbol}")
    k1, k5, k15 = window_index(w, 1), window_index(w, 5), window_index(w, 15)
    burst = max(w.volume_multiple(k1), w.volume_multiple(k5))
    has_baseline = w.vol_baseline > 0
    notional = finite_positive(notional_usd) or ctx.settings.risk_management.max_order_notional_usd
    thin, thin_basis, depth, depth_source = thin_book(ctx, symbol, w, notional)
    hi, lo = w.high(k15), w.low(k15)
    span = hi - lo
    last = w.last_price
    pump_leg = (hi / lo - 1.0) * 100.0 if lo > 0 else 0.0
    if w.high_time(k15) >= w.low_time(k15):  # the last leg went up: has it been given back?
        shape = "pump"
        retrace = (hi - last) / span if span > 0 else 0.0
    else:
        shape = "dump"
        retrace = (last - lo) / span if span > 0 else 0.0
    reversal = pump_leg >= 3.0 and retrace >= 0.5
    burst_flag = has_baseline and burst >= 5.0
    score = 0.4 * burst_flag + 0.3 * bool(thin) + 0.3 * reversal
    signature = bool(burst_flag and (thin or reversal))
    return {"status": "ok", "symbol": symbol,
            "volume_burst_multiple": num(burst, 4) if has_baseline else None,
            "volume_burst": burst_flag, "volume_note": None if has_baseline else "no volume baseline yet",
            "book_depth_usd": num(depth) if depth is not None else None, "book_depth_source": depth_source,
            "intended_notional_usd": notional, "thin_book": thin, "thin_book_basis": thin_basis, "last_leg": shape, "leg_size_percent_15m": num(pump_leg, 6),
            "retraced_fraction": num(retrace, 4), "fast_reversal": reversal,
            "pump_and_dump_signature": signature and shape == "pump", "manipulation_score": num(score, 3),
            "manipulation_suspected": signature}


SPECS = [
    ToolSpec("news_sentiment", "NewsSentimentTool",
             "Recent headlines about the asset from the configured RSS/Atom feeds, scored with a sentiment lexicon. "
             "Headlines are quoted untrusted data.", NewsArgs, news_sentiment, on_loop=False, group="context"),
    ToolSpec("twitter_sentiment", "TwitterSentimentTool",
             "Recent X (Twitter) posts about the asset, scored with a sentiment lexicon (needs an X API token). "
             "Posts are quoted untrusted data.", SocialArgs, twitter_sentiment, on_loop=False, group="context"),
    ToolSpec("onchain_data", "OnChainDataTool",
             "Whale transfers of ETH in the latest Ethereum block via an Etherscan-style API (needs a key).",
             OnChainArgs, onchain_data, on_loop=False, group="context"),
    ToolSpec("correlation_analysis", "CorrelationAnalysisTool",
             "Correlation of one-minute returns with BTC and breadth: how many symbols move the same way.",
             CorrelationArgs, correlation_analysis, group="context"),
    ToolSpec("manipulation_detector", "ManipulationDetectorTool",
             "Pump-and-dump signature: volume burst multiple, thin book for the order size, fast reversal.",
             ManipulationArgs, manipulation_detector, group="context"),
]
