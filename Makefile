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

.PHONY: setup init run test check lint types bench clean system-run system-test readme-settings

# System libraries: zbar decodes barcodes (server and tests); Debian's chromium
# drives the browser tests; Debian's nginx runs deploy/nginx.conf (the compose
# file's TLS proxy) in tests/clients/test_proxy_topology.py.  Installed with
# apt-get when we are root, else we stop and print the exact command.
RUN_SYSTEM_PKGS  := libzbar0
TEST_SYSTEM_PKGS := libzbar0 chromium nginx

define ensure_system
	@missing=""; \
	for pkg in $(1); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq -o DPkg::Lock::Timeout=300 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing"; \
	    echo "run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

system-run:
	$(call ensure_system,$(RUN_SYSTEM_PKGS))

system-test:
	$(call ensure_system,$(TEST_SYSTEM_PKGS))

setup: $(PY_STAMP) $(NODE_STAMP)

$(PY_STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11+ is needed: apt-get install -y python3 python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# npm ci --ignore-scripts: the only install scripts are leveldown's (it ships prebuilt
# binaries) and sqlite3's (a C++ build of about a minute, for pouchdb-server --sqlite,
# which the tests do not use: they run it --in-memory).
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "node and npm are needed for the PouchDB client tests: apt-get install -y nodejs npm"; exit 1; }
	cd $(NODE_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

# The only commands that create a data dir: init (then stops), serve (then serves).
init: $(PY_STAMP)
	$(BIN)/fieldsync init --data-dir $(DATA_DIR)

run: system-run $(PY_STAMP)
	$(BIN)/fieldsync serve --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

# The suite runs on every core (pytest-xdist; at most 4 workers, since a test may run
# servers, PouchDB and a browser at once): on two cores it takes about half as long.
# Bytecode is written even where PYTHONDONTWRITEBYTECODE is set (container images set
# it): each test server and CLI call is a new Python process, and compiling fieldsync's
# modules again costs every one of them about 0.7 s.
TEST_WORKERS ?= auto

test: system-test setup
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -n $(TEST_WORKERS) --maxprocesses=4

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(PY_STAMP)
	$(BIN)/mypy

check: lint types test

# Both document stores side by side (BENCH_BACKEND=sqlite|couchdb|both; both by default
# when a CouchDB is at hand: BENCH_COUCHDB_URL=http://admin:pw@host:5984, else pouchdb-server
# from tests/clients). BENCH_QUICK=1 divides every size by 10; see bench/run.py for the rest.
bench: system-test setup
	$(BIN)/python -m bench

# The README's settings table, made from the code (tests/sync/test_settings.py checks it).
readme-settings: $(PY_STAMP)
	$(BIN)/python -m sync.settings README.md

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache
