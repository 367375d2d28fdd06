# fieldsync: `make run` starts the server on the embedded store, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP   := $(VENV)/.installed
NODE_DIR   := tests/clients
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
HOST ?= 127.0.0.1
PORT ?= 5984
DATA_DIR ?= ./data

.PHONY: setup run test check lint types bench clean

setup: $(PY_STAMP) $(NODE_STAMP)

$(PY_STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11+ is needed: apt-get install -y python3 python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "node and npm are needed for the PouchDB client tests: apt-get install -y nodejs npm"; exit 1; }
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

run: $(PY_STAMP)
	$(BIN)/fieldsync serve --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

test: setup
	$(BIN)/pytest -q

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(PY_STAMP)
	$(BIN)/mypy

check: lint types test

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache
