# The two commands a newcomer needs:
#   make up     set up and run the whole system on its embedded default
#   make test   set up and run the test suite (what .ci/run calls)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up test test-fast lint typecheck schemas notebooks lab soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)
	$(VENV)/bin/clipstream up

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not integration and not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

schemas: $(STAMP)
	$(VENV)/bin/clipstream export-schemas

# The notebooks over the lake, run headless with their plots into var/notebooks/
# (after `make up` has run a while); `make lab` opens them in JupyterLab.
notebooks: $(STAMP)
	$(PY) -m analytics.notebooks --out var/notebooks

lab: $(STAMP)
	$(PY) -m pip install -e '.[notebooks]'
	$(VENV)/bin/jupyter lab notebooks/

# Ten minutes of mixed load on the embedded stack, then checks (docs/performance.md, "Soak").
soak: $(STAMP)
	$(PY) bench/soak.py --minutes 10

clean:
	rm -rf var
