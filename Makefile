# The two commands of the README. Both start from a fresh machine: they make .venv and install.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-dev run test lint

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"

run: install
	$(BIN)/petra optimize

test: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q -ra

lint: install-dev
	$(BIN)/ruff check src tests benchmarks
