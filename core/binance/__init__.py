"""Binance: the client both the feed (core.market.binance_feed) and the exchange
(core.trading.binance) talk through, pointed at the environment the settings choose."""
