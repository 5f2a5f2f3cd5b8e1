"""Significance of a challenger/champion difference: paired bootstrap intervals and McNemar's test.

Both models are judged on the same rows. A change check resamples the rows (one index matrix shared by both models,
so the comparison stays paired), recomputes the metric of each model from confusion counts and takes the
percentile interval of the difference, oriented so that higher is better. The check passes if and only if the
interval's lower bound is >= -tolerance: a regression passes only when the data cannot tell it apart from noise
of at most ``tolerance``.

Vectorized: the (B, n) index matrix becomes a (B, n) multiplicity matrix (one ``bincount``), and every resample's
confusion counts are one matrix product with the per-row count indicators. No Python loop runs over rows or
resamples.

Shapes: ``truth`` and ``decision`` are (n, K) booleans over K labels (classes for reference metrics, categories for
operating-point metrics). Count vectors hold, in order, tp (K), fp (K), fn (K), tn (K), rows all correct (1) and
rows flagged on any label (1): 4K + 2 columns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Metrics a change check can resample: each is a function of confusion counts. Per-label ones need a label.
from harmguard.vocabulary import CHANGE_METRICS, PER_LABEL_METRICS


def count_indicators(truth: np.ndarray, decision: np.ndarray) -> np.ndarray:
    """Per-row count indicators, shape (n, 4K + 2): tp, fp, fn, tn per label, then all-correct and any-flagged."""
    t = np.asarray(truth, dtype=bool)
    d = np.asarray(decision, dtype=bool)
    if t.ndim == 1:
        t, d = t[:, None], d[:, None]
    if t.shape != d.shape:
        raise ValueError(f"truth {t.shape} and decision {d.shape} differ in shape")
    parts = [t & d, ~t & d, t & ~d, ~t & ~d, (t == d).all(axis=1, keepdims=True), d.any(axis=1, keepdims=True)]
    return np.concatenate(parts, axis=1).astype(np.float64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # 0 where the denominator is 0, as metrics.binary_metrics does (zero_division=0).
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def metric_from_counts(counts: np.ndarray, metric: str, label: int | None = None) -> np.ndarray:
    """A metric from count vectors of shape (..., 4K + 2); returns shape (...).

    Args:
        counts: Summed count indicators (see ``count_indicators``), one vector per resample.
        metric: One of ``CHANGE_METRICS``.
        label: Label index for per-label metrics (precision, recall, f1, fpr).
    """
    c = np.asarray(counts, dtype=np.float64)
    k = (c.shape[-1] - 2) // 4
    tp, fp, fn, tn = (c[..., i * k : (i + 1) * k] for i in range(4))
    rows = tp[..., :1] + fp[..., :1] + fn[..., :1] + tn[..., :1]  # every row is counted once per label
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)  # equals 2PR/(P+R), and 0 where undefined
    if metric in PER_LABEL_METRICS:
        if label is None or not 0 <= label < k:
            raise ValueError(f"{metric} needs a label index in [0, {k}), got {label}")
        j = slice(label, label + 1)
        value = {
            "precision": lambda: _ratio(tp[..., j], tp[..., j] + fp[..., j]),
            "recall": lambda: _ratio(tp[..., j], tp[..., j] + fn[..., j]),
            "f1": lambda: f1[..., j],
            "fpr": lambda: _ratio(fp[..., j], fp[..., j] + tn[..., j]),
        }[metric]()
        return value[..., 0]
    if metric == "accuracy":
        return _ratio(c[..., -2], rows[..., 0])
    if metric == "flagged_rate":
        return _ratio(c[..., -1], rows[..., 0])
    if metric == "macro_f1":
        return f1.mean(axis=-1)
    if metric == "weighted_f1":
        support = tp + fn
        return _ratio((f1 * support).sum(axis=-1), support.sum(axis=-1))
    raise ValueError(f"metric {metric!r} cannot be resampled; use one of {sorted(CHANGE_METRICS)}")


def resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Multiplicity of each row in each bootstrap resample, shape (n_boot, n), from a (n_boot, n) index matrix."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = (np.arange(n_boot)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


@dataclass(frozen=True)
class ChangeEstimate:
    """A paired bootstrap estimate of challenger minus champion, oriented so that higher is better."""

    challenger: float
    champion: float
    delta: float  # oriented point estimate (relative: a fraction of the champion's value)
    low: float  # lower bound of the interval of the oriented delta
    high: float
    confidence: float
    resamples: int
    rows: int
    relative: bool
    higher_is_better: bool

    def passes(self, tolerance: float) -> bool:
        """Pass iff the interval's lower bound is >= -tolerance (a NaN bound fails)."""
        return bool(np.isfinite(self.low) and self.low >= -tolerance)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}


