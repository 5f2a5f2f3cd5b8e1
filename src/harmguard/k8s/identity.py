"""One identity per role: Kubernetes ServiceAccounts, their GCP accounts (Workload Identity) and what IAM lets each do.

- **Serving** (the RayService pods, ServiceAccount ``harmguard-serving`` -> GCP ``harmguard-serving``) reads the
  models and the registry and writes only its traffic record and review samples: two bucket bindings with an IAM
  condition on the object name (``resource.name.startsWith``), and the matching list prefixes
  (``storage.googleapis.com/objectListPrefix``). It cannot move an alias, rewrite a model or write an audit event.
- **Pipelines** (training RayJobs as ``harmguard-training``, and the KFP/Argo steps: training, promotion, scoring,
  labels -> GCP ``harmguard-pipelines``) keep write access to the whole home.

IAM conditions on a bucket need uniform bucket-level access. The rendered file (``manifests/gcp/``) holds policy
fragments with placeholders (``PROJECT_ID``, the example bucket); the README shows the gcloud commands that apply them.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harmguard.k8s.cluster import CLUSTER
from harmguard.k8s.common import PART_OF

# Prefixes of HARMGUARD_HOME (CONTRACTS.md, Places) the serving identity may read, and may write.
SERVING_READS = ("models/", "registry/")
SERVING_WRITES = ("traffic/", "review/")
READ_ROLE = "roles/storage.objectViewer"  # objects.get and objects.list
WRITE_ROLE = "roles/storage.objectUser"  # create, overwrite, delete, get, list objects: no IAM, no bucket settings
PIPELINES_ROLE = "roles/storage.objectAdmin"  # the whole home: snapshots, models, runs, registry, labels, ...
WORKLOAD_IDENTITY_ROLE = "roles/iam.workloadIdentityUser"
WORKLOAD_IDENTITY_ANNOTATION = "iam.gke.io/gcp-service-account"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_SAFE_PREFIX = re.compile(r"^[A-Za-z0-9._/=-]*$")  # what may sit inside a CEL string literal without escaping


class IdentityConfig(BaseModel):
    """Names of the identities and the home they act on (defaults: what ``manifests/`` holds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(default="harmguard", description="Namespace of the Ray clusters' ServiceAccounts.")
    project: str = Field(default="PROJECT_ID", description="GCP project of the GCP accounts and the GKE cluster.")
    home: str = Field(default="gs://harmguard-data", description="HARMGUARD_HOME: gs://bucket or gs://bucket/prefix.")
    serving_service_account: str = Field(
        default=CLUSTER.serving_service_account, description="Kubernetes ServiceAccount of the RayService pods."
    )
    training_service_account: str = Field(
        default=CLUSTER.training_service_account, description="Kubernetes ServiceAccount of training RayJob pods."
    )
    serving_gcp_account: str = Field(default="harmguard-serving", description="GCP account serving acts as.")
    pipelines_gcp_account: str = Field(
        default="harmguard-pipelines", description="GCP account training and promotion act as (write access)."
    )

    @field_validator("home")
    @classmethod
    def _gcs_home(cls, value: str) -> str:
        bucket, prefix = split_home(value)
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(f"home {value!r}: {bucket!r} is not a GCS bucket name")
        if not _SAFE_PREFIX.fullmatch(prefix) or "//" in prefix:
            raise ValueError(f"home {value!r}: the prefix may hold only letters, digits and . _ / = -")
        return value


def split_home(home: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> (``bucket``, ``a/b/``); ``gs://bucket`` -> (``bucket``, ``""``).

    Raises:
        ValueError: When ``home`` is not a gs:// URI.
    """
    if not home.startswith("gs://"):
        raise ValueError(f"home {home!r}: IAM conditions scope a GCS home, give gs://bucket[/prefix]")
    bucket, _, prefix = home[len("gs://") :].partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def gcp_email(account: str, project: str) -> str:
    """The e-mail of a GCP service account of ``project``."""
    return f"{account}@{project}.iam.gserviceaccount.com"


def prefix_condition(home: str, prefixes: tuple[str, ...]) -> str:
    """A CEL condition true for objects under ``home``'s ``prefixes``, and for listing under them, only.

    Raises:
        ValueError: For a prefix that is empty, not ``/``-terminated or holds characters CEL would need escaped.
    """
    bucket, root = split_home(home)
    for p in prefixes:
        if not p or not p.endswith("/") or not _SAFE_PREFIX.fullmatch(p) or p.startswith("/"):
            raise ValueError(f"prefix {p!r}: a non-empty folder like 'traffic/' (letters, digits, . _ / = -)")
    names = [f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/{root}{p}")' for p in prefixes]
    # objects.list is checked on the bucket, with the request's prefix as an API attribute.
    listed = [
        f'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("{root}{p}")' for p in prefixes
    ]
    either = " ||\n  ".join(listed)
    bucket_clause = f'(resource.type == "storage.googleapis.com/Bucket" &&\n  ({either}))'
    return " ||\n".join([*names, bucket_clause])  # CEL reads newlines as spaces; YAML keeps them as a block


def service_accounts(cfg: IdentityConfig | None = None) -> list[dict[str, Any]]:
    """The Kubernetes ServiceAccounts of the Ray clusters, each annotated with its GCP account."""
    cfg = cfg or IdentityConfig()

    def account(name: str, component: str, gcp: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": name,
                "namespace": cfg.namespace,
                "labels": {**PART_OF, "app.kubernetes.io/component": component},
                "annotations": {WORKLOAD_IDENTITY_ANNOTATION: gcp_email(gcp, cfg.project)},
            },
        }

    return [
        account(cfg.serving_service_account, "serving", cfg.serving_gcp_account),
        account(cfg.training_service_account, "training", cfg.pipelines_gcp_account),
    ]


def storage_bindings(cfg: IdentityConfig | None = None) -> dict[str, Any]:
    """The bucket's IAM policy bindings (policy version 3: conditions) for serving and the pipelines."""
    cfg = cfg or IdentityConfig()
    bucket, _ = split_home(cfg.home)
    serving = f"serviceAccount:{gcp_email(cfg.serving_gcp_account, cfg.project)}"
    pipelines = f"serviceAccount:{gcp_email(cfg.pipelines_gcp_account, cfg.project)}"
    return {
        "resource": f"projects/_/buckets/{bucket}",
        "version": 3,
        "bindings": [
            {
                "role": READ_ROLE,
                "members": [serving],
                "condition": {
                    "title": "serving-reads-models-and-registry",
                    "description": "The classifier loads models and reads the alias pointers; nothing else.",
                    "expression": prefix_condition(cfg.home, SERVING_READS),
                },
            },
            {
                "role": WRITE_ROLE,
                "members": [serving],
                "condition": {
                    "title": "serving-writes-traffic-and-review",
                    "description": "The classifier records its traffic and review samples; nothing else.",
                    "expression": prefix_condition(cfg.home, SERVING_WRITES),
                },
            },
            {"role": PIPELINES_ROLE, "members": [pipelines]},
        ],
    }


def workload_identity_bindings(cfg: IdentityConfig | None = None) -> list[dict[str, Any]]:
    """Per GCP account, the binding that lets exactly one Kubernetes ServiceAccount act as it."""
    cfg = cfg or IdentityConfig()
    pool = f"{cfg.project}.svc.id.goog"
    pairs = (
        (cfg.serving_gcp_account, cfg.serving_service_account),
        (cfg.pipelines_gcp_account, cfg.training_service_account),
    )
    return [
        {
            "resource": f"projects/{cfg.project}/serviceAccounts/{gcp_email(gcp, cfg.project)}",
            "bindings": [
                {"role": WORKLOAD_IDENTITY_ROLE, "members": [f"serviceAccount:{pool}[{cfg.namespace}/{ksa}]"]}
            ],
        }
        for gcp, ksa in pairs
    ]
