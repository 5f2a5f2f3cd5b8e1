"""``harmguard traffic purge``: delete the sampled review texts older than the policy's retention.

A review part's day is its ``dt=`` folder (the UTC day its records were scored); a part whose day is more than
``monitoring.retention_days`` days before today goes, whole. The traffic record itself holds no text and is kept.
Export manifests (item ids only) are kept.

The artifact-store protocol has no delete (everything else in the home is create-only by design), so ``delete_key``
does it here for the two stores, and only ever for keys under ``review/<policy>/dt=``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from harmguard.monitoring.traffic import REVIEW, part_day, partition_prefix
from harmguard.policy import Policy
from harmguard.storage import ArtifactStore, LocalStore, StoreError
from harmguard.storage.gcs import GCSStore, make_client


def delete_key(store: ArtifactStore, key: str) -> None:
    """Delete one object (a missing one is not an error)."""
    if isinstance(store, LocalStore):
        store.path(key).unlink(missing_ok=True)
        return
    if isinstance(store, GCSStore):
        from google.api_core import exceptions as gex  # google-cloud-storage: heavy, only for a gs:// home

        name = f"{store.prefix}/{key}" if store.prefix else key
        try:
            make_client().bucket(store.bucket_name).blob(name).delete(timeout=store.timeout_s)
        except gex.NotFound:
            pass
        return
    raise StoreError(f"cannot delete from a {type(store).__name__}")


def expired_parts(store: ArtifactStore, policy: str, *, retention_days: int, today: date) -> list[str]:
    """The review parts older than the retention."""
    oldest_kept = today - timedelta(days=retention_days)
    keys = store.list(partition_prefix(REVIEW, policy))
    return [k for k in keys if "/dt=" in k and (day := part_day(k)) is not None and day < oldest_kept]


def purge_review(
    store: ArtifactStore, policy: Policy, *, now: datetime | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Delete the review parts of ``policy`` older than ``monitoring.retention_days``.

    Returns:
        ``{"policy", "retention_days", "oldest_kept", "deleted": [keys], "dry_run"}``.
    """
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    days = policy.monitoring.retention_days
    keys = expired_parts(store, policy.name, retention_days=days, today=today)
    if not dry_run:
        for key in keys:
            delete_key(store, key)
    return {
        "policy": policy.name,
        "retention_days": days,
        "oldest_kept": (today - timedelta(days=days)).isoformat(),
        "deleted": keys,
        "dry_run": dry_run,
    }
