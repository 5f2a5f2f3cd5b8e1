"""KubeRay objects as plain dicts: the training RayJob and the classifier RayService (``ray.io/v1``, KubeRay v1.7).

Pure builders: no cluster access, no settings read here. ``harmguard.k8s.manifests`` renders them into
``manifests/kuberay/``; the RayJob launcher (``harmguard.k8s.rayjob``) creates the same RayJob through the Kubernetes
API. ``harmguard.k8s.schemas.validate_manifest`` checks either against the pinned CRDs. Layout follows the upstream
samples (ray-project/kuberay ``ray-operator/config/samples``): a head that runs no work (``num-cpus: 0``), one worker
group, every container hardened by ``harmguard.k8s.common``.

The control plane is closed three ways (``harmguard.k8s.exposure`` refuses a manifest that opens it):

- **Ray token authentication** (Ray >= 2.52, KubeRay ``authOptions``): every Ray RPC and the dashboard/Jobs API
  require the cluster's token; KubeRay injects ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` (from a Secret, key
  ``auth_token``) into every Ray container and the RayJob submitter. The dashboard still listens on ``0.0.0.0``:
  the operator reads job and Serve status through it, so it is closed by the token and the NetworkPolicies.
- **Labels the NetworkPolicies select on** (``harmguard.k8s.network``): Ray nodes carry ``harmguard.io/ray-node``,
  a RayJob's submitter ``harmguard.io/ray-client: submitter``.
- **One identity per role**: the RayService runs as its own ServiceAccount (Workload Identity) and mounts no GCS key;
  a training RayJob mounts the GCS key (when one is configured) on its head and workers only, not the submitter.

The RayService keeps the traffic record (``harmguard.monitoring.traffic``): its serve config sets
``ServeArgs.traffic``, and its Ray containers (not the autoscaler, and no training pod) mount the item-id key from
the Secret ``harmguard-item-key`` (key ``item-id.key``) read-only at ``HARMGUARD_ITEM_KEY_FILE``. The volume is
``optional``: without the Secret the pods still start and serve, and each ingress replica says once that it records
nothing (a guessable id is never used instead). Create the Secret with 32 random bytes, hex (the key is stripped)::

    kubectl -n NAMESPACE create secret generic harmguard-item-key --from-literal=item-id.key="$(openssl rand -hex 32)"
"""

from __future__ import annotations

import importlib.metadata
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from harmguard.k8s.common import (
    DASHBOARD_PORT,
    GCS_MOUNT_PATH,
    GCS_PORT,
    GPU_RESOURCE,
    METRICS_PORT,
    PART_OF,
    RAY_CLIENT_LABEL,
    RAY_NODE_LABEL,
    SERVE_PORT,
    SUBMITTER,
    gcs_credentials,
    pod_security_context,
    resources,
    restricted_security_context,
    settings_env_from,
)
from harmguard.monitoring.keys import KEY_FILE_ENV
from harmguard.serving.config import Autoscaling, ServeArgs, Traffic, UserConfig, build_serve_config
from harmguard.training.ray_jobs import ENTRY_MODULE

