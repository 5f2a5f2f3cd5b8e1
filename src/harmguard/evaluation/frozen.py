"""Frozen evaluation sets, each identified by its digest, the score cache, and per-row decisions.

The frozen sets are the snapshot's test split and the policy's evaluation sets (e.g. hatecheck). Scores are cached
under ``scores/<model-digest>/<set-digest>.npy`` (create-only) so nothing is scored twice. Per-row truth and
decisions of both models travel to the gate as a ``PairedDecisions`` file (plain ``.npz``, no pickle) for its paired
significance tests.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import RECENT, encode_labels, split_frame
from harmguard.digests import canonical_json, sha256_bytes
from harmguard.evaluation.fairness import identity_groups
from harmguard.evaluation.metrics import length_buckets
from harmguard.models.base import Classifier
from harmguard.models.loading import load_model
from harmguard.policy import Policy
from harmguard.registry import get_version, read_alias
from harmguard.registry.models import verify_model
from harmguard.settings import Settings
from harmguard.storage.base import ArtifactStore

# (set digest, texts) -> probabilities (n, n_classes)
Scorer = Callable[[str, list[str]], np.ndarray]


TEST = "test"


def set_digest(texts: list[str], labels: list[Any]) -> str:
    """Identity of a frozen evaluation set: sha256 over the canonical JSON lines ``[text, label]`` in row order."""
    body = b"".join(canonical_json([t, lab]) + b"\n" for t, lab in zip(texts, labels, strict=True))
    return sha256_bytes(body)


def _slice_frames(frame: pd.DataFrame, policy: Policy) -> dict[str, np.ndarray]:
    masks: dict[str, np.ndarray] = {}
    for spec in policy.slices:
        if spec.by == "length":
            keys = np.array(length_buckets(frame["text"].tolist(), spec.buckets))
            order = [f"{lo}-{hi}" for lo, hi in zip(spec.buckets, spec.buckets[1:], strict=False)]
            for key in order:  # bucket order, not string order
                if (keys == key).any():
                    masks[f"{spec.name}:{key}"] = keys == key
            continue
        col = "origin" if spec.by == "origin" else f"src_{spec.column}"
        if col not in frame.columns:
            continue
        keys = frame[col].astype(str).to_numpy()
        for key in sorted(set(keys)):
            masks[f"{spec.name}:{key}"] = keys == key
    return masks


@dataclass
class FrozenSet:
    """One frozen evaluation set: the test split (all categories) or a policy evaluation set (one category)."""

    name: str
    digest: str
    texts: list[str]
    y: np.ndarray  # test: class indices or 0/1 matrix; evaluation set: bool (n,) for its category
    category: str | None = None  # None for the test split
    dataset: str | None = None
    slices: dict[str, np.ndarray] = field(default_factory=dict)
    positive: str | None = None  # evaluation set: the gold label meaning the category applies
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # identity group -> row mask (fairness)
    identity: str | None = None  # where the groups come from, for the report
    min_negatives: int = 50  # groups with fewer negatives stay out of the FPR spread
    functionality: np.ndarray | None = None  # (n,) functional test of each row
    weeks: np.ndarray | None = None  # recent: (n,) ISO week of each row's decision
    derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # memo: perturbed copies

    def describe(self) -> dict[str, Any]:
        """What the blessing records about the set."""
        out: dict[str, Any] = {"digest": self.digest, "rows": len(self.texts)}
        if self.category is not None:
            out |= {"dataset": self.dataset, "category": self.category, "positives": int(np.sum(self.y))}
        if self.groups:
            out |= {"identity": self.identity, "identity_groups": len(self.groups)}
        if self.functionality is not None:
            out["functionalities"] = len(set(self.functionality.tolist()))
        if self.weeks is not None:
            out["weeks"] = sorted(set(self.weeks.tolist()))
        return out


def frozen_sets(frame: pd.DataFrame, policy: Policy, settings: Settings | None) -> list[FrozenSet]:
    """The test split of the snapshot and, given settings, the policy's evaluation sets."""
    test = split_frame(frame, TEST)
    texts = test["text"].fillna("").tolist()
    y = encode_labels(test, policy)
    sets = [FrozenSet(TEST, set_digest(texts, test["label"].tolist()), texts, y, slices=_slice_frames(test, policy))]
    recent = split_frame(frame, RECENT)
    if len(recent):
        # the newest imported decisions, held out by time: judged like the test split, never trained on
        texts = recent["text"].fillna("").tolist()
        weeks = pd.to_datetime(recent["decided_at"], utc=True, format="ISO8601").dt.strftime("%G-W%V").to_numpy()
        digest = set_digest(texts, recent["label"].tolist())
        sets.append(FrozenSet(RECENT, digest, texts, encode_labels(recent, policy), weeks=weeks))
    if settings is None:
        return sets

    for es in policy.evaluation_sets:
        data = load_dataset(es.dataset, settings)
        texts = data[es.text_column].astype(str).tolist()
        labels = data[es.label_column].astype(str).tolist()
        yb = np.array([lab == es.positive for lab in labels], dtype=bool)
        fs = FrozenSet(es.name, set_digest(texts, labels), texts, yb, es.category, es.dataset, positive=es.positive)
        if es.identity is not None:
            fs.groups, fs.identity = identity_groups(data, texts, es.identity, settings)
            fs.min_negatives = es.identity.min_negatives
        if es.functionality_column:
            fs.functionality = data[es.functionality_column].astype(str).to_numpy()
        sets.append(fs)
    return sets


