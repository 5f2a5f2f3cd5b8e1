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

from harmguard.digests import canonical_json, sha256_bytes
from harmguard.policy import SPLITS, ColumnMap, Policy
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


def map_columns(raw: pd.DataFrame, policy: Policy, columns: ColumnMap | None = None) -> pd.DataFrame:
    """Map source columns to the snapshot schema; unknown labels are kept verbatim for validation to report."""
    cols = columns or policy.data.columns
    out = pd.DataFrame(index=raw.index)
    text = _column(raw, cols.text, "text")
    out["text"] = text.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    label_map = policy.data.label_map
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


def build_snapshot(raw: pd.DataFrame, policy: Policy, *, columns: ColumnMap | None = None, sample: int = 0):
    """Map, dedupe, sample and split raw rows into the snapshot frame (canonical order kept)."""
    frame = map_columns(raw, policy, columns)
    norm = frame["text"].fillna("").map(normalize_text)
    if policy.data.dedupe:
        # Pre-split data is deduplicated within each split only: a text repeated across splits is leakage, and
        # validation must see it rather than have it silently dropped here.
        key = norm + "\x00" + frame["split"].fillna("").astype(str) if "split" in frame.columns else norm
        keep = ~key.duplicated(keep="first")
        frame, norm = frame[keep].reset_index(drop=True), norm[keep].reset_index(drop=True)
    if sample and sample < len(frame):
        # Stable sample: a group is kept by its own hash, so a smaller sample is a subset of a larger one.
        u = unit_hash("sample:" + policy.split.seed, norm)
        cut = np.sort(u)[sample - 1]
        frame = frame[u <= cut].reset_index(drop=True)
    return assign_splits(frame, policy)


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


def write_snapshot(store: ArtifactStore, frame: pd.DataFrame, *, policy: Policy, source: str) -> SnapshotInfo:
    """Write ``snapshots/<data-version>/`` create-only (an existing version is reused: same content)."""
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
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    return frame[frame["split"] == split].reset_index(drop=True)


def encode_labels(frame: pd.DataFrame, policy: Policy) -> np.ndarray:
    """Class indices (exclusive) or the 0/1 matrix (multilabel) of a snapshot frame."""
    if policy.label_mode == "multilabel":
        return frame[[f"y_{c}" for c in policy.categories]].to_numpy().astype(int)
    unknown = sorted(set(frame["label"]) - set(policy.classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among {policy.classes}: validation should have stopped this run")
    return frame["label"].map(policy.classes.index).to_numpy()
