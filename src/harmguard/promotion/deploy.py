"""Roll a champion out: the Ray Serve ``user_config``, the RayService patch, and a push to a running local server.

Ray Serve applies a new model and thresholds in ``reconfigure(user_config)`` (STYLE.md, Serve), so a rollout is a
new ``user_config`` (the one the Serve-config builder, ``serving.config.build_serve_config``, gives the model
deployment):

- on a cluster, the RayService's ``serveConfigV2`` carries it. The deploy step is given a :class:`ClusterRollout`
  (``harmguard.k8s.rayservice.RayServiceRollout``) which patches the live RayService ``serving.config.RAYSERVICE_NAME``
  and waits until KubeRay reports it running; when it does not, the step fails with "moved, not deployed"
  (:class:`NotDeployed`, exit 3) and the champion pointer stays where promotion moved it (no silent rollback: the
  registry says what should run, ``harmguard status`` shows what does). ``render_rayservice_patch`` also writes the
  whole Serve config as a merge patch (``kubectl patch rayservice harmguard-classifier --type merge --patch-file
  rayservice-patch.yaml``) into ``runs/<run-id>/``, for a cluster without that access;
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
from typing import Any, Protocol

import yaml

from harmguard.registry import VersionRecord
from harmguard.serving.admin import AdminTokenError, admin_token_path, read_admin_token
from harmguard.serving.config import (
    ENDPOINT_KEY,
    MODEL_DEPLOYMENT,
    RAYSERVICE_NAME,
    Autoscaling,
    ServeArgs,
    build_serve_config,
    user_config_for,
)
from harmguard.serving.local import find_local_server
from harmguard.storage import ArtifactStore

PUSH_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 3.0  # of `harmguard status` asking a local server's /readyz


class DeployError(RuntimeError):
    """The new user_config could not be pushed to the running server."""


class NotDeployed(DeployError):
    """``champion`` moved, but the cluster does not run the new version (the message starts "moved, not deployed")."""


class ClusterRollout(Protocol):
    """Where a champion goes on a cluster (``harmguard.k8s.rayservice.RayServiceRollout``)."""

    @property
    def ref(self) -> str:
        """What is rolled out to, for messages (``RayService <namespace>/<name>``)."""
        ...

    def apply(self, user_config: dict[str, Any]) -> dict[str, Any]:
        """Serve ``user_config`` and wait until it runs; raises when it does not."""
        ...

    def deployed(self) -> dict[str, Any]:
        """``{"where", "policy", "version", "model_digest", "thresholds_version", "running", "state"}``."""
        ...


def _serve_config(record: VersionRecord) -> dict[str, Any]:
    """The Serve config of the shipped RayService serving ``record`` (cluster autoscaling)."""
    return build_serve_config(ServeArgs(user_config=user_config_for(record)), autoscaling=Autoscaling())


def model_user_config(record: VersionRecord) -> dict[str, Any]:
    """The model deployment's ``user_config`` serving ``record``, as the Serve-config builder writes it."""
    deployments = _serve_config(record)["applications"][0]["deployments"]
    return dict(next(d for d in deployments if d["name"] == MODEL_DEPLOYMENT)["user_config"])


def render_rayservice_patch(record: VersionRecord) -> str:
    """A RayService merge patch whose serveConfigV2 serves ``record`` (YAML text).

    The Serve config is the one the shipped RayService carries (``serving.config.build_serve_config`` with the
    cluster's autoscaling): limits, batching, autoscaling and health checks stay, the ``user_config`` changes.
    """
    serve_config = _serve_config(record)
    patch = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": RAYSERVICE_NAME},
        "spec": {"serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False)},
    }
    header = (
        f"# Promote {record.version} (model {record.model_digest[:12]}, thresholds {record.thresholds_version[:12]})\n"
    )
    return header + yaml.safe_dump(patch, sort_keys=False)


