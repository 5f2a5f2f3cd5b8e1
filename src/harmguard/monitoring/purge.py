"""``harmguard traffic purge``: delete the sampled review texts past retention, compact the finished days.

A review day folder (``dt=``, the UTC day its records were scored) more than ``monitoring.retention_days`` days before
today goes, whole. The traffic record itself holds no text and is kept. Export manifests (item ids only) are kept.
Every finished day of the traffic record and of the review sample is then compacted into one part
(``monitoring.parts.compact_day``), so ``monitor`` reads a part per finished day, not one per flush: the daily
monitoring workflow should run it before ``monitor``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from harmguard.monitoring.parts import REVIEW, TRAFFIC, compact, delete_key, part_day, partition_prefix
from harmguard.policy import Policy
from harmguard.storage import ArtifactStore


def expired_keys(store: ArtifactStore, policy: str, *, retention_days: int, today: date) -> list[str]:
    """Every object of the review day folders older than the retention."""
    oldest_kept = today - timedelta(days=retention_days)
    keys = store.list(partition_prefix(REVIEW, policy))
    return [k for k in keys if (day := part_day(k)) is not None and day < oldest_kept]


def purge_review(
    store: ArtifactStore, policy: Policy, *, now: datetime | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Delete the review texts of ``policy`` older than ``monitoring.retention_days``, then compact finished days.

    Returns:
        ``{"policy", "retention_days", "oldest_kept", "deleted": [keys], "compacted": {"traffic": n, "review": n},
        "dry_run"}``; a dry run deletes and compacts nothing.
    """
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    days = policy.monitoring.retention_days
    keys = expired_keys(store, policy.name, retention_days=days, today=today)
    compacted = {TRAFFIC: 0, REVIEW: 0}
    if not dry_run:
        for key in keys:
            delete_key(store, key)
        for root in compacted:
            compacted[root] = len(compact(store, root, policy.name, before=today))
    return {
        "policy": policy.name,
        "retention_days": days,
        "oldest_kept": (today - timedelta(days=days)).isoformat(),
        "deleted": keys,
        "compacted": compacted,
        "dry_run": dry_run,
    }
