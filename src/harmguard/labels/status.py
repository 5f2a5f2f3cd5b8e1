"""``harmguard labels status``: what has been imported for a policy and what the decisions look like."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harmguard.labels.resolve import resolve_latest
from harmguard.labels.store import erased_items, load_events, manifests, read_watermark
from harmguard.storage import ArtifactStore


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def labels_status(store: ArtifactStore, policy: str, categories: list[str]) -> dict[str, Any]:
    """Counts and rates of a policy's imported labels.

    Returns:
        ``events``, ``items``, ``duplicates`` (redeliveries not added), ``rejected``; ``per_source``; ``per_week``
        (ISO week of ``decided_at``: events and items first decided then); ``label_rate`` per category over the
        latest decisions that label it; ``appeal_rate`` (appeal events / items), ``overturn_rate`` (overturned
        decisions / decisions) overall and per reviewer; ``newest_decision``; ``watermark``; ``imports``;
        ``erased_items``; ``partial_items`` (latest decision not covering every category).
    """
    events = load_events(store, policy)
    runs = manifests(store, policy)
    watermark, _ = read_watermark(store, policy)
    latest = resolve_latest(events, categories)
    out: dict[str, Any] = {
        "policy": policy,
        "watermark": watermark,
        "imports": len(runs),
        "events": len(events),
        "items": len(latest),
        "duplicates": sum(m["duplicates"] for m in runs),
        "rejected": sum(m["rejected"] for m in runs),
        "erased_items": len(erased_items(store, policy)),
        "newest_decision": None if events.empty else str(events["decided_at"].max()),
    }
    if events.empty:
        return out | {"per_source": {}, "per_week": {}, "label_rate": {}, "appeal_rate": None, "overturn_rate": None,
                      "reviewers": {}, "partial_items": 0}  # fmt: skip
    week = pd.to_datetime(events["decided_at"]).dt.strftime("%G-W%V")
    first = events.sort_values("decided_at").drop_duplicates("item_id")
    first_week = pd.to_datetime(first["decided_at"]).dt.strftime("%G-W%V")
    overturned = events["event_id"].isin(set(events["overturns"].dropna()))
    reviewers = {
        name: {
            "decisions": int(len(group)),
            "overturned": int(overturned[group.index].sum()),
            "overturn_rate": _rate(int(overturned[group.index].sum()), len(group)),
        }  # fmt: skip
        for name, group in events.groupby("reviewer")
    }
    label_rate = {}
    for c in categories:
        labelled = latest["labels"].map(lambda d, c=c: d.get(c))
        known = labelled.dropna()
        label_rate[c] = {"items": int(len(known)), "rate": _rate(int(known.astype(bool).sum()), len(known))}
    appeals = int((events["source"] == "appeal").sum())
    return out | {
        "per_source": {str(k): int(v) for k, v in events["source"].value_counts().sort_index().items()},
        "per_week": {
            w: {"events": int((week == w).sum()), "new_items": int((first_week == w).sum())} for w in sorted(set(week))
        },
        "label_rate": label_rate,
        "appeal_rate": _rate(appeals, len(latest)),
        "overturn_rate": _rate(int(overturned.sum()), len(events)),
        "reviewers": reviewers,
        "partial_items": int((~latest["covers_all"]).sum()),
    }
