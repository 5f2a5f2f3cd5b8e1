"""Paired bootstrap and McNemar's test against hand-computed values and sklearn."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from harmguard.evaluation.significance import (
    count_indicators,
    mcnemar,
    metric_from_counts,
    paired_bootstrap,
    resample_weights,
)

Y = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
D = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)  # tp 2, fp 1, fn 1, tn 4


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("precision", 2 / 3),
        ("recall", 2 / 3),
        ("f1", 2 / 3),
        ("fpr", 1 / 5),
        ("accuracy", 6 / 8),
        ("flagged_rate", 3 / 8),
        ("macro_f1", 2 / 3),  # one label: the mean is its F1
        ("weighted_f1", 2 / 3),
    ],
)
def test_metrics_from_counts_by_hand(metric, expected):
    counts = count_indicators(Y[:, None], D[:, None]).sum(axis=0)
    assert counts[:4].tolist() == [2, 1, 1, 4]
    label = 0 if metric in {"precision", "recall", "f1", "fpr"} else None
    assert metric_from_counts(counts, metric, label) == pytest.approx(expected)


@pytest.mark.parametrize("metric", ["precision", "recall", "f1", "fpr"])
def test_zero_denominators_give_zero_like_binary_metrics(metric):
    counts = count_indicators(np.zeros((4, 1), bool), np.zeros((4, 1), bool)).sum(axis=0)
    assert metric_from_counts(counts, metric, 0) == 0.0


def test_multiclass_counts_match_sklearn():
    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    eye = np.eye(3, dtype=bool)
    counts = count_indicators(eye[y], eye[pred]).sum(axis=0)
    assert metric_from_counts(counts, "macro_f1") == pytest.approx(f1_score(y, pred, average="macro"))
    assert metric_from_counts(counts, "weighted_f1") == pytest.approx(f1_score(y, pred, average="weighted"))
    assert metric_from_counts(counts, "accuracy") == pytest.approx((y == pred).mean())
    assert metric_from_counts(counts, "f1", 2) == pytest.approx(f1_score(y == 2, pred == 2))


def test_resample_weights_are_a_deterministic_index_matrix():
    w = resample_weights(50, 200, seed=7)
    assert w.shape == (200, 50) and (w.sum(axis=1) == 50).all()
    assert np.array_equal(w, resample_weights(50, 200, seed=7))
    assert not np.array_equal(w, resample_weights(50, 200, seed=8))


def test_bootstrap_by_hand_one_and_two_rows():
    # One row: every resample is that row; the challenger is right, the champion wrong -> accuracy +1 exactly.
    one = paired_bootstrap(np.array([[True]]), np.array([[True]]), np.array([[False]]), "accuracy", resamples=200)
    assert (one.delta, one.low, one.high) == (1.0, 1.0, 1.0)
    # Two rows, the challenger right on both, the champion on the first only: the difference is the share of row 2
    # in the resample, 0, 1/2 or 1 with probability 1/4, 1/2, 1/4 -> 95% interval [0, 1], point 1/2.
    truth = np.array([[True], [True]])
    two = paired_bootstrap(truth, truth, np.array([[True], [False]]), "accuracy", resamples=4000)
    assert two.delta == 0.5 and two.low == 0.0 and two.high == 1.0
    assert two.passes(0.0) and not (two.low > 0)


def test_identical_models_have_a_zero_interval():
    rng = np.random.default_rng(0)
    truth, dec = rng.random((500, 2)) < 0.3, rng.random((500, 2)) < 0.3
    est = paired_bootstrap(truth, dec, dec, "macro_f1")
    assert (est.delta, est.low, est.high) == (0.0, 0.0, 0.0) and est.passes(0.0)


def _models(n: int, flips: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truth, champion right on 90% of rows, challenger equal except `flips` right rows made wrong."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.4
    champion = np.where(rng.random(n) < 0.9, truth, ~truth)
    challenger = champion.copy()
    right = np.flatnonzero(champion == truth)[:flips]
    challenger[right] = ~challenger[right]
    return truth[:, None], challenger[:, None], champion[:, None]


@pytest.mark.parametrize(
    ("flips", "tolerance", "passes"),
    [
        (0, 0.0, True),  # no change
        (4, 0.01, True),  # insignificant regression (-0.002): inside the tolerance
        (4, 0.0, False),  # ... but not with zero tolerance: the interval reaches below 0
        (100, 0.01, False),  # significant regression (-0.05): fails
        (100, 0.08, True),  # ... unless the tolerance allows it
    ],
)
def test_change_check_passes_iff_low_end_within_tolerance(flips, tolerance, passes):
    truth, challenger, champion = _models(2000, flips)
    est = paired_bootstrap(truth, challenger, champion, "accuracy")
    assert est.delta == pytest.approx(-flips / 2000)
    assert est.low <= est.delta <= est.high
    assert est.passes(tolerance) is passes


def test_lower_is_better_orients_the_difference():
    truth = np.zeros((1000, 1), bool)
    champion = np.zeros((1000, 1), bool)
    challenger = champion.copy()
    challenger[:50] = True  # 5% false positives more
    est = paired_bootstrap(truth, challenger, champion, "fpr", 0, higher_is_better=False)
    assert est.challenger == pytest.approx(0.05) and est.champion == 0.0
    assert est.delta == pytest.approx(-0.05) and est.high < 0 and not est.passes(0.03)


def test_relative_change():
    truth = np.ones((1000, 1), bool)
    champion = np.zeros((1000, 1), bool)
    champion[:500] = True  # recall 0.5
    challenger = champion.copy()
    challenger[:50] = False  # recall 0.45: -10% relative
    est = paired_bootstrap(truth, challenger, champion, "recall", 0, relative=True)
    assert est.delta == pytest.approx(-0.1) and est.relative
    assert est.passes(0.2) and not est.passes(0.05)


@pytest.mark.parametrize(
    ("a", "h", "b", "c", "p", "stat"),
    [
        ([1, 1, 1, 1, 1], [0, 0, 0, 0, 0], 5, 0, 2 * 0.5**5, (5 - 1) ** 2 / 5),  # exact: 2 * P(X >= 5), X ~ B(5, 1/2)
        ([1, 0, 1, 0], [0, 1, 0, 1], 2, 2, 1.0, 1 / 4),
        ([1, 1, 0], [1, 1, 0], 0, 0, 1.0, 0.0),  # no discordant rows
    ],
)
def test_mcnemar_by_hand(a, h, b, c, p, stat):
    m = mcnemar(np.array(a, bool), np.array(h, bool))
    assert (m.b, m.c) == (b, c)
    assert m.p_value == pytest.approx(p) and m.statistic == pytest.approx(stat)


def test_per_label_metric_needs_a_label():
    counts = count_indicators(Y[:, None], D[:, None]).sum(axis=0)
    with pytest.raises(ValueError, match="needs a label"):
        metric_from_counts(counts, "recall")
    with pytest.raises(ValueError, match="cannot be resampled"):
        metric_from_counts(counts, "pr_auc")
