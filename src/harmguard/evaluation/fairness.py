"""Identity fairness on frozen evaluation sets: the Jigsaw unintended-bias AUCs and the FPR spread over groups.

Borkan et al. (2019), "Nuanced Metrics for Measuring Unintended Bias with Real Data for Text Classification". For an
identity group g (the rows that mention or target g) and its background (every other row of the set):

- subgroup AUC: the AUC on g's rows only: does the model separate abusive from benign text about g?
- BPSN AUC (background positive, subgroup negative): g's negatives with the background's positives. Low when benign
  rows mentioning g score above abusive rows that do not: the model reads g itself as abuse (false positives).
- BNSP AUC (background negative, subgroup positive): g's positives with the background's negatives. Low when abuse
  of g scores below benign rows elsewhere: abuse aimed at g goes unseen (false negatives).

Membership comes from a column naming the targeted group (hatecheck ``target_ident``) or from identity terms
matched as whole words, case-insensitively (jigsaw_bias_madlibs' 50 terms); a row may belong to several groups.
The FPR spread is max - min of the groups' false-positive rates at the operating threshold, over the groups with at
least ``min_negatives`` negatives (smaller groups' rates are too noisy to compare).

Intervals: DeLong's variance for each AUC (a normal interval clipped to [0, 1]), Wilson for each FPR, and a
stratified bootstrap for the spread (each group's negatives resampled, i.e. binomial draws of its false positives).
Everything is vectorized per group: sorting and ``searchsorted``, no loop over rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harmguard.data.datasets import load_identity_terms
from harmguard.evaluation.significance import wilson_interval, z_value
from harmguard.identity import shipped_terms
from harmguard.policy import IdentitySpec
from harmguard.settings import Settings
from harmguard.vocabulary import FAIRNESS_GROUP_METRICS, FAIRNESS_METRICS, FAIRNESS_SUMMARY_METRICS

_WORD = re.compile(r"\w+")

GROUP_METRICS = FAIRNESS_GROUP_METRICS
# Summary metrics over the groups of a set: the worst group's AUC, the FPR spread, and Jigsaw's final bias score.
SUMMARY_METRICS = FAIRNESS_SUMMARY_METRICS
METRICS = FAIRNESS_METRICS
POWER = -5  # Jigsaw's generalized mean of the bias AUCs: p = -5 weighs the worst groups most
OVERALL_WEIGHT = 0.25  # ... and the final score gives the overall AUC this weight, each bias AUC (1 - w) / 3


@dataclass(frozen=True)
class AUC:
    """An AUC with its DeLong interval; ``value`` None when either class is empty."""

    value: float | None
    interval: list[float] | None
    positives: int
    negatives: int


def _placements(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components of the AUC.

    Per positive, the share of negatives it outranks (ties count 1/2); per negative, the share of positives that
    outrank it. Their means are both the AUC; their variances give its standard error.
    """
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    lo, hi = np.searchsorted(neg_sorted, pos, "left"), np.searchsorted(neg_sorted, pos, "right")
    v10 = (lo + 0.5 * (hi - lo)) / len(neg)
    lo, hi = np.searchsorted(pos_sorted, neg, "left"), np.searchsorted(pos_sorted, neg, "right")
    v01 = (len(pos) - hi + 0.5 * (hi - lo)) / len(pos)
    return v10, v01


def auc(pos: np.ndarray, neg: np.ndarray, confidence: float = 0.95) -> AUC:
    """ROC-AUC of positive scores ``pos`` against negative scores ``neg`` (Mann-Whitney; ties count one half).

    Equals ``sklearn.metrics.roc_auc_score`` on the union; the interval is DeLong's (needs 2+ rows of each class).
    """
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return AUC(None, None, m, n)
    v10, v01 = _placements(pos, neg)
    value = float(v10.mean())
    interval = None
    if m > 1 and n > 1:
        half = z_value(confidence) * float(np.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n))
        interval = [max(0.0, value - half), min(1.0, value + half)]
    return AUC(value, interval, m, n)


