"""Argo Workflows objects, written with Hera: the weekly retraining CronWorkflow, batch scoring, and their RBAC.

Argo schedules; Kubeflow Pipelines runs the pipelines. Every step runs the one harmguard image and calls the CLI:

- ``harmguard-retrain``: ``python -m harmguard.k8s.argo due`` first asks whether anything is new since the champion's
  data (``harmguard retrain-needed``); when nothing is, the workflow ends there, successfully, with the reason in
  the step's log. Otherwise ``harmguard submit --pipeline training --wait`` runs the training pipeline on KFP under
  the workflow's name as run id, on the labels cut the check counted; ``python -m harmguard.k8s.argo outcome``
  reads that run's blessing and registration from the registry; a blessed version suspends the workflow for a human
  decision (``approve`` YES/NO, ``approver``, ``reason``, supplied by ``harmguard approve|reject --workflow``
  (``harmguard.k8s.argo_resume``), ``argo resume`` / ``argo node set`` or the UI). The decision is recorded
  with ``harmguard approve`` / ``harmguard reject`` (the registry's audit log, the same trail a CLI approval
  leaves); a YES then runs the promotion pipeline, whose first step verifies that approval. No decision before
  the approval timeout resumes with the defaults, i.e. a rejection by ``argo:approval-timeout``. No pod is held
  while waiting.
- ``harmguard-batch-score``: ``harmguard submit --pipeline scoring --wait`` on the champion, daily.

Both use Argo v4's ``schedules`` list, a timezone, ``concurrencyPolicy: Forbid``, a starting deadline and
history limits; steps that talk to services retry with exponential backoff; an exit handler reports a failed
run (log line, and a JSON POST to ``notify-url`` when one is given). Pods run as the ``harmguard-argo``
ServiceAccount, whose Role only lets Argo's executor write task results.

``python -m harmguard.k8s.argo`` holds the two small step helpers (``outcome``, ``notify``); ``build_*`` functions
return Hera objects and ``*_manifest`` functions plain dicts, which ``harmguard.k8s.manifests`` renders to YAML.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harmguard.exit_codes import RETRYABLE_EXPRESSION, ExitCode
from harmguard.k8s.common import (
    GCS_MOUNT_PATH,
    PART_OF,
    gcs_credentials,
    pod_security_context,
    resources,
    restricted_security_context,
    settings_env_from,
)
from harmguard.registry.runs import read_record
from harmguard.settings import DEFAULT_IMAGE, load_settings
from harmguard.storage import open_store

TIMEOUT_APPROVER = "argo:approval-timeout"
TIMEOUT_REASON = "no decision before the approval timeout"


class ArgoConfig(BaseModel):
    """Settings of the rendered CronWorkflows (defaults: what ``manifests/argo/`` holds)."""

    model_config = ConfigDict(frozen=True)

    namespace: str = Field(default="harmguard", description="Namespace of the CronWorkflows and their pods.")
    image: str = Field(default=DEFAULT_IMAGE, description="Pinned harmguard image every step runs.")
    service_account: str = Field(default="harmguard-argo", description="ServiceAccount of the workflow pods.")
    kfp_host: str = Field(
        default="http://ml-pipeline.kubeflow.svc.cluster.local:8888", description="KFP API the steps submit to."
    )
    policy: str = Field(default="davidson2017", description="Policy retrained and scored.")
    timezone: str = Field(default="Etc/UTC", description="Timezone of the schedules.")
    retrain_schedules: tuple[str, ...] = Field(default=("0 3 * * 1",), description="Mondays 03:00.")
    score_schedules: tuple[str, ...] = Field(default=("30 4 * * *",), description="Daily 04:30.")
    monitor_schedules: tuple[str, ...] = Field(default=("0 6 * * *",), description="Daily 06:00.")
    approval_timeout: str = Field(default="72h", description="How long a blessed version waits for a decision.")
    starting_deadline_seconds: int = Field(
        default=3600, ge=0, description="A schedule missed by more than this (controller down) is skipped."
    )
    successful_history: int = Field(default=3, ge=0, description="Finished workflows kept.")
    failed_history: int = Field(default=5, ge=0, description="Failed workflows kept.")
    settings_config_map: str | None = Field(
        default="harmguard-settings", description="ConfigMap giving HARMGUARD_HOME and MLFLOW_TRACKING_URI."
    )
    gcs_secret: str | None = Field(
        default="harmguard-gcs", description="Secret with a GCS key as key.json (None: Workload Identity)."
    )
    score_input_uri: str = Field(
        default="gs://harmguard-data/inbox/latest.parquet", description="File the daily scoring reads."
    )
    score_output_prefix: str = Field(
        default="gs://harmguard-data/scores", description="Scores go to <prefix>/<date>/ (one folder per day)."
    )


# --- step helpers (run inside the workflow pods) -------------------------------------------------------------------


def training_outcome(store: Any, run_id: str) -> dict[str, Any]:
    """What the training run ``run_id`` produced: ``{"run_id", "blessed", "version", "reasons"}``.

    Read from the run's records (``runs/<run-id>/blessing.json``, ``registration.json``); a blessed run without a
    registered version is an error (the pipeline failed between the gate and the registry).

    Raises:
        LookupError: When the run left no blessing, or was blessed but registered nothing.
    """
    blessing = read_record(store, run_id, "blessing")
    if blessing is None:
        raise LookupError(f"run {run_id} has no blessing record (runs/{run_id}/blessing.json): did it reach the gate?")
    registration = read_record(store, run_id, "registration") or {}
    blessed = bool(blessing.get("blessed"))
    version = registration.get("version")
    if blessed and not version:
        raise LookupError(f"run {run_id} was blessed but registered no version (runs/{run_id}/registration.json)")
    return {"run_id": run_id, "blessed": blessed, "version": version or "", "reasons": blessing.get("reasons", [])}


def write_outputs(values: dict[str, Any], out_dir: Path) -> None:
    """One file per value (Argo output parameters read them with ``valueFrom.path``); booleans as true/false."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else value
        text = text if isinstance(text, str) else json.dumps(text)
        (out_dir / key).write_text(text)


