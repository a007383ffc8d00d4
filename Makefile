# Two commands do the whole set-up on a fresh machine:
#   make run    the console on its embedded default (sim market, paper exchange, offline agents)
#   make test   the whole test suite
# Both create .venv on first use and install the pinned set from requirements.lock.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: run test bench bench-quick venv system-deps clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "spikeguard needs Python >= 3.11, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/spikeguard $(ARGS)

system-deps:
	@bash scripts/ensure-system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

BENCHMARKS := pipeline peers instructions trading journal binance feeds console shared_breaker agents tune

bench: $(addprefix bench-,$(BENCHMARKS))

# NautilusTrader pins packages the console's set pins otherwise: its own venv, its own lock
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml requirements-bench.lock
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c requirements-bench.lock -e '.[bench]'
	touch $@

bench-peers: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python bench/bench_peers.py

bench-%: $(STAMP)
	$(BIN)/python bench/bench_$*.py

bench-quick: $(STAMP) system-deps
	@for b in $(BENCHMARKS); do echo "== bench/bench_$$b.py --quick"; $(BIN)/python bench/bench_$$b.py --quick || exit 1; done

clean-venv:
	rm -rf $(VENV)
