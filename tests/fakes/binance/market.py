"""Placeholder until the market half of the fake Binance lands (ping, time, exchangeInfo,
klines, depth and the streams): the trading half serves ping, time and exchangeInfo
meanwhile."""


def install(server):
    return None
