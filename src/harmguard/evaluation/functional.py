"""Functional tests: accuracy per functionality of a templated suite (HateCheck, Röttger et al. 2021).

Each HateCheck functionality is one behaviour a hate speech model should get right (``derog_neg_emote_h``: "I hate
[group]" is hateful; ``counter_quote_nh``: quoting hate to denounce it is not; ``spell_leet_h``: leetspeak does not
hide hate). A functionality's cases share a gold label, so its accuracy is the share of its cases the model decides
correctly for the category the policy maps the suite to (hate, positive ``hateful``): its recall for hateful
functionalities, its true-negative rate for the others. Both kinds of decisions are scored: at the calibrated
threshold (``operating``, what serving decides) and argmax (``reference``, comparable with published results).
The policy names the functionalities that gate and their floors (``accuracy`` thresholds on ``<set>:<name>``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harmguard.evaluation.significance import wilson_interval

KINDS = ("operating", "reference")


def measure_functional(
    functionality: np.ndarray,
    y: np.ndarray,
    decisions: dict[str, np.ndarray],
    *,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Accuracy per functionality (and overall) for each kind of decision.

    Args:
        functionality: The functionality of each case, (n,) strings.
        y: Gold labels of the category, (n,) booleans.
        decisions: Kind (``operating``/``reference``) -> decisions for the category, (n,) booleans.
        confidence: Coverage of the Wilson intervals.

    Returns:
        ``functionalities`` (per name, in name order: rows, positives, ``expected`` positive/negative/mixed, and per
        kind ``accuracy``, ``correct`` and ``interval``) and ``overall`` (per kind: accuracy over every case).
    """
    y = np.asarray(y, dtype=bool)
    names, inverse = np.unique(np.asarray(functionality).astype(str), return_inverse=True)
    rows = np.bincount(inverse, minlength=len(names))
    positives = np.bincount(inverse, weights=y, minlength=len(names)).astype(int)
    correct = {
        kind: np.bincount(inverse, weights=np.asarray(d, dtype=bool) == y, minlength=len(names)).astype(int)
        for kind, d in decisions.items()
    }
    # Balanced accuracy of one functionality: its own accuracy beside the suite's accuracy on the other side (every
    # non-hateful case for a hateful functionality, and the reverse). Flagging everything or nothing scores 0.5 on
    # every functionality, so chance is 0.5 whatever the functionality's label.
    side = {
        kind: (
            float(np.mean(np.asarray(d, dtype=bool)[y])) if y.any() else 0.0,
            float(np.mean(~np.asarray(d, dtype=bool)[~y])) if (~y).any() else 0.0,
        )
        for kind, d in decisions.items()
    }
    per: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        expected = "positive" if positives[i] == rows[i] else "negative" if positives[i] == 0 else "mixed"
        mask = inverse == i
        balanced = {}
        for kind, d in decisions.items():
            acc, (tpr, tnr) = float(correct[kind][i] / rows[i]), side[kind]
            if expected == "mixed":
                dm, ym = np.asarray(d, dtype=bool)[mask], y[mask]
                balanced[kind] = float((np.mean(dm[ym]) + np.mean(~dm[~ym])) / 2)
            else:
                balanced[kind] = (acc + (tnr if expected == "positive" else tpr)) / 2
        per[str(name)] = {
            "rows": int(rows[i]),
            "positives": int(positives[i]),
            "expected": expected,
            "accuracy": {k: float(c[i] / rows[i]) for k, c in correct.items()},
            "balanced_accuracy": balanced,
            "correct": {k: int(c[i]) for k, c in correct.items()},
            "interval": {k: wilson_interval(int(c[i]), int(rows[i]), confidence) for k, c in correct.items()},
        }
    n = len(y)
    overall = {k: float(c.sum() / n) if n else 0.0 for k, c in correct.items()}
    return {"rows": n, "confidence": confidence, "functionalities": per, "overall": overall}


def flatten_functional(name: str, doc: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """Flat gate keys ``<kind>/<set>:<functionality>/{accuracy,balanced_accuracy}`` of one suite, and intervals."""
    values: dict[str, float] = {}
    details: dict[str, Any] = {}
    for func, row in doc["functionalities"].items():
        for kind, acc in row["accuracy"].items():
            key = f"{kind}/{name}:{func}/accuracy"
            values[key] = float(acc)
            details[key] = {"interval": row["interval"].get(kind), "where": None, "rows": row["rows"]}
        for kind, bal in row.get("balanced_accuracy", {}).items():
            key = f"{kind}/{name}:{func}/balanced_accuracy"
            values[key] = float(bal)
            details[key] = {"interval": None, "where": None, "rows": row["rows"]}
    return values, details
