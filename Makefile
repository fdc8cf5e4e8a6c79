# make demo / make test: each creates .venv on first use (then reuses it) and installs ppddpm.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.ppddpm-installed
# `make test FAST=0` runs the notebooks' long cells at full length; JOBS pytest-xdist workers
FAST   ?= 1
JOBS   ?= 2

.PHONY: demo test lint install notebooks docs figures bench compat clean

install: $(STAMP)

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[cpu,test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ppddpm demo --out runs/demo

test: lint
	PPDDPM_FAST=$(FAST) $(BIN)/python -m pytest -n $(JOBS) --dist loadgroup

# ruff with ruff.toml (pyflakes + pycodestyle, 120 columns) over the package, tests, docs and benchmarks
lint: $(STAMP)
	$(BIN)/ruff check .

# JupyterLab on notebooks/ (adds the [notebooks] extra to .venv once); the kernel is .venv's Python
notebooks: $(VENV)/.ppddpm-notebooks
	$(BIN)/jupyter lab notebooks/

$(VENV)/.ppddpm-notebooks: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[cpu,test,notebooks]"
	@touch $@

# every number and picture in README, docs/figures and the notebooks, from this version (docs/make_docs.py)
docs: $(STAMP)
	$(BIN)/python docs/make_docs.py

figures: docs

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# the quick tests against each supported paddle (3.0–3.3) and the refusal of 2.6, each in a throw-away venv
# (docs/compat.py; downloads a paddle wheel per version, minutes each; not in CI); writes README's compat block
compat: $(STAMP)
	$(BIN)/python docs/compat.py

clean:
	rm -rf $(VENV) runs .pytest_cache
