"""Metrics of CONTRACTS.md: reference (argmax) and operating-point (at calibrated per-category thresholds).

Reference metrics are comparable with published results; operating-point metrics are what serving decides. Both
are computed overall and per slice. Threshold calibration lives here too.

Shapes: ``proba`` is (n, n_classes) in ``classes`` order; ``scores`` is (n, n_categories) in ``categories`` order;
``y_true`` holds class indices (exclusive) or a 0/1 matrix (n, n_categories) (multilabel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from harmguard.evaluation.evasion import SUMMARY_METRICS as EVASION_SUMMARY
from harmguard.evaluation.evasion import flatten_evasion
from harmguard.evaluation.fairness import SUMMARY_METRICS as FAIRNESS_SUMMARY
from harmguard.evaluation.fairness import flatten_fairness
from harmguard.evaluation.functional import flatten_functional

CURVE_POINTS = 200


@dataclass(frozen=True)
class Calibrated:
    """A category's operating threshold and what it achieved on the calibration data."""

    threshold: float
    recall: float
    fpr: float
    max_fpr: float
    note: str = ""


def calibrate_threshold(y: np.ndarray, s: np.ndarray, max_fpr: float) -> Calibrated:
    """Highest-recall threshold with false-positive rate <= ``max_fpr`` (decision: score >= threshold)."""
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return Calibrated(0.5, float("nan"), float("nan"), max_fpr, "calibration data lacks positives or negatives")
    fpr, tpr, thr = roc_curve(y, s)
    ok = np.flatnonzero(fpr <= max_fpr)
    best = ok[np.argmax(tpr[ok])]  # roc_curve's first point (threshold inf) always satisfies fpr 0
    threshold = float(thr[best])
    if not np.isfinite(threshold):
        threshold = float(np.nextafter(s.max(), np.inf))
        return Calibrated(threshold, 0.0, 0.0, max_fpr, "no threshold meets the FPR target: nothing is flagged")
    return Calibrated(threshold, float(tpr[best]), float(fpr[best]), max_fpr)


def _safe(fn: Any, *args: Any, **kwargs: Any) -> float | None:
    try:
        v = float(fn(*args, **kwargs))
    except ValueError:
        return None  # undefined (one class only in this subset)
    return None if np.isnan(v) else v


def binary_metrics(y: np.ndarray, decision: np.ndarray, score: np.ndarray | None = None) -> dict[str, Any]:
    """Precision, recall, F1, FPR and counts of one binary decision; PR-AUC and ROC-AUC when scores are given."""
    y = np.asarray(y).astype(bool)
    d = np.asarray(decision).astype(bool)
    tp, fp = int((y & d).sum()), int((~y & d).sum())
    fn, tn = int((y & ~d).sum()), int((~y & ~d).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    out: dict[str, Any] = {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "support": int(y.sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }
    if score is not None:
        out["pr_auc"] = _safe(average_precision_score, y, score) if y.any() else None
        out["roc_auc"] = _safe(roc_auc_score, y, score)
    return out


def truth_matrix(y_true: np.ndarray, classes: list[str], categories: list[str], label_mode: str) -> np.ndarray:
    """0/1 truth per category, shape (n, n_categories)."""
    if label_mode == "multilabel":
        return np.asarray(y_true).astype(bool)
    return np.stack([np.asarray(y_true) == classes.index(c) for c in categories], axis=1)


def reference_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str], label_mode: str) -> dict[str, Any]:
    """Argmax metrics (multilabel: each class at 0.5): weighted/macro F1, per-class P/R/F1/FPR/AUCs, confusion."""
    if label_mode == "exclusive":
        y = np.asarray(y_true)
        pred = proba.argmax(axis=1)
        labels = list(range(len(classes)))
        p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
        per_class = {}
        for i, c in enumerate(classes):
            m = binary_metrics(y == i, pred == i, proba[:, i])
            m.update(precision=float(p[i]), recall=float(r[i]), f1=float(f[i]), support=int(s[i]))
            per_class[c] = m
        return {
            "rows": len(y),
            "accuracy": float((pred == y).mean()) if len(y) else 0.0,
            "weighted_f1": float(f1_score(y, pred, labels=labels, average="weighted", zero_division=0)),
            "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
            "per_class": per_class,
            "confusion_matrix": {"labels": classes, "matrix": confusion_matrix(y, pred, labels=labels).tolist()},
        }
    y = np.asarray(y_true).astype(int)
    pred = (proba >= 0.5).astype(int)
    per_class = {c: binary_metrics(y[:, i], pred[:, i], proba[:, i]) for i, c in enumerate(classes)}
    return {
        "rows": len(y),
        "accuracy": float((pred == y).all(axis=1).mean()) if len(y) else 0.0,
        "weighted_f1": float(f1_score(y, pred, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "per_class": per_class,
    }


def operating_metrics(truth: np.ndarray, scores: np.ndarray, categories: list[str], thresholds: dict[str, float]):
    """Per-category metrics at the calibrated thresholds, plus the flagged rate and macro F1 over categories."""
    per = {}
    flagged = np.zeros(len(scores), dtype=bool)
    for j, c in enumerate(categories):
        d = scores[:, j] >= thresholds[c]
        flagged |= d
        per[c] = binary_metrics(truth[:, j], d, scores[:, j]) | {"threshold": thresholds[c]}
    return {
        "rows": len(scores),
        "flagged_rate": float(flagged.mean()) if len(scores) else 0.0,
        "macro_f1": float(np.mean([per[c]["f1"] for c in categories])),
        "per_category": per,
    }


def pr_curve(y: np.ndarray, s: np.ndarray) -> dict[str, list[float]] | None:
    """A precision-recall curve thinned to at most CURVE_POINTS points (for plots)."""
    y = np.asarray(y).astype(bool)
    if not y.any() or y.all():
        return None
    precision, recall, _ = precision_recall_curve(y, s)
    keep = np.unique(np.linspace(0, len(precision) - 1, min(CURVE_POINTS, len(precision))).astype(int))
    return {"precision": precision[keep].round(5).tolist(), "recall": recall[keep].round(5).tolist()}


def roc_points(y: np.ndarray, s: np.ndarray) -> dict[str, list[float]] | None:
    """A ROC curve thinned to at most CURVE_POINTS points (for KFP's ClassificationMetrics)."""
    y = np.asarray(y).astype(bool)
    if not y.any() or y.all():
        return None
    fpr, tpr, thr = roc_curve(y, s)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(CURVE_POINTS, len(fpr))).astype(int))
    thr = np.where(np.isfinite(thr), thr, 1.0)
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(), "threshold": thr[keep].tolist()}


