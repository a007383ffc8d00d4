"""Benchmarks that cannot rot: each one runs here with --quick (no timing is asserted), and
none is named like a package it would shadow when python puts bench/ first on sys.path."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

BENCH = REPO / "bench"
BENCHMARKS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def test_every_benchmark_has_a_make_target_and_a_bench_name():
    makefile = (REPO / "Makefile").read_text()
    assert BENCHMARKS, "bench/ holds the benchmarks"
    for path in BENCHMARKS:
        assert path.name.startswith("bench_"), f"{path.name}: benchmarks are named bench_*.py"
        assert path.stem.removeprefix("bench_") in makefile.split("BENCHMARKS :=")[1].splitlines()[0].split(), \
            f"{path.name} has no `make bench-{path.stem.removeprefix('bench_')}`"


def test_no_module_in_bench_shadows_an_importable_package():
    """Run as `python bench/x.py`, bench/ is sys.path[0]: a bench/console.py hid the console package."""
    outside = [p for p in sys.path if os.path.realpath(p or ".") != os.path.realpath(BENCH)]
    for path in BENCH.glob("*.py"):
        spec = importlib.util.find_spec(path.stem) if path.stem not in sys.modules else sys.modules[path.stem].__spec__
        origin = getattr(spec, "origin", None) if spec is not None else None
        assert spec is None or (origin and os.path.realpath(origin) == os.path.realpath(path)), \
            f"bench/{path.name} would shadow {path.stem} ({origin}); path searched: {outside[:3]}..."


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_the_benchmark_runs_quick_as_its_docstring_says(path):
    out = subprocess.run([sys.executable, str(path), "--quick"], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, f"{path.name} --quick failed:\n{out.stderr[-2000:]}"
    assert "Traceback" not in out.stderr and out.stdout.strip(), f"{path.name} printed no figures"
    assert f"bench/{path.name}" in path.read_text().split('"""')[1], "its docstring gives the command that runs it"
