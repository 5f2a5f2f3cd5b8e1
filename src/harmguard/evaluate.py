"""Evaluation on frozen data: calibration on validation, the challenger and the champion on the same frozen sets.

The frozen sets are the snapshot's test split and the policy's evaluation sets (e.g. hatecheck), each identified by
its digest. Both models are scored on every set (and on the test split's evasion perturbations); scores are cached
under ``scores/<model-digest>/<set-digest>.npy`` (create-only) so nothing is scored twice. Identity fairness,
functional tests and evasion come from the same scores (``harmguard.robustness``). The challenger's thresholds are
calibrated on the validation split; the champion keeps the thresholds registered with its version. Per-row truth and
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

from harmguard.digests import canonical_json, sha256_bytes, thresholds_version
from harmguard.metrics import (
    binary_metrics,
    calibrate_threshold,
    length_buckets,
    operating_metrics,
    pr_curve,
    reference_metrics,
    roc_points,
    truth_matrix,
)
from harmguard.models import Classifier, category_scores
from harmguard.policy import Policy
from harmguard.settings import Settings
from harmguard.snapshot import split_frame
from harmguard.storage import ArtifactStore

# (set digest, texts) -> probabilities (n, n_classes)
Scorer = Callable[[str, list[str]], np.ndarray]
TEST = "test"


def encode_labels(frame: pd.DataFrame, policy: Policy) -> np.ndarray:
    """Class indices (exclusive) or the 0/1 matrix (multilabel) of a snapshot frame."""
    if policy.label_mode == "multilabel":
        return frame[[f"y_{c}" for c in policy.categories]].to_numpy().astype(int)
    unknown = sorted(set(frame["label"]) - set(policy.classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among {policy.classes}: validation should have stopped this run")
    return frame["label"].map(policy.classes.index).to_numpy()


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
        col = f"src_{spec.column}"
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
        return out


def frozen_sets(frame: pd.DataFrame, policy: Policy, settings: Settings | None) -> list[FrozenSet]:
    """The test split of the snapshot and, given settings, the policy's evaluation sets."""
    test = split_frame(frame, TEST)
    texts = test["text"].fillna("").tolist()
    y = encode_labels(test, policy)
    sets = [FrozenSet(TEST, set_digest(texts, test["label"].tolist()), texts, y, slices=_slice_frames(test, policy))]
    if settings is None:
        return sets
    from harmguard.datasets import load_dataset
    from harmguard.robustness import identity_groups

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


def measure(
    fs: FrozenSet, proba: np.ndarray, policy: Policy, thresholds: dict[str, float]
) -> tuple[dict[str, Any], Decisions]:
    """Metrics of one model on one frozen set, and its per-row decisions."""
    cats, classes, mode = policy.categories, policy.classes, policy.label_mode
    scores = proba[:, [classes.index(c) for c in cats]]
    ref_dec = reference_decisions(proba, mode)
    if fs.category is None:
        truth = truth_matrix(fs.y, classes, cats, mode)
        ref_truth = truth_matrix(fs.y, classes, classes, mode)
        op_dec = np.stack([scores[:, j] >= thresholds[c] for j, c in enumerate(cats)], axis=1)
        doc: dict[str, Any] = {
            "reference": reference_metrics(fs.y, proba, classes, mode),
            "operating": operating_metrics(truth, scores, cats, thresholds),
            "slices": {
                name: {
                    "rows": int(mask.sum()),
                    "reference": reference_metrics(fs.y[mask], proba[mask], classes, mode),
                    "operating": operating_metrics(truth[mask], scores[mask], cats, thresholds),
                }
                for name, mask in fs.slices.items()
            },
        }
        return doc, Decisions(ref_truth, ref_dec, truth, op_dec)
    j, i = cats.index(fs.category), classes.index(fs.category)
    y, s = fs.y, scores[:, j]
    op, ref = s >= thresholds[fs.category], ref_dec[:, i]
    doc = {
        "dataset": fs.dataset,
        "category": fs.category,
        "rows": len(y),
        "positives": int(y.sum()),
        "operating": binary_metrics(y, op, s) | {"accuracy": float((op == y).mean()) if len(y) else 0.0},
        "reference": binary_metrics(y, ref, proba[:, i]) | {"accuracy": float((ref == y).mean()) if len(y) else 0.0},
    }
    col = y[:, None]
    return doc, Decisions(col, ref[:, None], col, op[:, None])


