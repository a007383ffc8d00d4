"""A local Binance for the tests (see server.py)."""

from tests.fakes.binance.server import FakeBinance, FakeSymbol

__all__ = ["FakeBinance", "FakeSymbol"]
