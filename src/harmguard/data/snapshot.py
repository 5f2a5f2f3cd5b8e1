"""From raw rows to a frozen, versioned snapshot: column mapping, text normalization, deterministic split.

The snapshot frame has one row per example in canonical order (source order after dedupe and sampling) and the
columns ``row_id, text, label, split`` plus ``agreement`` (where annotator votes exist), ``y_<category>`` (multilabel)
and ``src_<column>`` source columns kept for slicing. Its data version is the sha256 of what was loaded (texts
verbatim, labels, split assignments, in canonical order); the normalization below only groups duplicates.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from harmguard.data.sources import LABELS, LabelsCut, SourceFrame, frame_digest
from harmguard.digests import canonical_json, sha256_bytes
from harmguard.policy import SPLITS, ColumnMap, DataSource, Policy
from harmguard.storage import ArtifactStore
from harmguard.text import MENTION, URL

# A mention with the colon of a reply (``@user: ...``) goes as a whole, so replies group with their retweets.
_MENTION = re.compile(MENTION.pattern + r":?")
_LEADING_RT = re.compile(r"^(?:rt\b\s*:?\s*)+")
_SPACES = re.compile(r"\s+")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}


class SnapshotError(ValueError):
    """The data cannot be mapped into a snapshot (for example a mapped column is missing)."""


def normalize_text(text: str) -> str:
    """Normalization for grouping duplicates: NFKC, HTML entities, casefold, URLs/@mentions/leading RT, spaces."""
    t = unicodedata.normalize("NFKC", html.unescape(text)).casefold()
    t = _SPACES.sub(" ", _MENTION.sub(" ", URL.sub(" ", t))).strip()
    return _LEADING_RT.sub("", t).strip()


def unit_hash(salt: str, values: pd.Series) -> np.ndarray:
    """Map each string to a uniform number in [0, 1) by sha256(salt + value): stable across runs and machines."""
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        out[i] = int.from_bytes(hashlib.sha256((salt + v).encode()).digest()[:8], "big") / 2.0**64
    return out


def _label_str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _column(raw: pd.DataFrame, name: str, role: str) -> pd.Series:
    if name not in raw.columns:
        raise SnapshotError(f"the {role} column {name!r} is not in the data; columns are {list(raw.columns)}")
    return raw[name]


def map_columns(
    raw: pd.DataFrame, policy: Policy, columns: ColumnMap | None = None, source: DataSource | None = None
) -> pd.DataFrame:
    """Map source columns to the snapshot schema; unknown labels are kept verbatim for validation to report.

    ``source`` gives the column and label mapping (default: the policy's first source); ``columns`` overrides its
    column mapping.
    """
    src = source or policy.data.primary
    cols = columns or src.columns
    out = pd.DataFrame(index=raw.index)
    text = _column(raw, cols.text, "text")
    out["text"] = text.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    label_map = src.label_map
    if policy.label_mode == "exclusive":
        raw_labels = _column(raw, cols.label or "label", "label").map(_label_str)
        out["label"] = raw_labels.map(lambda v: label_map.get(v, v) if v is not None else None)
    else:
        parts = []
        for cat in policy.categories:
            y = _column(raw, cols.labels[cat], f"{cat} label").map(_label_str)
            truthy = y.str.lower().isin(["1", "true", "yes", cat])
            out[f"y_{cat}"] = truthy.astype("int8")
            parts.append(truthy.map({True: cat, False: ""}))
        joined = pd.concat(parts, axis=1).apply(lambda r: "|".join(x for x in r if x), axis=1)
        out["label"] = joined.replace("", policy.none_label)
    if cols.split and cols.split in raw.columns:
        out["split"] = raw[cols.split].map(_label_str).map(lambda v: _SPLIT_ALIASES.get((v or "").lower(), v))
    out["row_id"] = raw[cols.id].astype(str) if cols.id and cols.id in raw.columns else raw.index.astype(str)
    if cols.votes:
        votes = pd.concat([_column(raw, c, "vote").astype(float) for c in cols.votes], axis=1)
        total = _column(raw, cols.votes_total, "vote total").astype(float) if cols.votes_total else votes.sum(axis=1)
        out["agreement"] = (votes.max(axis=1) / total.where(total > 0)).fillna(0.0)
    for c in cols.source:
        out[f"src_{c}"] = _column(raw, c, "source")
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class SnapshotInfo:
    """What ingest produced."""

    data_version: str
    rows: int
    counts: dict[str, dict[str, int]]
    key: str


def assign_splits(frame: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """Assign (or complete) the split column by hashing each normalized-text group.

    A group's bucket depends only on sha256(seed + normalized text), so adding rows never moves a row, identical
    texts never straddle splits, and each label's rows spread over the splits in the policy's fractions (in
    expectation). Given splits are respected; if they have no validation rows, a validation split is carved out of
    train by the same hash. Leakage in given splits is left for validation to report.
    """
    f = policy.split.fractions
    norm = frame["text"].fillna("").map(normalize_text)
    u = unit_hash(policy.split.seed, norm)
    out = frame.copy()
    if "split" not in out.columns or out["split"].isna().all():
        out["split"] = np.where(
            u < f["train"], "train", np.where(u < f["train"] + f["validation"], "validation", "test")
        )
    elif not (out["split"] == "validation").any():
        carve = (out["split"] == "train").to_numpy() & (u < f["validation"] / (f["train"] + f["validation"]))
        out.loc[carve, "split"] = "validation"
    out["split"] = out["split"].fillna("<missing>")
    return out


def _sample(frame: pd.DataFrame, norm: pd.Series, policy: Policy, sample: int) -> tuple[pd.DataFrame, pd.Series]:
    if sample and sample < len(frame):
        # Stable sample: a group is kept by its own hash, so a smaller sample is a subset of a larger one.
        u = unit_hash("sample:" + policy.split.seed, norm)
        keep = u <= np.sort(u)[sample - 1]
        return frame[keep].reset_index(drop=True), norm[keep].reset_index(drop=True)
    return frame, norm


def build_snapshot(raw: pd.DataFrame, policy: Policy, *, columns: ColumnMap | None = None, sample: int = 0):
    """Map, dedupe, sample and split the rows of one source into the snapshot frame (canonical order kept)."""
    frame = map_columns(raw, policy, columns)
    norm = frame["text"].fillna("").map(normalize_text)
    if policy.data.dedupe:
        # Pre-split data is deduplicated within each split only: a text repeated across splits is leakage, and
        # validation must see it rather than have it silently dropped here.
        key = norm + "\x00" + frame["split"].fillna("").astype(str) if "split" in frame.columns else norm
        keep = ~key.duplicated(keep="first")
        frame, norm = frame[keep].reset_index(drop=True), norm[keep].reset_index(drop=True)
    frame, _ = _sample(frame, norm, policy, sample)
    return assign_splits(frame, policy)


RECENT = "recent"  # the split of the newest imported decisions: a frozen evaluation set, never trained on


def assemble_snapshot(
    parts: list[SourceFrame], policy: Policy, *, sample: int = 0, cut: LabelsCut | None = None
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Join several sources into one snapshot frame; returns it and the lineage of its sources.

    Rows keep source order (datasets as listed, then imported decisions by time) with ``origin`` naming their
    source. Rows are grouped across sources by normalized text: where a group holds a human decision, the latest one
    is kept and the dataset rows are dropped (``overridden``); a group whose sources disagree on the label is
    counted and its rows marked ``conflict`` (validation bounds their share). Decisions after ``cut.recent_since``
    form the split ``recent``; a multilabel decision with masked categories is trained on only; the rest is split by
    hash as one source would be. With one dataset source and no labels this equals ``build_snapshot``.
    """
    if len(parts) == 1 and parts[0].kind != LABELS and cut is None:
        src = parts[0]
        frame = build_snapshot(src.raw, policy, columns=src.source.columns if src.source else None, sample=sample)
        lineage = [_lineage(src, frame, len(frame))]
        return frame.assign(origin=src.name), {"sources": lineage, "conflicts": 0, "overridden": 0}
    mapped = []
    for part in parts:
        frame = part.raw.copy() if part.kind == LABELS else map_columns(part.raw, policy, source=part.source)
        if part.kind != LABELS:
            frame["row_id"] = part.name + ":" + frame["row_id"].astype(str)
            if "split" in frame.columns:
                frame = frame.drop(columns="split")  # several sources are split together, by text
        mapped.append(frame.assign(origin=part.name))
    frame = pd.concat(mapped, ignore_index=True)
    norm = frame["text"].fillna("").map(normalize_text)
    human = (frame["origin"] == LABELS).to_numpy()
    # disagreement between sources, counted before a human decision overrides anything
    groups = pd.DataFrame(
        {"norm": norm, "origin": frame["origin"], "label": frame["label"].astype(str), "human": human}
    )
    spread = groups.groupby("norm").agg(
        origins=("origin", "nunique"), labels=("label", "nunique"), human=("human", "any")
    )  # a text decided twice by people, or by sources that disagree (one dataset's own repeats are its business)
    conflicting = spread.index[((spread["origins"] > 1) | spread["human"]) & (spread["labels"] > 1)]
    frame["conflict"] = norm.isin(conflicting).astype("int8").to_numpy()
    # a human decision wins: the latest decision of a group, and none of its dataset rows
    decided = pd.Series(norm[human].to_numpy(), index=frame.index[human])
    has_human = norm.isin(set(decided))
    keep = ~has_human.to_numpy()
    if human.any():
        by_time = frame.loc[human].assign(norm=decided).sort_values(["decided_at", "row_id"])
        keep |= frame.index.isin(by_time.groupby("norm").tail(1).index)
    overridden = int((has_human & ~human).sum())
    if policy.data.dedupe:
        keep &= ~(norm.where(~has_human, None).duplicated(keep="first") & ~has_human).to_numpy()
    frame, norm = frame[keep].reset_index(drop=True), norm[keep].reset_index(drop=True)
    frame, norm = _sample(frame, norm, policy, sample)
    recent = np.zeros(len(frame), dtype=bool)
    if cut is not None and cut.recent_since is not None and "decided_at" in frame.columns:
        recent = (frame["origin"] == LABELS).to_numpy() & (frame["decided_at"].fillna("") > cut.recent_since).to_numpy()
    masked = np.zeros(len(frame), dtype=bool)
    if policy.label_mode == "multilabel" and any(f"m_{c}" in frame.columns for c in policy.categories):
        for c in policy.categories:
            frame[f"m_{c}"] = frame[f"m_{c}"].fillna(1).astype("int8")
        masked = (frame[[f"m_{c}" for c in policy.categories]] == 0).any(axis=1).to_numpy()
    recent &= ~masked  # the frozen set has every category labelled
    frame = assign_splits(frame.drop(columns="split", errors="ignore"), policy)
    if policy.data.labels is not None:  # training weight of each row: a decision counts more than a dataset row
        frame["weight"] = np.where(frame["origin"] == LABELS, policy.data.labels.weight, 1.0)
    frame.loc[masked, "split"] = "train"
    frame.loc[recent, "split"] = RECENT
    lineage = [_lineage(part, frame[frame["origin"] == part.name], len(part.raw)) for part in parts]
    stats: dict[str, object] = {
        "sources": lineage,
        "conflicts": int(len(conflicting)),
        "conflict_rows": int(frame["conflict"].sum()),
        "overridden": overridden,
        "recent_rows": int(recent.sum()),
        "masked_rows": int(masked.sum()),
    }
    return frame, stats


def _lineage(part: SourceFrame, kept: pd.DataFrame, rows: int) -> dict[str, object]:
    return {
        "name": part.name,
        "kind": part.kind,
        "from": part.description,
        "rows": int(rows),
        "kept": int(len(kept)),
        "digest": frame_digest(kept["text"], kept["label"]),
    }


def compute_data_version(frame: pd.DataFrame) -> str:
    """sha256 over the canonical JSON lines of (text, label, split) in row order."""
    h = hashlib.sha256()
    for text, label, split in zip(frame["text"], frame["label"], frame["split"], strict=True):
        h.update(canonical_json([text, label, split]) + b"\n")
    return h.hexdigest()


def split_counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Rows per split and label."""
    table = frame.groupby(["split", "label"], dropna=False).size()
    counts: dict[str, dict[str, int]] = {}
    for (split, label), n in table.items():
        counts.setdefault(str(split), {})[str(label)] = int(n)
    return counts


def write_snapshot(
    store: ArtifactStore, frame: pd.DataFrame, *, policy: Policy, source: str, lineage: dict[str, object] | None = None
) -> SnapshotInfo:
    """Write ``snapshots/<data-version>/`` create-only (an existing version is reused: same content).

    ``lineage``: the sources (name, digest, rows) and the labels cut (watermark, until) the snapshot was built from.
    """
    version = compute_data_version(frame)
    key = f"snapshots/{version}"
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    data = buf.getvalue()
    counts = split_counts(frame)
    manifest = {
        "data_version": version,
        "policy": policy.name,
        "source": source,
        "rows": len(frame),
        "counts": counts,
        "data_sha256": sha256_bytes(data),
        **({"lineage": lineage} if lineage else {}),
        "created_at": datetime.now(UTC).isoformat(),
    }
    store.create_only(f"{key}/data.parquet", data)
    store.create_only(f"{key}/manifest.json", json.dumps(manifest, indent=2).encode())
    return SnapshotInfo(data_version=version, rows=len(frame), counts=counts, key=key)


def read_snapshot_file(path: str) -> pd.DataFrame:
    """Read a snapshot parquet file and check it is complete."""
    frame = pd.read_parquet(path)
    missing = {"row_id", "text", "label", "split"} - set(frame.columns)
    if missing:
        raise SnapshotError(f"{path} is not a harmguard snapshot (missing {sorted(missing)})")
    return frame


def split_frame(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """Rows of one split."""
    if split not in (*SPLITS, RECENT):
        raise ValueError(f"unknown split {split!r}")
    return frame[frame["split"] == split].reset_index(drop=True)


def encode_labels(frame: pd.DataFrame, policy: Policy) -> np.ndarray:
    """Class indices (exclusive) or the 0/1 matrix (multilabel; -1 where a decision left the category unlabelled)."""
    if policy.label_mode == "multilabel":
        y = frame[[f"y_{c}" for c in policy.categories]].to_numpy().astype(int)
        masks = [f"m_{c}" for c in policy.categories]
        if set(masks) <= set(frame.columns):
            y = np.where(frame[masks].fillna(1).to_numpy().astype(int) == 1, y, -1)
        return y
    unknown = sorted(set(frame["label"]) - set(policy.classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among {policy.classes}: validation should have stopped this run")
    return frame["label"].map(policy.classes.index).to_numpy()
