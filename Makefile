# nhi-nac — the two commands of a fresh machine:
#   make run    set up .venv, initialise ./.nhi-nac (database, CA, starter map), serve
#   make test   set up .venv with the test extras, lint, type-check, run every test
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint typecheck pytest bench-inventory clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

# Development defaults: RADIUS on unprivileged ports 11812/11813 (the systemd unit and
# the configuration default are 1812/1813); override with NHI_NAC_RADIUS_*_PORT.
run: $(VENV)/.installed
	$(BIN)/nhi-nac init
	NHI_NAC_RADIUS_AUTH_PORT=$${NHI_NAC_RADIUS_AUTH_PORT:-11812} \
	NHI_NAC_RADIUS_ACCT_PORT=$${NHI_NAC_RADIUS_ACCT_PORT:-11813} \
	$(BIN)/nhi-nac serve

lint: $(VENV)/.installed-test
	$(BIN)/ruff check nhi_nac pki segments tests bench

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

pytest: $(VENV)/.installed-test
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

bench-inventory: $(VENV)/.installed
	$(BIN)/python bench/inventory.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
