"""Binance symbol names: which part is the base asset and which the quote."""

from __future__ import annotations

# longest first: FDUSD before USD, USDT before USD
QUOTE_ASSETS: tuple[str, ...] = tuple(sorted(
    ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "USD", "BTC", "ETH", "BNB", "EUR", "TRY"), key=len, reverse=True))


def split_symbol(symbol: str) -> tuple[str, str] | None:
    """BTCUSDT -> ("BTC", "USDT"); None when no known quote asset ends the name."""
    for quote in QUOTE_ASSETS:
        if len(symbol) > len(quote) and symbol.endswith(quote):
            return symbol[: -len(quote)], quote
    return None
