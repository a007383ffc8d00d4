"""Compile the engine's hot path with mypyc, in place, and record what was compiled.

Run by `make` before the console or the tests start; it does nothing when the build is current.
core/compiled.py says which modules, and decides at import whether the build or the sources run.
When the build cannot be made (no C compiler, a type error mypyc refuses) this prints one line
that says so; the console then runs the pure-Python path (exit 0), and with --required, as the
test command asks, it fails (exit 1).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.compiled import BUILD_GROUP, HOT_MODULES, MANIFEST, build_is_current, source_digest, source_path  # noqa: E402


def _build() -> str | None:
    """Build in place; why not, or None."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc}: install gcc)"
    from mypyc.build import mypycify
    from setuptools import setup

    os.chdir(REPO)
    MANIFEST.unlink(missing_ok=True)  # a failed build leaves no manifest: the sources run
    digest = source_digest()  # of the sources as compiled
    sources = [str(source_path(m).relative_to(REPO)) for m in HOT_MODULES]
    print(f"compiling the hot path with mypyc: {', '.join(sources)}", file=sys.stderr)
    try:
        setup(name="spikeguard-hot-path", ext_modules=mypycify(sources, opt_level="3", group_name=BUILD_GROUP),
              script_args=["--quiet", "build_ext", "--inplace", "--build-temp", "build/mypyc"])
    except SystemExit as exc:  # mypyc and distutils report a failure by exiting, after printing it
        return f"mypyc failed ({exc.code})"
    MANIFEST.write_text(digest + "\n")
    return None


def main() -> int:
    required = "--required" in sys.argv[1:]
    if build_is_current():
        return 0
    why = _build()
    if why is None:
        return 0
    print(f"hot path not compiled: {why}; the engine runs as pure Python", file=sys.stderr)
    return 1 if required else 0


if __name__ == "__main__":
    sys.exit(main())
