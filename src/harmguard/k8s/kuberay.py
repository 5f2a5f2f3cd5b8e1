"""KubeRay objects as plain dicts: the training RayJob and the classifier RayService (``ray.io/v1``, KubeRay v1.7).

Pure builders: no cluster access, no settings read here. ``harmguard.k8s.manifests`` renders them into
``manifests/kuberay/``; the RayJob launcher (``harmguard.k8s.rayjob``) creates the same RayJob through the Kubernetes
API. ``harmguard.k8s.schemas.validate_manifest`` checks either against the pinned CRDs. Layout follows the upstream
samples (ray-project/kuberay ``ray-operator/config/samples``): a head that runs no work (``num-cpus: 0``), one worker
group, every container hardened by ``harmguard.k8s.common``.
"""

from __future__ import annotations

import importlib.metadata
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from harmguard.k8s.common import (
    GPU_RESOURCE,
    PART_OF,
    gcs_credentials,
    pod_security_context,
    resources,
    restricted_security_context,
    settings_env_from,
)
from harmguard.serving.config import Autoscaling, ServeArgs, UserConfig, build_serve_config
from harmguard.training.ray_jobs import ENTRY_MODULE

# The RayJob's entry point, resolved from the harmguard installed in the image (no file of a source checkout).
TRAIN_ENTRY_MODULE = ENTRY_MODULE
GPU_TOLERATION: dict[str, str] = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
GCS_MOUNT_PATH = "/var/secrets/google"


def ray_version() -> str:
    """The Ray version installed here, which the image (built from the same lock file) also runs."""
    return importlib.metadata.version("ray")


def train_entrypoint(workdir: str, run_name: str = "train") -> str:
    """The RayJob ``entrypoint``: ``python -m harmguard.training.job_entry`` on ``<workdir>/input/loop_config.json``.

    Raises:
        ValueError: When ``workdir`` is not a ``gs://`` URI (a cluster cannot read this machine's files).
    """
    if not workdir.startswith("gs://"):
        raise ValueError(f"workdir {workdir!r}: a RayJob needs a gs:// work folder (it cannot read local files)")
    words = ["python", "-m", TRAIN_ENTRY_MODULE, "--workdir", shlex.quote(workdir), "--name", shlex.quote(run_name)]
    return " ".join(words)


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
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if service_account:
        spec["serviceAccountName"] = service_account
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