def bias_aucs(y: np.ndarray, score: np.ndarray, member: np.ndarray, confidence: float = 0.95) -> dict[str, AUC]:
    """Subgroup, BPSN and BNSP AUC of one group (``member``: a boolean row mask) against the rest of the set."""
    y, member = np.asarray(y, dtype=bool), np.asarray(member, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    sub_pos, sub_neg = s[member & y], s[member & ~y]
    bg_pos, bg_neg = s[~member & y], s[~member & ~y]
    return {
        "subgroup_auc": auc(sub_pos, sub_neg, confidence),
        "bpsn_auc": auc(bg_pos, sub_neg, confidence),
        "bnsp_auc": auc(sub_pos, bg_neg, confidence),
    }


def power_mean(values: list[float], p: float = POWER) -> float | None:
    """Generalized mean ``(mean(v ** p)) ** (1 / p)``; None for no values, 0 when a value is 0 and p < 0."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    if p < 0 and (v <= 0).any():
        return 0.0
    return float(np.mean(v**p) ** (1 / p))


def fpr_spread(
    false_positives: np.ndarray,
    negatives: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float | None, list[float] | None, int | None, int | None]:
    """Max - min FPR over groups, its bootstrap interval and the indices of the max and min groups.

    Args:
        false_positives: False positives per group, shape (G,).
        negatives: Negatives per group, shape (G,); callers pass only groups with enough negatives.
        confidence: Two-sided interval coverage.
        resamples: Bootstrap resamples.
        seed: Seed of the draws (fixed: reruns agree).

    Returns:
        (spread, interval, index of the highest-FPR group, index of the lowest), all None with fewer than 2 groups.
    """
    fp, neg = np.asarray(false_positives, dtype=np.int64), np.asarray(negatives, dtype=np.int64)
    if len(neg) < 2:
        return None, None, None, None
    rates = fp / neg
    hi, lo = int(np.argmax(rates)), int(np.argmin(rates))
    # Resampling a group's negatives with replacement draws its false positives from Binomial(n_g, fpr_g): (B, G).
    draws = np.random.default_rng(seed).binomial(neg[None, :], rates[None, :], size=(resamples, len(neg))) / neg
    spreads = draws.max(axis=1) - draws.min(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(spreads, [alpha, 1 - alpha])
    return float(rates[hi] - rates[lo]), [float(low), float(high)], hi, lo


def groups_from_terms(texts: list[str], terms: list[str]) -> dict[str, np.ndarray]:
    """Row masks of the texts mentioning each identity term as whole words (case-insensitive); empty groups dropped.

    Texts are split once into lowercase word tokens (runs of word characters); a multi-word term (``middle
    eastern``) matches as consecutive tokens. One pass over the texts with an inverted index, not one regex per term
    (76k texts x 50 terms: a fraction of a second).
    """
    vocab = {tuple(t.lower().split()): t for t in terms}
    lengths = sorted({len(k) for k in vocab})
    rows: dict[str, list[int]] = {t: [] for t in terms}
    for i, text in enumerate(texts):
        tokens = _WORD.findall(str(text).lower())
        seen = {tuple(tokens[j : j + k]) for k in lengths for j in range(len(tokens) - k + 1)}
        for key in seen & vocab.keys():
            rows[vocab[key]].append(i)
    out: dict[str, np.ndarray] = {}
    for term, idx in rows.items():
        if idx:
            mask = np.zeros(len(texts), dtype=bool)
            mask[idx] = True
            out[term] = mask
    return out


def groups_from_column(values: list[str]) -> dict[str, np.ndarray]:
    """Row masks of each non-blank value of a column naming the targeted group (hatecheck ``target_ident``)."""
    v = np.array([str(x).strip() for x in values], dtype=object)
    return {g: v == g for g in sorted(set(v) - {"", "nan", "None", "<NA>"})}


def measure_fairness(
    y: np.ndarray,
    score: np.ndarray,
    decision: np.ndarray,
    groups: dict[str, np.ndarray],
    *,
    min_negatives: int = 50,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every identity metric of one model on one set, for one category.

    Args:
        y: Gold labels of the category, (n,) booleans.
        score: The category's scores, (n,).
        decision: Decisions at the operating threshold, (n,) booleans.
        groups: Group name -> row mask, (n,) booleans.
        min_negatives: Groups with fewer negatives stay out of the FPR spread.
        confidence: Interval coverage.
        resamples: Bootstrap resamples of the spread.
        seed: Seed of the spread's bootstrap.

    Returns:
        ``groups`` (per group: rows, positives, negatives, each AUC and its interval, fpr, false positives, its
        interval and whether it is in the spread) and ``summary`` (the worst group of each AUC, the FPR spread with
        its highest and lowest group, Jigsaw's bias score), plus ``overall_auc`` and the settings.
    """
    y, d = np.asarray(y, dtype=bool), np.asarray(decision, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    per: dict[str, dict[str, Any]] = {}
    for name, member in groups.items():
        member = np.asarray(member, dtype=bool)
        negatives, fps = int((member & ~y).sum()), int((member & ~y & d).sum())
        row: dict[str, Any] = {"rows": int(member.sum()), "positives": int((member & y).sum()), "negatives": negatives}
        for metric, est in bias_aucs(y, s, member, confidence).items():
            row[metric], row[f"{metric}_interval"] = est.value, est.interval
        row |= {
            "false_positives": fps,
            "fpr": fps / negatives if negatives else None,
            "fpr_interval": wilson_interval(fps, negatives, confidence),
            "in_spread": negatives >= min_negatives,
        }
        per[name] = row
    summary: dict[str, Any] = {}
    for metric in GROUP_METRICS:
        defined = {g: r[metric] for g, r in per.items() if r[metric] is not None}
        worst = min(defined, key=lambda g: (defined[g], g)) if defined else None
        summary[f"min_{metric}"] = {
            "value": defined[worst] if worst is not None else None,
            "group": worst,
            "interval": per[worst][f"{metric}_interval"] if worst is not None else None,
            "groups": len(defined),
        }
    eligible = [g for g, r in per.items() if r["in_spread"]]
    spread, interval, hi, lo = fpr_spread(
        np.array([per[g]["false_positives"] for g in eligible], dtype=np.int64),
        np.array([per[g]["negatives"] for g in eligible], dtype=np.int64),
        confidence=confidence,
        resamples=resamples,
        seed=seed,
    )
    summary["fpr_spread"] = {
        "value": spread,
        "interval": interval,
        "max_group": eligible[hi] if hi is not None else None,
        "min_group": eligible[lo] if lo is not None else None,
        "groups": len(eligible),
    }
    overall = auc(s[y], s[~y], confidence).value
    means = [power_mean([r[m] for r in per.values() if r[m] is not None]) for m in GROUP_METRICS]
    bias = None
    if overall is not None and all(v is not None for v in means):
        bias = OVERALL_WEIGHT * overall + (1 - OVERALL_WEIGHT) / 3 * sum(v for v in means if v is not None)
    summary["bias_score"] = {
        "value": bias,
        "interval": None,
        "power_means": dict(zip(GROUP_METRICS, means, strict=True)),
    }
    return {
        "rows": len(y),
        "positives": int(y.sum()),
        "overall_auc": overall,
        "min_negatives": min_negatives,
        "confidence": confidence,
        "groups": per,
        "summary": summary,
    }


def flatten_fairness(name: str, category: str, doc: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """Flat gate keys of one set's fairness document and, per key, what a reviewer needs beside the value.

    Keys: ``operating/<set>:<group>/<category>/{subgroup_auc,bpsn_auc,bnsp_auc,fpr}`` per group and
    ``operating/<set>/<category>/{min_subgroup_auc,min_bpsn_auc,min_bnsp_auc,fpr_spread,bias_score}`` per set.
    Details: ``interval``, ``where`` (the group a summary comes from) and ``values`` (every group's value, so the
    gate can name each group past a bound).
    """
    values: dict[str, float] = {}
    details: dict[str, Any] = {}
    for group, row in doc["groups"].items():
        for metric in (*GROUP_METRICS, "fpr"):
            if row.get(metric) is not None:
                key = f"operating/{name}:{group}/{category}/{metric}"
                values[key] = float(row[metric])
                details[key] = {"interval": row.get(f"{metric}_interval"), "where": None}
    for metric, entry in doc["summary"].items():
        if entry.get("value") is None:
            continue
        key = f"operating/{name}/{category}/{metric}"
        values[key] = float(entry["value"])
        if metric.startswith("min_"):
            base = metric.removeprefix("min_")
            by_group = {g: r[base] for g, r in doc["groups"].items() if r.get(base) is not None}
            details[key] = {"interval": entry["interval"], "where": entry["group"], "by": "group", "values": by_group}
        elif metric == "fpr_spread":
            where = f"{entry['max_group']} (highest) vs {entry['min_group']} (lowest)"
            by_group = {g: r["fpr"] for g, r in doc["groups"].items() if r["in_spread"]}
            details[key] = {"interval": entry["interval"], "where": where, "by": "groups", "fpr": by_group}
        else:
            details[key] = {"interval": entry.get("interval"), "where": None}
    return values, details


def lexicon_coverage(groups: list[str], terms: list[str] | None = None) -> dict[str, bool]:
    """Per evaluation group, whether the identity lexicon (default: the shipped one) names it.

    A group is covered when its name, or one of its words, is a lexicon term (``gay people`` by ``gay``, ``Muslims``
    by ``muslims``). The uncovered groups are where identity abstraction cannot help: the model still reads their
    words, so their figures are reported apart (the lexicon is never extended from an evaluation set).
    """
    lexicon = {" ".join(t.lower().split()) for t in (shipped_terms() if terms is None else terms)}
    out: dict[str, bool] = {}
    for group in groups:
        name = " ".join(_WORD.findall(group.lower()))
        out[group] = name in lexicon or any(w in lexicon for w in name.split())
    return out


def uncovered_summary(doc: dict[str, Any], terms: list[str] | None = None) -> dict[str, Any]:
    """The groups of one set's fairness document the lexicon does not cover, with their figures."""
    coverage = lexicon_coverage(list(doc["groups"]), terms)
    uncovered = [g for g, covered in coverage.items() if not covered]
    figures = {
        g: {m: doc["groups"][g].get(m) for m in ("rows", "negatives", "fpr", "bpsn_auc", "subgroup_auc")}
        for g in uncovered
    }
    lexicon = "harmguard" if terms is None else f"{len(terms)} terms"
    return {"lexicon": lexicon, "covered": len(coverage) - len(uncovered), "uncovered": figures}


def identity_groups(
    data: pd.DataFrame, texts: list[str], spec: IdentitySpec, settings: Settings | None
) -> tuple[dict[str, np.ndarray], str]:
    """Identity group masks of an evaluation set's rows, and a description of where they come from."""
    if spec.column is not None:
        if spec.column not in data.columns:
            raise ValueError(f"identity column {spec.column!r} is not among {list(data.columns)}")
        return groups_from_column(data[spec.column].astype(str).tolist()), f"column {spec.column}"
    if spec.terms == "jigsaw":
        if settings is None:
            raise ValueError("identity terms `jigsaw` need settings to fetch the term list")
        terms = load_identity_terms(settings)
        return groups_from_terms(texts, terms), f"{len(terms)} jigsaw_bias_madlibs identity terms"
    terms = list(spec.terms or [])
    return groups_from_terms(texts, terms), f"{len(terms)} identity terms"
