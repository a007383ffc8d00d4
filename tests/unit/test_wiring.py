"""Where orders go is decided once, from the mode, the feed, the keys and --live: testnet is
the default with Binance keys on the Binance feed; live needs all of its conditions; paper
otherwise (on live prices with --feed binance)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from core.wiring import Venue, WiringError, resolve_venue

KEYS = {"binance_api_key": SecretStr("canary-key-7f3a"), "binance_secret_key": SecretStr("canary-secret-9c1d")}


def with_(settings, mode: str = "auto", keys: bool = False):
    secrets = settings.secrets.model_copy(update=KEYS if keys else {})
    execution = settings.execution.model_copy(update={"mode": mode})
    return settings.model_copy(update={"secrets": secrets, "execution": execution})


@pytest.mark.parametrize("mode, feed, keys, venue", [
    ("auto", "sim", False, Venue("paper", "live")),
    ("auto", "sim", True, Venue("paper", "live")),  # keys, but no Binance prices to trade on
    ("auto", "binance", False, Venue("paper", "live")),  # dry run on live prices
    ("auto", "binance", True, Venue("testnet", "testnet")),  # the default with keys
    ("paper", "binance", True, Venue("paper", "live")),  # paper, asked for, wins over the keys
    ("testnet", "binance", True, Venue("testnet", "testnet")),
])
def test_the_venue(settings, mode, feed, keys, venue):
    assert resolve_venue(with_(settings, mode, keys), feed) == venue


def test_live_needs_the_mode_the_flag_the_feed_and_the_keys(settings):
    assert resolve_venue(with_(settings, "live", True), "binance", live_flag=True) == Venue("live", "live")
    for mode, feed, keys, flag, why in [
        ("live", "binance", True, False, "needs the --live flag"),
        ("auto", "binance", True, True, "--live needs execution.mode: live"),
        ("live", "sim", True, True, "needs --feed binance"),
        ("live", "binance", False, True, "needs BINANCE_API_KEY and BINANCE_SECRET_KEY"),
        ("testnet", "replay", True, False, "needs --feed binance"),
        ("testnet", "binance", False, False, "needs BINANCE_API_KEY"),
    ]:
        with pytest.raises(WiringError, match=why):
            resolve_venue(with_(settings, mode, keys), feed, live_flag=flag)


def test_no_key_is_ever_in_the_answer(settings):
    try:
        resolve_venue(with_(settings, "live", True), "sim", live_flag=True)
    except WiringError as exc:
        assert "canary" not in str(exc)
