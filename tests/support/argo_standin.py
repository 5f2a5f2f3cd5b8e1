"""A local stand-in for the Argo Server's workflow endpoints that ``argo node set`` and ``argo resume`` use.

It answers like Argo Server v4 (``server/workflow/workflow_server.go`` and ``workflow/util.updateSuspendedNode``):

- every request needs ``Authorization: Bearer <token>`` (else 401, ``{"code": 16, "message": ...}``);
- ``GET /api/v1/workflows/{ns}/{name}``: the workflow, or 404;
- ``PUT .../set``: the body must be a ``WorkflowSetRequest`` (Hera's pydantic model, no unknown keys, name and namespace
  as in the URL); ``outputParameters`` is a JSON object of strings; on the active suspend nodes the
  ``nodeFieldSelector`` matches (``displayName``, ``templateName``, ``phase``, ``name``, ``id``), each output must be
  declared with ``valueFrom.supplied``; none matching is an error (400);
- ``PUT .../resume``: a ``WorkflowResumeRequest``; the matching active suspend nodes succeed, unset supplied outputs
  take their defaults.

The workflows it holds are checked against the pinned Argo Workflow CRD when they are added and after each change.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from hera.workflows.models import WorkflowResumeRequest, WorkflowSetRequest

from harmguard.k8s.argo import build_retrain_cron_workflow
from tests.support.json_http import json_handler

_WORKFLOW = re.compile(r"^/api/v1/workflows/([^/]+)/([^/]+?)(?:/(set|resume))?$")
_SELECTOR_FIELDS = {"displayName", "templateName", "phase", "name", "id"}
T0 = "2026-11-23T03:00:00Z"


@dataclass
class Call:
    method: str
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class ArgoStandIn:
    """Serve on 127.0.0.1 with one accepted token; ``fail`` maps an action (``set``, ``resume``) to an HTTP error."""

    token: str
    validate: Callable[[dict[str, Any]], None] | None = None
    fail: dict[str, int] = field(default_factory=dict)
    workflows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), json_handler(self.handle, headers=True))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """``host:port``, the form ARGO_SERVER takes."""
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ArgoStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, workflow: dict[str, Any]) -> None:
        if self.validate is not None:
            self.validate(workflow)
        meta = workflow["metadata"]
        self.workflows[(meta["namespace"], meta["name"])] = copy.deepcopy(workflow)

    def node(self, namespace: str, name: str, display_name: str) -> dict[str, Any]:
        nodes = self.workflows[(namespace, name)]["status"]["nodes"]
        return next(n for n in nodes.values() if n["displayName"] == display_name)

    def actions(self) -> list[str]:
        return [f"{c.method} {c.path.rsplit('/', 1)[-1]}" for c in self.calls]

    # --- the API -----------------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        with self._lock:
            self.calls.append(Call(method, path, body, headers))
            if headers.get("authorization") != f"Bearer {self.token}":
                return 401, _error(16, "token not valid. see https://argo-workflows.readthedocs.io/en/latest/faq/")
            m = _WORKFLOW.match(path)
            if not m:
                return 404, _error(5, f"no route for {path}")
            namespace, name, action = m.groups()
            key = (namespace, name)
            if key not in self.workflows:
                return 404, _error(5, f'workflows.argoproj.io "{name}" not found')
            if method == "GET" and action is None:
                return 200, self.workflows[key]
            if method != "PUT" or action is None:
                return 405, _error(12, f"{method} {path} is not served here")
            if action in self.fail:
                return self.fail[action], _error(13, f"{action} failed (scripted)")
            model = WorkflowSetRequest if action == "set" else WorkflowResumeRequest
            problem = _check_body(model, body, namespace, name)
            if problem:
                return 400, _error(3, problem)
            wf = copy.deepcopy(self.workflows[key])
            try:
                _apply(wf, action, body)
            except ValueError as e:
                return 400, _error(3, str(e))
            if self.validate is not None:
                self.validate(wf)
            self.workflows[key] = wf
            return 200, wf


def _error(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def _check_body(model: Any, body: Any, namespace: str, name: str) -> str | None:
    """What is wrong with a request body, judged by Hera's model of it (None: nothing)."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    known = {f.alias or n for n, f in model.model_fields.items()}
    unknown = sorted(set(body) - known)
    if unknown:
        return f"unknown field(s) {unknown} in a {model.__name__}"
    try:
        model.model_validate(body)
    except ValueError as e:
        return f"not a {model.__name__}: {e}"
    if body.get("name", name) != name or body.get("namespace", namespace) != namespace:
        return "name and namespace in the body differ from the URL"
    return None


