"""The registry of record: published models, versions, alias pointers (compare-and-swap) and the audit log.

``core`` holds versions, aliases, the audit log, policy files and the MLflow mirror; ``models`` publishes and verifies
model trees; ``runs`` claims run ids and writes the per-run step records; ``principal`` says who is acting. Modules
inside this package import each other directly; everyone else imports from ``harmguard.registry``.
"""

from __future__ import annotations

from harmguard.registry.core import (
    EVENT_KINDS,
    AliasPointer,
    AuditChainBroken,
    AuditEvent,
    VersionNotFound,
    VersionRecord,
    append_audit,
    get_version,
    list_aliases,
    list_policies,
    list_versions,
    mirror_version,
    mlflow_version_of,
    move_alias,
    parse_version,
    read_alias,
    read_audit,
    read_policy_file,
    register_version,
    registry_status,
    store_policy_file,
    sync_alias,
    sync_mlflow,
    unfinished_moves,
    verify_audit,
)
from harmguard.registry.models import TamperedModelError, download_model, publish_model, verify_model

__all__ = [
    "AliasPointer",
    "AuditChainBroken",
    "AuditEvent",
    "EVENT_KINDS",
    "TamperedModelError",
    "VersionNotFound",
    "VersionRecord",
    "append_audit",
    "download_model",
    "get_version",
    "list_aliases",
    "list_policies",
    "list_versions",
    "mirror_version",
    "mlflow_version_of",
    "move_alias",
    "parse_version",
    "publish_model",
    "read_alias",
    "read_audit",
    "read_policy_file",
    "register_version",
    "registry_status",
    "store_policy_file",
    "sync_alias",
    "sync_mlflow",
    "unfinished_moves",
    "verify_audit",
    "verify_model",
]
