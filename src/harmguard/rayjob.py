"""Training as a KubeRay RayJob: the ``rayjob`` backend's launcher (a CPU pipeline step).

The launcher writes the training input to the run's ``gs://`` work folder, creates a RayJob (built by
``harmguard.kuberay.rayjob_manifest``) that runs ``ray/train_entry.py`` in the harmguard image, follows its status
through the Kubernetes API (``CustomObjectsApi``), streams the driver's log lines from the Ray dashboard's job logs
API while it runs, and on success exports the best checkpoint like the inline train step. A job that fails, or runs
past the launcher's deadline (the RayJob is then deleted), fails the step with KubeRay's reason, message and the last
driver log lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def current_namespace(default: str = "default") -> str:
    """The namespace this pod runs in (HARMGUARD_NAMESPACE overrides), else ``default``."""
    if os.environ.get("HARMGUARD_NAMESPACE"):
        return os.environ["HARMGUARD_NAMESPACE"]
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


def dashboard_logs(dashboard_url: str, job_id: str, timeout_s: float = 10.0) -> str:
    """The driver logs of ``job_id`` from the Ray dashboard (Ray Jobs REST API ``GET /api/jobs/{id}/logs``)."""
    base = dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"
    with urllib.request.urlopen(f"{base.rstrip('/')}/api/jobs/{job_id}/logs", timeout=timeout_s) as resp:  # noqa: S310
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
    """The RayJob of one training run, placed and credentialed like the pipeline's GPU steps."""
    from harmguard.cluster import CLUSTER
    from harmguard.kuberay import rayjob_manifest, train_entrypoint

    return rayjob_manifest(
        name=rayjob_name(run_id),
        namespace=namespace,
        image=image,
        entrypoint=train_entrypoint(workdir),
        runtime_env_vars={"RAY_DEDUP_LOGS": "0", "TOKENIZERS_PARALLELISM": "false"},
        gpu_workers=workers,
        gpu_per_worker=gpu_per_worker,
        active_deadline_seconds=deadline_s,  # KubeRay's own limit, the same as the launcher's
        node_selector=CLUSTER.gpu_node_selector if gpu_per_worker else None,
        settings_config_map=CLUSTER.settings_config_map,
        gcs_secret=CLUSTER.gcs_secret or None,
        labels={"harmguard.io/run-id": re.sub(r"[^A-Za-z0-9_.-]", "-", run_id)[:63].strip("-_.")},
    )


def train_rayjob_step(
    policy_ref: str,
    family: str,
    snapshot_path: str,
    seed: int,
    run_id: str,
    model_dir: str,
    train_config: str = "",
    *,
    workers: int = 2,
    gpu_per_worker: int = 1,
    deadline_s: int = 6 * 3600,
    poll_s: float = 10.0,
    api: Any = None,
) -> str:
    """The ``rayjob`` backend's train step: launch, wait, export. Returns the model digest.

    Raises:
        ValueError: For a family other than ``transformer`` or a home that a cluster cannot reach.
        RayJobError: When the RayJob fails or overruns ``deadline_s``.
    """
    from pyarrow import fs as pafs

    from harmguard.digests import model_digest
    from harmguard.lineage import image_tag
    from harmguard.policy import load_policy
    from harmguard.snapshot import read_snapshot_file
    from harmguard.steps import _ctx, record
    from harmguard.train_ray import TrainOutcome, build_loop_config, effective_spec, load_outcome_model

    if family != "transformer":
        raise ValueError(f"the rayjob backend trains the transformer family (Ray Train), not {family!r}: use inline")
    settings, store = _ctx()
    if not settings.home.startswith("gs://"):
        raise ValueError(f"HARMGUARD_HOME={settings.home}: a RayJob reads and writes gs:// only, set a gs:// home")
    policy = load_policy(policy_ref)
    options = json.loads(train_config) if train_config else {}
    options.setdefault("num_workers", workers)
    options.setdefault("use_gpu", gpu_per_worker > 0)
    config = build_loop_config(read_snapshot_file(snapshot_path), policy, effective_spec(policy, options), seed)
    workdir = store.uri_for(f"runs/{run_id}/rayjob")
    filesystem, root = pafs.FileSystem.from_uri(workdir)
    filesystem.create_dir(f"{root}/input", recursive=True)
    with filesystem.open_output_stream(f"{root}/input/loop_config.json") as out:
        out.write(json.dumps(config).encode())
    namespace = current_namespace()
    manifest = build_training_rayjob(
        run_id=run_id,
        namespace=namespace,
        image=image_tag(),
        workdir=workdir,
        workers=workers,
        gpu_per_worker=gpu_per_worker,
        deadline_s=deadline_s,
    )
    launcher = RayJobLauncher(api or custom_objects_api(os.environ.get("HARMGUARD_KUBE_API")), namespace, poll_s)
    final = launcher.run(manifest, deadline_s=deadline_s)
    local = Path(tempfile.mkdtemp(prefix="harmguard-rayjob-"))
    pafs.copy_files(f"{root}/result", str(local), source_filesystem=filesystem)
    state = json.loads((local / "run_state.json").read_text())
    outcome = TrainOutcome(best_checkpoint=local, state=state, extra={"rayjob": manifest["metadata"]["name"]})
    model = load_outcome_model(outcome, config, policy.categories)
    out = Path(model_dir)
    if out.exists():
        shutil.rmtree(out)
    model.save(out)
    digest = model_digest(out)
    info = {**model.train_info, "rayjob": {"name": manifest["metadata"]["name"], "namespace": namespace, **final}}
    record(store, run_id, "train", {"family": family, "model_digest": digest, "seed": seed, "options": options, **info})
    return digest
