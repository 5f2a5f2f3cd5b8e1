"""The evaluation gate: value thresholds and change thresholds against the champion, overall and per slice.

Value checks bound the challenger's own metrics. Change checks compare it with the champion on the same frozen rows
(the evaluate step scored both): a paired bootstrap of challenger minus champion, oriented higher-is-better, passes
iff the interval's lower bound is >= -tolerance; McNemar's test on the underlying decisions is reported beside it.
With no champion, change checks are skipped and the blessing says so. The blessing lists every check with metric,
slice, value, champion value, interval, threshold and pass/fail; the gate blesses only when every check passes.

Fairness, functional and evasion metrics (``metrics.robustness_keys``) are value checks like any other; beside the
value they carry its interval (DeLong, Wilson or bootstrap) and, for a summary over groups or perturbations, where
the worst value comes from: a failing ``min_bpsn_auc`` names its group and every other group past the bound.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from harmguard.data.snapshot import RECENT
from harmguard.evaluation.frozen import TEST, PairedDecisions
from harmguard.evaluation.metrics import flatten, robustness_keys
from harmguard.evaluation.significance import mcnemar, paired_bootstrap, resample_weights
from harmguard.policy import Policy, Threshold
from harmguard.vocabulary import PER_LABEL_METRICS


def metric_key(t: Threshold) -> str:
    """The flat metric key a threshold reads (see ``metrics.flatten``)."""
    return "/".join(p for p in (t.kind, t.slice, t.category, t.metric) if p)


def _base(t: Threshold, check_type: str) -> dict[str, Any]:
    return {
        "type": check_type,
        "metric": t.metric,
        "kind": t.kind,
        "category": t.category,
        "slice": t.slice,
        "key": metric_key(t),
    }


def check_threshold(
    t: Threshold,
    flat: dict[str, float],
    champion_flat: dict[str, float] | None = None,
    details: dict[str, dict[str, Any]] | None = None,
    *,
    confidence: float = 0.95,
):
    """Evaluate one value threshold (``min``/``max``); the champion's value is shown beside it when known.

    ``details`` (``metrics.robustness_keys``) adds the value's interval and, for summaries, the group or
    perturbation it comes from; the decision reads the point value, as for every value check.
    """
    key = metric_key(t)
    value = flat.get(key)
    info = (details or {}).get(key) or {}
    check = _base(t, "value") | {
        "value": value,
        "champion_value": (champion_flat or {}).get(key),
        "delta": None,
        "interval": info.get("interval"),
        "where": info.get("where"),
        "min": t.min,
        "max": t.max,
    }
    if value is None:
        check.update(passed=False, reason=f"{key} was not computed (unknown metric, category or slice, or no rows)")
        return check

    def ok(v: float) -> bool:
        return (t.min is None or v >= t.min) and (t.max is None or v <= t.max)

    check["passed"] = ok(value)
    wanted = " and ".join(
        b for b in (f">= {t.min}" if t.min is not None else "", f"<= {t.max}" if t.max is not None else "") if b
    )
    reason = f"{key} = {value:.4f}"
    if info.get("where"):
        reason += f" ({info.get('by', 'at')} {info['where']})"
    if info.get("interval") and None not in info["interval"]:
        lo, hi = info["interval"]
        reason += f" [{round(confidence * 100)}% CI {lo:.4f}, {hi:.4f}]"
    reason += f", needs {wanted}"
    past = sorted(((v, k) for k, v in (info.get("values") or {}).items() if not ok(v)), reverse=t.min is None)
    if not check["passed"] and len(past) > 1:
        shown = ", ".join(f"{k} {v:.4f}" for v, k in past[:5]) + (f" (+{len(past) - 5} more)" if len(past) > 5 else "")
        reason += f"; every {info.get('by', 'value')} past the bound: {shown}"
    check["reason"] = reason
    return check


def _direction(t: Threshold) -> str:
    return "higher_is_better" if t.higher_is_better else "lower_is_better"


def _rows_and_label(t: Threshold, policy: Policy, paired: PairedDecisions) -> tuple[str, np.ndarray | None, int | None]:
    """Which frozen set, which rows of it and which label column a change threshold reads; '' when unknown."""
    if t.slice == RECENT:  # the newest imported decisions: every category, like the test split
        labels = policy.classes if t.kind == "reference" else policy.categories
        if RECENT not in paired.challenger or (t.category is not None and t.category not in labels):
            return "", None, None
        return RECENT, None, labels.index(t.category) if t.category is not None else None
    if t.slice == "overall" or ":" in t.slice:
        mask = None if t.slice == "overall" else paired.slices.get(t.slice)
        if t.slice != "overall" and mask is None:
            return "", None, None
        labels = policy.classes if t.kind == "reference" else policy.categories
        if t.category is not None and t.category not in labels:
            return "", None, None
        return TEST, mask, labels.index(t.category) if t.category is not None else None
    es = next((e for e in policy.evaluation_sets if e.name == t.slice), None)
    if es is None or t.slice not in paired.challenger or (t.category is not None and t.category != es.category):
        return "", None, None
    return t.slice, None, 0 if t.category is not None else None


def check_change(
    t: Threshold, policy: Policy, paired: PairedDecisions, champion: str, weights: dict[int, np.ndarray]
) -> dict[str, Any]:
    """Evaluate one change threshold with a paired bootstrap and McNemar's test.

    Args:
        t: The threshold (``t.change`` set).
        policy: The policy (bootstrap settings, label order, evaluation sets).
        paired: Both models' decisions on the frozen sets (``paired.champion`` set).
        champion: The champion's version, for messages.
        weights: Resample multiplicity matrices by row count, shared between checks of one gate run.
    """
    assert t.change is not None and paired.champion is not None  # callers check both
    key, spec, boot = metric_key(t), t.change, policy.gate.bootstrap
    check = _base(t, "change") | {
        "value": None,
        "champion_value": None,
        "delta": None,
        "interval": None,
        "threshold": {
            "mode": spec.mode,
            "direction": _direction(t),
            "tolerance": spec.tolerance,
        },
        "mcnemar": None,
        "rows": 0,
        "skipped": False,
    }
    set_name, mask, label = _rows_and_label(t, policy, paired)
    if not set_name:
        return check | {"passed": False, "reason": f"change in {key} was not computed (unknown category or slice)"}
    a, b = paired.challenger[set_name], paired.champion[set_name]
    if t.kind == "reference":
        truth, da, db = a.reference_truth, a.reference, b.reference
    else:
        truth, da, db = a.operating_truth, a.operating, b.operating
    if mask is not None:
        truth, da, db = truth[mask], da[mask], db[mask]
    n = len(truth)
    if n and n not in weights:
        weights[n] = resample_weights(n, boot.resamples, boot.seed)
    est = paired_bootstrap(
        truth, da, db, t.metric, label,
        higher_is_better=t.higher_is_better, relative=spec.mode == "relative",
        resamples=boot.resamples, seed=boot.seed, confidence=boot.confidence, weights=weights.get(n),
    )  # fmt: skip
    if t.metric in PER_LABEL_METRICS and label is not None:
        correct_a, correct_b = truth[:, label] == da[:, label], truth[:, label] == db[:, label]
    else:
        correct_a, correct_b = (truth == da).all(axis=1), (truth == db).all(axis=1)
    test = mcnemar(correct_a, correct_b)
    passed = est.passes(spec.tolerance)
    unit = " (relative)" if est.relative else ""
    pct = round(boot.confidence * 100)
    reason = (
        f"change in {key} vs champion {champion}{unit}: {est.delta:+.4f} "
        f"[{pct}% CI {est.low:+.4f}, {est.high:+.4f}] ({est.challenger:.4f} vs {est.champion:.4f}, "
        f"{'higher' if t.higher_is_better else 'lower'} is better), needs low >= {-spec.tolerance:+.4f}; "
        f"McNemar p = {test.p_value:.3g}"
    )
    if n == 0:
        passed, reason = False, f"change in {key} was not computed (no rows)"
    return check | {
        "value": est.challenger,
        "champion_value": est.champion,
        "delta": est.to_dict()["delta"],
        "interval": [est.to_dict()["low"], est.to_dict()["high"]],
        "confidence": boot.confidence,
        "resamples": boot.resamples,
        "mcnemar": test.to_dict(),
        "rows": n,
        "passed": passed,
        "reason": reason,
    }


def _not_applicable(t: Threshold, why: str) -> dict[str, Any]:
    kind = "change" if t.change is not None and t.min is None and t.max is None else "value"
    return _base(t, kind) | {
        "value": None,
        "champion_value": None,
        "delta": None,
        "interval": None,
        "skipped": True,
        "passed": True,
        "reason": f"{metric_key(t)} skipped: {why}",
    }


def _skipped(t: Threshold, why: str) -> dict[str, Any]:
    assert t.change is not None
    return _base(t, "change") | {
        "value": None,
        "champion_value": None,
        "delta": None,
        "interval": None,
        "threshold": t.change.model_dump() | {"direction": _direction(t)},
        "mcnemar": None,
        "skipped": True,
        "passed": True,
        "reason": f"change in {metric_key(t)} skipped: {why}",
    }


def run_gate(
    evaluation: dict[str, Any],
    policy: Policy,
    *,
    model_digest: str,
    data_version: str,
    run_id: str,
    paired: PairedDecisions | None = None,
) -> dict[str, Any]:
    """Decide: bless when every value and change check passes. Returns the blessing document.

    Args:
        evaluation: The evaluation document (``evaluate.evaluate_against_champion``); ``evaluation["champion"]``
            holds the champion's metrics, or is absent/None with no champion.
        policy: The policy with the gate's thresholds.
        model_digest: The challenger's model digest.
        data_version: The snapshot's data version.
        run_id: The harmguard run id.
        paired: Per-row decisions of both models; required for change checks when there is a champion.
    """
    flat = flatten(evaluation, "test")
    details = robustness_keys(evaluation)[1]
    champion_doc = evaluation.get("champion")
    champion_flat = flatten(champion_doc, "test") if champion_doc else None
    notes: list[str] = []
    compare = champion_doc is not None and paired is not None and paired.champion is not None
    mismatch = evaluation.get("champion_mismatch")
    if mismatch:
        notes.append(f"the champion cannot be compared: {mismatch}; every change check fails")
    elif champion_doc is None:
        notes.append(evaluation.get("champion_note") or "no champion: change thresholds are skipped (first run)")
    elif not compare:
        notes.append("champion metrics present but no paired decisions were given: change checks fail")
    else:
        notes.append(evaluation.get("champion_note") or f"compared with champion {champion_doc['version']}")
    checks: list[dict[str, Any]] = []
    weights: dict[int, np.ndarray] = {}
    no_recent = RECENT not in (evaluation.get("sets") or {})
    for t in policy.gate.thresholds:
        if t.slice == RECENT and no_recent:
            # the set exists only when the snapshot holds imported decisions of the newest days before its cutoff
            checks.append(_not_applicable(t, "the snapshot has no recent imported decisions (set `recent` is empty)"))
            continue
        if t.min is not None or t.max is not None:
            checks.append(check_threshold(t, flat, champion_flat, details, confidence=policy.gate.bootstrap.confidence))
        if t.change is None:
            continue
        if mismatch:
            checks.append(_skipped(t, mismatch) | {"skipped": False, "passed": False})
        elif champion_doc is None:
            checks.append(_skipped(t, "no champion to compare with"))
        elif not compare:
            checks.append(_skipped(t, "no paired decisions") | {"skipped": False, "passed": False})
        else:
            assert paired is not None and champion_doc is not None
            checks.append(check_change(t, policy, paired, champion_doc["version"], weights))
    failed = [c for c in checks if not c["passed"]]
    skipped = sum(1 for c in checks if c.get("skipped"))
    done = len(checks) - skipped
    reasons = [c["reason"] for c in failed] if failed else [f"all {done} gate checks passed ({skipped} skipped)"]
    return {
        "policy": policy.name,
        "run_id": run_id,
        "blessed": not failed,
        "reasons": reasons,
        "checks": checks,
        "model_digest": model_digest,
        "data_version": data_version,
        "thresholds": evaluation["thresholds"],
        "thresholds_version": evaluation["thresholds_version"],
        "champion": (
            {k: champion_doc.get(k) for k in ("version", "model_digest", "thresholds", "thresholds_version", "family")}
            if champion_doc
            else None
        ),
        "evaluation_sets": evaluation.get("sets", {}),
        "bootstrap": policy.gate.bootstrap.model_dump(),
        "notes": notes,
        # the reviewer report the gate step writes beside the blessing (relative to HARMGUARD_HOME)
        "report": f"runs/{run_id}/report.html",
        "decided_at": datetime.now(UTC).isoformat(),
    }
