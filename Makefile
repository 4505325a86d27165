# `make demo` and `make test` each set up everything they need on a fresh Debian machine:
# a virtualenv with the package and its dev extras, and Debian's Prometheus and
# Alertmanager packages (for promtool, amtool and the integration tests).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps test lint format demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

system-deps:
	@if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager >/dev/null; \
	fi
	@promtool --version 2>&1 | head -1

setup: $(STAMP) system-deps

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup lint
	$(PY) -m pytest

demo: setup
	$(PY) -m mlmon demo --config examples/mlmon.yml

bench: $(STAMP)
	$(PY) -m bench
	$(PY) bench/memory.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo-data