def length_buckets(texts: list[str], edges: list[int]) -> list[str]:
    """Bucket name (``<lo>-<hi>`` characters) of each text."""
    lengths = np.array([len(t or "") for t in texts])
    idx = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, len(edges) - 2)
    return [f"{edges[i]}-{edges[i + 1]}" for i in idx]


def flatten(evaluation: dict[str, Any], split: str = "test") -> dict[str, float]:
    """Flat ``kind/slice/[category/]metric`` numbers of one split (gate lookups, KFP Metrics, MLflow).

    Slices are ``overall``, ``<family>:<bucket>``, the names of the frozen evaluation sets, and the identity groups,
    functionalities and evasion perturbations of ``robustness_keys``.
    """
    out: dict[str, float] = {}

    def add(prefix: str, ref: dict[str, Any] | None, op: dict[str, Any] | None) -> None:
        if ref:
            for k in ("accuracy", "weighted_f1", "macro_f1"):
                out[f"reference/{prefix}/{k}"] = ref[k]
            for c, m in ref["per_class"].items():
                for k in ("precision", "recall", "f1", "fpr", "pr_auc", "roc_auc"):
                    if m.get(k) is not None:
                        out[f"reference/{prefix}/{c}/{k}"] = m[k]
        if op:
            out[f"operating/{prefix}/flagged_rate"] = op["flagged_rate"]
            out[f"operating/{prefix}/macro_f1"] = op["macro_f1"]
            for c, m in op["per_category"].items():
                for k in ("precision", "recall", "f1", "fpr", "pr_auc", "roc_auc", "threshold"):
                    if m.get(k) is not None:
                        out[f"operating/{prefix}/{c}/{k}"] = m[k]

    add("overall", evaluation["reference"].get(split), evaluation["operating"].get(split))
    recent = evaluation.get("recent") or {}
    add("recent", recent.get("reference"), recent.get("operating"))  # the newest imported decisions
    for name, sl in evaluation.get("slices", {}).items():
        add(name, sl.get("reference"), sl.get("operating"))
    # Frozen evaluation sets read as slices named after the set: `<kind>/<set>/<category>/<metric>`.
    for name, es in (evaluation.get("evaluation_sets") or {}).items():
        for kind in ("reference", "operating"):
            m = es.get(kind) or {}
            for k in ("accuracy", "balanced_accuracy"):
                if m.get(k) is not None:
                    out[f"{kind}/{name}/{k}"] = m[k]
            for k in ("precision", "recall", "f1", "fpr", "pr_auc", "roc_auc"):
                if m.get(k) is not None:
                    out[f"{kind}/{name}/{es['category']}/{k}"] = m[k]
    out |= robustness_keys(evaluation)[0]
    return {k: float(v) for k, v in out.items()}


def robustness_keys(evaluation: dict[str, Any]) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Flat keys of the fairness, functional and evasion sections, and per key what a check shows beside its value.

    Keys (all operating-point, except functional accuracy which has both kinds):
    ``operating/<set>:<group>/<category>/{subgroup_auc,bpsn_auc,bnsp_auc,fpr}``,
    ``operating/<set>/<category>/{min_subgroup_auc,min_bpsn_auc,min_bnsp_auc,fpr_spread,bias_score}``,
    ``<kind>/<set>:<functionality>/accuracy``, ``operating/evasion:<perturbation>/<category>/{flip_rate,
    evasion_rate}`` and ``operating/evasion/<category>/{max_flip_rate,max_evasion_rate}``. Details: ``interval``,
    ``where`` (the group or perturbation a summary comes from) and ``values`` (each group's or perturbation's value).
    """
    values: dict[str, float] = {}
    details: dict[str, dict[str, Any]] = {}
    parts = [flatten_fairness(name, doc["category"], doc) for name, doc in (evaluation.get("fairness") or {}).items()]
    parts += [flatten_functional(name, doc) for name, doc in (evaluation.get("functional") or {}).items()]
    if evaluation.get("evasion"):
        parts.append(flatten_evasion(evaluation["evasion"]))
    for v, d in parts:
        values |= v
        details |= d
    return values, details


def ui_metric_keys(flat: dict[str, float]) -> list[str]:
    """The flat keys worth a KFP ``Metrics`` entry (the UI lists them all, so not every group or functionality).

    Overall metrics, each evaluation set's accuracy, and the fairness and evasion summaries (worst group, spread,
    worst perturbation).
    """
    summaries = {*FAIRNESS_SUMMARY, *EVASION_SUMMARY}
    keep = []
    for key in flat:
        parts = key.split("/")
        overall = parts[1] == "overall"
        set_accuracy = len(parts) == 3 and parts[2] in ("accuracy", "balanced_accuracy") and ":" not in parts[1]
        if overall or set_accuracy or parts[-1] in summaries:
            keep.append(key)
    return keep
