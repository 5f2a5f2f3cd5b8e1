"""What a rendered Ray object must never do: run without token auth, or give serving pods a key.

``exposure_problems`` is checked on every manifest harmguard renders (``harmguard.k8s.manifests.render`` refuses to
write one with a problem) and by the tests on the committed files. Each rule closes one way in:

- a Ray cluster (RayJob, RayService, RayCluster) whose ``authOptions.mode`` is not ``token``, or whose ``rayVersion``
  predates token auth (2.52), answers anyone who reaches its dashboard/Jobs API: a submitted job runs with the pods'
  identity;
- a container that sets ``RAY_AUTH_MODE`` itself could switch the operator's setting off;
- a serving pod that mounts a Secret or points ``GOOGLE_APPLICATION_CREDENTIALS`` at a key, or runs as a shared
  ServiceAccount, would carry more than serving's read-models / write-traffic identity. The one Secret it may mount
  is the traffic record's item-id key (``kuberay.item_key_mount``), exactly: that Secret, only its ``item-id.key``,
  mounted read-only (an HMAC key for item ids is no credential to anything);
- a RayJob's submitter, which only talks to the dashboard, must not hold the GCS key either.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from harmguard.k8s.kuberay import ITEM_KEY_FILE, ITEM_KEY_SECRET, ITEM_KEY_VOLUME, TOKEN_AUTH, TOKEN_AUTH_MIN_RAY

RAY_KINDS = {"RayJob": "rayClusterSpec", "RayService": "rayClusterConfig", "RayCluster": None}
CREDENTIAL_ENV = ("GOOGLE_APPLICATION_CREDENTIALS",)
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")  # KubeRay's to set, from the Secret
SHARED_ACCOUNTS = ("", "default")


def _cluster_spec(doc: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    kind = doc.get("kind")
    if kind not in RAY_KINDS or not isinstance(doc.get("spec"), dict):
        return None
    key = RAY_KINDS[kind]
    if key is None:
        return "spec", doc["spec"]
    cluster = doc["spec"].get(key)
    return (f"spec.{key}", cluster) if isinstance(cluster, dict) else None


def _pods(where: str, cluster: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    head = (cluster.get("headGroupSpec") or {}).get("template") or {}
    yield f"{where}.headGroupSpec.template.spec", head.get("spec") or {}
    for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
        yield f"{where}.workerGroupSpecs[{i}].template.spec", ((group or {}).get("template") or {}).get("spec") or {}


def _version_ok(version: Any) -> bool:
    parts = str(version).split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= TOKEN_AUTH_MIN_RAY
    except (IndexError, ValueError):
        return False


def _is_item_key(volume: dict[str, Any], pod: dict[str, Any]) -> bool:
    """The item-id key volume exactly as ``kuberay.item_key_mount`` builds it: one key, 0400, mounted read-only."""
    secret = volume.get("secret") or {}
    name = volume.get("name")
    mounts = [m for c in pod.get("containers") or [] for m in c.get("volumeMounts") or [] if m.get("name") == name]
    return (
        volume.get("name") == ITEM_KEY_VOLUME
        and secret.get("secretName") == ITEM_KEY_SECRET
        and secret.get("items") == [{"key": ITEM_KEY_FILE, "path": ITEM_KEY_FILE}]
        and isinstance(secret.get("defaultMode"), int)
        and secret["defaultMode"] & 0o077 == 0  # owner-read only (the API server's default is 0644)
        and all(m.get("readOnly") is True for m in mounts)
    )


def _credential_problems(where: str, pod: dict[str, Any], *, item_key: bool = False) -> list[str]:
    problems = []
    for i, volume in enumerate(pod.get("volumes") or []):
        if "secret" in volume and not (item_key and _is_item_key(volume, pod)):
            secret = volume["secret"].get("secretName")
            problems.append(f"{where}.volumes[{i}]: mounts Secret {secret!r} (no credentials here)")
    for c, container in enumerate(pod.get("containers") or []):
        for e in container.get("env") or []:
            if e.get("name") in CREDENTIAL_ENV:
                problems.append(f"{where}.containers[{c}].env: sets {e['name']} (no credentials here)")
        for f in container.get("envFrom") or []:
            if "secretRef" in f:
                problems.append(f"{where}.containers[{c}].envFrom: reads Secret {f['secretRef'].get('name')!r}")
    return problems


def exposure_problems(doc: Any) -> list[str]:
    """``<json path>: <what is open>`` for every way ``doc`` opens the Ray control plane; empty when closed."""
    if not isinstance(doc, dict):
        return []
    found = _cluster_spec(doc)
    if found is None:
        return []
    where, cluster = found
    problems = []
    mode = (cluster.get("authOptions") or {}).get("mode")
    if mode != TOKEN_AUTH:
        problems.append(
            f"{where}.authOptions.mode: {mode!r}, expected {TOKEN_AUTH!r} (without it the dashboard and Jobs API "
            "run code for anyone who reaches them)"
        )
    if not _version_ok(cluster.get("rayVersion")):
        minimum = ".".join(map(str, TOKEN_AUTH_MIN_RAY))
        problems.append(f"{where}.rayVersion: {cluster.get('rayVersion')!r} has no token auth (needs >= {minimum})")
    serving = doc["kind"] == "RayService"
    for path, pod in _pods(where, cluster):
        for c, container in enumerate(pod.get("containers") or []):
            for e in container.get("env") or []:
                if e.get("name") in AUTH_ENV:
                    problems.append(f"{path}.containers[{c}].env: sets {e['name']} (authOptions decides it)")
        if serving:
            problems += _credential_problems(path, pod, item_key=True)
            if pod.get("serviceAccountName", "") in SHARED_ACCOUNTS:
                problems.append(f"{path}.serviceAccountName: serving pods need their own ServiceAccount")
    submitter = ((doc["spec"].get("submitterPodTemplate") or {}).get("spec")) if doc["kind"] == "RayJob" else None
    if submitter:
        problems += _credential_problems("spec.submitterPodTemplate.spec", submitter)
    return problems