def _matches(selector: str, node: dict[str, Any]) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, sep, value = term.partition("=")
        if not sep or key not in _SELECTOR_FIELDS:
            raise ValueError(f"unsupported node field selector {selector!r}")
        if str(node.get(key)) != value:
            return False
    return True


def _apply(wf: dict[str, Any], action: str, body: dict[str, Any]) -> None:
    selector = body.get("nodeFieldSelector") or ""
    active = [n for n in wf["status"]["nodes"].values() if n["type"] == "Suspend" and n["phase"] == "Running"]
    chosen = [n for n in active if _matches(selector, n)]
    if action == "set":
        try:
            outputs = json.loads(body.get("outputParameters") or "{}")
        except ValueError as e:
            raise ValueError(f"outputParameters is not JSON: {e}") from e
        if not isinstance(outputs, dict) or not all(isinstance(v, str) for v in outputs.values()):
            raise ValueError("outputParameters must be a JSON object of strings")
        if not chosen:
            raise ValueError(f"currently, set only targets suspend nodes: no suspend nodes matching {selector}")
        for node in chosen:
            params = {p["name"]: p for p in (node.get("outputs") or {}).get("parameters") or []}
            for key, value in outputs.items():
                param = params.get(key)
                if param is None:
                    raise ValueError(f"node is not expecting output parameter '{key}'")
                if "supplied" not in (param.get("valueFrom") or {}):
                    raise ValueError(f"cannot set output parameter '{key}' because it does not use valueFrom.raw")
                param["value"] = value
                param.pop("valueFrom")
        return
    if selector and not chosen:
        raise ValueError(f"no suspend nodes matching {selector}")
    for node in chosen:
        for param in (node.get("outputs") or {}).get("parameters") or []:
            supplied = param.get("valueFrom") or {}
            if "supplied" in supplied:
                if "default" not in supplied:
                    raise ValueError(f"raw output parameter '{param['name']}' has not been set and has no default")
                param["value"] = supplied["default"]
                param.pop("valueFrom")
        node.update(phase="Succeeded", finishedAt=T0, message="Resumed by: map[sub:harmguard-test]")


def retrain_workflow(
    name: str, version: str, *, namespace: str = "harmguard", phase: str = "Running"
) -> dict[str, Any]:
    """A run of the shipped retraining CronWorkflow suspended at ``await-approval`` while reviewing ``version``.

    The spec is the rendered CronWorkflow's; the node statuses follow the controller's (a steps node per template,
    the suspend node carrying its template's outputs, ``boundaryID`` pointing at the enclosing steps node).
    """
    cron = build_retrain_cron_workflow().to_dict()
    spec = cron["spec"]["workflowSpec"]
    approval = next(t for t in spec["templates"] if t["name"] == "approval")
    root, review, wait = f"{name}", f"{name}-1520369802", f"{name}-3307815163"
    defaults = {p["name"]: p for p in approval["inputs"]["parameters"]}
    nodes = {
        root: {"id": root, "name": name, "displayName": name, "type": "Steps", "templateName": "retrain",
               "phase": "Running", "startedAt": T0, "children": [review]},
        review: {"id": review, "name": f"{name}[3].review", "displayName": "review", "type": "Steps",
                 "templateName": "review", "phase": "Running", "boundaryID": root, "startedAt": T0,
                 "inputs": {"parameters": [{"name": "version", "value": version}]}, "children": [wait]},
        wait: {"id": wait, "name": f"{name}[3].review[0].await-approval", "displayName": "await-approval",
               "type": "Suspend", "templateName": "approval", "phase": phase, "boundaryID": review, "startedAt": T0,
               "inputs": {"parameters": [{"name": n, "value": p["default"]} for n, p in defaults.items()]},
               "outputs": copy.deepcopy(approval["outputs"])},
    }  # fmt: skip
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"workflows.argoproj.io/cron-workflow": cron["metadata"]["name"]},
        },
        "spec": spec,
        "status": {"phase": "Running", "startedAt": T0, "nodes": nodes},
    }
