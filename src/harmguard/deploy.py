"""Roll a champion out: the Ray Serve ``user_config``, the RayService patch, and a push to a running local server.

Ray Serve applies a new model and thresholds in ``reconfigure(user_config)`` (STYLE.md, Serve), so a rollout is a
new ``user_config``:

- on a cluster, the RayService's ``serveConfigV2`` carries it; ``render_rayservice_patch`` writes a merge patch
  (``kubectl patch rayservice <name> --type merge --patch-file rayservice-patch.yaml``) into ``runs/<run-id>/``;
- locally, a server started by ``harmguard serve`` (issue #7) announces itself in
  ``HARMGUARD_HOME/serve/endpoint.json`` as ``{"user_config_url": "http://127.0.0.1:8000/...", "pid": 1234}``;
  the new ``user_config`` is POSTed there as JSON. No file, or a file whose ``pid`` is not alive: no server,
  nothing pushed (and the result says so).
"""

from __future__ import annotations

import copy
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from harmguard.registry import VersionRecord
from harmguard.storage import ArtifactStore

ENDPOINT_KEY = "serve/endpoint.json"
# Names of the serving application (harmguard.serving, ray/serve_config.yaml); the patch and the server agree.
SERVE_APP = "harmguard"
SERVE_IMPORT_PATH = "harmguard.serving.app:build_app"
SERVE_DEPLOYMENT = "Classifier"
# The committed Serve config of a source checkout; the patch keeps its other settings (limits, batching).
BASE_SERVE_CONFIG = Path(__file__).resolve().parents[2] / "ray" / "serve_config.yaml"
PUSH_TIMEOUT_S = 10.0


class DeployError(RuntimeError):
    """The new user_config could not be pushed to the running server."""


def user_config(record: VersionRecord) -> dict[str, Any]:
    """What a serving replica needs to answer with this version (applied by ``reconfigure``)."""
    return {
        "policy": record.policy,
        "version": record.version,
        "model_uri": record.model_uri,
        "model_digest": record.model_digest,
        "thresholds": dict(record.thresholds),
        "thresholds_version": record.thresholds_version,
    }


def render_rayservice_patch(record: VersionRecord, base: dict[str, Any] | None = None) -> str:
    """A RayService merge patch whose serveConfigV2 serves ``record`` (YAML text).

    Args:
        record: The version to serve.
        base: A Serve config to keep everything else from (default: ``ray/serve_config.yaml`` when present); only
            the ``user_config`` of the ``Classifier`` deployment changes.
    """
    if base is None and BASE_SERVE_CONFIG.is_file():
        base = yaml.safe_load(BASE_SERVE_CONFIG.read_text())
    serve_config = copy.deepcopy(base) if base else {}
    apps = serve_config.setdefault("applications", [])
    app = next((a for a in apps if a.get("import_path") == SERVE_IMPORT_PATH), None)
    if app is None:
        app = {"name": SERVE_APP, "route_prefix": "/", "import_path": SERVE_IMPORT_PATH}
        apps.append(app)
    deployments = app.setdefault("deployments", [])
    deployment = next((d for d in deployments if d.get("name") == SERVE_DEPLOYMENT), None)
    if deployment is None:
        deployment = {"name": SERVE_DEPLOYMENT}
        deployments.append(deployment)
    deployment["user_config"] = user_config(record)
    patch = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": f"harmguard-{record.policy}".replace("_", "-")},
        "spec": {"serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False)},
    }
    header = (
        f"# Promote {record.version} (model {record.model_digest[:12]}, thresholds {record.thresholds_version[:12]})\n"
    )
    return header + yaml.safe_dump(patch, sort_keys=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def find_local_server(store: ArtifactStore) -> dict[str, Any] | None:
    """The running local server's endpoint document, or None when none is announced or its process is gone."""
    try:
        doc = json.loads(store.read_bytes(ENDPOINT_KEY))
    except FileNotFoundError:
        return None
    if not doc.get("user_config_url"):
        return None
    pid = doc.get("pid")
    if isinstance(pid, int) and not _alive(pid):
        return None
    return doc


def push_user_config(url: str, config: dict[str, Any], timeout: float = PUSH_TIMEOUT_S) -> int:
    """POST a user_config to a server; returns the HTTP status (DeployError on failure)."""
    body = json.dumps(config).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - a local URL the server wrote
            return int(resp.status)
    except OSError as e:
        raise DeployError(f"pushing the new user_config to {url} failed: {e}") from e


def deploy_version(store: ArtifactStore, record: VersionRecord, run_id: str) -> dict[str, Any]:
    """Render the RayService patch into ``runs/<run-id>/`` and push to a running local server, if any.

    Returns:
        ``{"patch": URI, "server": url or None, "pushed": bool, "note": str}``.
    """
    key = f"runs/{run_id}/rayservice-patch.yaml"
    store.write_atomic(key, render_rayservice_patch(record).encode())
    server = find_local_server(store)
    result: dict[str, Any] = {"patch": store.uri_for(key), "server": None, "pushed": False}
    if server is None:
        result["note"] = f"no local server running ({ENDPOINT_KEY} absent or stale): nothing pushed"
        return result
    result["server"] = server["user_config_url"]
    status = push_user_config(server["user_config_url"], user_config(record))
    result.update(pushed=True, note=f"pushed to {server['user_config_url']} (HTTP {status})")
    return result
