"""The compiled hot path (core/compiled.py): the build runs only while it matches the sources.

The test command runs the whole suite on the build and the hot path's tests again with
SPIKEGUARD_PURE_PYTHON=1, so each pass checks that it runs what it says it runs.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from core import compiled

EXT = sysconfig.get_config_var("EXT_SUFFIX")
PURE = os.environ.get(compiled.PURE_ENV, "") not in ("", "0")
PROBE = "import core.engine, core.compiled as c, sys; print(c.running()); print(sys.modules['core.engine'].__file__)"


def _files() -> dict[str, str]:
    return {m: str(importlib.import_module(m).__file__) for m in compiled.HOT_MODULES}


def test_each_pass_runs_what_it_says():
    files = _files()
    if PURE:
        assert all(f.endswith(".py") for f in files.values()), files
        assert compiled.running() == f"pure Python ({compiled.PURE_ENV} is set)"
    else:
        assert compiled.why_pure() is None, f"the build is not current: {compiled.why_pure()} (run make compile)"
        assert all(f.endswith(EXT) for f in files.values()), files
        assert compiled.running() == "compiled (mypyc)"


def _probe(root: Path, pure: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
    env["PYTHONPATH"] = str(root)
    if pure:
        env[compiled.PURE_ENV] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=root, env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.splitlines()


@pytest.fixture
def built_copy(tmp_path: Path) -> Path:
    """A copy of core with its build, as `make` left it."""
    if not compiled.build_is_current():
        pytest.fail("no current build of the hot path: run make compile (the test command does)")
    shutil.copytree(compiled.CORE, tmp_path / "core", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_a_current_build_runs_and_the_variable_turns_it_off(built_copy: Path):
    running, engine_file = _probe(built_copy, pure=False)
    assert running == "compiled (mypyc)" and engine_file.startswith(str(built_copy)) and engine_file.endswith(EXT)
    running, engine_file = _probe(built_copy, pure=True)
    assert running.startswith("pure Python") and engine_file == str(built_copy / "core" / "engine.py")


@pytest.mark.parametrize("edited", ["market/windows.py", "events.py"])
def test_a_build_older_than_its_sources_never_runs(built_copy: Path, edited: str):
    """An edit to a hot module, or to a module whose types it was compiled against, voids the
    whole build: an extension module beside its source would otherwise run the old code."""
    source = built_copy / "core" / edited
    source.write_text(source.read_text() + "\n# edited after the build\n")
    running, engine_file = _probe(built_copy, pure=False)
    assert running == "pure Python (no current build (make compiles it))"
    assert engine_file == str(built_copy / "core" / "engine.py")


def test_the_version_says_which_hot_path_runs():
    from tests.conftest import run_cli

    out = run_cli("--version")
    expected = f"pure Python ({compiled.PURE_ENV} is set)" if PURE else "compiled (mypyc)"
    assert out.returncode == 0 and f"engine hot path: {expected}" in " ".join(out.stdout.split())


def test_a_build_missing_a_module_never_runs(built_copy: Path):
    """All or none: the rest of the build would call its own copy of the missing module's classes."""
    (built_copy / "core" / "market" / f"windows{EXT}").unlink()
    running, engine_file = _probe(built_copy, pure=False)
    assert running == "pure Python (no current build (make compiles it))"
    assert engine_file == str(built_copy / "core" / "engine.py")
