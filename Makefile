# Two commands do all set-up on a fresh machine (Python 3.11 + Java 17):
#   make demo   the pipeline end to end on embedded defaults
#   make test   the test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
SHARED ?= ../shared
BIN    := $(VENV)/bin
# Re-install whenever the declared or locked dependencies change.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: setup demo demo-aws test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[spark,keras,dev]'
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)
	$(BIN)/fruits setup --weights-from $(SHARED)/models/keras --s3a-jars

demo: setup
	$(BIN)/python -m demo --images $(SHARED)/data/fruits360

demo-aws: setup
	$(BIN)/python -m demo --aws-emulated --images $(SHARED)/data/fruits360

test: setup
	$(BIN)/lint-imports  # the one-way layers (pyproject.toml [tool.importlinter])
	FRUITS_SHARED_DIR=$(abspath $(SHARED)) $(BIN)/python -m pytest

bench: setup  ## each prints ratios against a baseline measured in the same run (docs/results.md)
	$(BIN)/python bench/featurize.py
	$(BIN)/python bench/fit.py
	$(BIN)/python bench/stream.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/cost.py

lint: setup
	$(BIN)/cfn-lint infra/template.yaml

clean:
	rm -rf .fruits bench/out .pytest_cache
