"""Render the cluster objects into ``manifests/`` (``harmguard compile``), deterministically, with comments.

| file | objects | built by |
|---|---|---|
| ``argo/cron-workflow.retrain.yaml`` | CronWorkflow ``harmguard-retrain`` | ``harmguard.k8s.argo`` (Hera) |
| ``argo/cron-workflow.score.yaml`` | CronWorkflow ``harmguard-batch-score`` | ``harmguard.k8s.argo`` (Hera) |
| ``argo/cron-workflow.monitor.yaml`` | CronWorkflow ``harmguard-monitor`` | ``harmguard.k8s.argo`` (Hera) |
| ``argo/rbac.workflows.yaml`` | ServiceAccount, Role, RoleBinding of the workflow pods | ``harmguard.k8s.argo`` |
| ``kuberay/ray-job.train.yaml`` | RayJob ``harmguard-train`` | ``harmguard.k8s.kuberay`` |
| ``kuberay/ray-service.classifier.yaml`` | RayService ``harmguard-classifier`` | ``harmguard.k8s.kuberay`` |
| ``kuberay/rbac.deploy.yaml`` | Role, RoleBinding: promotion may get and patch that RayService | ``.rayservice`` |
| ``kuberay/network-policy.ray.yaml`` | NetworkPolicies of the serving and training Ray pods | ``.network`` |
| ``kuberay/service-account.ray.yaml`` | ServiceAccounts ``harmguard-serving``, ``harmguard-training`` | ``.identity`` |
| ``gcp/iam-policy.storage.yaml`` | IAM bindings (not Kubernetes): bucket and Workload Identity | ``.identity`` |

The YAML is plain block style (multi-line strings as literal blocks, no anchors), keys in a readable order, a
header naming the source, and a comment on each non-obvious field. The golden tests compare a fresh render with
the committed files byte for byte, and validate every object against the pinned schemas.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harmguard.digests import thresholds_version
from harmguard.k8s.argo import (
    ArgoConfig,
    build_monitor_cron_workflow,
    build_retrain_cron_workflow,
    build_score_cron_workflow,
    rbac_manifests,
)
from harmguard.k8s.cluster import CLUSTER
from harmguard.k8s.common import hardening_problems, is_pinned
from harmguard.k8s.exposure import exposure_problems
from harmguard.k8s.identity import service_accounts, storage_bindings, workload_identity_bindings
from harmguard.k8s.kuberay import (
    ITEM_KEY_SECRET,
    RayJobSpec,
    RayServiceSpec,
    rayjob_manifest,
    rayservice_manifest,
    train_entrypoint,
)
from harmguard.k8s.network import network_policies
from harmguard.k8s.rayservice import PLACEHOLDER_DIGEST, deploy_rbac
from harmguard.lineage import project_root
from harmguard.policy import load_policy
from harmguard.serving.config import RAYSERVICE_NAME, Traffic, UserConfig
from harmguard.settings import DEFAULT_IMAGE

# Keys first in every mapping, in this order; the others keep the order their builder gave them.
_KEY_ORDER = ("apiVersion", "kind", "metadata", "name", "generateName", "namespace", "labels", "annotations", "spec")
# Placeholders of the committed manifests (the launcher and the promotion patch replace them per run).
EXAMPLE_BUCKET = "gs://harmguard-data"
EXAMPLE_DIGEST = PLACEHOLDER_DIGEST
EXAMPLE_THRESHOLDS = {"hate": 0.5, "offensive": 0.5}


class _Dumper(yaml.SafeDumper):
    """Block style, literal blocks for multi-line strings, never anchors/aliases (shared dicts are repeated)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def ordered(value: Any) -> Any:
    """``value`` with every mapping's keys in the readable order (``_KEY_ORDER`` first)."""
    if isinstance(value, Mapping):
        first = [k for k in _KEY_ORDER if k in value]
        return {k: ordered(value[k]) for k in [*first, *(k for k in value if k not in first)]}
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


def dump_yaml(docs: Sequence[Mapping[str, Any]]) -> str:
    """Documents as YAML text (``---`` between documents)."""
    return yaml.dump_all(
        [ordered(d) for d in docs], Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120
    )


