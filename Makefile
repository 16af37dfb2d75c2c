# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-slow test-all lint bench clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(VENV)/.core $@

## make demo: install, then run a real tuning job (scikit-learn model, bundled dataset, 2 in parallel)
demo: $(VENV)/.core
	$(PY) examples/demo.py

## make test: install with the dev extras, then run the test suite (slow tests deselected)
test: $(VENV)/.dev
	$(PY) -m pytest -q

## make test-slow: only the slow quality and stress tests
test-slow: $(VENV)/.dev
	$(PY) -m pytest -q -m slow

test-all: $(VENV)/.dev
	$(PY) -m pytest -q -m "slow or not slow"

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check amtlib tests examples benchmarks
	$(VENV)/bin/ruff format --check amtlib tests examples benchmarks
	$(VENV)/bin/mypy

bench: $(VENV)/.dev
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
