# `make demo` and `make test` each set up everything they need on a fresh Debian machine:
# a virtualenv with the package and its dev extras, and Debian's Prometheus, Alertmanager
# (promtool, amtool and the integration tests), docker-compose 1.29 (to check the compose
# file offline) and Redis (the store replicas share, in the fleet tests) packages.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Real model servers for the proxy's integration tests (KServe's model server, MLflow),
# in a virtualenv of their own: their dependency pins must not decide ours.
SERVERS_VENV  ?= .venv-servers
SERVERS_STAMP := $(SERVERS_VENV)/.installed

.PHONY: setup system-deps model-servers dashboards-schema test lint format demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

system-deps:
	@if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null \
	    || ! command -v docker-compose >/dev/null || ! command -v redis-server >/dev/null \
	    || ! command -v openssl >/dev/null || ! command -v chromium >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager docker-compose redis-server openssl chromium >/dev/null; \
	fi
	@promtool --version 2>&1 | head -1

$(SERVERS_STAMP): tests/model-servers.txt
	$(PYTHON) -m venv $(SERVERS_VENV)
	$(SERVERS_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/model-servers.txt
	touch $@

model-servers: $(SERVERS_STAMP)

# @grafana/schema (the Grafana version of docker-compose.yml) and TypeScript, pinned by
# tests/dashboards-schema/package-lock.json, for the dashboards' type-check; Node.js and npm
# from Debian when missing.
SCHEMA_DIR   := tests/dashboards-schema
SCHEMA_STAMP := $(SCHEMA_DIR)/node_modules/.installed

$(SCHEMA_STAMP): $(SCHEMA_DIR)/package.json $(SCHEMA_DIR)/package-lock.json
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    nodejs npm >/dev/null; \
	fi
	cd $(SCHEMA_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

dashboards-schema: $(SCHEMA_STAMP)

setup: $(STAMP) system-deps

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup model-servers dashboards-schema lint
	MLMON_SERVERS_VENV=$(SERVERS_VENV) $(PY) -m pytest

demo: setup
	$(PY) -m mlmon demo --config examples/mlmon.yml --history-days 22

# Rules, dashboards and the PrometheusRule from bundle/params.py (`python -m bundle --check`
# tells whether the committed files are up to date).
.PHONY: generate
generate: $(STAMP)
	$(PY) -m bundle

bench: $(STAMP)
	$(PY) -m bench
	$(PY) bench/memory.py

clean:
	rm -rf $(VENV) $(SERVERS_VENV) .pytest_cache .ruff_cache demo-data $(SCHEMA_DIR)/node_modules