def rayjob_manifest(
    *,
    name: str,
    namespace: str,
    image: str,
    entrypoint: str,
    runtime_env_vars: Mapping[str, str] | None = None,
    gpu_workers: int = 1,
    gpu_per_worker: int = 1,
    worker_cpu: str = "8",
    worker_memory: str = "32Gi",
    head_cpu: str = "2",
    head_memory: str = "8Gi",
    submitter_cpu: str = "500m",
    submitter_memory: str = "1Gi",
    active_deadline_seconds: int = 6 * 3600,
    backoff_limit: int = 1,
    ttl_seconds_after_finished: int = 3600,
    service_account: str | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    node_selector: Mapping[str, str] | None = None,
    settings_config_map: str | None = None,
    gcs_secret: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A RayJob that brings up its own Ray cluster, runs ``entrypoint``, and deletes the cluster when done.

    Args:
        name: Object name (a DNS-1035 label); KubeRay names the cluster and the submitter Job after it.
        namespace: Namespace to create it in.
        image: The pinned harmguard image (holds Ray and harmguard) for head, workers and the submitter.
        entrypoint: Shell command the submitter runs (``train_entrypoint(...)``).
        runtime_env_vars: Environment of the job's driver and tasks (Ray ``runtime_env.env_vars``).
        gpu_workers: Worker pods (fixed: min = max = replicas), each with ``gpu_per_worker`` GPUs.
        gpu_per_worker: GPUs per worker (0: a CPU-only worker group, no GPU toleration added).
        worker_cpu: CPU of each worker (requests = limits).
        worker_memory: Memory of each worker.
        head_cpu: CPU of the head (it runs no tasks, only the GCS, dashboard and driver).
        head_memory: Memory of the head.
        submitter_cpu: CPU of the pod running ``ray job submit``.
        submitter_memory: Memory of that pod.
        active_deadline_seconds: Wall-clock limit of the whole job from its start; then it fails and is cleaned up.
        backoff_limit: Retries of the whole job (a new cluster each time) before it is marked failed.
        ttl_seconds_after_finished: How long the finished cluster stays for log inspection before deletion.
        service_account: ServiceAccount of every pod (GCS access through Workload Identity).
        tolerations: Of the worker pods (default: the ``nvidia.com/gpu`` taint when GPUs are asked for).
        node_selector: Of the worker pods (the GPU node pool).
        settings_config_map: ConfigMap exposed as environment to every pod (HARMGUARD_HOME, MLFLOW_TRACKING_URI).
        gcs_secret: Secret with a GCS key as ``key.json``, mounted into every pod (omit with Workload Identity).
        labels: Extra labels on the RayJob and its pods.

    Raises:
        ValueError: For a malformed quantity, fewer than one worker, or a negative count.
    """
    if gpu_workers < 1:
        raise ValueError(f"gpu_workers: {gpu_workers} must be >= 1")
    for what, value in (
        ("gpu_per_worker", gpu_per_worker),
        ("active_deadline_seconds", active_deadline_seconds),
        ("backoff_limit", backoff_limit),
        ("ttl_seconds_after_finished", ttl_seconds_after_finished),
    ):
        if value < 0:
            raise ValueError(f"{what}: {value} must be >= 0")
    if tolerations is None:
        tolerations = [GPU_TOLERATION] if gpu_per_worker else []
    volumes, mounts, cred_env = gcs_credentials(gcs_secret, GCS_MOUNT_PATH)
    env_from = settings_env_from(settings_config_map)
    pod_labels = {**PART_OF, "app.kubernetes.io/component": "training", **(labels or {})}

    def pod(container: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return _pod([container], service_account=service_account, volumes=volumes, labels=pod_labels, **kwargs)

    head = _container(
        "ray-head", image, resources(head_cpu, head_memory), env=cred_env, env_from=env_from, mounts=mounts
    )
    worker = _container(
        "ray-worker",
        image,
        resources(worker_cpu, worker_memory, gpu=gpu_per_worker),
        env=cred_env,
        env_from=env_from,
        mounts=mounts,
    )
    submitter = _container(
        "ray-job-submitter",
        image,
        resources(submitter_cpu, submitter_memory),
        env=cred_env,
        env_from=env_from,
        mounts=mounts,
    )
    spec: dict[str, Any] = {
        "entrypoint": entrypoint,
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": ttl_seconds_after_finished,
        "activeDeadlineSeconds": active_deadline_seconds,
        "backoffLimit": backoff_limit,
    }
    if runtime_env_vars:
        spec["runtimeEnvYAML"] = yaml.safe_dump({"env_vars": dict(sorted(runtime_env_vars.items()))}, sort_keys=True)
    spec["rayClusterSpec"] = {
        "rayVersion": ray_version(),
        "headGroupSpec": {
            # num-cpus 0: the head schedules no tasks, so training never competes with the GCS and dashboard.
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
            "template": pod(head),
        },
        "workerGroupSpecs": [
            {
                "groupName": "gpu" if gpu_per_worker else "cpu",
                "replicas": gpu_workers,
                "minReplicas": gpu_workers,
                "maxReplicas": gpu_workers,
                "rayStartParams": {},
                "template": pod(worker, tolerations=tolerations, node_selector=node_selector),
            }
        ],
    }
    # The submitter pod runs `ray job submit` against the head; KubeRay requires restartPolicy Never here.
    spec["submitterPodTemplate"] = pod(submitter, restart_policy="Never")
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": _metadata(name, namespace, "training", labels),
        "spec": spec,
    }


def serve_config(
    *,
    policy: str,
    version: str,
    model_uri: str,
    model_digest: str,
    thresholds: Mapping[str, float],
    thresholds_version: str,
    min_replicas: int = 1,
    max_replicas: int = 4,
    target_ongoing_requests: int = 32,
    replica_cpus: float = 1.0,
) -> dict[str, Any]:
    """The Serve config (``serveConfigV2``) of the classifier: the library's app with an autoscaled model.

    ``user_config`` is what ``harmguard.promotion.deploy`` patches on promotion (``reconfigure``, no restart); limits
    and batching are ``harmguard.serving.config`` defaults.

    Raises:
        ValueError: When the user_config is inconsistent (``thresholds_version`` not the thresholds' digest, a
            malformed digest) or the replica bounds are.
    """
    user_config = UserConfig(
        policy=policy,
        version=version,
        model_uri=model_uri,
        model_digest=model_digest,
        thresholds=dict(thresholds),
        thresholds_version=thresholds_version,
    )
    scaling = Autoscaling(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_ongoing_requests=target_ongoing_requests,
        replica_cpus=replica_cpus,
    )
    return build_serve_config(ServeArgs(user_config=user_config), autoscaling=scaling)


def rayservice_manifest(
    *,
    name: str,
    namespace: str,
    image: str,
    policy: str,
    version: str,
    model_uri: str,
    model_digest: str,
    thresholds: Mapping[str, float],
    thresholds_version: str,
    min_replicas: int = 1,
    max_replicas: int = 4,
    worker_cpu: str = "4",
    worker_memory: str = "8Gi",
    head_cpu: str = "2",
    head_memory: str = "4Gi",
    max_workers: int = 4,
    service_account: str | None = None,
    settings_config_map: str | None = None,
    gcs_secret: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A RayService serving the classifier with Serve autoscaling and KubeRay's in-tree autoscaler.

    Args:
        name: Object name (a DNS-1035 label).
        namespace: Namespace.
        image: The pinned harmguard image.
        policy: Policy served; with ``version``, ``model_uri``, ``model_digest``, ``thresholds`` and
            ``thresholds_version`` it forms the model deployment's ``user_config`` (see ``serve_config``).
        version: The registered version ``<policy>/<n>``.
        model_uri: Exported model folder (``HARMGUARD_HOME/models/<digest>``).
        model_digest: Its digest, recomputed and checked by every replica on load.
        thresholds: Per-category decision thresholds.
        thresholds_version: sha256 of their canonical JSON (checked here).
        min_replicas: Fewest model replicas (Serve autoscaling on ongoing requests).
        max_replicas: Most model replicas.
        worker_cpu: CPU per Ray worker pod (requests = limits).
        worker_memory: Memory per Ray worker pod.
        head_cpu: CPU of the head pod (no replicas run there).
        head_memory: Memory of the head pod.
        max_workers: Most worker pods the KubeRay autoscaler may add for Serve's replicas.
        service_account: ServiceAccount of the pods (model reads from GCS).
        settings_config_map: ConfigMap exposed as environment to every pod.
        gcs_secret: Secret with a GCS key as ``key.json`` (omit with Workload Identity).
        labels: Extra labels.

    Raises:
        ValueError: When the user_config or the sizes are inconsistent.
    """
    if max_workers < 1:
        raise ValueError(f"max_workers: {max_workers} must be >= 1")
    config = serve_config(
        policy=policy,
        version=version,
        model_uri=model_uri,
        model_digest=model_digest,
        thresholds=thresholds,
        thresholds_version=thresholds_version,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
    )
    volumes, mounts, cred_env = gcs_credentials(gcs_secret, GCS_MOUNT_PATH)
    env_from = settings_env_from(settings_config_map)
    pod_labels = {**PART_OF, "app.kubernetes.io/component": "serving", **(labels or {})}
    head = _container(
        "ray-head",
        image,
        resources(head_cpu, head_memory),
        env=cred_env,
        env_from=env_from,
        mounts=mounts,
        ports=[
            {"name": "gcs", "containerPort": 6379},
            {"name": "dashboard", "containerPort": 8265},
            {"name": "serve", "containerPort": 8000},
        ],
    )
    worker = _container(
        "ray-worker", image, resources(worker_cpu, worker_memory), env=cred_env, env_from=env_from, mounts=mounts
    )
    autoscaler = {
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": resources("500m", "512Mi"),
        "securityContext": restricted_security_context(),
        "idleTimeoutSeconds": 300,  # a worker idle this long is removed
        "upscalingMode": "Default",
    }

    def pod(container: dict[str, Any]) -> dict[str, Any]:
        return _pod([container], service_account=service_account, volumes=volumes, labels=pod_labels)

    spec = {
        "serveConfigV2": yaml.safe_dump(config, sort_keys=False),
        # Zero-downtime upgrades: a changed cluster spec brings up a new cluster and switches traffic when ready.
        "upgradeStrategy": {"type": "NewCluster"},
        "rayClusterConfig": {
            "rayVersion": ray_version(),
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": autoscaler,
            "headGroupSpec": {
                "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                "template": pod(head),
            },
            "workerGroupSpecs": [
                {
                    "groupName": "cpu",
                    "replicas": 1,
                    "minReplicas": 1,
                    "maxReplicas": max_workers,
                    "rayStartParams": {},
                    "template": pod(worker),
                }
            ],
        },
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _metadata(name, namespace, "serving", labels),
        "spec": spec,
    }
