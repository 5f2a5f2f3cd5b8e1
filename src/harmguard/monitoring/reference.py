"""The reference distribution of a model: its scores on its own validation split, stored when it is registered.

``monitoring/<policy>/reference/<model-digest>.json`` (create-only; the same digest and data give the same content):
per row of the validation split, each category's score and truth (1, 0, or -1 where a multilabel decision left the
category unlabelled) and the text's length in characters, plus the registered thresholds. No text. Drift monitoring
compares the traffic record with it; the flag rate and precision of the validation split are recomputed at whatever
thresholds the traffic used.

The register step calls ``write_score_reference`` (the validation scores come from the evaluation's score cache, so
nothing is scored twice). A version registered before references existed gets one built on first use
(``reference_for_version``) from its published model and snapshot.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harmguard.data.snapshot import encode_labels, split_frame
from harmguard.digests import canonical_json, thresholds_version
from harmguard.evaluation.frozen import ScoreCache, set_digest
from harmguard.evaluation.metrics import truth_matrix
from harmguard.models.base import Classifier, category_scores
from harmguard.models.loading import load_model
from harmguard.policy import Policy
from harmguard.registry import VersionRecord, verify_model
from harmguard.storage import ArtifactStore

MAX_ROWS = 50_000  # a larger validation split is subsampled (evenly, deterministically) to this many rows
_DECIMALS = 6


def reference_key(policy: str, model_digest: str) -> str:
    """Where the reference of a model lives."""
    return f"monitoring/{policy}/reference/{model_digest}.json"


@dataclass
class Reference:
    """A model's scores, truth and text lengths on its validation split.

    Attributes:
        model_digest: The model.
        data_version: The snapshot whose validation split was scored.
        categories: Column order of ``scores`` and ``truth``.
        scores: (n, k) scores.
        truth: (n, k) 1 / 0, -1 where unknown.
        lengths: (n,) text lengths in characters.
        thresholds: The thresholds registered with the model.
    """

    model_digest: str
    data_version: str
    categories: list[str]
    scores: np.ndarray
    truth: np.ndarray
    lengths: np.ndarray
    thresholds: dict[str, float]

    def __len__(self) -> int:
        return len(self.lengths)

    def to_json(self) -> bytes:
        """Canonical JSON (scores rounded to 6 decimals)."""
        cats = self.categories
        scores = np.round(self.scores.astype(float), _DECIMALS)
        return canonical_json(
            {
                "kind": "harmguard.score_reference/1",
                "model_digest": self.model_digest,
                "data_version": self.data_version,
                "split": "validation",
                "rows": len(self),
                "categories": self.categories,
                "thresholds": self.thresholds,
                "thresholds_version": thresholds_version(self.thresholds),
                "scores": {c: scores[:, j].tolist() for j, c in enumerate(cats)},
                "truth": {c: self.truth[:, j].astype(int).tolist() for j, c in enumerate(cats)},
                "lengths": self.lengths.astype(int).tolist(),
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Reference:
        """Read what ``to_json`` wrote."""
        doc = json.loads(data)
        cats = list(doc["categories"])
        return cls(
            model_digest=doc["model_digest"],
            data_version=doc["data_version"],
            categories=cats,
            scores=np.array([doc["scores"][c] for c in cats], dtype=np.float64).T.reshape(-1, len(cats)),
            truth=np.array([doc["truth"][c] for c in cats], dtype=np.int8).T.reshape(-1, len(cats)),
            lengths=np.array(doc["lengths"], dtype=np.int64),
            thresholds={k: float(v) for k, v in doc["thresholds"].items()},
        )


def build_reference(
    model: Classifier, frame: pd.DataFrame, policy: Policy, *, model_digest: str, data_version: str,
    thresholds: dict[str, float], store: ArtifactStore | None = None,
) -> Reference:  # fmt: skip
    """Score the validation split of a snapshot (through the score cache when ``store`` is given)."""
    val = split_frame(frame, "validation")
    if len(val) > MAX_ROWS:
        val = val.iloc[np.linspace(0, len(val) - 1, MAX_ROWS).astype(int)].reset_index(drop=True)
    texts = val["text"].fillna("").tolist()
    if store is not None:  # the key calibration used: the evaluation already scored these rows
        proba = ScoreCache(store).scorer(model, model_digest)(set_digest(texts, val["label"].tolist()), texts)
    else:
        proba = np.asarray(model.predict_proba(texts), dtype=np.float64)
    y = encode_labels(val, policy)
    truth = truth_matrix(y, policy.classes, policy.categories, policy.label_mode).astype(np.int8)
    if policy.label_mode == "multilabel":
        truth = np.where(np.asarray(y) < 0, -1, truth).astype(np.int8)
    return Reference(
        model_digest=model_digest,
        data_version=data_version,
        categories=list(policy.categories),
        scores=category_scores(model, proba),
        truth=truth,
        lengths=np.array([len(t) for t in texts], dtype=np.int64),
        thresholds={c: float(thresholds[c]) for c in policy.categories},
    )


def _snapshot(store: ArtifactStore, data_version: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.read_bytes(f"snapshots/{data_version}/data.parquet")))


def write_score_reference(
    store: ArtifactStore,
    policy: Policy,
    *,
    model_dir: str | Path,
    model_digest: str,
    thresholds: dict[str, float],
    data_version: str,
) -> str:
    """Build and store (create-only) the reference of a model about to be registered; returns its key.

    Args:
        store: The artifact store of HARMGUARD_HOME.
        policy: The policy.
        model_dir: The exported model (loaded only to score rows the score cache does not hold).
        model_digest: Its digest.
        thresholds: The calibrated thresholds it is registered with.
        data_version: The snapshot it was evaluated on (``snapshots/<data_version>/``).
    """
    key = reference_key(policy.name, model_digest)
    if store.exists(key):
        return key
    ref = build_reference(
        load_model(model_dir), _snapshot(store, data_version), policy, model_digest=model_digest,
        data_version=data_version, thresholds=thresholds, store=store,
    )  # fmt: skip
    store.create_only(key, ref.to_json())
    return key


def read_reference(store: ArtifactStore, policy: str, model_digest: str) -> Reference | None:
    """The stored reference of a model, or None."""
    try:
        return Reference.from_json(store.read_bytes(reference_key(policy, model_digest)))
    except FileNotFoundError:
        return None


def reference_for_version(store: ArtifactStore, policy: Policy, record: VersionRecord) -> Reference:
    """The reference of a registered version, built from its published model and snapshot when missing.

    Raises:
        FileNotFoundError: The version's snapshot or model is not in the store.
        TamperedModelError: The published model does not hash to its digest.
    """
    ref = read_reference(store, policy.name, record.model_digest)
    if ref is not None:
        return ref
    data_version = record.lineage.get("data_version")
    if not data_version:
        raise FileNotFoundError(f"{record.version} records no data version: no validation split to build a reference")
    write_score_reference(
        store, policy, model_dir=verify_model(store, record.model_digest), model_digest=record.model_digest,
        thresholds=record.thresholds, data_version=data_version,
    )  # fmt: skip
    ref = read_reference(store, policy.name, record.model_digest)
    assert ref is not None
    return ref


def reference_summary(ref: Reference) -> dict[str, Any]:
    """What a verdict says of its reference."""
    return {
        "model_digest": ref.model_digest,
        "data_version": ref.data_version,
        "rows": len(ref),
        "thresholds_version": thresholds_version(ref.thresholds),
    }
