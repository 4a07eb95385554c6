# Two commands for a newcomer: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench chaos install services clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

install: $(STAMP)

services: install
	@PYTHON=$(BIN)/python scripts/ensure-services.sh

# The demo's workers use sealed credentials only: whatever the credential store
# holds (rows under another fleet key, say) cannot stop them, so no migration either.
demo: services
	$(BIN)/llm-fleet demo

test: services lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: services
	$(BIN)/python -m bench.run

# The full chaos runs (300 streamed requests, 40 in flight, three runs each on one
# node and on a three-node cluster); results in bench/results/chaos.json.
chaos: install
	$(BIN)/python -m tests.chaos

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