def paired_bootstrap(
    truth: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    metric: str,
    label: int | None = None,
    *,
    higher_is_better: bool = True,
    relative: bool = False,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    weights: np.ndarray | None = None,
) -> ChangeEstimate:
    """Paired bootstrap of a metric's change between two models' decisions on the same rows.

    Args:
        truth: (n, K) gold labels.
        challenger: (n, K) challenger decisions.
        champion: (n, K) champion decisions.
        metric: One of ``CHANGE_METRICS``.
        label: Label index for per-label metrics.
        higher_is_better: Orientation; for lower-is-better metrics the delta is champion minus challenger.
        relative: Measure the change as a fraction of the champion's value (undefined resamples are dropped).
        resamples: Number of bootstrap resamples B.
        seed: Seed of the index matrix (fixed: the same data gives the same interval).
        confidence: Two-sided interval coverage.
        weights: A precomputed ``resample_weights(n, resamples, seed)`` to share between checks.

    Returns:
        The estimate; its ``passes(tolerance)`` is the decision.
    """
    a = count_indicators(truth, challenger)
    b = count_indicators(truth, champion)
    n = a.shape[0]
    sign = 1.0 if higher_is_better else -1.0
    va, vb = float(metric_from_counts(a.sum(0), metric, label)), float(metric_from_counts(b.sum(0), metric, label))
    if n == 0:
        nan = float("nan")
        return ChangeEstimate(va, vb, nan, nan, nan, confidence, resamples, 0, relative, higher_is_better)
    w = weights if weights is not None else resample_weights(n, resamples, seed)
    ra, rb = metric_from_counts(w @ a, metric, label), metric_from_counts(w @ b, metric, label)
    diff = sign * (ra - rb)
    point = sign * (va - vb)
    if relative:
        with np.errstate(divide="ignore", invalid="ignore"):
            diff = np.where(rb != 0, diff / np.abs(rb), np.nan)
        point = point / abs(vb) if vb != 0 else float("nan")
    diff = diff[np.isfinite(diff)] + 0.0  # + 0.0 turns -0.0 (a zero difference, negated) into 0.0
    point += 0.0
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diff, [alpha, 1 - alpha]) if diff.size else (np.nan, np.nan)
    return ChangeEstimate(va, vb, float(point), float(low), float(high), confidence, resamples, n, relative,
                          higher_is_better)  # fmt: skip


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on paired correctness: b rows only the challenger gets right, c only the champion."""

    b: int
    c: int
    statistic: float  # chi-square with continuity correction, reported for reference
    p_value: float  # exact two-sided binomial p-value

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def mcnemar(challenger_correct: np.ndarray, champion_correct: np.ndarray) -> McNemar:
    """McNemar's test on two models' per-row correctness (exact binomial p-value on the discordant rows)."""
    from scipy.stats import binomtest

    a = np.asarray(challenger_correct, dtype=bool)
    h = np.asarray(champion_correct, dtype=bool)
    b, c = int((a & ~h).sum()), int((~a & h).sum())
    if b + c == 0:
        return McNemar(0, 0, 0.0, 1.0)
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return McNemar(b, c, float(statistic), float(binomtest(b, b + c, 0.5).pvalue))


def z_value(confidence: float) -> float:
    """The two-sided standard normal quantile of a confidence level (0.95 -> 1.96)."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> list[float] | None:
    """Wilson score interval of a proportion ``successes / trials``; None when there are no trials.

    Used for the rates of small subsets (one identity group's FPR, one functionality's accuracy, one perturbation's
    evasion rate), where the normal approximation breaks down near 0 and 1.
    """
    if trials <= 0:
        return None
    z = z_value(confidence)
    p = successes / trials
    den = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / den
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / den
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]
