"""Training as a KubeRay RayJob: the ``rayjob`` backend's launcher (a CPU pipeline step).

The launcher writes the training input to the run's ``gs://`` work folder, creates a RayJob (built by
``harmguard.k8s.kuberay.rayjob_manifest``) that runs ``ray/train_entry.py`` in the harmguard image, follows its status
through the Kubernetes API (``CustomObjectsApi``), streams the driver's log lines from the Ray dashboard's job logs
API while it runs, and on success exports the best checkpoint like the inline train step. A job that fails, or runs
past the launcher's deadline (the RayJob is then deleted), fails the step with KubeRay's reason, message and the last
driver log lines.

Training clusters run with Ray token auth and behind NetworkPolicies: the launcher step reads the dashboard with
``RAY_AUTH_TOKEN`` and the pod label ``harmguard.io/ray-client: launcher`` (``cluster.configure_step(ray_client=True)``
sets both); without them the job still runs and is followed, only its driver log is not streamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harmguard.k8s.cluster import CLUSTER
from harmguard.k8s.kuberay import RayJobSpec, rayjob_manifest, train_entrypoint

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
SUCCEEDED = "SUCCEEDED"
DEPLOYMENT_TERMINAL = {"Complete", "Failed"}  # KubeRay's IsJobDeploymentTerminal
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
LOG_TAIL_LINES = 40


class RayJobError(RuntimeError):
    """The RayJob could not be created, failed or overran its deadline; the message says why, with its logs."""


class RayJobDeadlineExceeded(RayJobError):
    """The RayJob did not finish within the launcher's deadline (it has been deleted)."""


def rayjob_name(run_id: str) -> str:
    """A DNS-1035 RayJob name for a run, short enough for the names KubeRay derives from it (cluster, services).

    The same run always gets the same name, so a retried launcher step finds the RayJob it already created.
    """
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")[:24].strip("-")
    return f"hg-train-{stem}-{digest}" if stem else f"hg-train-{digest}"


def current_namespace(override: str | None = None, default: str = "default") -> str:
    """The namespace this pod runs in (``override``: Settings.namespace, HARMGUARD_NAMESPACE), else ``default``."""
    if override:
        return override
    try:
        return Path(NAMESPACE_FILE).read_text().strip() or default
    except OSError:
        return default


def custom_objects_api(host: str | None = None) -> Any:
    """A ``kubernetes`` CustomObjectsApi.

    For ``host`` when given (``kubectl proxy``, a stand-in), else the in-cluster config, else the local kubeconfig.
    """
    from kubernetes import client, config

    if host:
        cfg = client.Configuration()
        cfg.host = host
        return client.CustomObjectsApi(client.ApiClient(cfg))
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def ray_auth_token(environ: dict[str, str] | None = None) -> str | None:
    """The Ray auth token the way Ray's own clients find it: ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``.

    The training clusters run with token auth (``authOptions``); the launcher step gets the token from the
    ``harmguard-ray-training-token`` Secret. None when neither is set (the dashboard then answers 401).
    """
    env = os.environ if environ is None else environ
    token = env.get("RAY_AUTH_TOKEN", "").strip()
    if not token and env.get("RAY_AUTH_TOKEN_PATH"):
        token = Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    return token or None


def dashboard_logs(dashboard_url: str, job_id: str, timeout_s: float = 10.0, token: str | None = None) -> str:
    """The driver logs of ``job_id`` from the Ray dashboard (Ray Jobs REST API ``GET /api/jobs/{id}/logs``).

    ``token`` (default: ``ray_auth_token()``) goes in ``Authorization: Bearer``, as Ray's own clients send it.
    """
    base = dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"
    request = urllib.request.Request(f"{base.rstrip('/')}/api/jobs/{job_id}/logs")
    token = token or ray_auth_token()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310
        return str(json.loads(resp.read()).get("logs", ""))


def describe_status(status: dict[str, Any]) -> str:
    """One line: deployment status, job status, reason."""
    parts = [status.get("jobDeploymentStatus") or "New", status.get("jobStatus") or "-"]
    if status.get("reason"):
        parts.append(f"reason={status['reason']}")
    if status.get("failed"):
        parts.append(f"failed={status['failed']}")
    return " ".join(parts)