def calibrate(
    model: Classifier, frame: pd.DataFrame, policy: Policy, scorer: Scorer
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Calibrate each category's threshold on the validation split; returns (thresholds doc, validation arrays)."""
    val = split_frame(frame, "validation")
    texts = val["text"].fillna("").tolist()
    proba = scorer(set_digest(texts, val["label"].tolist()), texts)
    y = encode_labels(val, policy)
    truth = truth_matrix(y, policy.classes, policy.categories, policy.label_mode)
    scores = category_scores(model, proba)
    calib = {
        c: calibrate_threshold(truth[:, j], scores[:, j], policy.target(c).max_fpr)
        for j, c in enumerate(policy.categories)
    }
    thresholds = {c: calib[c].threshold for c in policy.categories}
    doc = {
        "thresholds": thresholds,
        "thresholds_version": thresholds_version(thresholds),
        "calibration": {c: vars(calib[c]) for c in policy.categories},
    }
    return doc, {"y": y, "proba": proba, "truth": truth, "scores": scores}


def evaluate_model(
    model: Classifier,
    frame: pd.DataFrame,
    policy: Policy,
    settings: Settings | None = None,
    *,
    scorer: Scorer | None = None,
    sets: list[FrozenSet] | None = None,
) -> dict[str, Any]:
    """Calibrate thresholds on validation and compute every metric of one model on the frozen sets.

    Returns:
        The evaluation document: thresholds (+ version and calibration), ``reference`` and ``operating`` metrics
        per split, ``slices`` (test), ``curves`` (test PR and ROC per category), ``evaluation_sets`` and ``sets``
        (digest and rows of every frozen set).
    """
    doc, _ = evaluate_challenger(model, frame, policy, settings, scorer=scorer, sets=sets)
    return doc


def evaluate_challenger(
    model: Classifier,
    frame: pd.DataFrame,
    policy: Policy,
    settings: Settings | None = None,
    *,
    scorer: Scorer | None = None,
    sets: list[FrozenSet] | None = None,
) -> tuple[dict[str, Any], dict[str, Decisions]]:
    """``evaluate_model`` plus the per-row decisions on each frozen set (for paired comparisons)."""
    doc, decisions, _ = _evaluate_challenger(model, frame, policy, settings, scorer=scorer, sets=sets)
    return doc, decisions


def _evaluate_challenger(
    model: Classifier,
    frame: pd.DataFrame,
    policy: Policy,
    settings: Settings | None = None,
    *,
    scorer: Scorer | None = None,
    sets: list[FrozenSet] | None = None,
) -> tuple[dict[str, Any], dict[str, Decisions], dict[str, np.ndarray]]:
    from harmguard.robustness import measure_robustness

    score = scorer or (lambda _digest, texts: model.predict_proba(texts))
    cats = policy.categories
    out: dict[str, Any] = {"classes": policy.classes, "categories": cats, "label_mode": policy.label_mode}
    calib_doc, val = calibrate(model, frame, policy, score)
    out |= calib_doc
    thresholds = calib_doc["thresholds"]
    val_ref = reference_metrics(val["y"], val["proba"], policy.classes, policy.label_mode)
    val_op = operating_metrics(val["truth"], val["scores"], cats, thresholds)
    sets = sets if sets is not None else frozen_sets(frame, policy, settings)
    decisions: dict[str, Decisions] = {}
    probas: dict[str, np.ndarray] = {}
    out["evaluation_sets"] = {}
    for fs in sets:
        probas[fs.name] = proba = score(fs.digest, fs.texts)
        doc, decisions[fs.name] = measure(fs, proba, policy, thresholds)
        if fs.category is not None:
            out["evaluation_sets"][fs.name] = doc
            continue
        out["reference"] = {"validation": val_ref, TEST: doc["reference"]}
        out["operating"] = {"validation": val_op, TEST: doc["operating"]}
        out["slices"] = doc["slices"]
        out["curves"] = _curves(fs, proba, decisions[fs.name], policy)
    out |= measure_robustness(sets, probas, policy, thresholds, score)
    out["sets"] = {fs.name: fs.describe() for fs in sets}
    return out, decisions, probas


def _curves(fs: FrozenSet, proba: np.ndarray, decisions: Decisions, policy: Policy) -> dict[str, Any]:
    """PR and ROC curve per category on the test split."""
    truth = decisions.operating_truth
    scores = proba[:, [policy.classes.index(c) for c in policy.categories]]
    return {
        c: {"pr": pr_curve(truth[:, j], scores[:, j]), "roc": roc_points(truth[:, j], scores[:, j])}
        for j, c in enumerate(policy.categories)
    }


def evaluate_champion(
    model: Classifier, thresholds: dict[str, float], policy: Policy, sets: list[FrozenSet], scorer: Scorer
) -> tuple[dict[str, Any], dict[str, Decisions]]:
    """The champion's metrics on the same frozen sets at its own registered thresholds (same layout as above)."""
    doc, decisions, _ = _evaluate_champion(model, thresholds, policy, sets, scorer)
    return doc, decisions


def _evaluate_champion(
    model: Classifier, thresholds: dict[str, float], policy: Policy, sets: list[FrozenSet], scorer: Scorer
) -> tuple[dict[str, Any], dict[str, Decisions], dict[str, np.ndarray]]:
    from harmguard.robustness import measure_robustness

    out: dict[str, Any] = {"thresholds": thresholds, "thresholds_version": thresholds_version(thresholds)}
    decisions: dict[str, Decisions] = {}
    probas: dict[str, np.ndarray] = {}
    out["evaluation_sets"] = {}
    for fs in sets:
        probas[fs.name] = proba = scorer(fs.digest, fs.texts)
        doc, decisions[fs.name] = measure(fs, proba, policy, thresholds)
        if fs.category is not None:
            out["evaluation_sets"][fs.name] = doc
        else:
            out["reference"] = {TEST: doc["reference"]}
            out["operating"] = {TEST: doc["operating"]}
            out["slices"] = doc["slices"]
            out["curves"] = _curves(fs, proba, decisions[fs.name], policy)
    out |= measure_robustness(sets, probas, policy, thresholds, scorer)
    return out, decisions, probas


# --- score cache ------------------------------------------------------------------------------------------------


@dataclass
class ScoreCache:
    """Scores by (model digest, set digest) under ``scores/`` of the artifact store, create-only."""

    store: ArtifactStore
    hits: int = 0
    misses: int = 0

    def scorer(self, model: Classifier, digest: str) -> Scorer:
        """A scorer for one model that reads and fills the cache."""

        def score(set_key: str, texts: list[str]) -> np.ndarray:
            key = f"scores/{digest}/{set_key}.npy"
            try:
                cached = np.load(io.BytesIO(self.store.read_bytes(key)), allow_pickle=False)
            except (FileNotFoundError, ValueError, OSError):
                cached = None
            if cached is not None and cached.shape[0] == len(texts):
                self.hits += 1
                return cached
            self.misses += 1
            proba = np.asarray(model.predict_proba(texts), dtype=np.float64)
            buf = io.BytesIO()
            np.save(buf, proba, allow_pickle=False)
            self.store.create_only(key, buf.getvalue())  # a concurrent writer wrote the same content
            return proba

        return score


# --- paired decisions (evaluate -> gate) ------------------------------------------------------------------------


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


# --- challenger against champion --------------------------------------------------------------------------------


@dataclass
class Champion:
    """The current champion: its version record's fields and its verified, loaded model."""

    version: str
    model_digest: str
    thresholds: dict[str, float]
    family: str
    model: Classifier


def load_champion(store: ArtifactStore, policy: Policy) -> tuple[Champion | None, str]:
    """The policy's champion with its model digest verified, or None and why there is none to compare with.

    Raises:
        TamperedModelError: When the champion's published files no longer hash to its digest.
    """
    from harmguard.models import load_model
    from harmguard.registry import get_version, read_alias, verify_model

    pointer, _ = read_alias(store, policy.name, "champion")
    if pointer is None or pointer.version is None:
        return None, "no champion: change thresholds are skipped (first run)"
    record = get_version(store, pointer.version)
    model = load_model(verify_model(store, record.model_digest))
    if list(model.classes) != policy.classes or set(record.thresholds) != set(policy.categories):
        return None, (
            f"champion {record.version} scores {model.classes} with thresholds for {sorted(record.thresholds)}, "
            f"not this policy's {policy.classes}: change thresholds are skipped"
        )
    champion = Champion(record.version, record.model_digest, dict(record.thresholds), record.family, model)
    return champion, f"compared with champion {record.version} on the same frozen sets"


def evaluate_against_champion(
    model: Classifier,
    model_digest: str,
    frame: pd.DataFrame,
    policy: Policy,
    settings: Settings | None,
    store: ArtifactStore,
) -> tuple[dict[str, Any], PairedDecisions]:
    """Evaluate the challenger and, when there is one, the champion on the same frozen sets (scores cached).

    Returns:
        The evaluation document (the challenger's metrics at top level, ``champion`` with the champion's metrics
        at its registered thresholds or None, ``champion_note``, ``sets`` with every set's digest,
        ``score_cache`` hits and misses) and the paired per-row decisions for the gate.
    """
    from harmguard.review import flipped_examples

    cache = ScoreCache(store)
    sets = frozen_sets(frame, policy, settings)
    doc, challenger, probas = _evaluate_challenger(
        model, frame, policy, settings, scorer=cache.scorer(model, model_digest), sets=sets
    )
    champion, note = load_champion(store, policy)
    champion_decisions = None
    doc["champion"] = None
    doc["flips"] = None
    if champion is not None:
        scorer = cache.scorer(champion.model, champion.model_digest)
        champion_doc, champion_decisions, champion_probas = _evaluate_champion(
            champion.model, champion.thresholds, policy, sets, scorer
        )
        doc["champion"] = champion_doc | {
            "version": champion.version,
            "model_digest": champion.model_digest,
            "family": champion.family,
        }
        doc["flips"] = flipped_examples(sets, policy, (probas, challenger), (champion_probas, champion_decisions))
    doc["champion_note"] = note
    doc["score_cache"] = {"hits": cache.hits, "misses": cache.misses}
    slices = next(fs.slices for fs in sets if fs.category is None)
    return doc, PairedDecisions(challenger, champion_decisions, slices)


def thresholds_artifact(evaluation: dict[str, Any], *, policy: str) -> dict[str, Any]:
    """The calibrated thresholds as their own artifact: what serving applies, with its thresholds version."""
    return {
        "policy": policy,
        "thresholds": evaluation["thresholds"],
        "thresholds_version": evaluation["thresholds_version"],
        "calibration": evaluation.get("calibration", {}),
        "calibrated_on": "validation",
        "model_digest": evaluation.get("model_digest"),
        "data_version": evaluation.get("data_version"),
    }