def failure_message(workflow: str, status: str, failures: str) -> str:
    """One line saying which workflow ended how, with each failed step and its message."""
    try:
        nodes = json.loads(failures) if failures.strip() else []
    except ValueError:
        nodes = []
    details = "; ".join(f"{n.get('displayName', '?')}: {n.get('message', '')}".strip() for n in nodes or [])
    return f"workflow {workflow} ended {status}" + (f": {details}" if details else "")


def notify(message: str, url: str | None, timeout_s: float = 10.0) -> None:
    """Print ``message`` to stderr and, with a ``url``, POST ``{"text": message}`` (a Slack-style webhook).

    Raises:
        OSError: When the webhook does not answer 2xx (the exit handler then fails too, and Argo shows both).
    """
    print(message, file=sys.stderr, flush=True)
    if not url:
        return
    request = urllib.request.Request(
        url, data=json.dumps({"text": message}).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (the operator's URL)
        if not 200 <= response.status < 300:
            raise OSError(f"webhook {url} answered {response.status}")


def due_outputs(answer: dict[str, Any], *, force: bool = False) -> tuple[dict[str, Any], str]:
    """Output files of the ``retrain-needed`` step (``due``, ``labels_watermark``, ``labels_until``) and its message.

    ``force`` makes a run due whatever the answer (a manual retrain); the cut still comes from the answer.
    """
    due = bool(answer["due"]) or force
    reasons = "; ".join(answer["reasons"]) + ("; forced by the workflow's `force` parameter" if force else "")
    message = (f"retraining {answer['policy']}: " if due else f"nothing to retrain for {answer['policy']}: ") + reasons
    outputs = {
        "due": due,
        "labels_watermark": str(answer["labels_watermark"] if answer["labels_until"] else -1),
        "labels_until": answer["labels_until"] or "",
    }
    return outputs, message


def main(argv: Sequence[str] | None = None) -> int:
    """The step helpers: ``python -m harmguard.k8s.argo outcome|due|notify``.

    ``outcome RUN_ID OUT_DIR`` | ``due POLICY OUT_DIR [--min-new-labels N] [--force true|false]`` |
    ``notify WORKFLOW STATUS FAILURES [--url URL]``.
    """
    parser = argparse.ArgumentParser(prog="python -m harmguard.k8s.argo", description="Step helpers of the workflows.")
    sub = parser.add_subparsers(dest="command", required=True)
    outcome = sub.add_parser("outcome", help="Write blessed/version of a training run as output files.")
    outcome.add_argument("run_id")
    outcome.add_argument("out_dir", type=Path)
    due = sub.add_parser("due", help="Write whether a retraining run is due, and the labels cut, as output files.")
    due.add_argument("policy")
    due.add_argument("out_dir", type=Path)
    due.add_argument("--min-new-labels", default="", help="New decisions that make a run due (empty: the policy's).")
    due.add_argument("--force", default="false", choices=["true", "false"], help="Run whatever the answer.")
    report = sub.add_parser("notify", help="Report a workflow that did not succeed.")
    report.add_argument("workflow")
    report.add_argument("status")
    report.add_argument("failures", nargs="?", default="")
    report.add_argument("--url", default="")
    args = parser.parse_args(argv)
    if args.command == "outcome":
        try:
            result = training_outcome(open_store(load_settings().home), args.run_id)
        except LookupError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        write_outputs({k: result[k] for k in ("blessed", "version")}, args.out_dir)
        print(json.dumps(result))
        return 0
    if args.command == "due":
        from harmguard.labels.due import VerdictError, retrain_needed
        from harmguard.policy import load_policy

        threshold = int(args.min_new_labels) if args.min_new_labels else None
        try:
            answer = retrain_needed(
                open_store(load_settings().home), load_policy(args.policy), min_new_labels=threshold
            )
        except VerdictError as e:  # a malformed verdict is invalid input: exit 4, which Argo never retries
            print(f"error: {e}", file=sys.stderr)
            return int(ExitCode.INVALID_INPUT)
        outputs, message = due_outputs(answer, force=args.force == "true")
        write_outputs(outputs, args.out_dir)
        print(message, file=sys.stderr)
        print(json.dumps(answer))
        return 0
    notify(failure_message(args.workflow, args.status, args.failures), args.url or None)
    return 0


# --- building the workflows ----------------------------------------------------------------------------------------


def _container_kwargs(cfg: ArgoConfig, cpu: str, memory: str) -> dict[str, Any]:
    """What every step container shares: image, settings, credentials, resources, hardening."""
    from hera.workflows import models as m

    _, mounts, cred_env = gcs_credentials(cfg.gcs_secret, GCS_MOUNT_PATH)
    env = [*cred_env, {"name": "HARMGUARD_IMAGE", "value": cfg.image}]  # KFP steps run this same image
    return {
        "image": cfg.image,
        "image_pull_policy": "IfNotPresent",
        "env": [m.EnvVar.model_validate(e) for e in env],
        "env_from": [m.EnvFromSource.model_validate(e) for e in settings_env_from(cfg.settings_config_map)] or None,
        "volume_mounts": [m.VolumeMount.model_validate(v) for v in mounts] or None,
        "resources": m.ResourceRequirements.model_validate(resources(cpu, memory)),
        "security_context": m.SecurityContext.model_validate(restricted_security_context()),
    }


def _retry(policy: str = "Always", limit: int = 3) -> Any:
    """Retries with backoff, only of failures that may pass on a second try.

    ``Always`` retries what ``exit_codes.RETRYABLE_EXPRESSION`` allows (pod errors, exit 1, OOM or preemption kills),
    never a usage error, a refusal or invalid input (exit 2, 3, 4); ``OnError`` retries pod-level errors alone
    (steps that create runs, which must not be created twice).
    """
    from hera.workflows import RetryStrategy
    from hera.workflows import models as m
    from hera.workflows.models.io.k8s.apimachinery.pkg.util.intstr import IntOrString

    # 30 s, 60 s, 120 s ... capped at 10 min between tries.
    return RetryStrategy(
        limit=limit,
        retry_policy=policy,
        expression=RETRYABLE_EXPRESSION if policy == "Always" else None,
        backoff=m.Backoff(duration="30s", factor=IntOrString(2), max_duration="10m"),
    )


def _workflow_kwargs(cfg: ArgoConfig, name: str, component: str, schedules: Sequence[str]) -> dict[str, Any]:
    from hera.workflows import models as m

    volumes, _, _ = gcs_credentials(cfg.gcs_secret, GCS_MOUNT_PATH)
    labels = {**PART_OF, "app.kubernetes.io/component": component}
    return {
        "name": name,
        "namespace": cfg.namespace,
        "labels": labels,
        "schedules": list(schedules),
        "timezone": cfg.timezone,
        "concurrency_policy": "Forbid",
        "starting_deadline_seconds": cfg.starting_deadline_seconds,
        "successful_jobs_history_limit": cfg.successful_history,
        "failed_jobs_history_limit": cfg.failed_history,
        "service_account_name": cfg.service_account,
        "security_context": m.PodSecurityContext.model_validate(pod_security_context()),
        "pod_metadata": m.Metadata(labels=labels),
        "pod_gc": m.PodGC(strategy="OnPodSuccess"),
        "ttl_strategy": m.TTLStrategy(seconds_after_completion=7 * 24 * 3600),
        "volumes": [m.Volume.model_validate(v) for v in volumes] or None,
        "on_exit": "exit-handler",
    }


def _exit_handler(cfg: ArgoConfig) -> None:
    """Templates ``exit-handler`` (always runs) and ``notify-failure`` (only when the workflow did not succeed)."""
    from hera.workflows import Container, Step, Steps

    notify_failure = Container(
        name="notify-failure",
        command=["python", "-m", "harmguard.k8s.argo", "notify"],
        args=[
            "{{workflow.name}}",
            "{{workflow.status}}",
            "{{workflow.failures}}",
            "--url",
            "{{workflow.parameters.notify-url}}",
        ],
        retry_strategy=_retry(),
        **_container_kwargs(cfg, "100m", "256Mi"),
    )
    with Steps(name="exit-handler"):
        Step(name="notify", template=notify_failure, when="{{workflow.status}} != Succeeded")


def _submit_args(pipeline: str, params: dict[str, str], by: str, timeout_s: int) -> list[str]:
    """``harmguard submit ... --wait``: exits non-zero unless the KFP run succeeded within ``timeout_s``."""
    args = ["submit", "--host", "{{workflow.parameters.kfp-host}}", "--pipeline", pipeline]
    for key, value in params.items():
        args += ["--param", f"{key}={value}"]
    return [*args, "--by", by, "--wait", "--timeout", str(timeout_s), "--json"]


def build_retrain_cron_workflow(cfg: ArgoConfig | None = None) -> Any:
    """The weekly retraining CronWorkflow (a Hera ``CronWorkflow``): train -> approval -> record -> promote."""
    from hera.workflows import Container, CronWorkflow, Parameter, Step, Steps, Suspend
    from hera.workflows import models as m

    cfg = cfg or ArgoConfig()
    arguments = [
        Parameter(name="policy", value=cfg.policy, description="Policy to retrain."),
        Parameter(name="family", value="baseline", enum=["baseline", "transformer"], description="Model family."),
        Parameter(name="data-uri", value="", description="Data to train on (empty: the policy's datasets)."),
        Parameter(
            name="min-new-labels", value="", description="New decisions that make a run due (empty: the policy's)."
        ),
        Parameter(name="force", value="false", enum=["true", "false"], description="Retrain even when nothing is new."),
        Parameter(name="kfp-host", value=cfg.kfp_host, description="KFP API endpoint."),
        Parameter(name="notify-url", value="", description="Webhook told about failed runs (empty: log only)."),
    ]
    with CronWorkflow(
        entrypoint="retrain",
        arguments=arguments,
        # Training (<= 1 day) + the approval wait + promotion; a workflow past this is failed and reported.
        active_deadline_seconds=5 * 24 * 3600,
        **_workflow_kwargs(cfg, "harmguard-retrain", "retraining", cfg.retrain_schedules),
    ) as workflow:
        check = Container(
            name="retrain-needed",
            command=["python", "-m", "harmguard.k8s.argo", "due", "{{workflow.parameters.policy}}", "/tmp/due"],
            args=[
                "--min-new-labels",
                "{{workflow.parameters.min-new-labels}}",
                "--force",
                "{{workflow.parameters.force}}",
            ],  # fmt: skip
            outputs=[
                Parameter(name=n, value_from=m.ValueFrom(path=f"/tmp/due/{n}"))
                for n in ("due", "labels_watermark", "labels_until")
            ],
            retry_strategy=_retry(),
            **_container_kwargs(cfg, "250m", "1Gi"),
        )
        submit_training = Container(
            name="submit-training",
            inputs=[Parameter(name="labels_watermark"), Parameter(name="labels_until")],
            command=["harmguard"],
            args=_submit_args(
                "training",
                {
                    "policy": "{{workflow.parameters.policy}}",
                    "family": "{{workflow.parameters.family}}",
                    "data_uri": "{{workflow.parameters.data-uri}}",
                    "run_id": "{{workflow.name}}",  # the training run's id: the next step finds its records
                    # the labels cut the check counted: the run trains on exactly those decisions
                    "labels_watermark": "{{inputs.parameters.labels_watermark}}",
                    "labels_until": "{{inputs.parameters.labels_until}}",
                },
                "argo:{{workflow.name}}",
                24 * 3600,
            ),
            # Only Argo-level errors (pod evicted, node lost) are retried: a failed training run is not resubmitted.
            retry_strategy=_retry("OnError", limit=2),
            active_deadline_seconds=25 * 3600,
            **_container_kwargs(cfg, "500m", "1Gi"),
        )
        outcome = Container(
            name="training-outcome",
            command=["python", "-m", "harmguard.k8s.argo", "outcome", "{{workflow.name}}", "/tmp/outcome"],
            outputs=[
                Parameter(name="blessed", value_from=m.ValueFrom(path="/tmp/outcome/blessed")),
                Parameter(name="version", value_from=m.ValueFrom(path="/tmp/outcome/version")),
            ],
            retry_strategy=_retry(),
            **_container_kwargs(cfg, "250m", "512Mi"),
        )
        decision = [
            ("approve", "NO", ["YES", "NO"], "YES promotes the version; NO (also on timeout) rejects it."),
            ("approver", TIMEOUT_APPROVER, None, "Who decides (must differ from who started the run)."),
            ("reason", TIMEOUT_REASON, None, "Why; kept in the audit log."),
        ]
        approval = Suspend(
            name="approval",
            # After this the node resumes by itself and the outputs take their defaults: a rejection.
            duration=cfg.approval_timeout,
            inputs=[Parameter(name=n, default=d, enum=e, description=t) for n, d, e, t in decision],
            outputs=[
                Parameter(name=n, description=t, value_from=m.ValueFrom(supplied=m.SuppliedValueFrom(), default=d))
                for n, d, _, t in decision
            ],
        )
        by = "{{steps.await-approval.outputs.parameters.approver}}"
        reason = "{{steps.await-approval.outputs.parameters.reason}}"
        version = "{{inputs.parameters.version}}"
        record_approval, record_rejection = (
            Container(
                name=f"record-{decision_name}",
                inputs=[Parameter(name="version"), Parameter(name="approver"), Parameter(name="reason")],
                command=["harmguard", verb, version],
                args=["--by", "{{inputs.parameters.approver}}", "--reason", "{{inputs.parameters.reason}}"],
                retry_strategy=_retry(),
                **_container_kwargs(cfg, "500m", "1Gi"),
            )
            for decision_name, verb in (("approval", "approve"), ("rejection", "reject"))
        )
        submit_promotion = Container(
            name="submit-promotion",
            inputs=[Parameter(name="version"), Parameter(name="approver")],
            command=["harmguard"],
            args=_submit_args(
                "promotion",
                {"version": version, "run_id": "{{workflow.name}}-promote"},
                "{{inputs.parameters.approver}}",
                3 * 3600,
            ),
            retry_strategy=_retry("OnError", limit=2),
            active_deadline_seconds=3 * 3600 + 600,
            **_container_kwargs(cfg, "500m", "1Gi"),
        )
        decided = {"version": version, "approver": by, "reason": reason}
        with Steps(name="review", inputs=[Parameter(name="version")]) as review:
            Step(name="await-approval", template=approval)
            with review.parallel():  # one of the two runs, the other is skipped
                yes = "{{steps.await-approval.outputs.parameters.approve}} == YES"
                no = "{{steps.await-approval.outputs.parameters.approve}} != YES"
                Step(name="approve", template=record_approval, arguments=decided, when=yes)
                Step(name="reject", template=record_rejection, arguments=decided, when=no)
            Step(
                name="promote",
                template=submit_promotion,
                arguments={"version": version, "approver": by},
                when=yes,
            )
        due = "{{steps.check.outputs.parameters.due}} == true"
        with Steps(name="retrain"):
            # nothing new since the champion's data: the workflow ends here, successfully, the step saying why
            Step(name="check", template=check)
            cut = {n: f"{{{{steps.check.outputs.parameters.{n}}}}}" for n in ("labels_watermark", "labels_until")}
            Step(name="train", template=submit_training, arguments=cut, when=due)
            Step(name="outcome", template=outcome, when=due)
            Step(
                name="review",
                template="review",
                arguments={"version": "{{steps.outcome.outputs.parameters.version}}"},
                when=f"{due} && {{{{steps.outcome.outputs.parameters.blessed}}}} == true",
            )
        _exit_handler(cfg)
    return workflow


def build_score_cron_workflow(cfg: ArgoConfig | None = None) -> Any:
    """The daily batch-scoring CronWorkflow: the scoring pipeline on the champion, into a folder per day."""
    from hera.workflows import Container, CronWorkflow, Parameter, Step, Steps

    cfg = cfg or ArgoConfig()
    arguments = [
        Parameter(name="policy", value=cfg.policy, description="Policy whose champion scores."),
        Parameter(name="version", value="", description="Score with this version instead of the champion."),
        Parameter(name="input-uri", value=cfg.score_input_uri, description="CSV, Parquet or JSONL to score."),
        Parameter(name="output-prefix", value=cfg.score_output_prefix, description="Scores go to <prefix>/<date>."),
        Parameter(name="id-column", value="id", description="Column of the input holding the row ids."),
        Parameter(name="text-column", value="text", description="Column of the input holding the texts."),
        Parameter(name="kfp-host", value=cfg.kfp_host, description="KFP API endpoint."),
        Parameter(name="notify-url", value="", description="Webhook told about failed runs (empty: log only)."),
    ]
    day = "{{workflow.creationTimestamp.Y}}-{{workflow.creationTimestamp.m}}-{{workflow.creationTimestamp.d}}"
    with CronWorkflow(
        entrypoint="score",
        arguments=arguments,
        active_deadline_seconds=12 * 3600,
        **_workflow_kwargs(cfg, "harmguard-batch-score", "batch-scoring", cfg.score_schedules),
    ) as workflow:
        submit_scoring = Container(
            name="submit-scoring",
            command=["harmguard"],
            args=_submit_args(
                "scoring",
                {
                    "policy": "{{workflow.parameters.policy}}",
                    "version": "{{workflow.parameters.version}}",
                    "input_uri": "{{workflow.parameters.input-uri}}",
                    "output_uri": "{{workflow.parameters.output-prefix}}/" + day,
                    "id_column": "{{workflow.parameters.id-column}}",
                    "text_column": "{{workflow.parameters.text-column}}",
                },
                "argo:{{workflow.name}}",
                10 * 3600,
            ),
            # The scoring step commits its output folder only when complete, so a rerun after an error is safe.
            retry_strategy=_retry("Always", limit=2),
            active_deadline_seconds=11 * 3600,
            **_container_kwargs(cfg, "500m", "1Gi"),
        )
        with Steps(name="score"):
            Step(name="score", template=submit_scoring)
        _exit_handler(cfg)
    return workflow


def build_monitor_cron_workflow(cfg: ArgoConfig | None = None) -> Any:
    """The daily monitoring CronWorkflow: purge review texts past retention, then check the last day's traffic.

    ``harmguard monitor`` exits 3 when a drift bound is crossed: the step fails (never retried: only exit 1 and pod
    errors are), so the workflow fails and its exit handler reports it.
    """
    from hera.workflows import Container, CronWorkflow, Parameter, Step, Steps

    cfg = cfg or ArgoConfig()
    arguments = [
        Parameter(name="policy", value=cfg.policy, description="Policy whose traffic is checked."),
        Parameter(name="since", value="1d", description="Window of traffic checked, ending now (e.g. 1d, 7d)."),
        Parameter(
            name="notify-url", value="", description="Webhook told about drift or failed runs (empty: log only)."
        ),
    ]
    with CronWorkflow(
        entrypoint="monitor",
        arguments=arguments,
        active_deadline_seconds=2 * 3600,
        **_workflow_kwargs(cfg, "harmguard-monitor", "monitoring", cfg.monitor_schedules),
    ) as workflow:
        purge = Container(
            name="traffic-purge",
            command=["harmguard"],
            args=["traffic", "purge", "--policy", "{{workflow.parameters.policy}}", "--json"],
            retry_strategy=_retry(),
            **_container_kwargs(cfg, "250m", "512Mi"),
        )
        monitor = Container(
            name="check-drift",
            command=["harmguard"],
            args=[
                "monitor",
                "--policy",
                "{{workflow.parameters.policy}}",
                "--since",
                "{{workflow.parameters.since}}",
                "--json",
            ],  # fmt: skip
            retry_strategy=_retry(),
            **_container_kwargs(cfg, "1", "2Gi"),
        )
        with Steps(name="monitor"):
            Step(name="purge", template=purge)  # first: monitor then reads compacted days
            Step(name="check", template=monitor)
        _exit_handler(cfg)
    return workflow


def rbac_manifests(cfg: ArgoConfig | None = None) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding of the workflow pods (least privilege).

    The steps only talk to KFP over HTTP and to the artifact store; the Kubernetes API is used by Argo's executor
    alone, which (Argo >= 3.4, emissary) needs to create and patch ``workflowtaskresults`` and nothing else.
    """
    cfg = cfg or ArgoConfig()
    labels = {**PART_OF, "app.kubernetes.io/component": "workflows"}
    meta = {"name": cfg.service_account, "namespace": cfg.namespace, "labels": labels}
    role = f"{cfg.service_account}-executor"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": True},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {**meta, "name": role},
            "rules": [
                {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {**meta, "name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": cfg.service_account, "namespace": cfg.namespace}],
        },
    ]


if __name__ == "__main__":
    sys.exit(main())