# The RayJob's entry point, resolved from the harmguard installed in the image (no file of a source checkout).
TRAIN_ENTRY_MODULE = ENTRY_MODULE
GPU_TOLERATION: dict[str, str] = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
# Ray token authentication (RAY_AUTH_MODE=token) exists from Ray 2.52; an older Ray would ignore KubeRay's env vars.
TOKEN_AUTH_MIN_RAY = (2, 52)
# authOptions of every harmguard Ray cluster: token auth, never "disabled".
TOKEN_AUTH = "token"
# The traffic record's item-id key (HMAC of texts) on a cluster: a Secret mounted into the serving Ray containers.
ITEM_KEY_SECRET = "harmguard-item-key"
ITEM_KEY_FILE = "item-id.key"  # the Secret's data key, and the file's name in the mount
ITEM_KEY_MOUNT = "/var/run/secrets/harmguard/item-id"
ITEM_KEY_VOLUME = "item-id-key"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PodPlacement(_Spec):
    """Settings, labels and the Ray auth token Secret shared by every pod of a Ray cluster."""

    settings_config_map: str | None = Field(
        default=None,
        description="ConfigMap exposed as environment to every pod (HARMGUARD_HOME, MLFLOW_TRACKING_URI).",
    )
    auth_secret: str | None = Field(
        default=None,
        description="Secret holding the Ray auth token as ``auth_token`` (None: KubeRay generates one per cluster).",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the object and its pods.")


class RayJobSpec(PodPlacement):
    """A training RayJob: its own Ray cluster, one entry point, deleted when done (``rayjob_manifest``)."""

    name: str = Field(description="Object name (DNS-1035); KubeRay names the cluster and the submitter Job after it.")
    namespace: str = Field(description="Namespace to create it in.")
    image: str = Field(description="The pinned harmguard image, for head, workers and the submitter.")
    entrypoint: str = Field(description="Shell command the submitter runs (``train_entrypoint(...)``).")
    service_account: str = Field(
        default="harmguard-training",
        description="ServiceAccount of every pod (GCS write access through Workload Identity, when no key is given).",
    )
    gcs_secret: str | None = Field(
        default=None,
        description="Secret with a GCS key as ``key.json``, mounted into the head and workers only (omit with "
        "Workload Identity); the submitter, which only talks to the dashboard, never gets it.",
    )
    runtime_env_vars: dict[str, str] = Field(
        default_factory=dict, description="Environment of the job's driver and tasks (Ray ``runtime_env.env_vars``)."
    )
    gpu_workers: int = Field(
        default=1, ge=1, description="Worker pods (fixed: min = max = replicas), each with ``gpu_per_worker`` GPUs."
    )
    gpu_per_worker: int = Field(
        default=1, ge=0, description="GPUs per worker (0: a CPU-only worker group, no GPU toleration added)."
    )
    worker_cpu: str = Field(default="8", description="CPU of each worker (requests = limits).")
    worker_memory: str = Field(default="32Gi", description="Memory of each worker.")
    head_cpu: str = Field(default="2", description="CPU of the head (it runs no tasks: GCS, dashboard, driver).")
    head_memory: str = Field(default="8Gi", description="Memory of the head.")
    submitter_cpu: str = Field(default="500m", description="CPU of the pod running ``ray job submit``.")
    submitter_memory: str = Field(default="1Gi", description="Memory of that pod.")
    active_deadline_seconds: int = Field(
        default=6 * 3600, ge=0, description="Wall-clock limit of the whole job; then it fails and is cleaned up."
    )
    backoff_limit: int = Field(
        default=1, ge=0, description="Retries of the whole job (a new cluster each time) before it is marked failed."
    )
    ttl_seconds_after_finished: int = Field(
        default=3600, ge=0, description="How long the finished cluster stays for log inspection before deletion."
    )
    tolerations: list[dict[str, Any]] | None = Field(
        default=None, description="Of the worker pods (default: the nvidia.com/gpu taint when GPUs are asked for)."
    )
    node_selector: dict[str, str] | None = Field(default=None, description="Of the worker pods (the GPU node pool).")


class RayServiceSpec(PodPlacement):
    """The classifier's RayService: the Serve app, autoscaled, on KubeRay's autoscaler (``rayservice_manifest``)."""

    name: str = Field(description="Object name (a DNS-1035 label).")
    namespace: str = Field(description="Namespace.")
    image: str = Field(description="The pinned harmguard image.")
    service_account: str = Field(
        default="harmguard-serving",
        description="ServiceAccount of every pod: serving's own identity (Workload Identity; no key is ever mounted).",
    )
    user_config: UserConfig = Field(
        description="The model deployment's user_config (version, model URI and digest, thresholds): checked here."
    )
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, description="Serve replica autoscaling.")
    traffic: Traffic | None = Field(
        default_factory=Traffic,
        description="The traffic record the ingress keeps (ServeArgs.traffic: the policy's sample rate). None: none.",
    )
    item_key_secret: str | None = Field(
        default=ITEM_KEY_SECRET,
        description=f"Secret holding the item-id key (data key {ITEM_KEY_FILE}), mounted read-only into the serving "
        "Ray containers; optional, so a missing Secret means no record. None: nothing mounted (then no record).",
    )
    worker_cpu: str = Field(default="4", description="CPU per Ray worker pod (requests = limits).")
    worker_memory: str = Field(default="8Gi", description="Memory per Ray worker pod.")
    head_cpu: str = Field(default="2", description="CPU of the head pod (no replicas run there).")
    head_memory: str = Field(default="4Gi", description="Memory of the head pod.")
    max_workers: int = Field(default=4, ge=1, description="Most worker pods the KubeRay autoscaler may add.")


