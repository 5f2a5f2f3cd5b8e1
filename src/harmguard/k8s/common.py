"""Building blocks every harmguard pod shares: hardened security contexts, resources, settings and credentials.

Every container harmguard renders (Argo steps, Ray heads, workers, submitters, the autoscaler sidecar) is built
from these helpers, so each one is hardened the same way: non-root, no privilege escalation, all capabilities
dropped, the runtime's default seccomp profile, and requests and limits on CPU and memory.
"""

from __future__ import annotations

import re
from typing import Any

# The uid/gid the containers run as. The image is expected to own its writable paths by this uid (the Ray images
# use 1000 as well); runAsNonRoot alone would refuse an image whose USER is a name rather than a number.
RUN_AS_USER = 1000
RUN_AS_GROUP = 1000
GPU_RESOURCE = "nvidia.com/gpu"
# A Kubernetes quantity (resource.Quantity): the pattern the API server and the CRDs check.
QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# Fixed labels on every object, so `kubectl get all -l app.kubernetes.io/part-of=harmguard` finds them.
PART_OF = {"app.kubernetes.io/part-of": "harmguard"}
# Where a pod that needs the GCS key Secret mounts it (KFP steps, Argo steps, training Ray nodes; never serving).
GCS_MOUNT_PATH = "/var/secrets/google"

# Ray's ports on its pods (the NetworkPolicies name them; ``rayStartParams`` pin the metrics port).
GCS_PORT = 6379  # the head's GCS (cluster metadata, job table): only the cluster's own pods
DASHBOARD_PORT = 8265  # dashboard and Jobs API (submit = run code): the operator and the job's launchers only
SERVE_PORT = 8000  # Serve's HTTP proxy on every node: the ingress only
METRICS_PORT = 8080  # Prometheus metrics of every node (``metrics-export-port``): the scraper only
# Pod labels the NetworkPolicies select on (set by the builders, never by KubeRay, so they are known offline).
RAY_NODE_LABEL = "harmguard.io/ray-node"  # "true" on head and worker pods of a harmguard Ray cluster
RAY_CLIENT_LABEL = "harmguard.io/ray-client"  # on pods allowed to call a training cluster's dashboard
SUBMITTER = "submitter"  # RAY_CLIENT_LABEL of a RayJob's submitter pod (``ray job submit``)
LAUNCHER = "launcher"  # RAY_CLIENT_LABEL of the pipeline step that creates a RayJob and reads its driver logs


def restricted_security_context() -> dict[str, Any]:
    """A container security context that satisfies the Kubernetes "restricted" Pod Security Standard."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    """The pod-level counterpart: non-root numeric uid/gid, group-owned volumes, default seccomp profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "fsGroup": RUN_AS_GROUP,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def quantity(value: str | int | float, what: str) -> str:
    """``value`` as a Kubernetes quantity string.

    Raises:
        ValueError: When it is not a quantity (``"1 core"``, ``"2GB "``), naming ``what``.
    """
    text = str(value)
    if isinstance(value, bool) or not QUANTITY.fullmatch(text):
        raise ValueError(f"{what}: {value!r} is not a Kubernetes quantity (e.g. 500m, 2, 1.5, 4Gi)")
    return text


def resources(cpu: str | int | float, memory: str, *, gpu: int = 0, gpu_resource: str = GPU_RESOURCE) -> dict[str, Any]:
    """Requests and limits for one container: limits equal requests (Guaranteed QoS), GPUs only as limits.

    Ray sizes its scheduler from the container's limits, and equal requests and limits keep a pod from being
    throttled or evicted before best-effort pods.

    Raises:
        ValueError: When a quantity is malformed or ``gpu`` is negative.
    """
    if gpu < 0:
        raise ValueError(f"gpu: {gpu} must be >= 0")
    requested = {"cpu": quantity(cpu, "cpu"), "memory": quantity(memory, "memory")}
    limits = dict(requested)
    if gpu:
        limits[gpu_resource] = str(gpu)  # extended resources: the limit implies the same request
    return {"requests": requested, "limits": limits}


def settings_env_from(config_map: str | None) -> list[dict[str, Any]]:
    """``envFrom`` exposing the settings ConfigMap (HARMGUARD_HOME, MLFLOW_TRACKING_URI) to a container."""
    return [{"configMapRef": {"name": config_map}}] if config_map else []


def gcs_credentials(
    secret: str | None, mount_path: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts, env) mounting a GCS service-account key Secret; all empty without a secret.

    Leave ``secret`` empty on clusters with Workload Identity: the pod's ServiceAccount then carries the identity.
    """
    if not secret:
        return [], [], []
    volume = {"name": "gcs-key", "secret": {"secretName": secret, "defaultMode": 0o440}}
    mount = {"name": "gcs-key", "mountPath": mount_path, "readOnly": True}
    env = [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{mount_path}/key.json"}]
    return [volume], [mount], env


def iter_containers(obj: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every container spec inside a manifest, with its JSON path.

    Finds pod ``containers`` and ``initContainers``, Argo templates' ``container`` / ``script`` / ``containerSet``
    containers, KubeRay's ``autoscalerOptions`` sidecar and Argo's ``podSpecPatch``-free defaults
    (``templateDefaults.container``).
    """
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            here = f"{path}.{key}" if path else key
            if key in ("containers", "initContainers", "sidecars") and isinstance(value, list):
                found += [(f"{here}[{i}]", c) for i, c in enumerate(value) if isinstance(c, dict)]
            elif key in ("container", "script") and isinstance(value, dict) and "image" in value:
                found.append((here, value))
            elif key == "autoscalerOptions" and isinstance(value, dict):
                found.append((here, value))
            found += iter_containers(value, here) if key not in ("containers", "initContainers") else []
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            found += iter_containers(item, f"{path}[{i}]")
    return found


def is_pinned(image: str) -> bool:
    """True for an image reference that cannot float: a tag other than ``latest``, or an ``@sha256:`` digest."""
    name, _, digest = image.partition("@")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    return digest.startswith("sha256:") or bool(tag and tag != "latest")


def hardening_problems(obj: Any) -> list[str]:
    """Every container of ``obj`` that is not sized or hardened like ``resources`` / ``restricted_security_context``.

    Returns:
        ``<json path>: <what is missing>`` per problem; empty when every container has CPU and memory requests and
        limits, a pinned image (a tag other than ``latest``, or a digest) and the restricted security context.
    """
    problems = []
    wanted = restricted_security_context()
    for where, c in iter_containers(obj):
        image = str(c.get("image", ""))
        if not is_pinned(image):
            problems.append(f"{where}.image: {image!r} is not pinned")
        for kind in ("requests", "limits"):
            missing = {"cpu", "memory"} - set((c.get("resources") or {}).get(kind) or {})
            if missing:
                problems.append(f"{where}.resources.{kind}: no {', '.join(sorted(missing))}")
        context = c.get("securityContext") or {}
        for key, value in wanted.items():
            if context.get(key) != value:
                problems.append(f"{where}.securityContext.{key}: {context.get(key)!r}, expected {value!r}")
    return problems