def _loopback(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def push_version(url: str, version: str, token: str, timeout: float = PUSH_TIMEOUT_S) -> int:
    """POST a version id to a local server's admin route with its admin token; returns the HTTP status.

    Raises:
        DeployError: When the URL is not on loopback (the token never leaves the machine), the server refused the
            version (its answer says why) or could not be reached.
    """
    if not _loopback(url):
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


def deploy_version(
    store: ArtifactStore, record: VersionRecord, run_id: str, cluster: ClusterRollout | None = None
) -> dict[str, Any]:
    """Render the RayService patch into ``runs/<run-id>/``, roll out to ``cluster``, push to a local server, if any.

    Returns:
        ``{"patch": URI, "rayservice": the rollout's result or None, "server": url or None, "pushed": bool,
        "note": str}``.

    Raises:
        NotDeployed: When ``cluster`` does not run the new version (missing, refused, not ready before its deadline).
        DeployError: When the local server refused the version or could not be reached.
    """
    key = f"runs/{run_id}/rayservice-patch.yaml"
    store.write_atomic(key, render_rayservice_patch(record).encode())
    result: dict[str, Any] = {"patch": store.uri_for(key), "rayservice": None, "server": None, "pushed": False}
    notes = []
    if cluster is not None:
        try:
            result["rayservice"] = cluster.apply(model_user_config(record))
        except Exception as e:
            raise NotDeployed(
                f"moved, not deployed: {record.version} is now the champion of {record.policy}, but {e}. The champion "
                "pointer was not rolled back; fix the cluster and run the deploy step again, or roll back"
            ) from e
        notes.append(f"{cluster.ref} runs {record.version}")
    server = find_local_server(store)
    if server is None:
        notes.append(f"no local server running ({ENDPOINT_KEY} absent or stale): nothing pushed")
        result["note"] = "; ".join(notes)
        return result
    result["server"] = server["user_config_url"]
    try:
        token = read_admin_token(admin_token_path(store))
    except AdminTokenError as e:
        raise DeployError(f"cannot push {record.version} to the local server: {e}") from e
    status = push_version(server["user_config_url"], record.version, token)
    notes.append(f"pushed to {server['user_config_url']} (HTTP {status})")
    result.update(pushed=True, note="; ".join(notes))
    return result


def local_readyz(url: str, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
    """What a local server's ``/readyz`` reports (a 503 answer too: its body says what is not ready).

    Raises:
        DeployError: For a URL that is not on loopback, no answer, or an answer that is not a JSON object.
    """
    if not _loopback(url):
        raise DeployError(f"not asking {url}: a local server listens on 127.0.0.1")
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/readyz", timeout=timeout) as resp:  # noqa: S310 - loopback
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raw = e.read()
    except OSError as e:
        raise DeployError(f"the local server at {url} does not answer: {e}") from e
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise DeployError(f"the local server at {url} answered /readyz with something that is not JSON") from e
    if not isinstance(doc, dict):
        raise DeployError(f"the local server at {url} answered /readyz with something that is not a JSON object")
    return doc


def deployed_versions(
    store: ArtifactStore, cluster: ClusterRollout | None = None
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Per policy, what serving reports it runs: the local server's ``/readyz``, the cluster's RayService.

    Returns:
        ``({policy: [{"where", "version", "model_digest", "thresholds_version", "running", "state"}]}, problems)``;
        a source that cannot be asked is a problem line, not an error (``harmguard status`` still answers).
    """
    found: dict[str, list[dict[str, Any]]] = {}
    problems: list[str] = []
    server = find_local_server(store)
    if server is not None and server.get("url"):
        where = f"local server {server['url']}"
        try:
            ready = local_readyz(str(server["url"]))
        except DeployError as e:
            problems.append(str(e))
        else:
            policy = ready.get("policy") or server.get("policy")
            state = "ready" if ready.get("ready") else f"not ready ({ready.get('last_refusal') or 'no model'})"
            if ready.get("refused_version"):  # a pushed version the replica refused (it serves the one before)
                state += f"; refused {ready['refused_version']}"
            entry = {
                "where": where,
                "version": ready.get("model_version"),
                "model_digest": ready.get("model_digest"),
                "thresholds_version": ready.get("thresholds_version"),
                "running": bool(ready.get("ready")),
                "state": state,
            }
            found.setdefault(str(policy), []).append(entry)
    if cluster is not None:
        try:
            deployed = cluster.deployed()
        except Exception as e:  # an unreachable cluster is reported, never fatal to `status`
            problems.append(f"{cluster.ref}: {e}")
        else:
            policy = deployed.pop("policy", None)
            found.setdefault(str(policy), []).append(deployed)
    return found, problems
