"""Agent desk test rig: real CrewAI objects, offline, in throwaway directories.

- HOME and CREWAI_STORAGE_DIR point at a temp dir before crewai is imported, and crewai is
  imported once per test session (it costs seconds).
- Sockets may only connect to the loopback interface: nothing here touches the internet.
- A session over a list feed with a hand-driven wall clock, and a started AgentDesk.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from core.config import load_config
from core.events import ReasoningLine
from core.session import Session
from tests.helpers import ListFeed, path

WALL0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class Clock:
    def __init__(self, t_ms: int = WALL0_MS) -> None:
        self.t = t_ms

    def __call__(self) -> int:
        return self.t


# ---------------------------------------------------------------------- no internet
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback_only(address: Any) -> None:
    if not isinstance(address, tuple):  # unix sockets
        return
    host = address[0]
    if host in ("localhost", "", None):
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConnectionRefusedError(f"test network guard: no connections outside 127.0.0.1 (tried {address!r})")


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    _loopback_only(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    _loopback_only(address)
    return _real_connect_ex(self, address)


@pytest.fixture(scope="package", autouse=True)
def _offline_crewai(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """For this package only: HOME and CrewAI's storage in a temp dir, crewai imported once.
    The desk shortens the GIL switch interval when it starts; it is restored afterwards."""
    switch_interval = sys.getswitchinterval()
    root = tmp_path_factory.mktemp("crewai-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("HOME", str(root))
    mp.setenv("CREWAI_STORAGE_DIR", str(root / "storage"))
    for var in ("X_BEARER_TOKEN", "TWITTER_BEARER_TOKEN", "ETHERSCAN_API_KEY", "OPENAI_API_KEY",
                "ANTHROPIC_API_KEY", "OPENAI_BASE_URL"):
        mp.delenv(var, raising=False)
    from core.agents import offline

    offline.configure(root / "storage")
    offline.load_crewai(root / "storage")
    yield
    mp.undo()
    sys.setswitchinterval(switch_interval)


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)


# ---------------------------------------------------------------------- settings and sessions
def make_settings(**crew: Any) -> Any:
    base = load_config(env={}, dotenv_paths=[]).settings
    defaults = {"max_runs_per_minute": 1000}
    defaults.update(crew)
    return base.model_copy(update={"crew": base.crew.model_copy(update=defaults)})


def make_session(settings: Any = None, clock: Clock | None = None) -> Session:
    s = Session(settings or make_settings(), ListFeed(), wall_clock=clock or Clock())
    s.desk_enabled = False  # the desk under test answers spikes, not the rules floor
    return s


def dump_spike(session: Session) -> Any:
    """Market history then a 4% one-minute flush in SOLUSDT (as tests/console/conftest.py)."""
    session.engine.process(path("BTCUSDT", [(0, 100_000.0), (20, 100_000.0)], step_ms=5000))
    session.engine.process(path("SOLUSDT", [(0, 100.0), (20, 100.0), (20.5, 96.0)], step_ms=5000))
    [spike] = [s for s in session.engine.spikes if s.symbol == "SOLUSDT"]
    return spike


class Lines:
    """Every ReasoningLine the session's bus delivered."""

    def __init__(self, session: Session) -> None:
        self.queue = session.bus.subscribe()
        self.seen: list[ReasoningLine] = []

    def drain(self) -> list[ReasoningLine]:
        while not self.queue.empty():
            ev = self.queue.get_nowait()
            if isinstance(ev, ReasoningLine):
                self.seen.append(ev)
        return self.seen

    def for_run(self, run_id: str) -> list[ReasoningLine]:
        return [ln for ln in self.drain() if ln.run_id == run_id]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def session(clock: Clock) -> Session:
    import asyncio

    s = make_session(clock=clock)
    s.bus.bind_loop(asyncio.get_running_loop())
    return s


@pytest.fixture
async def desk(session: Session, tmp_path: Any) -> Any:
    from core.agents.desk import AgentDesk

    d = AgentDesk(session, session.settings, None, session.bus, tmp_path / "crewai", dedupe_seconds=0)
    await d.start()
    yield d
    await d.close()


# ---------------------------------------------------------------------- a tiny local HTTP server
class LocalHTTP:
    """Serves fixed bodies by path on 127.0.0.1 (RSS feeds, fake third-party APIs); records requests."""

    def __init__(self, routes: dict[str, tuple[int, str, bytes]]) -> None:
        self.routes = routes
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                outer.requests.append({"path": self.path, "headers": dict(self.headers)})
                route = outer.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                status, ctype, body = route
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "LocalHTTP":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def rss(*titles: str) -> bytes:
    items = "".join(f"<item><title>{t}</title><description>{t}</description>"
                    f"<pubDate>Thu, 01 Jan 2026 00:00:00 GMT</pubDate></item>" for t in titles)
    return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>crypto news</title>'
            f"<link>http://example.invalid/</link><description>test</description>{items}</channel></rss>").encode()



def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """CrewAI's own deprecation warnings (function_calling_llm, multimodal, ...) are not ours to fix."""
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))
            item.add_marker(pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"))