def ray_version() -> str:
    """The Ray version installed here, which the image (built from the same lock file) also runs."""
    return importlib.metadata.version("ray")


def token_auth_ray_version(version: str | None = None) -> str:
    """``version`` (default: the installed Ray) when it supports token authentication.

    Raises:
        ValueError: For a Ray older than 2.52, which would start a cluster without authentication.
    """
    version = version or ray_version()
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if len(parts) < 2 or parts < TOKEN_AUTH_MIN_RAY:
        minimum = ".".join(map(str, TOKEN_AUTH_MIN_RAY))
        raise ValueError(f"Ray {version} has no token authentication (needs >= {minimum}): refusing an open cluster")
    return version


def auth_options(secret: str | None) -> dict[str, Any]:
    """KubeRay ``authOptions``: token auth, the token from ``secret`` (key ``auth_token``) or one KubeRay generates."""
    options: dict[str, Any] = {"mode": TOKEN_AUTH}
    if secret:
        options["secretName"] = secret
    return options


def train_entrypoint(workdir: str, run_name: str = "train") -> str:
    """The RayJob ``entrypoint``: ``python -m harmguard.training.job_entry`` on ``<workdir>/input/loop_config.json``.

    Raises:
        ValueError: When ``workdir`` is not a ``gs://`` URI (a cluster cannot read this machine's files).
    """
    if not workdir.startswith("gs://"):
        raise ValueError(f"workdir {workdir!r}: a RayJob needs a gs:// work folder (it cannot read local files)")
    words = ["python", "-m", TRAIN_ENTRY_MODULE, "--workdir", shlex.quote(workdir), "--name", shlex.quote(run_name)]
    return " ".join(words)


