# Two commands do the whole set-up on a fresh machine:
#   make run    the console on its embedded default (sim market, paper exchange, offline agents)
#   make test   the whole test suite
# Both create .venv on first use and install the pinned set from requirements.lock, and compile
# the engine's hot path with mypyc (core/compiled.py; without a compiler the console runs it as
# pure Python, and the tests fail).

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: run test test-pure compile bench bench-quick venv system-deps clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "spikeguard needs Python >= 3.11, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev,compile]'
	@touch $(STAMP)

# cheap when the build is current: it compares a digest of core's sources
COMPILE := $(BIN)/python scripts/compile_hot_path.py

compile: $(STAMP)
	@$(COMPILE) --required

run: $(STAMP)
	@$(COMPILE)
	$(BIN)/spikeguard $(ARGS)

system-deps:
	@bash scripts/ensure-system-deps.sh

# the whole suite on the compiled hot path, then the hot path's own tests on its pure-Python sources
PURE_TESTS := tests/unit tests/integration/test_replay_golden.py tests/integration/test_replay_quality.py \
	tests/integration/test_protection_quality.py tests/integration/test_shadow.py
test: compile system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-pure

test-pure: $(STAMP) system-deps
	SPIKEGUARD_PURE_PYTHON=1 $(BIN)/python -m pytest -q $(PURE_TESTS)

BENCHMARKS := pipeline peers instructions trading journal binance feeds console shared_breaker agents tune

bench: $(addprefix bench-,$(BENCHMARKS))

# NautilusTrader pins packages the console's set pins otherwise: its own venv, its own lock
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml requirements-bench.lock
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c requirements-bench.lock -e '.[bench]'
	touch $@

bench-peers: $(BENCH_VENV)/.installed compile
	$(BENCH_VENV)/bin/python bench/bench_peers.py

bench-%: compile
	$(BIN)/python bench/bench_$*.py

bench-quick: compile system-deps
	@for b in $(BENCHMARKS); do echo "== bench/bench_$$b.py --quick"; $(BIN)/python bench/bench_$$b.py --quick || exit 1; done

clean-venv:
	rm -rf $(VENV)
