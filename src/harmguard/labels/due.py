"""``harmguard retrain-needed``: is there something new to learn from since the champion's data?

A run is due when the events imported after the champion's labels watermark reach a number (the policy's
``data.labels.min_new_labels``, or the caller's), or when the policy has no champion yet. The answer carries the cut
a run should take (the current watermark and the newest decision), so the scheduled workflow trains on exactly what
was counted. Once drift monitoring exists, its verdict joins the reasons.
"""

from __future__ import annotations

from typing import Any

from harmguard.labels.store import load_events, manifests, read_watermark
from harmguard.policy import Policy
from harmguard.registry import get_version, read_alias
from harmguard.storage import ArtifactStore


def retrain_needed(store: ArtifactStore, policy: Policy, *, min_new_labels: int | None = None) -> dict[str, Any]:
    """Whether a retraining run is due, and why.

    Returns:
        ``{"policy", "due", "reasons", "new_labels", "min_new_labels", "champion", "champion_watermark",
        "labels_watermark", "labels_until"}``: the last two are the cut a run should take (until: the newest
        decision imported up to that watermark, None when there are no events).
    """
    spec = policy.data.labels
    needed = min_new_labels if min_new_labels is not None else (spec.min_new_labels if spec else 0)
    current, _ = read_watermark(store, policy.name)
    pointer, _ = read_alias(store, policy.name, "champion")
    champion = pointer.version if pointer is not None else None  # None too once the alias was cleared
    champion_watermark = 0
    if champion is not None:
        champion_watermark = int(get_version(store, champion).lineage.get("labels_watermark") or 0)
    new = sum(int(m["new"]) for m in manifests(store, policy.name) if int(m["watermark"]) > champion_watermark)
    reasons = []
    if champion is None:
        reasons.append(f"{policy.name} has no champion yet: a first run is due")
    if spec is None:
        reasons.append(f"{policy.name} takes no imported labels: only a missing champion makes a run due")
    elif new >= needed:
        reasons.append(
            f"{new} new decision(s) imported since the champion's data (watermark {champion_watermark} -> "
            f"{current}), at least {needed} make a run due"
        )
    else:
        reasons.append(
            f"only {new} new decision(s) imported since the champion's data (watermark {champion_watermark} -> "
            f"{current}); {needed} make a run due"
        )
    due = champion is None or (spec is not None and new >= needed)
    until = None
    if spec is not None and current:
        events = load_events(store, policy.name, watermark=current)
        until = str(events["decided_at"].max()) if len(events) else None
    return {
        "policy": policy.name,
        "due": bool(due),
        "reasons": reasons,
        "new_labels": new,
        "min_new_labels": needed,
        "champion": champion,
        "champion_watermark": champion_watermark,
        "labels_watermark": current,
        "labels_until": until,
    }
