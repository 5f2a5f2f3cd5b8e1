"""A local stand-in for the Kubeflow Pipelines v2beta1 REST API (the part `kfp.Client` uses to create and watch runs).

It records every request, answers with the real API's JSON shapes and status codes (snake_case fields, grpc-gateway
error bodies ``{"error", "code", "message"}``), refuses what the real server refuses (a run without a pipeline spec,
a spec the KFP SDK cannot load, parameters the pipeline does not declare, an unknown experiment or run) and replays a
scripted sequence of run states on ``GET /apis/v2beta1/runs/{id}``.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import yaml

from tests.support.json_http import json_handler

PREFIX = "/apis/v2beta1"
# google.rpc codes the API server maps its errors to
INVALID_ARGUMENT, NOT_FOUND = 3, 5


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class KfpStandIn:
    """Serve on 127.0.0.1; ``states`` is what successive GETs of a run return (the last one repeats)."""

    states: list[str] = field(default_factory=lambda: ["PENDING", "RUNNING", "SUCCEEDED"])
    failure_message: str = "task 'train' failed: exit code 1"
    multi_user: bool = False
    reject_runs: str | None = None  # answer POST /runs with 400 and this message (e.g. a quota or admission error)
    requests: list[Recorded] = field(default_factory=list)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    loaded_specs: list[Any] = field(default_factory=list)  # what the KFP SDK loaded back from each run's spec

    def __post_init__(self) -> None:
        self._polls: dict[str, int] = {}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> KfpStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def created_runs(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.method == "POST" and r.path == f"{PREFIX}/runs"]

    # --- the API -----------------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(Recorded(method, path, query, body))
            if method == "GET" and path == f"{PREFIX}/healthz":
                return 200, {"commit_sha": "standin", "tag_name": "2.5.0", "multi_user": self.multi_user}
            if path == f"{PREFIX}/experiments":
                return self._experiments(method, query, body)
            if method == "POST" and path == f"{PREFIX}/runs":
                return self._create_run(body)
            if method == "GET" and path.startswith(f"{PREFIX}/runs/"):
                return self._get_run(path.rsplit("/", 1)[1])
            return 404, _error(NOT_FOUND, f"Not Found: {method} {path}")

    def _experiments(self, method: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if method == "POST":
            if not body.get("display_name"):
                return 400, _error(INVALID_ARGUMENT, "Invalid input error: Experiment name is empty")
            exp = {**body, "experiment_id": str(uuid.uuid4()), "created_at": _now(), "storage_state": "AVAILABLE"}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        wanted = None
        for pred in json.loads(query.get("filter", ["{}"])[0]).get("predicates", []):
            if pred.get("key") == "display_name":
                wanted = pred.get("string_value", pred.get("stringValue"))
        found = [e for e in self.experiments.values() if wanted is None or e["display_name"] == wanted]
        return 200, ({"experiments": found, "total_size": len(found)} if found else {})  # empty fields omitted

    def _create_run(self, body: Any) -> tuple[int, Any]:
        from kfp import components

        if body.get("experiment_id") and body["experiment_id"] not in self.experiments:
            return 404, _error(NOT_FOUND, f"Experiment {body['experiment_id']} not found")
        if self.reject_runs:
            return 400, _error(INVALID_ARGUMENT, self.reject_runs)
        doc = body.get("pipeline_spec")
        if not doc:
            return 400, _error(INVALID_ARGUMENT, "Invalid input error: pipeline spec or version reference is required")
        spec = doc.get("pipeline_spec", doc)  # {"pipeline_spec", "platform_spec"} when a platform spec exists
        try:
            loaded = components.load_component_from_text(yaml.safe_dump(spec))
        except Exception as e:
            return 400, _error(INVALID_ARGUMENT, f"Invalid input error: pipeline spec does not load: {e}")
        declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
        given = (body.get("runtime_config") or {}).get("parameters") or {}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            return 400, _error(INVALID_ARGUMENT, f"Invalid input error: unrecognized input parameters {unknown}")
        self.loaded_specs.append(loaded)
        run = {
            **body,
            "run_id": str(uuid.uuid4()),
            "state": "PENDING",
            "created_at": _now(),
            "storage_state": "AVAILABLE",
        }
        self.runs[run["run_id"]] = run
        self._polls[run["run_id"]] = 0
        return 200, run

    def _get_run(self, run_id: str) -> tuple[int, Any]:
        if run_id not in self.runs:
            return 404, _error(NOT_FOUND, f"Failed to get run: run {run_id} not found")
        i = self._polls[run_id]
        self._polls[run_id] = i + 1
        state = self.states[min(i, len(self.states) - 1)]
        run = {**self.runs[run_id], "state": state}
        if state in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
            run["finished_at"] = _now()
        if state == "FAILED":
            run["error"] = {"code": 2, "message": self.failure_message}
        return 200, run

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return json_handler(
            lambda method, path, query, body: self.handle(method, path, parse_qs(query), body),
            bad_json=(400, _error(INVALID_ARGUMENT, "request body is not JSON")),
        )


def _error(code: int, message: str) -> dict[str, Any]:
    return {"error": message, "code": code, "message": message, "details": []}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
