"""A policy's data sources, loaded for one snapshot: its datasets (or ``--data``) and its imported labels.

Imported moderation events join a snapshot up to a cut: the events of imports up to a **watermark** and decided up
to a time (**until**). Both default to what exists now and both go into the lineage, so a rerun with the same two
values reads the same events, whatever arrived later. Per item the latest decision counts
(``labels.resolve.resolve_latest``); an exclusive policy cannot use a decision that leaves a category unknown or
names several categories (counted, not guessed); a multilabel one masks the categories a decision does not label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from harmguard.data.datasets import load_dataset
from harmguard.digests import canonical_json, sha256_bytes
from harmguard.labels.events import LabelFileError, parse_time
from harmguard.labels.resolve import resolve_latest
from harmguard.labels.store import load_events, read_watermark
from harmguard.policy import ColumnMap, DataSource, Policy
from harmguard.settings import Settings
from harmguard.storage import ArtifactStore
from harmguard.storage.readers import read_table

LABELS = "labels"  # the origin of imported decisions in a snapshot
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # how events store decided_at: sorts as it reads


class LabelsCutError(ValueError):
    """A labels watermark or cutoff that cannot be used (invalid input, exit code 4)."""


@dataclass
class SourceFrame:
    """Raw rows of one source with the mapping that reads them."""

    name: str
    kind: str  # dataset | uri | labels
    raw: pd.DataFrame
    source: DataSource | None  # None for the labels, which are already mapped
    description: str


@dataclass
class LabelsCut:
    """Which imported events a snapshot takes: imports up to ``watermark``, decided up to ``until``."""

    watermark: int
    until: str | None  # canonical decided_at form; None when there are no events
    recent_since: str | None = None  # decisions after this form the `recent` set
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Lineage form."""
        return {"watermark": self.watermark, "until": self.until, "recent_since": self.recent_since} | self.stats


def frame_digest(texts: pd.Series, labels: pd.Series) -> str:
    """Content digest of a source as mapped: sha256 over canonical ``[text, label]`` lines in order."""
    body = b"".join(canonical_json([t, lab]) + b"\n" for t, lab in zip(texts, labels, strict=True))
    return sha256_bytes(body)


def _canonical_time(value: str) -> str:
    parsed = parse_time(value)
    if parsed is None:
        raise LabelsCutError(
            f"--labels-until {value!r} is not an RFC 3339 time with a zone (e.g. 2026-11-22T00:00:00Z)"
        )
    return parsed.astimezone(UTC).strftime(_TIME_FORMAT)


def labels_cut(
    store: ArtifactStore, policy: Policy, *, watermark: int | None = None, until: str | None = None
) -> tuple[LabelsCut, pd.DataFrame]:
    """Resolve the cut (defaults: the current watermark, the newest decision) and the events inside it."""
    current, _ = read_watermark(store, policy.name)
    if watermark is None or watermark < 0:
        watermark = current
    elif watermark > current:
        raise LabelsCutError(f"--labels-watermark {watermark} is past {policy.name}'s current watermark {current}")
    events = load_events(store, policy.name, watermark=watermark)
    cutoff = _canonical_time(until) if until else (events["decided_at"].max() if len(events) else None)
    if cutoff is not None:
        events = events[events["decided_at"] <= cutoff].reset_index(drop=True)
    cut = LabelsCut(watermark=watermark, until=cutoff)
    days = policy.data.labels.recent_days if policy.data.labels else 0
    if cutoff is not None and days > 0:
        since = datetime.strptime(cutoff, _TIME_FORMAT).replace(tzinfo=UTC) - timedelta(days=days)
        cut.recent_since = since.strftime(_TIME_FORMAT)
    return cut, events


