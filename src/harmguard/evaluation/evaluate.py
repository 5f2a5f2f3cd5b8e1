"""Evaluation on frozen data: calibration on validation, the challenger and the champion on the same frozen sets.

The frozen sets are the snapshot's test split and the policy's evaluation sets (e.g. hatecheck), each identified by its
digest. Both models are scored on every set (and on the test split's evasion perturbations); scores are cached under
``scores/<model-digest>/<set-digest>.npy`` (create-only) so nothing is scored twice. Identity fairness, functional tests
and evasion come from the same scores (``harmguard.evaluation.robustness``). The challenger's thresholds are calibrated
on the validation split; the champion keeps the thresholds registered with its version. Per-row truth and decisions of
both models travel to the gate as a ``PairedDecisions`` file (plain ``.npz``, no pickle) for its paired significance
tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harmguard.data.snapshot import RECENT, encode_labels, split_frame
from harmguard.digests import thresholds_version
from harmguard.evaluation.flips import flipped_examples
from harmguard.evaluation.frozen import (
    TEST,
    ChampionMismatch,
    Decisions,
    FrozenSet,
    PairedDecisions,
    ScoreCache,
    Scorer,
    frozen_sets,
    load_champion,
    reference_decisions,
    set_digest,
)
from harmguard.evaluation.metrics import (
    binary_metrics,
    calibrate_threshold,
    operating_metrics,
    pr_curve,
    reference_metrics,
    roc_points,
    truth_matrix,
)
from harmguard.evaluation.robustness import measure_robustness
from harmguard.models.base import Classifier, category_scores
from harmguard.policy import Policy
from harmguard.settings import Settings
from harmguard.storage import ArtifactStore


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
        "operating": binary_metrics(y, op, s) | _accuracies(y, op),
        "reference": binary_metrics(y, ref, proba[:, i]) | _accuracies(y, ref),
    }
    col = y[:, None]
    return doc, Decisions(col, ref[:, None], col, op[:, None])


def _accuracies(y: np.ndarray, decided: np.ndarray) -> dict[str, float]:
    """Accuracy and balanced accuracy (the mean of the accuracies on positive and on negative cases).

    Deciding every case the same way scores 0.5 balanced, whatever the set's balance: HateCheck is 69% hateful, so
    "all hateful" is 0.69 accurate and 0.5 balanced.
    """
    if not len(y):
        return {"accuracy": 0.0, "balanced_accuracy": 0.0}
    sides = [float((decided[y == v] == v).mean()) for v in (True, False) if (y == v).any()]
    return {"accuracy": float((decided == y).mean()), "balanced_accuracy": float(np.mean(sides))}


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


def evaluate_challenger(
    model: Classifier,
    frame: pd.DataFrame,
    policy: Policy,
    settings: Settings | None = None,
    *,
    scorer: Scorer | None = None,
    sets: list[FrozenSet] | None = None,
) -> tuple[dict[str, Any], dict[str, Decisions], dict[str, np.ndarray]]:
    """Calibrate thresholds on validation and compute every metric of one model on the frozen sets.

    Returns:
        The evaluation document: thresholds (+ version and calibration), ``reference`` and ``operating`` metrics
        per split, ``slices`` (test), ``curves`` (test PR and ROC per category), ``evaluation_sets`` and ``sets``
        (digest and rows of every frozen set); the per-row decisions and the probabilities on each frozen set (for
        paired comparisons).
    """
    score = scorer or (lambda _digest, texts: model.predict_proba(texts))
    cats = policy.categories
    out: dict[str, Any] = {"classes": policy.classes, "categories": cats, "label_mode": policy.label_mode}
    calib_doc, val = calibrate(model, frame, policy, score)
    out |= calib_doc
    thresholds = calib_doc["thresholds"]
    val_ref = reference_metrics(val["y"], val["proba"], policy.classes, policy.label_mode)
    val_op = operating_metrics(val["truth"], val["scores"], cats, thresholds)
    sets = sets if sets is not None else frozen_sets(frame, policy, settings)
    measured, decisions, probas = evaluate_on_sets(sets, score, policy, thresholds)
    out |= measured
    out["reference"] = {"validation": val_ref} | measured["reference"]
    out["operating"] = {"validation": val_op} | measured["operating"]
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


def evaluate_on_sets(
    sets: list[FrozenSet], score: Scorer, policy: Policy, thresholds: dict[str, float]
) -> tuple[dict[str, Any], dict[str, Decisions], dict[str, np.ndarray]]:
    """One model on every frozen set at ``thresholds``, with its per-row decisions and probabilities on each set.

    Test-split metrics, slices and curves, each evaluation set, fairness, functional tests and evasion.
    """
    out: dict[str, Any] = {"evaluation_sets": {}}
    decisions: dict[str, Decisions] = {}
    probas: dict[str, np.ndarray] = {}
    for fs in sets:
        probas[fs.name] = proba = score(fs.digest, fs.texts)
        doc, decisions[fs.name] = measure(fs, proba, policy, thresholds)
        if fs.category is not None:
            out["evaluation_sets"][fs.name] = doc
            continue
        if fs.name == RECENT:
            out[RECENT] = {"rows": len(fs.texts), "reference": doc["reference"], "operating": doc["operating"]}
            out[RECENT]["weeks"] = per_week(fs, proba, decisions[fs.name], policy)
            continue
        out["reference"] = {TEST: doc["reference"]}
        out["operating"] = {TEST: doc["operating"]}
        out["slices"] = doc["slices"]
        out["curves"] = _curves(fs, proba, decisions[fs.name], policy)
    out |= measure_robustness(sets, probas, policy, thresholds, score)
    return out, decisions, probas


def per_week(fs: FrozenSet, proba: np.ndarray, decisions: Decisions, policy: Policy) -> list[dict[str, Any]]:
    """The recent set week by week (ISO week of the decision), so a reviewer sees whether the newest weeks hold up.

    Per week: rows, and per category its rate and the model's operating-point precision, recall, F1, FPR, PR-AUC.
    """
    if fs.weeks is None:
        return []
    scores = proba[:, [policy.classes.index(c) for c in policy.categories]]
    out = []
    for week in sorted(set(fs.weeks.tolist())):
        m = fs.weeks == week
        entry: dict[str, Any] = {"week": week, "rows": int(m.sum()), "categories": {}}
        for j, c in enumerate(policy.categories):
            truth = decisions.operating_truth[m, j]
            metrics = binary_metrics(truth, decisions.operating[m, j], scores[m, j])
            entry["categories"][c] = {"rate": float(truth.mean())} | {
                k: metrics[k] for k in ("precision", "recall", "f1", "fpr", "pr_auc", "support")
            }
        out.append(entry)
    return out


def evaluate_champion(
    thresholds: dict[str, float], policy: Policy, sets: list[FrozenSet], scorer: Scorer
) -> tuple[dict[str, Any], dict[str, Decisions], dict[str, np.ndarray]]:
    """The champion's metrics on the same frozen sets at its own registered thresholds (same layout as above)."""
    measured, decisions, probas = evaluate_on_sets(sets, scorer, policy, thresholds)
    return (
        {"thresholds": thresholds, "thresholds_version": thresholds_version(thresholds)} | measured,
        decisions,
        probas,
    )


# --- paired decisions (evaluate -> gate) ------------------------------------------------------------------------


# --- challenger against champion --------------------------------------------------------------------------------


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
    cache = ScoreCache(store)
    sets = frozen_sets(frame, policy, settings)
    doc, challenger, probas = evaluate_challenger(
        model, frame, policy, settings, scorer=cache.scorer(model, model_digest), sets=sets
    )
    try:
        champion, note = load_champion(store, policy)
        doc["champion_mismatch"] = None
    except ChampionMismatch as e:  # fail closed: every change check fails with this reason
        champion, note = None, str(e)
        doc["champion_mismatch"] = note
    champion_decisions = None
    doc["champion"] = None
    doc["flips"] = None
    if champion is not None:
        scorer = cache.scorer(champion.model, champion.model_digest)
        champion_doc, champion_decisions, champion_probas = evaluate_champion(champion.thresholds, policy, sets, scorer)
        doc["champion"] = champion_doc | {
            "version": champion.version,
            "model_digest": champion.model_digest,
            "family": champion.family,
        }
        doc["flips"] = flipped_examples(sets, policy, (probas, challenger), (champion_probas, champion_decisions))
    doc["champion_note"] = note
    doc["score_cache"] = cache.stats()
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
