"""Binance symbol names: which part is the base asset and which the quote."""

from __future__ import annotations

import re

# longest first: FDUSD before USD, USDT before USD
QUOTE_ASSETS: tuple[str, ...] = tuple(sorted(
    ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "USD", "BTC", "ETH", "BNB", "EUR", "TRY"), key=len, reverse=True))
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")  # Binance's symbols are at most 20 characters


def split_symbol(symbol: str) -> tuple[str, str] | None:
    """BTCUSDT -> ("BTC", "USDT"); None when no known quote asset ends the name."""
    for quote in QUOTE_ASSETS:
        if len(symbol) > len(quote) and symbol.endswith(quote):
            return symbol[: -len(quote)], quote
    return None


def is_symbol(text: str) -> bool:
    """An upper-case Binance symbol that ends in a known quote asset (BTCUSDT, not DATA)."""
    return bool(_SYMBOL_RE.match(text)) and split_symbol(text) is not None


def check_symbol(text: str) -> str:
    """`text` if it is a symbol (see is_symbol); otherwise ValueError saying what was expected."""
    if not is_symbol(text):
        raise ValueError(f"{text[:40]!r} is not a Binance symbol: expected upper-case letters and digits "
                         f"ending in a quote asset ({', '.join(sorted(QUOTE_ASSETS))}), e.g. BTCUSDT")
    return text
