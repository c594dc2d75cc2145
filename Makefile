# The two set-up commands: `make run` starts a server, `make test` runs the whole test suite.
# Both create .venv when it is missing and reinstall the project only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./modelyard-data

# Debian packages the test suite needs, installed with apt-get when missing: chromium for the
# UI's browser tests (Playwright drives /usr/bin/chromium; it never downloads a browser).
SYSTEM_PACKAGES := chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Test files run in this many processes (pytest-xdist, a file per process at a time): most tests
# wait on a server process; two cut the suite by a third on a 2-core machine. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

.PHONY: run test bench screenshots system-packages services

run: $(VENV)/.installed
	$(BIN)/modelyard server --host 127.0.0.1 --port 5000 --data-dir $(DATA_DIR)

test: $(VENV)/.installed-test system-packages services
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# The tracking benchmark against MLflow 3.17.2; pass options as BENCH_ARGS="--scale 0.1 --backends sqlite".
bench: $(VENV)/.installed-test services
	$(BIN)/python bench/tracking.py $(BENCH_ARGS)

# The README's screenshots, taken by the browser tests of the UI.
screenshots: $(VENV)/.installed-test system-packages
	MODELYARD_SCREENSHOTS=docs/screenshots $(BIN)/pytest tests/test_ui_browser.py -q

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamp files: pip runs again only when pyproject.toml is newer than the last install.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

system-packages:
	@missing=""; \
	for pkg in $(SYSTEM_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi

# The tests and the benchmark use PostgreSQL on 127.0.0.1:5432; start the machine's cluster if it stopped.
services:
	@if command -v pg_ctlcluster >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
	fi
