# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: running needs only the package; the tests also need the test extras (a browser driver,
# three provider SDKs, hypothesis, ...), which take most of the install time, so `make run` skips them.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# Where `make run` serves: `make run PORT=8080`, `make run HOST=0.0.0.0`.
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench bench-servers clean chromium settings-doc

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e .
	@touch $(RUN_STAMP)

# The test install is a superset of the run install, so it satisfies `make run` too.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test]'
	@touch $(TEST_STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/alumia db upgrade
	$(BIN)/alumia demo --host $(HOST) --port $(PORT)

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: $(TEST_STAMP) lint chromium
	$(BIN)/pytest -q

# The browser tests drive Debian's Chromium; install it when it is missing (these machines run as root).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The full comparison (about 10-15 minutes); e.g. `make bench BENCH_ARGS=--quick` for a fast look.
BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): pyproject.toml | $(TEST_STAMP)
	$(PIP) -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/gateway_overhead.py $(BENCH_ARGS)

# Which HTTP server the gateway runs on, by measurement (about 3 minutes).
bench-servers: $(BENCH_STAMP)
	cd bench && ../$(BIN)/python server_stacks.py

clean:
	rm -rf $(VENV) .alumia .pytest_cache .ruff_cache .mypy_cache bench/.litellm-venv

# docs/settings.md is generated from src/alumia/config.py (a test fails when it is out of date).
settings-doc: $(RUN_STAMP)
	$(BIN)/alumia settings --markdown > docs/settings.md
