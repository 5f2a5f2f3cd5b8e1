"""The evaluation gate (first version): value thresholds from the policy, overall and per slice.

The blessing lists every check with metric, slice, value, threshold and pass/fail; the gate blesses only when every
check passes. Champion/challenger change thresholds and significance arrive with issue #4.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from harmguard.metrics import flatten
from harmguard.policy import Policy, Threshold


def metric_key(t: Threshold) -> str:
    """The flat metric key a threshold reads (see ``metrics.flatten``)."""
    return "/".join(p for p in (t.kind, t.slice, t.category, t.metric) if p)


def check_threshold(t: Threshold, flat: dict[str, float]) -> dict[str, Any]:
    """Evaluate one value threshold."""
    key = metric_key(t)
    value = flat.get(key)
    check: dict[str, Any] = {
        "metric": t.metric,
        "kind": t.kind,
        "category": t.category,
        "slice": t.slice,
        "key": key,
        "value": value,
        "min": t.min,
        "max": t.max,
    }
    if value is None:
        check.update(passed=False, reason=f"{key} was not computed (unknown metric, category or slice, or no rows)")
        return check
    bounds = []
    if t.min is not None:
        bounds.append((value >= t.min, f">= {t.min}"))
    if t.max is not None:
        bounds.append((value <= t.max, f"<= {t.max}"))
    check["passed"] = all(ok for ok, _ in bounds)
    wanted = " and ".join(b for _, b in bounds)
    check["reason"] = f"{key} = {value:.4f}, needs {wanted}"
    return check


def run_gate(evaluation: dict[str, Any], policy: Policy, *, model_digest: str, data_version: str, run_id: str):
    """Decide: bless when every threshold passes. Returns the blessing document."""
    flat = flatten(evaluation, "test")
    checks = [check_threshold(t, flat) for t in policy.gate.thresholds]
    failed = [c for c in checks if not c["passed"]]
    reasons = [c["reason"] for c in failed] if failed else [f"all {len(checks)} gate checks passed"]
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
        "champion": None,
        "notes": ["no champion comparison yet: change thresholds are not evaluated"],
        "decided_at": datetime.now(UTC).isoformat(),
    }