def add_comments(text: str, comments: Sequence[tuple[str, str]]) -> str:
    """Append ``# comment`` to the first line (after the previous match) whose key is ``key``.

    A key written ``parent > key`` matches ``key`` only after a line whose key is ``parent``; ``name=x`` matches
    the line ``name: x``; a bare value matches a list item ``- value``. Lines inside literal blocks (``|``) are
    never touched: a comment there would change the string.

    Raises:
        ValueError: When a key is not found (a renamed field must not silently lose its comment).
    """
    lines = text.split("\n")
    commentable: list[int] = []
    block_indent: int | None = None
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip(" "))
        if block_indent is not None:
            if line.strip() and indent <= block_indent:
                block_indent = None
            else:
                continue
        commentable.append(i)
        if re.search(r":\s*\|[-+]?$", line):
            block_indent = indent
    done: set[int] = set()
    for spec, comment in comments:
        *parents, key = spec.split(" > ")
        start = 0
        for parent in parents:
            start = _find(lines, commentable, parent, start, spec) + 1
        i = _find(lines, commentable, key, start, spec, skip=done)
        lines[i] += f"  # {comment}"
        done.add(i)
    return "\n".join(lines)


def _find(lines: list[str], candidates: list[int], key: str, start: int, spec: str, skip: Collection[int] = ()) -> int:
    if "=" in key:  # key=value: a line `key: value` (e.g. name=approval)
        key, value = key.split("=", 1)
        pattern = re.compile(rf"^\s*(- )?{re.escape(key)}: {re.escape(value)}$")
    else:  # key: a line `key: ...`, or a list item `- key`
        pattern = re.compile(rf"^\s*(- )?{re.escape(key)}(:( |$)|$)")
    for i in candidates:
        if i >= start and i not in skip and pattern.match(lines[i]):
            return i
    raise ValueError(f"no line with key {key!r} (comment {spec!r})")


@dataclass(frozen=True)
class ManifestFile:
    """One rendered file: where it goes, what it says first, which objects, which comments."""

    path: str  # relative to the manifests folder, ``<kind>.<purpose>.yaml``
    header: str
    build: Callable[[str], list[dict[str, Any]]]  # image -> objects
    comments: tuple[tuple[str, str], ...] = ()
    kubernetes: bool = True  # False: not for kubectl (gcp/: IAM policy fragments)


def _retrain(image: str) -> list[dict[str, Any]]:
    return [build_retrain_cron_workflow(ArgoConfig(image=image)).to_dict()]


def _score(image: str) -> list[dict[str, Any]]:
    return [build_score_cron_workflow(ArgoConfig(image=image)).to_dict()]


def _monitor(image: str) -> list[dict[str, Any]]:
    return [build_monitor_cron_workflow(ArgoConfig(image=image)).to_dict()]


def _rbac(image: str) -> list[dict[str, Any]]:
    return rbac_manifests(ArgoConfig(image=image))


def _ray_job(image: str) -> list[dict[str, Any]]:
    return [
        rayjob_manifest(
            RayJobSpec(
                name="harmguard-train",
                namespace="harmguard",
                image=image,
                entrypoint=train_entrypoint(f"{EXAMPLE_BUCKET}/runs/manual/checkpoints"),
                runtime_env_vars={"PYTHONUNBUFFERED": "1"},
                gpu_workers=2,
                gpu_per_worker=CLUSTER.accelerator_count,
                tolerations=[t.model_dump(exclude_none=True) for t in CLUSTER.gpu_tolerations],
                node_selector=CLUSTER.gpu_node_selector,
                service_account=CLUSTER.training_service_account,
                settings_config_map=CLUSTER.settings_config_map,
                gcs_secret=CLUSTER.gcs_secret or None,
                auth_secret=CLUSTER.ray_training_token_secret,
            )
        )
    ]


def _ray_service(image: str) -> list[dict[str, Any]]:
    return [
        rayservice_manifest(
            RayServiceSpec(
                name=RAYSERVICE_NAME,
                namespace=CLUSTER.serving_namespace,
                image=image,
                user_config=UserConfig(
                    policy="davidson2017",
                    version="davidson2017/1",
                    model_uri=f"{EXAMPLE_BUCKET}/models/{EXAMPLE_DIGEST}",
                    model_digest=EXAMPLE_DIGEST,
                    thresholds=EXAMPLE_THRESHOLDS,
                    thresholds_version=thresholds_version(EXAMPLE_THRESHOLDS),
                ),
                service_account=CLUSTER.serving_service_account,
                settings_config_map=CLUSTER.settings_config_map,
                traffic=Traffic(sample_rate=load_policy("davidson2017").monitoring.sample_rate),
                item_key_secret=ITEM_KEY_SECRET,
            )
        )
    ]


