"""Metric code against hand-computed values; the gate's checks."""

import math

import numpy as np
import pytest

from harmguard.evaluation.gate import run_gate
from harmguard.evaluation.metrics import (
    binary_metrics,
    calibrate_threshold,
    flatten,
    length_buckets,
    operating_metrics,
    reference_metrics,
)
from harmguard.policy import Policy


def test_binary_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    d = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    m = binary_metrics(y, d, score=np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.1, 0.0]))
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 4)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(1 / 5)
    # ROC-AUC: of the 15 positive/negative pairs, the positive 0.3 loses to the negative 0.7 only -> 14/15
    assert m["roc_auc"] == pytest.approx(14 / 15)
    # AP: positives ranked 1, 2, 4 -> (1/1 + 2/2 + 3/4) / 3
    assert m["pr_auc"] == pytest.approx((1 + 1 + 0.75) / 3)


def test_calibration_picks_highest_recall_under_fpr():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.6, 0.2, 0.7, 0.5, 0.4, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    c = calibrate_threshold(y, s, max_fpr=0.1)  # 10 negatives: at most 1 false positive
    assert c.threshold == pytest.approx(0.6) and c.recall == pytest.approx(0.75) and c.fpr == pytest.approx(0.1)
    strict = calibrate_threshold(y, s, max_fpr=0.0)
    assert strict.threshold == pytest.approx(0.8) and strict.fpr == 0.0
    degenerate = calibrate_threshold(np.zeros(5), np.linspace(0, 1, 5), 0.1)
    assert "lacks positives" in degenerate.note and math.isnan(degenerate.recall)


def test_reference_metrics_exclusive_by_hand():
    classes = ["hate", "offensive", "none"]
    y = np.array([0, 1, 1, 2, 2, 1])
    proba = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8], [0.1, 0.6, 0.3],
                      [0.1, 0.8, 0.1]])  # fmt: skip
    m = reference_metrics(y, proba, classes, "exclusive")
    # predictions: 0, 1, 0, 2, 1, 1 -> hate P 1/2 R 1, offensive P 2/3 R 2/3, none P 1 R 1/2
    f = {"hate": 2 / 3, "offensive": 2 / 3, "none": 2 / 3}
    for c in classes:
        assert m["per_class"][c]["f1"] == pytest.approx(f[c])
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"]["matrix"] == [[1, 0, 0], [1, 2, 0], [0, 1, 1]]


def test_operating_metrics_and_flagged_rate():
    truth = np.array([[1, 0], [0, 1], [0, 0], [1, 1]], dtype=bool)
    scores = np.array([[0.9, 0.1], [0.2, 0.6], [0.4, 0.4], [0.3, 0.9]])
    m = operating_metrics(truth, scores, ["a", "b"], {"a": 0.35, "b": 0.5})
    assert m["per_category"]["a"]["tp"] == 1 and m["per_category"]["a"]["fp"] == 1
    assert m["per_category"]["b"]["recall"] == 1.0
    assert m["flagged_rate"] == 1.0


def test_length_buckets():
    assert length_buckets(["a", "x" * 40, "x" * 500], [0, 40, 80, 1000]) == ["0-40", "40-80", "80-1000"]


def _evaluation(weighted: float, hate_fpr: float) -> dict:
    per = {"hate": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "fpr": 0.01, "pr_auc": 0.4, "roc_auc": 0.9}}
    return {
        "thresholds": {"hate": 0.3},
        "thresholds_version": "t",
        "reference": {"test": {"accuracy": 0.9, "weighted_f1": weighted, "macro_f1": 0.7, "per_class": per}},
        "operating": {"test": {"flagged_rate": 0.1, "macro_f1": 0.5,
                               "per_category": {"hate": {**per["hate"], "fpr": hate_fpr, "threshold": 0.3}}}},
        "slices": {"length:0-40": {"reference": {"accuracy": 0.8, "weighted_f1": 0.6, "macro_f1": 0.5,
                                                 "per_class": per}, "operating": None}},
    }  # fmt: skip


def test_gate_blesses_only_when_every_check_passes():
    policy = Policy.model_validate(
        {"name": "p", "label_mode": "exclusive", "categories": ["hate"], "data": {"dataset": "d"},
         "gate": {"thresholds": [{"metric": "weighted_f1", "min": 0.85},
                                 {"metric": "fpr", "kind": "operating", "category": "hate", "max": 0.05},
                                 {"metric": "weighted_f1", "slice": "length:0-40", "min": 0.5}]}}
    )  # fmt: skip
    ok = run_gate(_evaluation(0.9, 0.01), policy, model_digest="m", data_version="d", run_id="r")
    assert ok["blessed"] and len(ok["checks"]) == 3
    bad = run_gate(_evaluation(0.8, 0.2), policy, model_digest="m", data_version="d", run_id="r")
    assert not bad["blessed"]
    failed = {c["key"] for c in bad["checks"] if not c["passed"]}
    assert failed == {"reference/overall/weighted_f1", "operating/overall/hate/fpr"}
    assert any("0.2000, needs <= 0.05" in r for r in bad["reasons"])
    for c in bad["checks"]:
        assert {"metric", "slice", "value", "min", "max", "passed"} <= set(c)


def test_gate_fails_on_missing_metric():
    policy = Policy.model_validate(
        {"name": "p", "label_mode": "exclusive", "categories": ["hate"], "data": {"dataset": "d"},
         "gate": {"thresholds": [{"metric": "f1", "category": "hate", "slice": "length:999", "min": 0.1}]}}
    )  # fmt: skip
    b = run_gate(_evaluation(0.9, 0.01), policy, model_digest="m", data_version="d", run_id="r")
    assert not b["blessed"] and "was not computed" in b["reasons"][0]


def test_flatten_keys():
    flat = flatten(_evaluation(0.9, 0.01))
    assert flat["reference/overall/weighted_f1"] == 0.9
    assert flat["operating/overall/hate/threshold"] == 0.3
    assert flat["reference/length:0-40/macro_f1"] == 0.5


def test_balanced_accuracy_gives_a_constant_answer_one_half():
    from harmguard.evaluation.evaluate import _accuracies

    y = np.array([True] * 69 + [False] * 31)  # HateCheck's balance
    everything = _accuracies(y, np.ones(100, dtype=bool))
    assert everything["accuracy"] == pytest.approx(0.69) and everything["balanced_accuracy"] == pytest.approx(0.5)
    half = _accuracies(y, np.array([True] * 60 + [False] * 9 + [False] * 20 + [True] * 11))
    assert half["balanced_accuracy"] == pytest.approx((60 / 69 + 20 / 31) / 2)
