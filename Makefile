# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench clean chromium

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/alumia db upgrade
	$(BIN)/alumia demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

test: lint chromium
	$(BIN)/pytest -q

# The browser tests drive Debian's Chromium; install it when it is missing (these machines run as root).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The full comparison (about 10-15 minutes); e.g. `make bench BENCH_ARGS=--quick` for a fast look.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python bench/gateway_overhead.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .alumia .pytest_cache .ruff_cache bench/.litellm-venv
