PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: `make serve` installs only what serving needs; everything else the dev extras.
SERVE_STAMP := $(VENV)/.installed-serve
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(SERVE_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $(SERVE_STAMP)

serve: $(SERVE_STAMP)  ## start the service on 127.0.0.1:8000 with the embedded defaults
	$(BIN)/pixelmill serve --host 127.0.0.1 --port 8000

# Two pytest processes (pytest-xdist): most of the suite waits on subprocesses, services and
# sockets, so two workers on two cores nearly halve the wall time. A test module runs whole in
# one worker (--dist loadfile): module fixtures start once, and tests of a module that read
# what an earlier one left (the fuzz run and its count) stay together.
TEST_WORKERS ?= 2
test: $(STAMP)  ## run every test (TEST_WORKERS=0 for one process)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)  ## ruff + mypy
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/ruff format --check src tests bench fuzz
	$(BIN)/mypy

bench: $(STAMP)  ## speed and memory benchmarks (prints medians and ratios)
	$(BIN)/python -m bench

FUZZ_SECONDS ?= 600
fuzz: $(STAMP)  ## coverage-guided fuzz of the image pipeline (atheris), FUZZ_SECONDS long
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(BIN)/python fuzz/run_fuzz.py

clean:
	rm -rf $(VENV) pixelmill-data .pytest_cache .mypy_cache .ruff_cache