@dataclass
class Decisions:
    """Per-row truth and one model's decisions on a set, for both kinds of metrics (all (n, K) booleans)."""

    reference_truth: np.ndarray
    reference: np.ndarray
    operating_truth: np.ndarray
    operating: np.ndarray


def reference_decisions(proba: np.ndarray, label_mode: str) -> np.ndarray:
    """Argmax decisions (multilabel: each class at 0.5), (n, n_classes) booleans."""
    if label_mode == "multilabel":
        return proba >= 0.5
    return np.eye(proba.shape[1], dtype=bool)[proba.argmax(axis=1)]


@dataclass
class ScoreCache:
    """Scores by (model digest, set digest) under ``scores/`` of the artifact store, create-only.

    Each ``<set>.npy`` has a record ``<set>.json`` written after it: the sha256 of the array file, its rows, and the
    two digests it belongs to. A cached array is trusted only when its bytes hash to the recorded digest; any other
    file (edited, truncated, written without a record) is scored again and counted as ``rejected``.
    """

    store: ArtifactStore
    hits: int = 0
    misses: int = 0
    rejected: int = 0

    def _cached(self, key: str, record: dict[str, Any], rows: int) -> np.ndarray | None:
        try:
            data = self.store.read_bytes(f"{key}.npy")
        except FileNotFoundError:
            return None
        try:
            recorded = json.loads(self.store.read_bytes(f"{key}.json"))
        except (FileNotFoundError, ValueError):
            recorded = None
        if recorded != record | {"sha256": sha256_bytes(data), "rows": rows}:
            self.rejected += 1  # not what this cache wrote for this model and set: never trusted
            return None
        return np.load(io.BytesIO(data), allow_pickle=False)

    def scorer(self, model: Classifier, digest: str) -> Scorer:
        """A scorer for one model that reads and fills the cache."""

        def score(set_key: str, texts: list[str]) -> np.ndarray:
            key = f"scores/{digest}/{set_key}"
            record = {"model_digest": digest, "set_key": set_key}
            cached = self._cached(key, record, len(texts))
            if cached is not None:
                self.hits += 1
                return cached
            self.misses += 1
            proba = np.asarray(model.predict_proba(texts), dtype=np.float64)
            buf = io.BytesIO()
            np.save(buf, proba, allow_pickle=False)
            data = buf.getvalue()
            # create-only: a concurrent writer wrote the same content; the record goes last, so a file without one
            # (a crash in between) is never trusted
            self.store.create_only(f"{key}.npy", data)
            self.store.create_only(
                f"{key}.json", canonical_json(record | {"sha256": sha256_bytes(data), "rows": len(texts)})
            )
            return proba

        return score

    def stats(self) -> dict[str, int]:
        """Hits, misses and rejected cache files of this evaluation."""
        return {"hits": self.hits, "misses": self.misses, "rejected": self.rejected}


