"""Roll a champion out: the Ray Serve ``user_config``, the RayService patch, and a push to a running local server.

Ray Serve applies a new model and thresholds in ``reconfigure(user_config)`` (STYLE.md, Serve), so a rollout is a
new ``user_config``:

- on a cluster, the RayService's ``serveConfigV2`` carries it; ``render_rayservice_patch`` writes a merge patch
  (``kubectl patch rayservice <name> --type merge --patch-file rayservice-patch.yaml``) into ``runs/<run-id>/``;
- locally, a server started by ``harmguard serve`` (issue #7) announces itself in
  ``HARMGUARD_HOME/serve/endpoint.json`` as ``{"user_config_url": "http://127.0.0.1:8000/...", "pid": 1234}``.
  After ``champion`` moved (promotion and rollback move the pointer first), the version id is POSTed there with the
  server's per-start admin token (``harmguard.serving.admin``): the server resolves the rest from the registry and
  serves the version only while it is the champion. No file, or a file whose ``pid`` is not alive: no server,
  nothing pushed (and the result says so). The token goes only to a loopback URL.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import yaml

from harmguard.registry import VersionRecord
from harmguard.serving.admin import AdminTokenError, admin_token_path, read_admin_token
from harmguard.serving.config import ENDPOINT_KEY, Autoscaling, ServeArgs, build_serve_config, user_config_for
from harmguard.serving.local import find_local_server
from harmguard.storage import ArtifactStore

PUSH_TIMEOUT_S = 10.0


class DeployError(RuntimeError):
    """The new user_config could not be pushed to the running server."""


def render_rayservice_patch(record: VersionRecord) -> str:
    """A RayService merge patch whose serveConfigV2 serves ``record`` (YAML text).

    The Serve config is the one the shipped RayService carries (``serving.config.build_serve_config`` with the
    cluster's autoscaling): limits, batching, autoscaling and health checks stay, the ``user_config`` changes.
    """
    serve_config = build_serve_config(ServeArgs(user_config=user_config_for(record)), autoscaling=Autoscaling())
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


def push_version(url: str, version: str, token: str, timeout: float = PUSH_TIMEOUT_S) -> int:
    """POST a version id to a local server's admin route with its admin token; returns the HTTP status.

    Raises:
        DeployError: When the URL is not on loopback (the token never leaves the machine), the server refused the
            version (its answer says why) or could not be reached.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise DeployError(f"refusing to send the admin token to {url}: a local server's route is on 127.0.0.1")
    body = json.dumps({"version": version}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback, checked above
            return int(resp.status)
    except urllib.error.HTTPError as e:
        try:
            why = json.loads(e.read()).get("error", "")
        except (ValueError, AttributeError):
            why = ""
        raise DeployError(f"the local server at {url} refused {version} (HTTP {e.code}): {why}") from e
    except OSError as e:
        raise DeployError(f"pushing {version} to {url} failed: {e}") from e


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
    try:
        token = read_admin_token(admin_token_path(store))
    except AdminTokenError as e:
        raise DeployError(f"cannot push {record.version} to the local server: {e}") from e
    status = push_version(server["user_config_url"], record.version, token)
    result.update(pushed=True, note=f"pushed to {server['user_config_url']} (HTTP {status})")
    return result
