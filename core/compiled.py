"""The compiled hot path: which modules mypyc builds, and whether this process runs the build.

scripts/compile_hot_path.py (run by `make`) compiles HOT_MODULES into extension modules beside
their sources and writes MANIFEST, a digest of core's sources: the hot modules, and the modules
whose types they were compiled against (a compiled read of a named tuple's field is an index,
so reordering core.events.Tick must void the build). Python imports an extension module
in preference to the source beside it, so a build that no longer matches its sources would run
old code. The sources are the reference, so they run instead, all of them:
- when SPIKEGUARD_PURE_PYTHON=1 is set (CI runs the hot path's tests this way too);
- when there is no build, or its manifest does not match the sources as they are now.
All or none: the build's modules call each other natively, so a mix would hold two classes of one name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import sysconfig
from importlib.machinery import ModuleSpec
from pathlib import Path

CORE = Path(__file__).resolve().parent
HOT_MODULES = ("core.market.windows", "core.market.state", "core.detect.scanner", "core.detect.guardian",
               "core.latency", "core.engine")
BUILD_GROUP = "core.hot_path"  # mypyc's shared library: core/hot_path__mypyc.*.so
MANIFEST = CORE / "compiled.manifest"
PURE_ENV = "SPIKEGUARD_PURE_PYTHON"


def source_path(module: str) -> Path:
    return CORE.joinpath(*module.split(".")[1:]).with_suffix(".py")


def source_digest() -> str:
    """sha256 over every source file in core, and the Python that built them."""
    h = hashlib.sha256(sys.version.encode())
    for path in sorted(CORE.rglob("*.py")):
        h.update(path.relative_to(CORE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def extension_path(module: str) -> Path:
    return source_path(module).with_suffix(sysconfig.get_config_var("EXT_SUFFIX"))


def build_is_current() -> bool:
    """Every hot module built, from the sources as they are now."""
    try:
        built_from = MANIFEST.read_text().strip()
    except OSError:
        return False
    return all(extension_path(m).exists() for m in HOT_MODULES) and built_from == source_digest()


def why_pure() -> str | None:
    """Why this process runs the hot path from its sources, or None when it runs the build."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV} is set"
    if not build_is_current():
        return "no current build (make compiles it)"
    return None


class _SourcesFirst:
    """A meta-path finder that imports the hot modules from their .py files."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name not in HOT_MODULES:
            return None
        return importlib.util.spec_from_file_location(name, source_path(name))


def install() -> None:
    if why_pure() is not None and not any(isinstance(f, _SourcesFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourcesFirst())


def running() -> str:
    """'compiled (mypyc)' or 'pure Python (why)': what the loaded hot modules are, or what would
    load (for --version and the benchmarks' headers)."""
    files = [str(getattr(sys.modules[m], "__file__", "")) for m in HOT_MODULES if m in sys.modules]
    why = why_pure()
    if not files:
        return "compiled (mypyc)" if why is None else f"pure Python ({why})"
    if all(f.endswith(".py") for f in files):
        return f"pure Python ({why or 'loaded from source'})"
    return "compiled (mypyc)" if not any(f.endswith(".py") for f in files) else "mixed: " + ", ".join(files)
