"""A local stand-in for the Kubernetes API's RayJob endpoints (KubeRay ``ray.io/v1``) and a Ray dashboard's job logs.

It answers like the API server: ``POST`` validates the object against the pinned RayJob CRD (strict, as a
structural schema with pruning off would) and returns 201 with server-set metadata, 409 ``AlreadyExists`` for a
taken name, 422 ``Invalid`` for a schema violation, 404 ``NotFound`` ``Status`` objects; ``GET`` replays a scripted
sequence of ``status`` objects (one step per read, the last repeats), each also checked against the CRD's status
schema, so the sequences stay realistic; ``DELETE`` returns a ``Status`` of success. The Ray dashboard's
``GET /api/jobs/{id}/logs`` returns the driver log lines the script has reached.
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


@dataclass
class K8sStandIn:
    """Serve on 127.0.0.1; ``script(dashboard)`` builds the steps once the address is known."""

    script: Callable[[str], list[Step]]
    validate: Callable[[dict[str, Any]], None] | None = None
    requests: list[Recorded] = field(default_factory=list)
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    deleted: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: dict[tuple[str, str], int] = {}
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

    def _step(self, key: tuple[str, str]) -> Step:
        return self.steps[min(self._reads.get(key, 0), len(self.steps) - 1)]

    # --- the API -----------------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: str, body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(Recorded(method, path, query, body))
            if m := _JOB_LOGS.match(path):
                return self._logs(m.group(1))
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

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return json_handler(self.handle)


def _status(code: int, reason: str, message: str, name: str | None = None) -> dict[str, Any]:
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
        doc["details"] = {"name": name, "group": "ray.io", "kind": "rayjobs"}
    return doc


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