def labels_frame(events: pd.DataFrame, policy: Policy) -> tuple[pd.DataFrame, dict[str, int]]:
    """The latest decision per item as snapshot rows, and what could not be used.

    Exclusive: ``label`` is the one category a decision marks true, or the none label when it marks none; a decision
    leaving a category unknown (``incomplete``) or marking several (``ambiguous``) is left out and counted.
    Multilabel: ``y_<cat>`` per category and ``m_<cat>`` (1 when the decision labels it, 0 masked).
    """
    latest = resolve_latest(events, policy.categories)
    stats = {"events": len(events), "items": len(latest), "incomplete": 0, "ambiguous": 0, "partial": 0}
    rows: dict[str, list[Any]] = {"row_id": [], "text": [], "label": [], "decided_at": [], "event_id": []}
    masks: dict[str, list[int]] = {c: [] for c in policy.categories}
    truths: dict[str, list[int]] = {c: [] for c in policy.categories}
    for item, text, labels, decided, event in zip(
        latest.get("item_id", []), latest.get("text", []), latest.get("labels", []),
        latest.get("decided_at", []), latest.get("event_id", []), strict=True,
    ):  # fmt: skip
        known = {c: bool(labels[c]) for c in policy.categories if c in labels}
        if policy.label_mode == "exclusive":
            if len(known) < len(policy.categories):
                stats["incomplete"] += 1
                continue
            marked = [c for c, v in known.items() if v]
            if len(marked) > 1:
                stats["ambiguous"] += 1
                continue
            label = marked[0] if marked else policy.none_label
        else:
            stats["partial"] += len(known) < len(policy.categories)
            label = "|".join(c for c in policy.categories if known.get(c)) or policy.none_label
            for c in policy.categories:
                masks[c].append(int(c in known))
                truths[c].append(int(known.get(c, False)))
        for key, value in (("row_id", f"{LABELS}:{item}"), ("text", text), ("label", label),
                           ("decided_at", decided), ("event_id", event)):  # fmt: skip
            rows[key].append(value)
    frame = pd.DataFrame(rows)
    if policy.label_mode == "multilabel":
        for c in policy.categories:
            frame[f"y_{c}"] = np.asarray(truths[c], dtype="int8")
            frame[f"m_{c}"] = np.asarray(masks[c], dtype="int8")
    frame = frame.sort_values(["decided_at", "row_id"], kind="stable").reset_index(drop=True)
    stats["rows"] = len(frame)
    return frame.drop(columns="event_id"), stats


def dataset_sources(policy: Policy, settings: Settings, data_uri: str = "", columns: ColumnMap | None = None):
    """The policy's dataset sources, or the one ``--data`` replaces them with.

    ``--data`` is read with the first source's mapping; ``columns`` overrides the column mapping.
    """
    if data_uri:
        primary = policy.data.primary
        mapped = primary.model_copy(update={"name": "data", "dataset": None, "uri": data_uri})
        if columns is not None:
            mapped = mapped.model_copy(update={"columns": columns})
        return [SourceFrame("data", "uri", read_table(data_uri, primary.format), mapped, data_uri)]
    out = []
    for src in policy.data.sources:
        if columns is not None:
            src = src.model_copy(update={"columns": columns})
        if src.uri:
            out.append(SourceFrame(src.label, "uri", read_table(src.uri, src.format), src, src.uri))
        else:
            assert src.dataset is not None  # a source has a dataset or a uri
            out.append(
                SourceFrame(src.label, "dataset", load_dataset(src.dataset, settings), src, f"dataset:{src.dataset}")
            )
    return out


def load_sources(
    policy: Policy,
    settings: Settings,
    store: ArtifactStore,
    *,
    data_uri: str = "",
    columns: ColumnMap | None = None,
    labels_watermark: int | None = None,
    labels_until: str | None = None,
) -> tuple[list[SourceFrame], LabelsCut | None]:
    """Every source of a snapshot: the datasets (or ``--data``) and, when the policy takes them, its labels."""
    sources = dataset_sources(policy, settings, data_uri, columns)
    if policy.data.labels is None:
        if labels_until or (labels_watermark is not None and labels_watermark >= 0):
            raise LabelsCutError(f"policy {policy.name} takes no imported labels: --labels-* options do not apply")
        return sources, None
    try:
        cut, events = labels_cut(store, policy, watermark=labels_watermark, until=labels_until)
    except LabelFileError as e:  # a part that does not match its manifest
        raise LabelsCutError(str(e)) from e
    frame, stats = labels_frame(events, policy)
    cut.stats = stats
    sources.append(SourceFrame(LABELS, LABELS, frame, None, f"labels:{policy.name}@{cut.watermark}"))
    return sources, cut
