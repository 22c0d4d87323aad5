# fastgen. `make demo` and `make test` work from a fresh clone: they create .venv, install the pinned
# dependencies, build fastgen._C (C++ CPU kernels), then train the demo or run the tests. A second run rebuilds
# only what changed.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CUDA_VENV ?= .venv-cuda
CUDA_PY := $(CUDA_VENV)/bin/python
CUDA_TORCH ?= torch==2.14.1
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda) $(patsubst %/bin/nvcc,%,$(shell command -v nvcc)))
export MAX_JOBS ?= 2

CPU_SOURCES := $(wildcard csrc/cpu/*.cpp csrc/cpu/*.h csrc/common/*.h csrc/cuda/*.cuh csrc/cuda/*.h)
CUDA_SOURCES := $(wildcard csrc/cuda/*.cu csrc/cuda/*.cuh csrc/cuda/*.h csrc/common/*.h)

.PHONY: demo test build bench cuda-check compat-check info clean fuzz

# Trains a class-conditional Gated PixelCNN on the bundled digits (about 3 minutes on 2 cores),
# prints test bits/dim and writes a sample grid.
demo: build
	$(PY) -m fastgen demo

test: build
	FASTGEN_REQUIRE_EXT=1 $(PY) -m pytest -q

build: build/.cpu-ext

# Long fuzzing of every public entry point: whichever tests/test_fuzz_*.py exist (the ops', the
# CLI's), FUZZ_CASES random bad or extreme inputs per entry point (make test runs 100). The ops'
# counts per entry point go to bench/results/fuzz-ops-<machine>.txt.
FUZZ_CASES ?= 1000
FUZZ_MACHINE ?= $(shell lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | tr 'A-Z' 'a-z' | sed -E 's/\((r|tm)\)//g' \
	| awk '{print $$1 "-" $$2}')-$(shell nproc)-threads
fuzz: build
	FASTGEN_REQUIRE_EXT=1 FASTGEN_FUZZ_CASES=$(FUZZ_CASES) FASTGEN_FUZZ_OPS_OUT=bench/results/fuzz-ops-$(FUZZ_MACHINE).txt \
		$(PY) -m pytest -q -s $(wildcard tests/test_fuzz_*.py)

bench: build
	$(PY) -m bench

info: build
	$(PY) -m fastgen info

$(VENV)/.installed: requirements-dev.txt requirements-peers.txt pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-peers.txt
	FASTGEN_NO_EXT=1 $(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

build/.cpu-ext: $(VENV)/.installed $(CPU_SOURCES)
	FASTGEN_CUDA=0 $(PY) setup.py -q build_ext --inplace --build-temp build/cpu-temp
	touch $@

# Builds the whole extension with CUDA (sm_80, sm_90) against a CUDA build of torch in its own
# environment, so compile and link errors in CUDA code fail here without a GPU; loads the library,
# prints the register/spill report, and compiles every Triton kernel for sm_80 and sm_90.
cuda-check: $(CUDA_VENV)/.installed $(CPU_SOURCES) $(CUDA_SOURCES)
	mkdir -p build
	# The CUDA objects are always recompiled: ptxas prints the register/spill report only then.
	rm -rf build/cuda-lib/fastgen/_C*.so build/cuda-temp/csrc/cuda
	CUDA_HOME=$(CUDA_HOME) FASTGEN_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" \
		$(CUDA_PY) setup.py build_ext --build-lib build/cuda-lib --build-temp build/cuda-temp \
		> build/cuda-build.log 2>&1 || { grep -E -A4 "error|Error" build/cuda-build.log | head -80; exit 1; }
	$(CUDA_PY) tools/cuda_check.py --log build/cuda-build.log --lib build/cuda-lib

# Compiles every C++ CPU source against the headers of the oldest supported torch, which builds extensions as C++17 and holds autograd nodes in
# std::shared_ptr; the pinned torch builds as C++20. Syntax and templates only: nothing is linked.
OLDEST_TORCH ?= torch==2.11.0
compat-check: $(VENV)/.installed
	rm -rf build/compat && mkdir -p build/compat
	$(PY) -m pip download -q --no-deps --only-binary=:all: $(OLDEST_TORCH) -d build/compat
	cd build/compat && unzip -q torch-*.whl 'torch/include/*'
	inc=build/compat/torch/include; py_inc=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['include'])"); \
	printf '%s\n' csrc/cpu/*.cpp | xargs -P $(MAX_JOBS) -I{} \
		g++ -std=c++17 -fsyntax-only -fopenmp -I$$inc -I$$inc/torch/csrc/api/include -I$$py_inc {}
	@echo "compat-check: csrc/cpu/*.cpp compile against $(OLDEST_TORCH) headers (C++17)"

$(CUDA_VENV)/.installed: requirements-dev.txt
	test -x $(CUDA_PY) || $(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_PY) -m pip install -q $(CUDA_TORCH) ninja setuptools wheel $$(grep -E '^numpy==' requirements-dev.txt)
	FASTGEN_NO_EXT=1 $(CUDA_PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

clean:
	rm -rf build fastgen/_C*.so *.egg-info