@dataclass
class RayJobLauncher:
    """Create one RayJob and follow it to the end.

    Args:
        api: A ``kubernetes.client.CustomObjectsApi``.
        namespace: Where the RayJob lives.
        poll_s: Seconds between status reads.
        echo: Where progress and driver log lines go (the step's stdout: the KFP UI shows it).
        fetch_logs: ``(dashboard_url, job_id) -> logs``; the Ray dashboard by default.
    """

    api: Any
    namespace: str
    poll_s: float = 10.0
    echo: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    fetch_logs: Callable[[str, str], str] = dashboard_logs

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the RayJob; when one of that name exists (a retried step), attach to it instead."""
        from kubernetes.client.rest import ApiException

        name = manifest["metadata"]["name"]
        try:
            return self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)
        except ApiException as e:
            if e.status == 409:
                self.echo(f"RayJob {self.namespace}/{name} exists already (a retried step): following it")
                return self.get(name)
            raise RayJobError(f"could not create RayJob {self.namespace}/{name}: HTTP {e.status} {_reason(e)}") from e

    def get(self, name: str) -> dict[str, Any]:
        """The RayJob object as the API server has it."""
        return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def delete(self, name: str) -> None:
        """Delete the RayJob and, through its owner references, its Ray cluster and submitter Job."""
        from kubernetes.client.rest import ApiException

        try:
            self.api.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, propagation_policy="Foreground"
            )
        except ApiException as e:
            if e.status != 404:
                raise

    def logs(self, status: dict[str, Any]) -> str | None:
        """The driver logs, when the job has a dashboard and an id and the dashboard answers."""
        if not (status.get("dashboardURL") and status.get("jobId")):
            return None
        try:
            return self.fetch_logs(status["dashboardURL"], status["jobId"])
        except Exception:  # the cluster may already be gone (shutdownAfterJobFinishes); logs are a courtesy
            return None

    def run(self, manifest: dict[str, Any], *, deadline_s: float) -> dict[str, Any]:
        """Create the RayJob and wait until it ends; returns its final status when the job SUCCEEDED.

        Raises:
            RayJobError: The job failed (KubeRay's reason and message and the driver's last log lines).
            RayJobDeadlineExceeded: It was still going after ``deadline_s`` seconds; the RayJob was deleted.
        """
        name = manifest["metadata"]["name"]
        self.create(manifest)
        self.echo(f"RayJob {self.namespace}/{name} created; waiting up to {deadline_s:.0f} s")
        deadline = time.monotonic() + deadline_s
        last, printed = None, 0
        while True:
            status = self.get(name).get("status") or {}
            line = describe_status(status)
            if line != last:
                self.echo(f"RayJob {name}: {line}")
                last = line
            if status.get("jobStatus") == "RUNNING":
                logs = self.logs(status)
                if logs is not None and len(logs) > printed:
                    self.echo(logs[printed:].rstrip("\n"))  # progress lines reach the step's log as they happen
                    printed = len(logs)
            if status.get("jobDeploymentStatus") in DEPLOYMENT_TERMINAL:
                if status.get("jobDeploymentStatus") == "Complete" and status.get("jobStatus") == SUCCEEDED:
                    return status
                raise RayJobError(self._failure(name, status))
            if time.monotonic() >= deadline:
                logs = self.logs(status)
                self.delete(name)
                raise RayJobDeadlineExceeded(
                    f"RayJob {self.namespace}/{name} still {line} after the {deadline_s:.0f} s deadline; "
                    f"deleted it (with its Ray cluster).{_tail(logs)}"
                )
            time.sleep(self.poll_s)

    def _failure(self, name: str, status: dict[str, Any]) -> str:
        head = f"RayJob {self.namespace}/{name} ended {describe_status(status)}"
        message = status.get("message") or "(no message)"
        logs = self.logs(status)
        hint = (
            ""
            if logs is not None
            else f"\n(driver logs unavailable; `kubectl logs -n {self.namespace} job/{name}` shows the submitter's)"
        )
        return f"{head}: {message}{_tail(logs)}{hint}"


def _tail(logs: str | None) -> str:
    if not logs:
        return ""
    lines = logs.rstrip("\n").splitlines()[-LOG_TAIL_LINES:]
    return f"\n--- last {len(lines)} driver log lines ---\n" + "\n".join(lines)


def _reason(e: Any) -> str:
    try:
        return str(json.loads(e.body).get("message") or e.reason)
    except (TypeError, ValueError):
        return str(e.reason)


def build_training_rayjob(
    *, run_id: str, namespace: str, image: str, workdir: str, workers: int, gpu_per_worker: int, deadline_s: int
) -> dict[str, Any]:
    """The RayJob of one training run, placed and credentialed like the pipeline's GPU steps, with token auth."""
    return rayjob_manifest(
        RayJobSpec(
            name=rayjob_name(run_id),
            namespace=namespace,
            image=image,
            entrypoint=train_entrypoint(workdir),
            runtime_env_vars={"RAY_DEDUP_LOGS": "0", "TOKENIZERS_PARALLELISM": "false"},
            gpu_workers=workers,
            gpu_per_worker=gpu_per_worker,
            active_deadline_seconds=deadline_s,  # KubeRay's own limit, the same as the launcher's
            node_selector=CLUSTER.gpu_node_selector if gpu_per_worker else None,
            service_account=CLUSTER.training_service_account,
            settings_config_map=CLUSTER.settings_config_map,
            gcs_secret=CLUSTER.gcs_secret or None,
            auth_secret=CLUSTER.ray_training_token_secret,
            labels={"harmguard.io/run-id": re.sub(r"[^A-Za-z0-9_.-]", "-", run_id)[:63].strip("-_.")},
        )
    )
