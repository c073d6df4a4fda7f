# The two front doors: `make run` and `make test`. Each sets up what it needs itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit setup system-packages triton-env triton bench-ingest \
	bench-inference bench-pipeline screenshots clean ohif

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed, found " + sys.version' 
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || bash scripts/ensure-system-packages.sh python3-venv
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

system-packages:
	bash scripts/ensure-system-packages.sh

# The OHIF Viewer's built app (npm @ohif/app) for tests/viewer/, cached in .cache/ohif/.
ohif:
	bash scripts/ensure-ohif.sh >/dev/null

# Triton Inference Server (from the nvidia-pytriton wheel) in its own venv: it needs numpy<2.
triton-env: setup
	bash triton_models/setup_triton_env.sh

triton: triton-env
	$(BIN)/pacs-gateway triton

run: setup triton-env
	@echo "Gateway: DICOM on port 11112 (AE PACSGATEWAY), data in ./data. When it is up, in"
	@echo "another terminal, send a phantom study through it and check the SEG and SR:"
	@echo "  .venv/bin/pacs-gateway selftest --config deploy/gateway.local.toml"
	@echo "or send your own: storescu -aec PACSGATEWAY 127.0.0.1 11112 FILE.dcm"
	$(BIN)/pacs-gateway run --config deploy/gateway.local.toml

lint: setup
	$(BIN)/ruff check gateway workers migrations tests bench triton_models
	$(BIN)/ruff format --check gateway workers migrations tests bench triton_models

typecheck: setup
	$(BIN)/mypy

test: setup system-packages triton-env ohif lint typecheck
	PACS_GATEWAY_TEST_POSTGRES_URL=$$(bash scripts/ensure-postgres.sh gateway_test) \
		$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench-ingest: setup system-packages
	$(BIN)/python bench/ingest/bench_ingest.py

bench-inference: triton-env
	$(BIN)/python bench/inference/bench_inference.py

# Refresh docs/screenshots/ from the browser tests.
screenshots: setup system-packages triton-env ohif
	PACS_GATEWAY_SAVE_SCREENSHOTS=1 PACS_GATEWAY_TEST_POSTGRES_URL=$$(bash scripts/ensure-postgres.sh gateway_test) \
		$(BIN)/python -m pytest -q tests/web/test_browser.py tests/web/test_triton.py \
		tests/web/test_browser_dashboard.py tests/web/test_browser_model_watch.py -k sqlite
	PACS_GATEWAY_SAVE_SCREENSHOTS=1 PACS_GATEWAY_TEST_POSTGRES_URL=$$(bash scripts/ensure-postgres.sh gateway_test) \
		$(BIN)/python -m pytest -q tests/viewer

bench-pipeline: triton-env system-packages
	$(BIN)/python bench/pipeline/bench_pipeline.py

clean:
	rm -rf $(VENV) .venv-triton data .mypy_cache .ruff_cache .pytest_cache
