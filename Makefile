# The two set-up commands are `make demo` and `make test` (see README.md).
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit sysdeps-demo sysdeps-test bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

sysdeps-demo:
	@bash scripts/sysdeps.sh demo

sysdeps-test:
	@bash scripts/sysdeps.sh test
	@bash scripts/vm-deps.sh

# Serves the web UI at the end when run from a terminal; prints how to otherwise.
demo: sysdeps-demo $(STAMP)
	$(VENV)/bin/patchci demo $$( [ -t 0 ] && [ -t 1 ] && echo --serve )

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest

# make test installs every prerequisite first, so a missing one fails its tests, never skips.
test: sysdeps-test $(STAMP) lint typecheck
	PATCHCI_REQUIRE_PREREQS=1 $(VENV)/bin/pytest

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) demo-data test-artifacts .mypy_cache .ruff_cache .pytest_cache
