# Two entry points a fresh machine needs: `make demo` and `make test`.
# torch is installed first and pinned: an unpinned torch pulls several GB of CUDA wheels.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: demo test bench lint venv install install-dev clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The demo owns runs/g2p-quick and re-trains it from scratch each time.
demo: install
	rm -rf runs/g2p-quick
	$(BIN)/seqformer train g2p-cmudict-quick --out runs/g2p-quick

test: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

# Speed side by side with transformers (and CTranslate2 if installed), appended to
# benchmarks/RESULTS.md; minutes, not part of the tests.
bench: install-dev
	cd benchmarks && ../$(BIN)/python bench.py

lint: install-dev
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info
