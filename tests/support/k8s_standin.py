"""A local stand-in for the Kubernetes API's RayJob and RayService endpoints (KubeRay ``ray.io/v1``) and a Ray
dashboard's job logs.

It answers like the API server: ``POST`` validates the object against the pinned RayJob CRD (strict, as a
structural schema with pruning off would) and returns 201 with server-set metadata, 409 ``AlreadyExists`` for a
taken name, 422 ``Invalid`` for a schema violation, 404 ``NotFound`` ``Status`` objects; ``GET`` replays a scripted
sequence of ``status`` objects (one step per read, the last repeats), each also checked against the CRD's status
schema, so the sequences stay realistic; ``DELETE`` returns a ``Status`` of success. The Ray dashboard's
``GET /api/jobs/{id}/logs`` returns the driver log lines the script has reached.

RayServices (seeded with ``add_rayservice``) answer ``GET`` and ``PATCH`` as the API server does for a custom resource
with a status subresource: a patch must be ``application/merge-patch+json`` (else 415), is applied as RFC 7386 merge
patch, and a ``metadata.resourceVersion`` in it that is no longer current is a 409 ``Conflict``; the merged object is
validated against the pinned RayService CRD (422 ``Invalid``), ``resourceVersion`` moves on every write and
``generation`` on every change of ``spec``. ``operator(obj, reads)`` plays KubeRay: given the stored object and how
often it was read since its spec last changed, it returns the status KubeRay would have written by then (checked
against the CRD's status schema too). ``interfere`` makes that many patches meet another writer first (it adds an
annotation and moves the resourceVersion), so the patcher sees the 409 a concurrent write causes.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.json_http import json_handler

_RAYJOBS = re.compile(r"^/apis/ray\.io/v1/namespaces/([^/]+)/rayjobs(?:/([^/]+))?$")
_RAYSERVICES = re.compile(r"^/apis/ray\.io/v1/namespaces/([^/]+)/rayservices/([^/]+)$")
MERGE_PATCH = "application/merge-patch+json"
INTERFERER = "example.com/touched-by"  # the annotation another writer adds (``interfere``)
# KubeRay's part: (stored RayService, reads since its spec last changed) -> its status now (None: none written yet)
Operator = Callable[[dict[str, Any], int], dict[str, Any] | None]
_JOB_LOGS = re.compile(r"^/api/jobs/([^/]+)/logs$")


@dataclass
class Step:
    """One scripted observation: the RayJob's ``status`` and the driver log lines printed by then."""

    status: dict[str, Any]
    logs: str = ""


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class K8sStandIn:
    """Serve on 127.0.0.1; ``script(dashboard)`` builds the steps once the address is known."""

    script: Callable[[str], list[Step]] = lambda dashboard: [Step({})]
    validate: Callable[[dict[str, Any]], None] | None = None
    operator: Operator | None = None
    interfere: int = 0
    requests: list[Recorded] = field(default_factory=list)
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    rayservices: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    deleted: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: dict[tuple[str, str], int] = {}
        self._rs_reads: dict[tuple[str, str], int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.steps = self.script(self.dashboard)

    @property
    def dashboard(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def host(self) -> str:
        return f"http://{self.dashboard}"

    def __enter__(self) -> K8sStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def created(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.method == "POST"]

    def patches(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "PATCH"]

    def add_rayservice(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Store a RayService as ``kubectl apply`` would have created it (server-set metadata, no status yet)."""
        if self.validate is not None:
            self.validate(manifest)  # a seed the CRD would refuse is a bug in the test
        obj = json.loads(json.dumps(manifest))
        obj["metadata"].update(uid=str(uuid.uuid4()), resourceVersion="1", generation=1, creationTimestamp=_now())
        self.rayservices[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return obj

    def _step(self, key: tuple[str, str]) -> Step:
        return self.steps[min(self._reads.get(key, 0), len(self.steps) - 1)]

    # --- the API -----------------------------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: str, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(Recorded(method, path, query, body, headers or {}))
            if m := _JOB_LOGS.match(path):
                return self._logs(m.group(1))
            if m := _RAYSERVICES.match(path):
                return self._rayservice(method, (m.group(1), m.group(2)), body, headers or {})
            m = _RAYJOBS.match(path)
            if not m:
                return 404, _status(404, "NotFound", f"the server could not find the requested resource ({path})")
            namespace, name = m.group(1), m.group(2)
            if method == "POST" and name is None:
                return self._create(namespace, body)
            if name is None:
                return 405, _status(405, "MethodNotAllowed", f"{method} on the collection is not served here")
            key = (namespace, name)
            if key not in self.objects:
                return 404, _status(404, "NotFound", f'rayjobs.ray.io "{name}" not found', name)
            if method == "GET":
                return self._get(key)
            if method == "DELETE":
                obj = self.objects.pop(key)
                self.deleted.append(key)
                return 200, {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {"name": name, "group": "ray.io", "kind": "rayjobs", "uid": obj["metadata"]["uid"]},
                }
            return 405, _status(405, "MethodNotAllowed", f"{method} is not served here")

    def _create(self, namespace: str, body: Any) -> tuple[int, Any]:
        meta = (body or {}).get("metadata") or {}
        name = meta.get("name", "")
        if meta.get("namespace", namespace) != namespace:
            message = "the namespace of the provided object does not match the namespace sent on the request"
            return 400, _status(400, "BadRequest", message)
        if self.validate is not None:
            try:
                self.validate(body)
            except ValueError as e:  # harmguard.k8s.schemas.ManifestError
                return 422, _status(422, "Invalid", f'RayJob.ray.io "{name}" is invalid: {e}', name)
        if (namespace, name) in self.objects:
            return 409, _status(409, "AlreadyExists", f'rayjobs.ray.io "{name}" already exists', name)
        obj = json.loads(json.dumps(body))
        obj["metadata"].update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            resourceVersion="1",
            generation=1,
            creationTimestamp=_now(),
        )
        self.objects[(namespace, name)] = obj
        return 201, obj

    def _get(self, key: tuple[str, str]) -> tuple[int, Any]:
        step = self._step(key)
        self._reads[key] = self._reads.get(key, 0) + 1
        obj = {**self.objects[key]}
        if step.status:
            obj["status"] = step.status
        if self.validate is not None:
            self.validate(obj)  # a scripted status the CRD would not store is a bug in the test script
        return 200, obj

    def _logs(self, job_id: str) -> tuple[int, Any]:
        for key in self.objects:
            step = self.steps[max(0, min(self._reads.get(key, 0), len(self.steps)) - 1)]
            if step.status.get("jobId") == job_id:
                return 200, {"logs": step.logs}
        return 404, {"message": f"Job {job_id} does not exist."}

    def _rayservice(self, method: str, key: tuple[str, str], body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        name = key[1]
        if key not in self.rayservices:
            return 404, _status(404, "NotFound", f'rayservices.ray.io "{name}" not found', name, "rayservices")
        if method == "GET":
            return self._get_rayservice(key)
        if method != "PATCH":
            return 405, _status(405, "MethodNotAllowed", f"{method} is not served here")
        if headers.get("content-type", "").split(";")[0].strip() != MERGE_PATCH:
            return 415, _status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: "
                                f"{headers.get('content-type')} (this stand-in takes {MERGE_PATCH})")  # fmt: skip
        stored = self.rayservices[key]
        if self.interfere > 0:  # another writer got there first
            self.interfere -= 1
            stored["metadata"].setdefault("annotations", {})[INTERFERER] = f"writer-{self.interfere}"
            stored["metadata"]["resourceVersion"] = str(int(stored["metadata"]["resourceVersion"]) + 1)
        wanted = ((body or {}).get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != stored["metadata"]["resourceVersion"]:
            message = (
                f'Operation cannot be fulfilled on rayservices.ray.io "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again"
            )
            return 409, _status(409, "Conflict", message, name, "rayservices")
        merged = merge_patch(stored, body)
        merged["metadata"] = {**merged["metadata"], **{k: stored["metadata"][k] for k in ("uid", "generation")}}
        if self.validate is not None:
            try:
                self.validate(merged)
            except ValueError as e:
                return 422, _status(422, "Invalid", f'RayService.ray.io "{name}" is invalid: {e}', name, "rayservices")
        if merged.get("spec") != stored.get("spec"):
            merged["metadata"]["generation"] = stored["metadata"]["generation"] + 1
            self._rs_reads[key] = 0
        merged["metadata"]["resourceVersion"] = str(int(stored["metadata"]["resourceVersion"]) + 1)
        self.rayservices[key] = merged
        return 200, merged

    def _get_rayservice(self, key: tuple[str, str]) -> tuple[int, Any]:
        obj = self.rayservices[key]
        reads = self._rs_reads.get(key, 0)
        self._rs_reads[key] = reads + 1
        status = self.operator(obj, reads) if self.operator is not None else None
        if status is not None and status != obj.get("status"):  # KubeRay wrote its status (a write: new version)
            obj["status"] = status
            obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        if self.validate is not None:
            self.validate(obj)  # a scripted status the CRD would not store is a bug in the test script
        return 200, json.loads(json.dumps(obj))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return json_handler(self.handle, headers=True)


# --- KubeRay's side of a RayService ---------------------------------------------------------------------------------

STATUS_TIME = "2026-11-25T01:02:03Z"


def kuberay_status(
    generation: int,
    app: str = "RUNNING",
    model: str = "HEALTHY",
    *,
    ready: bool = True,
    message: str | None = None,
    pending: str | None = None,
    legacy: bool = False,
) -> dict[str, Any]:
    """A RayService status as KubeRay v1.7 writes it (``legacy``: an older operator, serviceStatus only)."""
    application: dict[str, Any] = {
        "status": app,
        "serveDeploymentStatuses": {"Classifier": {"status": model}, "ClassifierIngress": {"status": "HEALTHY"}},
    }
    if message:
        application["message"] = message
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "numServeEndpoints": 1 if ready else 0,
        "activeServiceStatus": {
            "rayClusterName": "harmguard-classifier-raycluster-x7k2p",
            "applicationStatuses": {"harmguard": application},
        },
    }
    if pending:
        status["pendingServiceStatus"] = {"rayClusterName": pending}
    if legacy:
        status["serviceStatus"] = "Running" if ready else "WaitForServeDeploymentReady"
        return status

    def condition(kind: str, value: bool, reason: str) -> dict[str, Any]:
        return {"type": kind, "status": str(value), "reason": reason, "message": "", "lastTransitionTime": STATUS_TIME}

    status["conditions"] = [
        condition("Ready", ready, "NonZeroServeEndpoints" if ready else "ZeroServeEndpoints"),
        condition(
            "UpgradeInProgress", bool(pending), "BothActivePendingClustersExist" if pending else "NoPendingCluster"
        ),
    ]
    return status


def kuberay(after: int = 2, *, stuck: bool = False, failed: str | None = None):
    """The operator: the old generation keeps RUNNING for ``after`` reads, then DEPLOYING once, then RUNNING.

    ``stuck``: the new generation stays DEPLOYING (a replica that never becomes healthy). ``failed``: DEPLOY_FAILED
    with that message.
    """

    def operator(obj: dict[str, Any], reads: int) -> dict[str, Any]:
        generation = obj["metadata"]["generation"]
        if generation == 1 or reads < after:
            return kuberay_status(max(generation - 1, 1))
        if failed:
            return kuberay_status(generation, "DEPLOY_FAILED", "UNHEALTHY", message=failed)
        if stuck or reads == after:
            return kuberay_status(generation, "DEPLOYING", "UPDATING")
        return kuberay_status(generation)

    return operator


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return json.loads(json.dumps(patch))
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _status(code: int, reason: str, message: str, name: str | None = None, kind: str = "rayjobs") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if name:
        doc["details"] = {"name": name, "group": "ray.io", "kind": kind}
    return doc


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
