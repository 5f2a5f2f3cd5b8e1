"""Evaluation of one model on a frozen snapshot: calibration on validation, metrics on test, slices, eval sets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harmguard.digests import thresholds_version
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


def encode_labels(frame: pd.DataFrame, policy: Policy) -> np.ndarray:
    """Class indices (exclusive) or the 0/1 matrix (multilabel) of a snapshot frame."""
    if policy.label_mode == "multilabel":
        return frame[[f"y_{c}" for c in policy.categories]].to_numpy().astype(int)
    unknown = sorted(set(frame["label"]) - set(policy.classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among {policy.classes}: validation should have stopped this run")
    return frame["label"].map(policy.classes.index).to_numpy()


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
        else:
            col = f"src_{spec.column}"
            if col not in frame.columns:
                continue
            keys = frame[col].astype(str).to_numpy()
        for key in sorted(set(keys)):
            masks[f"{spec.name}:{key}"] = keys == key
    return masks


def evaluate_sets(model: Classifier, policy: Policy, settings: Settings, thresholds: dict[str, float]):
    """Metrics on the policy's frozen evaluation sets (e.g. hatecheck for the hate category)."""
    from harmguard.datasets import load_dataset

    results: dict[str, Any] = {}
    for es in policy.evaluation_sets:
        data = load_dataset(es.dataset, settings)
        texts = data[es.text_column].astype(str).tolist()
        y = (data[es.label_column].astype(str) == es.positive).to_numpy()
        proba = model.predict_proba(texts)
        j = policy.categories.index(es.category)
        s = category_scores(model, proba)[:, j]
        op = binary_metrics(y, s >= thresholds[es.category], s)
        ref_pred = proba.argmax(axis=1) == model.classes.index(es.category)
        results[es.name] = {
            "dataset": es.dataset,
            "category": es.category,
            "rows": len(texts),
            "positives": int(y.sum()),
            "operating": op | {"accuracy": float(((s >= thresholds[es.category]) == y).mean())},
            "reference": {"accuracy": float((ref_pred == y).mean()), "recall": float(ref_pred[y].mean())},
        }
    return results


def evaluate_model(
    model: Classifier, frame: pd.DataFrame, policy: Policy, settings: Settings | None = None
) -> dict[str, Any]:
    """Score validation and test, calibrate thresholds on validation, compute every metric.

    Returns:
        The evaluation document: thresholds (+ version and calibration), ``reference`` and ``operating`` metrics
        per split, ``slices`` (test), ``curves`` (test PR and ROC per category) and ``evaluation_sets``.
    """
    cats, classes = policy.categories, policy.classes
    out: dict[str, Any] = {"classes": classes, "categories": cats, "label_mode": policy.label_mode}
    parts = {s: split_frame(frame, s) for s in ("validation", "test")}
    proba = {s: model.predict_proba(parts[s]["text"].fillna("").tolist()) for s in parts}
    y = {s: encode_labels(parts[s], policy) for s in parts}
    truth = {s: truth_matrix(y[s], classes, cats, policy.label_mode) for s in parts}
    scores = {s: category_scores(model, proba[s]) for s in parts}

    calib = {
        c: calibrate_threshold(truth["validation"][:, j], scores["validation"][:, j], policy.target(c).max_fpr)
        for j, c in enumerate(cats)
    }
    thresholds = {c: calib[c].threshold for c in cats}
    out["thresholds"] = thresholds
    out["thresholds_version"] = thresholds_version(thresholds)
    out["calibration"] = {c: vars(calib[c]) for c in cats}
    out["reference"] = {s: reference_metrics(y[s], proba[s], classes, policy.label_mode) for s in parts}
    out["operating"] = {s: operating_metrics(truth[s], scores[s], cats, thresholds) for s in parts}

    test = parts["test"]
    out["slices"] = {}
    for name, mask in _slice_frames(test, policy).items():
        out["slices"][name] = {
            "rows": int(mask.sum()),
            "reference": reference_metrics(y["test"][mask], proba["test"][mask], classes, policy.label_mode),
            "operating": operating_metrics(truth["test"][mask], scores["test"][mask], cats, thresholds),
        }
    out["curves"] = {
        c: {
            "pr": pr_curve(truth["test"][:, j], scores["test"][:, j]),
            "roc": roc_points(truth["test"][:, j], scores["test"][:, j]),
        }
        for j, c in enumerate(cats)
    }
    out["evaluation_sets"] = evaluate_sets(model, policy, settings, thresholds) if settings else {}
    return out
