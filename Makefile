# Set-up is part of every target: a fresh machine needs nothing but python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build that lies on this machine's disk; a CUDA torch already in the
# environment is left alone (see README, "Installing").
TORCH_SPEC ?= torch==2.13.0
RUN_ARGS ?=

.PHONY: setup run test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

run: setup
	$(PY) -m pgolf run $(RUN_ARGS)

test: setup
	$(VENV)/bin/ruff check pgolf tests benchmarks
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check pgolf tests benchmarks
	$(VENV)/bin/ruff format --check pgolf tests benchmarks

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
