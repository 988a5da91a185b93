# Two commands do all set-up on a fresh machine (Python 3.11 + Java 17):
#   make demo   the pipeline end to end on embedded defaults
#   make test   the test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
SHARED ?= ../shared
BIN    := $(VENV)/bin
# Re-install whenever the declared or locked dependencies change.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
# checkov has its own venv: its dependency tree conflicts with the project's pins (constraints-lint.txt).
LINT_VENV  ?= .venv-lint
LINT_STAMP := $(LINT_VENV)/.installed-$(shell cat constraints-lint.txt | sha256sum | cut -c1-12)
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: setup native-blas browser demo demo-aws test quick bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[spark,keras,app,dev]'
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP) native-blas browser
	$(BIN)/fruits setup --weights-from $(SHARED)/models/keras --s3a-jars

# Spark ML's PCA decomposes a 1280x1280 covariance with LAPACK through netlib, which loads the
# system's liblapack.so.3 when there is one (OpenBLAS here: ~0.5 s) and falls back to Java
# otherwise (~5 s, the largest step of a fit). Best effort, as root with apt (CI and the dev
# machines); without it everything works, slower: `fruits fit --json` says which ("lapack").
native-blas:
	@if ldconfig -p | grep -q 'liblapack.so.3 '; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq libopenblas0-pthread >/dev/null)) || \
	  echo "warning: could not install libopenblas0-pthread: Spark ML uses its Java LAPACK (slower fits)"; \
	else echo "note: no system LAPACK (liblapack.so.3): Spark ML uses its Java LAPACK (slower fits)"; fi

# The app's browser tests and the demo's app step drive Debian's chromium with Playwright (Playwright
# cannot download its own browsers here). Best effort like native-blas: as root with apt (CI and the
# dev machines) it installs; elsewhere those steps are skipped, saying why.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)) || \
	  echo "warning: could not install chromium: the app's browser tests and the demo's app step are skipped"; \
	else echo "note: no /usr/bin/chromium (apt-get install chromium): the app's browser tests are skipped"; fi

demo: setup
	$(BIN)/python -m demo --images $(SHARED)/data/fruits360

demo-aws: setup
	$(BIN)/python -m demo --aws-emulated --images $(SHARED)/data/fruits360

test: setup
	$(BIN)/ruff check  # lint (pyproject.toml [tool.ruff]): a second or two, before the suite's minutes
	$(BIN)/ruff format --check
	$(BIN)/lint-imports  # the one-way layers (pyproject.toml [tool.importlinter])
	FRUITS_SHARED_DIR=$(abspath $(SHARED)) $(BIN)/python -m pytest

quick: setup  ## the inner loop: lint, layers and every test not marked slow (no cluster, browser, kill/restart or demo runs)
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/lint-imports
	FRUITS_SHARED_DIR=$(abspath $(SHARED)) $(BIN)/python -m pytest -m "not slow" -x

bench: setup  ## each prints ratios against a baseline measured in the same run (docs/results.md)
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/featurize.py
	$(BIN)/python bench/fit.py
	$(BIN)/python bench/stream.py
	$(BIN)/python bench/lake.py
	$(BIN)/python bench/commits.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/app.py
	$(BIN)/python bench/cost.py
	$(BIN)/python bench/app_lookup.py
	$(BIN)/python bench/knownmap.py
	$(BIN)/python bench/scale.py  # ~30 min here: 10,000 images, 3 configurations

$(LINT_STAMP): constraints-lint.txt
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints-lint.txt checkov
	rm -f $(LINT_VENV)/.installed-* && touch $@

lint: setup $(LINT_STAMP)  ## the Python (ruff: lint and format), the template (cfn-lint, then checkov: every remaining finding is justified in the template)
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/cfn-lint infra/template.yaml
	$(LINT_VENV)/bin/checkov -f infra/template.yaml --framework cloudformation --skip-download --compact --quiet

clean:
	rm -rf .fruits bench/out .pytest_cache