def _deploy_rbac(image: str) -> list[dict[str, Any]]:
    return deploy_rbac()


def _network(image: str) -> list[dict[str, Any]]:
    return network_policies()


def _accounts(image: str) -> list[dict[str, Any]]:
    return service_accounts()


def _iam(image: str) -> list[dict[str, Any]]:
    return [storage_bindings(), *workload_identity_bindings()]


_CRON_COMMENTS: tuple[tuple[str, str], ...] = (
    ("concurrencyPolicy", "a run still going (even one waiting for approval) makes the next schedule skip"),
    ("schedules", "Argo v4: a list; the singular `schedule` was removed"),
    ("startingDeadlineSeconds", "after controller downtime, a missed schedule runs only if this recent"),
    ("timezone", "the schedules are read in this zone"),
    ("activeDeadlineSeconds", "the whole workflow fails (and is reported) after this many seconds"),
    ("onExit", "always runs; reports a run that did not succeed"),
    ("podGC", "pods of successful steps are deleted at once; failed ones stay for `kubectl logs`"),
    ("retryPolicy", "only Argo-level errors (evicted pod, lost node): no resubmitted runs"),
    ("serviceAccountName", "rbac.workflows.yaml: may only write Argo task results"),
)

FILES: tuple[ManifestFile, ...] = (
    ManifestFile(
        "argo/cron-workflow.retrain.yaml",
        "Weekly retraining: the KFP training pipeline, then (if blessed) a human approval, then promotion.\n"
        "Approve: harmguard approve VERSION --reason WHY --workflow WORKFLOW (or reject; ARGO_SERVER, ARGO_TOKEN), or\n"
        "  argo resume WORKFLOW (UI form), or\n"
        "  argo node set WORKFLOW --output-parameter approve=YES --output-parameter approver=NAME\n"
        "    --output-parameter reason=WHY --node-field-selector displayName=await-approval && argo resume WORKFLOW\n"
        "No decision within the approval timeout is a rejection (recorded by `harmguard reject`).",
        _retrain,
        (
            *_CRON_COMMENTS,
            ("name=submit-training > --wait", "`harmguard submit --wait`: exits non-zero unless the KFP run succeeded"),
            ("name=training-outcome > command", "reads runs/<workflow name>/blessing.json and registration.json"),
            ("name=approval > suspend", "no pod runs while the workflow waits here"),
            ("name=approval > suspend > duration", "the approval timeout: resumes with the defaults, i.e. approve NO"),
            (
                "name=approval > supplied",
                "set by `harmguard approve|reject --workflow`, `argo node set` or the UI's form",
            ),
            ("name=review > when", "YES: record the approval, then promote"),
        ),
    ),
    ManifestFile(
        "argo/cron-workflow.score.yaml",
        "Daily batch scoring with the champion: the KFP scoring pipeline into <output-prefix>/<date>/.",
        _score,
        (
            *(c for c in _CRON_COMMENTS if c[0] not in ("retryPolicy", "concurrencyPolicy")),
            ("concurrencyPolicy", "a run still going makes the next schedule skip: never two at once"),
            ("retryPolicy", "the scoring step commits its output only when complete, so a retry is safe"),
        ),
    ),
    ManifestFile(
        "argo/cron-workflow.monitor.yaml",
        "Daily drift monitoring of the traffic record: `harmguard traffic purge`, then `harmguard monitor` over the\n"
        "last day. A crossed bound (PSI, KS, flag-rate ratio, length shift, precision: the policy's `monitoring:`)\n"
        "exits 3, fails the workflow and is reported by the exit handler; the verdict and HTML report are under\n"
        "HARMGUARD_HOME/monitoring/<policy>/.",
        _monitor,
        (
            *(c for c in _CRON_COMMENTS if c[0] != "retryPolicy"),
            ("retryPolicy", "only exit 1 and pod errors: a crossed bound (exit 3) is an answer, not a failure"),
            (
                "name=traffic-purge > args",
                "the first step: deletes review texts past retention and compacts finished days for the check",
            ),
        ),
    ),
    ManifestFile(
        "argo/rbac.workflows.yaml",
        "Identity of the workflow pods. The steps reach KFP over HTTP and the artifact store with the key in the\n"
        "harmguard-gcs Secret (or Workload Identity: annotate the ServiceAccount); the Kubernetes API is used only by\n"
        "Argo's executor, to report step results.",
        _rbac,
        (("rules", "the least the emissary executor needs (Argo >= 3.4)"),),
    ),
    ManifestFile(
        "kuberay/ray-job.train.yaml",
        "Fine-tuning on a Ray cluster that exists only for this job (KubeRay RayJob).\n"
        "The launcher (harmguard.k8s.rayjob) creates the same object through the Kubernetes API with the run's\n"
        "own work folder; to run it by hand, upload input/loop_config.json under that folder first.",
        _ray_job,
        (
            ("entrypoint", "the launcher sets the run's gs:// work folder"),
            ("shutdownAfterJobFinishes", "the Ray cluster is deleted when the job ends ..."),
            ("ttlSecondsAfterFinished", "... this many seconds later (time to read the logs)"),
            ("activeDeadlineSeconds", "the whole job, cluster start included, fails after this many seconds"),
            ("backoffLimit", "retries of the whole job, each on a fresh cluster"),
            ("submissionMode", "a Kubernetes Job runs `ray job submit` (pod: submitterPodTemplate)"),
            ("runtimeEnvYAML", "environment of the driver and every Ray task"),
            ("rayVersion", "the Ray of the image (same lock file)"),
            ("authOptions", "Ray token auth: KubeRay injects RAY_AUTH_MODE and RAY_AUTH_TOKEN from this Secret"),
            ("dashboard-host", "the operator and the submitter call it: token + network-policy.ray.yaml close it"),
            ("num-cpus", "the head runs no tasks: training never competes with the GCS"),
            ("metrics-export-port", "the only port network-policy.ray.yaml opens to the scraper"),
            ("serviceAccountName", "harmguard-training: write access to the home (Workload Identity)"),
            ("workerGroupSpecs > replicas", "fixed size: minReplicas = maxReplicas = replicas"),
            ("workerGroupSpecs > nvidia.com/gpu", "extended resources are set as limits only"),
            ("tolerations", "GPU nodes carry the nvidia.com/gpu taint"),
            ("nodeSelector", "the GPU node pool"),
            ("submitterPodTemplate > restartPolicy", "KubeRay requires Never; retries are backoffLimit's"),
            ("automountServiceAccountToken", "`ray job submit` needs no Kubernetes API and no GCS key"),
        ),
    ),
    ManifestFile(
        "kuberay/ray-service.classifier.yaml",
        "The classifier behind POST /v1/classify (KubeRay RayService, Ray Serve app harmguard.serving.app:build_app).\n"
        "user_config holds placeholders: promotion's deploy step patches in the champion's (harmguard.k8s.rayservice,\n"
        "with the Role of rbac.deploy.yaml) and waits until KubeRay reports it running; Serve applies it with\n"
        "reconfigure() (no restart).\n"
        "The ingress keeps the traffic record (scores, decisions, keyed item ids; never a text) under\n"
        "HARMGUARD_HOME/traffic/: create the Secret harmguard-item-key (key item-id.key: openssl rand -hex 32) first,\n"
        "or the pods start and serve but record nothing (said once by each ingress replica).",
        _ray_service,
        (
            ("serveConfigV2", "a string (KubeRay parses it); replicas autoscale on ongoing requests"),
            ("upgradeStrategy", "a changed cluster spec brings up a new cluster, then switches traffic"),
            ("excludeHeadPodFromServeSvc", "traffic to workers only; the operator never calls the head's port 8000"),
            ("authOptions", "Ray token auth: KubeRay generates a token Secret per cluster and injects it"),
            ("enableInTreeAutoscaling", "the KubeRay autoscaler adds workers for Serve's replicas"),
            ("idleTimeoutSeconds", "an idle worker is removed after this many seconds"),
            ("dashboard-host", "the operator applies and reads Serve here: token + network-policy.ray.yaml close it"),
            ("num-cpus", "the head runs no replicas"),
            ("metrics-export-port", "the only port network-policy.ray.yaml opens to the scraper"),
            ("serviceAccountName", "serving's own identity (service-account.ray.yaml); no GCS key is mounted"),
            ("name=HARMGUARD_ITEM_KEY_FILE", "the traffic record's item-id key (HMAC), from the Secret below"),
            ("containerPort", "GCS; KubeRay adds readiness/liveness probes to head and workers itself"),
            ("mountPath", "read-only, Ray containers only: not the autoscaler, not training"),
            ("defaultMode", "0400; the pod's fsGroup makes it 0440 (k8s#57923), which the key loader accepts"),
            ("optional", "no Secret: pods start and serve, the ingress records nothing and says so once"),
        ),
    ),
    ManifestFile(
        "kuberay/rbac.deploy.yaml",
        "What promotion's deploy step may do to the cluster: read and patch the classifier RayService, nothing else.\n"
        "Bound to the ServiceAccount the KFP pipeline steps run as (harmguard.k8s.cluster.ClusterConfig:\n"
        "pipelines_service_account, pipelines_namespace); change the subject if your runs use another one.",
        _deploy_rbac,
        (
            ("resourceNames", "this one RayService only"),
            ("verbs", "get: read status and resourceVersion; patch: spec.serveConfigV2's user_config"),
            ("subjects", "KFP's default runner; `harmguard submit --service-account` may name another"),
        ),
    ),
    ManifestFile(
        "kuberay/network-policy.ray.yaml",
        "Who may connect to the Ray pods (ingress; apply before the RayService and RayJobs). Per role:\n"
        "  every port (GCS 6379, raylets, workers): the same role's Ray pods only\n"
        "  8265 dashboard / Jobs API: the KubeRay operator; training also its submitter and the launcher step\n"
        "  8000 Serve (serving): the ingress controller only\n"
        "  8080 metrics: the Prometheus scraper only\n"
        "Peers are matched by label and namespace (harmguard.k8s.network.NetworkConfig); Ray token auth is the\n"
        "second lock on every port. Needs a CNI that enforces NetworkPolicy (GKE: Dataplane V2).",
        _network,
    ),
    ManifestFile(
        "kuberay/service-account.ray.yaml",
        "Identities of the Ray pods (GKE Workload Identity: each is bound to one GCP service account).\n"
        "harmguard-serving reads models/ and registry/ and writes only traffic/ and review/;\n"
        "harmguard-training (training RayJobs) writes the home. Bindings: ../gcp/iam-policy.storage.yaml.",
        _accounts,
    ),
    ManifestFile(
        "gcp/iam-policy.storage.yaml",
        "IAM policy fragments (not for kubectl), one document per resource: the artifact bucket (uniform\n"
        "bucket-level access; policy version 3 for the conditions) and each GCP service account (Workload Identity).\n"
        "Replace PROJECT_ID and the bucket, then merge the bindings into each resource's policy (README, Running on\n"
        "a cluster). Serving's conditions: objects named under the prefixes, or a list request under them.",
        _iam,
        kubernetes=False,
    ),
)