@dataclass
class PairedDecisions:
    """Per-row truth and both models' decisions on every frozen set, plus the test split's slice masks."""

    challenger: dict[str, Decisions]
    champion: dict[str, Decisions] | None
    slices: dict[str, np.ndarray]

    def save(self, path: str | Path) -> None:
        """Write a plain ``.npz`` (arrays of booleans; names in an index, never pickled)."""
        arrays: dict[str, np.ndarray] = {}
        index: dict[str, Any] = {"sets": sorted(self.challenger), "slices": sorted(self.slices), "champion": False}
        for i, name in enumerate(index["sets"]):
            for who, table in (("challenger", self.challenger), ("champion", self.champion)):
                if table is None:
                    continue
                for part, arr in vars(table[name]).items():
                    arrays[f"s{i}_{who}_{part}"] = arr
        index["champion"] = self.champion is not None
        for i, name in enumerate(index["slices"]):
            arrays[f"m{i}"] = self.slices[name]
        arrays["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
        savez: Any = np.savez_compressed  # numpy's stub types **kwds as its own keyword arguments
        with open(path, "wb") as out:
            savez(out, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> PairedDecisions:
        """Read a file written by ``save``."""
        try:
            z = np.load(path, allow_pickle=False)
        except (zipfile.BadZipFile, ValueError) as e:
            raise ValueError(f"{path} is not a paired-decisions file: {e}") from e
        with z:
            index = json.loads(z["index"].tobytes())
            names = list(Decisions.__dataclass_fields__)

            def table(who: str) -> dict[str, Decisions]:
                return {
                    name: Decisions(**{f: z[f"s{i}_{who}_{f}"] for f in names}) for i, name in enumerate(index["sets"])
                }

            return cls(
                challenger=table("challenger"),
                champion=table("champion") if index["champion"] else None,
                slices={name: z[f"m{i}"] for i, name in enumerate(index["slices"])},
            )


@dataclass
class Champion:
    """The current champion: its version record's fields and its verified, loaded model."""

    version: str
    model_digest: str
    thresholds: dict[str, float]
    family: str
    model: Classifier


class ChampionMismatch(ValueError):
    """The champion scores other classes or decides other categories than the policy: it cannot be compared."""


def load_champion(store: ArtifactStore, policy: Policy) -> tuple[Champion | None, str]:
    """The policy's champion with its model digest verified, or None (first run) and why.

    Raises:
        TamperedModelError: When the champion's published files no longer hash to its digest.
        ChampionMismatch: When its classes or thresholds do not match the policy (the gate fails closed on it).
    """
    pointer, _ = read_alias(store, policy.name, "champion")
    if pointer is None or pointer.version is None:
        return None, "no champion: change thresholds are skipped (first run)"
    record = get_version(store, pointer.version)
    model = load_model(verify_model(store, record.model_digest))
    if list(model.classes) != policy.classes or set(record.thresholds) != set(policy.categories):
        raise ChampionMismatch(
            f"champion {record.version} scores {list(model.classes)} with thresholds for {sorted(record.thresholds)}, "
            f"not this policy's classes {policy.classes} and categories {policy.categories}: it cannot be compared "
            "on the same rows"
        )
    champion = Champion(record.version, record.model_digest, dict(record.thresholds), record.family, model)
    return champion, f"compared with champion {record.version} on the same frozen sets"
