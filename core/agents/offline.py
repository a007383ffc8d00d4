"""CrewAI, offline and lazy.

CrewAI phones home three ways unless told not to (telemetry, tracing, a version check
against the package index) and writes a kickoff database under the current directory's
name. `configure()` sets the environment that stops all of that and points its storage
at a directory we own; it must run before crewai is imported, and `load_crewai()` makes
sure it has. Importing crewai costs seconds and ~170 MB, so nothing in core.agents imports
it at module import time: call it in a thread (AgentDesk.start does, in a daemon thread)
off the UI's path.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

OFFLINE_ENV: dict[str, str] = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "OTEL_SDK_DISABLED": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
}

_lock = threading.Lock()
_crewai: ModuleType | None = None
_storage_dir: Path | None = None
_load_seconds: float | None = None


def default_storage_dir() -> Path:
    """<spikeguard data dir>/crewai (AppPaths), never ~/.local/share/<cwd name>."""
    from core.paths import AppPaths

    return AppPaths.resolve().data_dir / "crewai"


def configure(storage_dir: str | Path | None = None) -> Path:
    """Set the offline environment and CrewAI's storage folder. Safe to call repeatedly;
    the storage folder can only be chosen before crewai is imported (later calls keep the
    first folder and return it)."""
    global _storage_dir
    with _lock:
        for key, value in OFFLINE_ENV.items():
            os.environ[key] = value
        if _storage_dir is not None and ("crewai" in sys.modules):
            return _storage_dir
        path = Path(storage_dir) if storage_dir is not None else default_storage_dir()
        path = path.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        # an absolute CREWAI_STORAGE_DIR makes appdirs return exactly this folder
        os.environ["CREWAI_STORAGE_DIR"] = str(path)
        _storage_dir = path
        return path


def is_loaded() -> bool:
    return _crewai is not None


def load_seconds() -> float | None:
    """How long the one import of crewai took (None before it)."""
    return _load_seconds


class _QuietTokenEstimate(logging.Filter):
    """CrewAI warns on every call that it estimates tokens as characters / 4; once is enough."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "approximate input token count" in record.getMessage():
            if self.seen:
                return False
            self.seen = True
        return True


@contextlib.contextmanager
def _home_at(storage: Path) -> Iterator[None]:
    """CrewAI writes ~/.config/crewai and ~/.local/share/crewai/credentials while it is
    imported (its config path is fixed then): HOME points into spikeguard's storage for the
    import, so --data-dir holds everything. Our own paths were resolved long before."""
    home = storage / "home"
    home.mkdir(parents=True, exist_ok=True)
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved


def _keep_credentials_under(storage: Path) -> None:
    """CrewAI's token store looks HOME up again on each use: keep it in the storage folder."""
    try:
        from crewai_core.token_manager import TokenManager
    except ImportError:  # pragma: no cover - another crewai layout
        return
    folder = storage / "home" / ".local" / "share" / "crewai" / "credentials"

    def storage_path() -> Path:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder

    TokenManager._get_secure_storage_path = staticmethod(storage_path)


def load_crewai(storage_dir: str | Path | None = None, freeze_gc: bool = True) -> ModuleType:
    """Import crewai once (blocking: call it in a thread), offline.

    With `freeze_gc`, the objects alive after the import (crewai's ~1M: modules, pydantic
    schemas) are moved to the collector's permanent generation (gc.freeze): otherwise every
    full collection rescans them, a 100-200 ms pause of every thread, the UI's included.
    Reference counting still frees everything as usual; only cyclic garbage that exists at
    this moment is kept."""
    global _crewai, _load_seconds
    if _crewai is not None:
        return _crewai
    configure(storage_dir)
    with _lock:
        if _crewai is None:
            import time

            t0 = time.perf_counter()
            with _home_at(_storage_dir or default_storage_dir()):
                module = importlib.import_module("crewai")
                # the pieces the desk uses, imported here so the first run does not pay for them
                importlib.import_module("crewai.events")
                importlib.import_module("crewai.hooks.dispatch")
                importlib.import_module("crewai.tools")
                importlib.import_module("crewai.llms.base_llm")
            _keep_credentials_under(_storage_dir or default_storage_dir())
            logging.getLogger("crewai.llms.base_llm").addFilter(_QuietTokenEstimate())
            if freeze_gc:
                gc.freeze()
            _load_seconds = time.perf_counter() - t0
            _crewai = module
    return _crewai


__all__ = ["OFFLINE_ENV", "configure", "load_crewai", "is_loaded", "load_seconds", "default_storage_dir"]