def item_key_mount(secret: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts, env) giving the serving containers the traffic record's item-id key; empty without one.

    defaultMode 0400; in a pod with an fsGroup the kubelet still makes the file readable by that group (0440,
    kubernetes/kubernetes#57923), which ``monitoring.keys`` accepts for a mounted key, and nothing more.
    """
    if not secret:
        return [], [], []
    volume = {
        "name": ITEM_KEY_VOLUME,
        "secret": {
            "secretName": secret,
            "items": [{"key": ITEM_KEY_FILE, "path": ITEM_KEY_FILE}],
            "defaultMode": 0o400,
            "optional": True,
        },
    }
    mount = {"name": ITEM_KEY_VOLUME, "mountPath": ITEM_KEY_MOUNT, "readOnly": True}
    env = [{"name": KEY_FILE_ENV, "value": f"{ITEM_KEY_MOUNT}/{ITEM_KEY_FILE}"}]
    return [volume], [mount], env


def _env(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": str(v)} for k, v in sorted(values.items())]


def _container(
    name: str,
    image: str,
    res: dict[str, Any],
    *,
    env: list[dict[str, Any]] | None = None,
    env_from: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    ports: list[dict[str, Any]] | None = None,
    probes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent", "resources": res}
    if env:
        c["env"] = env
    if env_from:
        c["envFrom"] = env_from
    if mounts:
        c["volumeMounts"] = mounts
    if ports:
        c["ports"] = ports
    c.update(probes or {})
    c["securityContext"] = restricted_security_context()
    return c


def _pod(
    containers: list[dict[str, Any]],
    *,
    service_account: str | None,
    volumes: list[dict[str, Any]] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    node_selector: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    restart_policy: str | None = None,
    automount_token: bool | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if service_account:
        spec["serviceAccountName"] = service_account
    if automount_token is not None:
        spec["automountServiceAccountToken"] = automount_token
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    spec["securityContext"] = pod_security_context()
    spec["containers"] = containers
    if volumes:
        spec["volumes"] = volumes
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    template: dict[str, Any] = {"spec": spec}
    if labels:
        template = {"metadata": {"labels": dict(labels)}, "spec": spec}
    return template


def _metadata(name: str, namespace: str, component: str, labels: Mapping[str, str] | None) -> dict[str, Any]:
    all_labels = {**PART_OF, "app.kubernetes.io/component": component, **(labels or {})}
    return {"name": name, "namespace": namespace, "labels": all_labels}


def _node_start_params(**extra: str) -> dict[str, str]:
    # metrics-export-port pinned (KubeRay's default, made explicit) so the scraper's NetworkPolicy names a fixed port.
    return {**extra, "metrics-export-port": str(METRICS_PORT)}


def _head_start_params() -> dict[str, str]:
    # The dashboard binds 0.0.0.0 because the KubeRay operator (job and Serve status, Serve config) and the RayJob
    # submitter reach it over the head Service; authOptions (token) and the NetworkPolicies close it to anyone else.
    # num-cpus 0: the head schedules no tasks or replicas, so work never competes with the GCS and dashboard.
    return _node_start_params(**{"dashboard-host": "0.0.0.0", "num-cpus": "0"})


_METRICS_PORT = {"name": "metrics", "containerPort": METRICS_PORT}


def rayjob_manifest(spec: RayJobSpec) -> dict[str, Any]:
    """A RayJob that brings up its own Ray cluster, runs ``spec.entrypoint``, and deletes the cluster when done.

    Raises:
        ValueError: When the installed Ray has no token authentication.
    """
    tolerations = spec.tolerations if spec.tolerations is not None else [GPU_TOLERATION] if spec.gpu_per_worker else []
    volumes, mounts, cred_env = gcs_credentials(spec.gcs_secret, GCS_MOUNT_PATH)
    env_from = settings_env_from(spec.settings_config_map)
    base_labels = {**PART_OF, "app.kubernetes.io/component": "training", **(spec.labels or {})}
    node_labels = {**base_labels, RAY_NODE_LABEL: "true"}
    submitter_labels = {**base_labels, RAY_CLIENT_LABEL: SUBMITTER}

    def node(container: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return _pod([container], service_account=spec.service_account, volumes=volumes, labels=node_labels, **kwargs)

    head = _container(
        "ray-head",
        spec.image,
        resources(spec.head_cpu, spec.head_memory),
        env=cred_env,
        env_from=env_from,
        mounts=mounts,
        ports=[
            {"name": "gcs", "containerPort": GCS_PORT},
            {"name": "dashboard", "containerPort": DASHBOARD_PORT},
            _METRICS_PORT,
        ],
    )
    worker = _container(
        "ray-worker",
        spec.image,
        resources(spec.worker_cpu, spec.worker_memory, gpu=spec.gpu_per_worker),
        env=cred_env,
        env_from=env_from,
        mounts=mounts,
        ports=[_METRICS_PORT],
    )
    # The submitter only runs `ray job submit` against the dashboard: no GCS key, no settings.
    submitter = _container("ray-job-submitter", spec.image, resources(spec.submitter_cpu, spec.submitter_memory))
    body: dict[str, Any] = {
        "entrypoint": spec.entrypoint,
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
        "activeDeadlineSeconds": spec.active_deadline_seconds,
        "backoffLimit": spec.backoff_limit,
    }
    if spec.runtime_env_vars:
        body["runtimeEnvYAML"] = yaml.safe_dump(
            {"env_vars": dict(sorted(spec.runtime_env_vars.items()))}, sort_keys=True
        )
    body["rayClusterSpec"] = {
        "rayVersion": token_auth_ray_version(),
        "authOptions": auth_options(spec.auth_secret),
        "headGroupSpec": {"rayStartParams": _head_start_params(), "template": node(head)},
        "workerGroupSpecs": [
            {
                "groupName": "gpu" if spec.gpu_per_worker else "cpu",
                "replicas": spec.gpu_workers,
                "minReplicas": spec.gpu_workers,
                "maxReplicas": spec.gpu_workers,
                "rayStartParams": _node_start_params(),
                "template": node(worker, tolerations=tolerations, node_selector=spec.node_selector),
            }
        ],
    }
    # The submitter pod runs `ray job submit` against the head; KubeRay requires restartPolicy Never here. It
    # runs as no harmguard identity (the namespace's default ServiceAccount, no API token): it needs neither GCS nor
    # the Kubernetes API, only the Ray token KubeRay injects.
    body["submitterPodTemplate"] = _pod(
        [submitter], service_account=None, labels=submitter_labels, restart_policy="Never", automount_token=False
    )
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": _metadata(spec.name, spec.namespace, "training", spec.labels),
        "spec": body,
    }


def rayservice_manifest(spec: RayServiceSpec) -> dict[str, Any]:
    """A RayService serving the classifier with Serve autoscaling and KubeRay's in-tree autoscaler.

    Its ``serveConfigV2`` comes from ``serving.config.build_serve_config``, the builder local serving and promotion
    use too; the ``user_config`` is what a promotion patches (``reconfigure``, no restart), and ``spec.traffic``
    turns the traffic record on. Its pods run as the serving ServiceAccount and mount no GCS credentials: GCS access
    is Workload Identity's, scoped by IAM to reading models and the registry and writing traffic/ and review/
    (``harmguard.k8s.identity``). With the record on, the Ray containers mount the item-id key Secret
    (``item_key_mount``).

    Raises:
        ValueError: When the installed Ray has no token authentication.
    """
    args = ServeArgs(user_config=spec.user_config, traffic=spec.traffic)
    config = build_serve_config(args, autoscaling=spec.autoscaling)
    env_from = settings_env_from(spec.settings_config_map)
    volumes, key_mounts, key_env = item_key_mount(spec.item_key_secret if spec.traffic is not None else None)
    pod_labels = {**PART_OF, "app.kubernetes.io/component": "serving", **(spec.labels or {}), RAY_NODE_LABEL: "true"}
    head = _container(
        "ray-head",
        spec.image,
        resources(spec.head_cpu, spec.head_memory),
        env=key_env,
        env_from=env_from,
        mounts=key_mounts,
        ports=[
            {"name": "gcs", "containerPort": GCS_PORT},
            {"name": "dashboard", "containerPort": DASHBOARD_PORT},
            {"name": "serve", "containerPort": SERVE_PORT},
            _METRICS_PORT,
        ],
    )
    worker = _container(
        "ray-worker",
        spec.image,
        resources(spec.worker_cpu, spec.worker_memory),
        env=key_env,
        env_from=env_from,
        mounts=key_mounts,
        ports=[_METRICS_PORT],
    )
    autoscaler = {
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "resources": resources("500m", "512Mi"),
        "securityContext": restricted_security_context(),
        "idleTimeoutSeconds": 300,  # a worker idle this long is removed
        "upscalingMode": "Default",
    }

    def pod(container: dict[str, Any]) -> dict[str, Any]:
        return _pod([container], service_account=spec.service_account, volumes=volumes, labels=pod_labels)

    body: dict[str, Any] = {
        "serveConfigV2": yaml.safe_dump(config, sort_keys=False),
        # Zero-downtime upgrades: a changed cluster spec brings up a new cluster and switches traffic when ready.
        "upgradeStrategy": {"type": "NewCluster"},
        # The head runs no replicas: traffic goes to workers only, and the operator never probes the head's port 8000.
        "excludeHeadPodFromServeSvc": True,
        "rayClusterConfig": {
            "rayVersion": token_auth_ray_version(),
            "authOptions": auth_options(spec.auth_secret),
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": autoscaler,
            "headGroupSpec": {"rayStartParams": _head_start_params(), "template": pod(head)},
            "workerGroupSpecs": [
                {
                    "groupName": "cpu",
                    "replicas": 1,
                    "minReplicas": 1,
                    "maxReplicas": spec.max_workers,
                    "rayStartParams": _node_start_params(),
                    "template": pod(worker),
                }
            ],
        },
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _metadata(spec.name, spec.namespace, "serving", spec.labels),
        "spec": body,
    }