def render(file: ManifestFile, image: str = DEFAULT_IMAGE) -> str:
    """The text of one manifest file.

    Raises:
        ValueError: When a container is not pinned, sized and hardened (``k8s_common.hardening_problems``), or a
            Ray object opens the control plane (``exposure.exposure_problems``).
    """
    header = "".join(f"# {line}\n" if line else "#\n" for line in file.header.split("\n"))
    source = "# Rendered by `harmguard compile` (harmguard.k8s.manifests); do not edit by hand.\n"
    docs = file.build(image)
    problems = [p for d in docs for p in hardening_problems(d)]
    if problems:
        raise ValueError(f"{file.path}: containers not hardened: {'; '.join(problems)}")
    problems = [p for d in docs for p in exposure_problems(d)]
    if problems:
        raise ValueError(f"{file.path}: Ray control plane open: {'; '.join(problems)}")
    body = add_comments(dump_yaml(docs), file.comments)
    return header + source + body


def check_pinned(image: str) -> None:
    """Refuse an image reference that floats: no tag, or ``latest`` (STYLE.md: images pinned).

    Raises:
        ValueError: Naming the image.
    """
    if not is_pinned(image):
        raise ValueError(f"image {image!r} is not pinned: give a version tag or an @sha256 digest, never latest")


def default_manifests_dir() -> Path | None:
    """``manifests/`` of the source checkout harmguard runs from (None in an installed image)."""
    root = project_root()
    return root / "manifests" if root is not None else None


def render_manifests(out_dir: Path, *, image: str | None = None) -> list[Path]:
    """Write every manifest file under ``out_dir`` (``manifests/`` of the checkout); returns the paths.

    Args:
        out_dir: Target folder (``argo/``, ``kuberay/`` and ``gcp/`` are created in it).
        image: The pinned image every container runs (default: the project's default tag).

    Raises:
        ValueError: When the image is not pinned (nothing is written then).
    """
    image = image or DEFAULT_IMAGE
    check_pinned(image)
    written = []
    for file in FILES:
        path = Path(out_dir) / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(file, image), encoding="utf-8")
        written.append(path)
    return written
