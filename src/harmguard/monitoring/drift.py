"""Drift checks between the traffic record and a model's reference, as effect sizes with bounds from the policy.

Per category: the population stability index and the Kolmogorov-Smirnov statistic of the scores, and the flag rate
against the validation split's at the same thresholds (a ratio with a log-normal interval, Haldane-corrected so a
zero count stays finite); for the texts, the KS statistic of their lengths; where imported labels share item ids with
the traffic, the precision of flagged decisions against the validation's (a Wilson interval). A check crosses its
bound on its size, never on a p-value: with a million records any difference is "significant". A ratio or a
precision crosses only when its whole interval lies past the bound, so a quiet day's noise does not page anyone.

Everything here is numpy over column arrays: a million records take a few seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harmguard.monitoring.parts import DECISION, SCORE
from harmguard.monitoring.reference import Reference
from harmguard.policy import MonitoringSpec

PSI_BINS = 10  # deciles of the reference scores
PSI_FLOOR = 1e-4  # share given to an empty bin, so the log stays finite
HIST_BINS = 20  # histogram overlays in the report: equal-width bins on [0, 1]


def psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of ``current`` against ``reference``, over the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(reference)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1) / len(current)
    ref, cur = np.clip(ref, PSI_FLOOR, None), np.clip(cur, PSI_FLOOR, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def rate_ratio(k1: int, n1: int, k0: int, n0: int, confidence: float) -> tuple[float, float, float]:
    """(k1/n1) / (k0/n0) with its interval (log scale, 0.5 added to every count)."""
    a, b, c, d = k1 + 0.5, n1 + 0.5, k0 + 0.5, n0 + 0.5
    ratio = (a / b) / (c / d)
    se = math.sqrt(max(1 / a - 1 / b + 1 / c - 1 / d, 0.0))
    z = _z(confidence)
    return ratio, ratio * math.exp(-z * se), ratio * math.exp(z * se)


def wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Check:
    """One bound checked: its size, the bound, and whether it was crossed."""

    check: str
    category: str | None
    value: float | None
    bound: float
    crossed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return dict(vars(self))


def _column(table: pa.Table, name: str, dtype: Any) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(), dtype=dtype)


def histogram(values: np.ndarray) -> list[float]:
    """Shares of ``values`` in ``HIST_BINS`` equal bins on [0, 1] (the report's overlays)."""
    counts, _ = np.histogram(np.clip(values, 0, 1), bins=HIST_BINS, range=(0, 1))
    return (counts / max(len(values), 1)).tolist()


def category_drift(
    category: str, ref: Reference, traffic: pa.Table, threshold: float, spec: MonitoringSpec
) -> tuple[dict[str, Any], list[Check]]:
    """Score drift and flag rate of one category."""
    j = ref.categories.index(category)
    ref_scores = ref.scores[:, j]
    scores = _column(traffic, f"{SCORE}{category}", np.float64)
    flags = _column(traffic, f"{DECISION}{category}", bool)
    value_psi, value_ks = psi(ref_scores, scores), ks_statistic(ref_scores, scores)
    k0, n0 = int((ref_scores >= threshold).sum()), len(ref_scores)
    k1, n1 = int(flags.sum()), len(flags)
    ratio, low, high = rate_ratio(k1, n1, k0, n0, spec.confidence)
    bound = spec.flag_rate_ratio
    ratio_crossed = low > bound or high < 1 / bound
    pct = f"{spec.confidence:.0%}"
    checks = [
        Check("psi", category, value_psi, spec.psi, value_psi > spec.psi, f"PSI {value_psi:.3f} (bound {spec.psi})"),
        Check("ks", category, value_ks, spec.ks, value_ks > spec.ks, f"KS {value_ks:.3f} (bound {spec.ks})"),
        Check(
            "flag_rate_ratio", category, ratio, bound, ratio_crossed,
            f"flag rate {k1 / n1:.4f} vs validation {k0 / n0:.4f}: ratio {ratio:.2f}, {pct} interval "
            f"[{low:.2f}, {high:.2f}] (bound {1 / bound:.2f}..{bound:.2f})",
        ),
    ]  # fmt: skip
    doc = {
        "psi": value_psi,
        "ks": value_ks,
        "threshold": threshold,
        "flag_rate": {"traffic": k1 / n1, "reference": k0 / n0, "ratio": ratio, "low": low, "high": high},
        "histogram": {"traffic": histogram(scores), "reference": histogram(ref_scores)},
    }
    return doc, checks


def length_drift(ref: Reference, traffic: pa.Table, spec: MonitoringSpec) -> tuple[dict[str, Any], Check]:
    """Shift of text lengths (characters)."""
    lengths = _column(traffic, "text_length", np.float64)
    value = ks_statistic(ref.lengths.astype(np.float64), lengths)
    median = {"traffic": float(np.median(lengths)), "reference": float(np.median(ref.lengths))}
    doc = {
        "ks": value,
        "median": median,
        "p90": {"traffic": float(np.quantile(lengths, 0.9)), "reference": float(np.quantile(ref.lengths, 0.9))},
    }
    detail = (
        f"KS {value:.3f} (bound {spec.length_ks}); median length {median['traffic']:.0f} vs "
        f"{median['reference']:.0f} characters"
    )
    return doc, Check("length_ks", None, value, spec.length_ks, value > spec.length_ks, detail)


def precision_drift(
    category: str,
    ref: Reference,
    traffic: pa.Table,
    labels: dict[str, dict[str, bool]],
    threshold: float,
    spec: MonitoringSpec,
) -> tuple[dict[str, Any], Check | None]:
    """Precision of the flagged decisions on items with an imported label for ``category`` (each item once)."""
    j = ref.categories.index(category)
    known = ref.truth[:, j] >= 0
    flagged_ref = (ref.scores[:, j] >= threshold) & known
    ref_precision = float(ref.truth[flagged_ref, j].mean()) if flagged_ref.any() else None
    labelled_ids = [i for i, lab in labels.items() if category in lab]
    labelled = pc.is_in(traffic.column("item_id"), pa.array(labelled_ids, pa.string()))
    rows = traffic.filter(pc.and_(labelled, traffic.column(f"{DECISION}{category}")))
    items = sorted(set(rows.column("item_id").to_pylist()))
    n = len(items)
    k = sum(1 for i in items if labels[i][category])
    doc: dict[str, Any] = {"labelled_flagged": n, "reference": ref_precision}
    if n:
        low, high = wilson(k, n, spec.confidence)
        doc |= {"traffic": k / n, "low": low, "high": high}
    if ref_precision is None or n < spec.min_labelled:
        doc["judged"] = False
        return doc, None
    doc["judged"] = True
    floor = ref_precision - spec.precision_drop
    crossed = doc["high"] < floor
    detail = (
        f"precision of flagged {k}/{n} = {k / n:.3f} ({spec.confidence:.0%} interval [{doc['low']:.3f}, "
        f"{doc['high']:.3f}]) vs validation {ref_precision:.3f} (largest fall {spec.precision_drop})"
    )
    return doc, Check("precision_drop", category, ref_precision - k / n, spec.precision_drop, crossed, detail)


def daily(traffic: pa.Table, categories: list[str]) -> list[dict[str, Any]]:
    """Records and flag rate (any category, and per category) per UTC day."""
    days = traffic.column("ts").to_numpy().astype("datetime64[D]")
    uniq, inverse, counts = np.unique(days, return_inverse=True, return_counts=True)
    flagged = np.bincount(inverse, weights=_column(traffic, "flagged", np.float64), minlength=len(uniq))
    per_cat = {
        c: np.bincount(inverse, weights=_column(traffic, f"{DECISION}{c}", np.float64), minlength=len(uniq))
        for c in categories
    }
    return [
        {
            "day": str(d),
            "records": int(n),
            "flag_rate": float(flagged[i] / n),
            "flag_rates": {c: float(per_cat[c][i] / n) for c in categories},
        }
        for i, (d, n) in enumerate(zip(uniq, counts, strict=True))
    ]


def value_counts(traffic: pa.Table, column: str) -> dict[str, int]:
    """Records per value of a string column (model versions, sources)."""
    counts = pc.value_counts(traffic.column(column).combine_chunks().cast(pa.string()))
    return {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}


def measure_drift(
    traffic: pa.Table,
    ref: Reference,
    spec: MonitoringSpec,
    *,
    thresholds: dict[str, float],
    labels: dict[str, dict[str, bool]] | None = None,
) -> dict[str, Any]:
    """Every check of one model version's traffic against its reference.

    Args:
        traffic: The version's records in the window (``monitoring.traffic`` columns).
        ref: The version's reference.
        spec: The policy's bounds.
        thresholds: The thresholds the traffic's decisions used (the reference's flag rate is taken at them).
        labels: Latest imported decision per item id (category -> bool), for the precision check.

    Returns:
        ``{"categories": {c: {...}}, "length": {...}, "checks": [...], "crossed": [...]}``.
    """
    checks: list[Check] = []
    cats: dict[str, Any] = {}
    for c in ref.categories:
        if f"{SCORE}{c}" not in traffic.column_names:
            continue
        cats[c], found = category_drift(c, ref, traffic, thresholds[c], spec)
        checks += found
        if labels:
            cats[c]["precision"], check = precision_drift(c, ref, traffic, labels, thresholds[c], spec)
            if check is not None:
                checks.append(check)
    length, check = length_drift(ref, traffic, spec)
    checks.append(check)
    return {
        "categories": cats,
        "length": length,
        "checks": [c.to_dict() for c in checks],
        "crossed": [f"{c.check}:{c.category}" if c.category else c.check for c in checks if c.crossed],
    }
