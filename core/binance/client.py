"""One way to build python-binance's AsyncClient and socket manager for an environment.

The environment's URLs come from the settings (`binance.testnet`, `binance.live`), so the
same code talks to the testnet, to live Binance, or to the tests' local fake server; python-
binance reads its URLs from instance attributes (FIELD-NOTES: pointing it at a local server).
Keys are optional: without them only public market data is available.
"""

from __future__ import annotations

from typing import Any

from core.settings import BinanceEndpoints, BinanceSettings


def sapi_url(api_url: str) -> str:
    """The /sapi base of an environment whose REST base is .../api."""
    return api_url[: -len("/api")] + "/sapi" if api_url.endswith("/api") else api_url.rstrip("/") + "/sapi"


async def open_client(settings: BinanceSettings, endpoints: BinanceEndpoints, api_key: str | None = None,
                      api_secret: str | None = None) -> Any:
    """An AsyncClient on `endpoints` (its create() pings and reads the server time). The
    caller closes it with `await client.close_connection()`."""
    from binance import AsyncClient

    class EnvironmentClient(AsyncClient):
        API_URL = endpoints.api_url
        MARGIN_API_URL = sapi_url(endpoints.api_url)
        FUTURES_URL = endpoints.futures_api_url
        REQUEST_TIMEOUT = settings.request_timeout_seconds
        REQUEST_RECVWINDOW = settings.recv_window_ms

    return await EnvironmentClient.create(api_key, api_secret)


def socket_manager(client: Any, endpoints: BinanceEndpoints, queue_size: int = 1000) -> Any:
    """A BinanceSocketManager streaming from `endpoints`."""
    from binance import BinanceSocketManager

    manager = BinanceSocketManager(client, max_queue_size=queue_size)
    manager.STREAM_URL = endpoints.stream_url
    manager.FSTREAM_URL = endpoints.futures_stream_url
    return manager


__all__ = ["open_client", "sapi_url", "socket_manager"]
