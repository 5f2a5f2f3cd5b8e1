"""Flipped decisions: rows whose operating decision differs between challenger and champion (for the reviewer)."""

from __future__ import annotations

from typing import Any

import numpy as np

from harmguard.data.validation import truncate
from harmguard.evaluation.frozen import Decisions, FrozenSet
from harmguard.policy import Policy


def _truth(fs: FrozenSet, row: int, policy: Policy) -> str:
    if fs.category is not None:
        return str(fs.positive) if fs.y[row] else f"not {fs.positive}"
    if policy.label_mode == "multilabel":
        return ", ".join(c for j, c in enumerate(policy.categories) if fs.y[row][j]) or policy.none_label
    return policy.classes[int(fs.y[row])]


def flipped_examples(
    sets: list[FrozenSet],
    policy: Policy,
    challenger: tuple[dict[str, np.ndarray], dict[str, Decisions]],
    champion: tuple[dict[str, np.ndarray], dict[str, Decisions]],
) -> dict[str, Any]:
    """Rows whose operating decision differs between challenger and champion: counts per set and a few examples.

    Args:
        sets: The frozen sets.
        policy: The policy (its ``report`` settings: how many examples, how long, redacted or not).
        challenger: The challenger's probabilities and decisions per set.
        champion: The champion's probabilities and decisions per set.

    Returns:
        ``counts`` per set (rows, flipped, newly flagged by the challenger, no longer flagged) and ``examples``: the
        largest score changes of each set, taken in turn from each set, at most ``report.flipped_examples``.
    """
    spec = policy.report
    counts: dict[str, dict[str, int]] = {}
    queues = []
    for fs in sets:
        a, b = challenger[1][fs.name].operating, champion[1][fs.name].operating  # (n, K) booleans
        cats = policy.categories if fs.category is None else [fs.category]
        idx = [policy.classes.index(c) for c in cats]
        sa, sb = challenger[0][fs.name][:, idx], champion[0][fs.name][:, idx]
        rows = np.flatnonzero((a != b).any(axis=1))
        counts[fs.name] = {
            "rows": len(fs.texts),
            "flipped": len(rows),
            "newly_flagged": int((a & ~b).any(axis=1).sum()),
            "no_longer_flagged": int((~a & b).any(axis=1).sum()),
        }
        order = rows[np.argsort(-np.abs(sa - sb).max(axis=1)[rows], kind="stable")]
        queues.append((fs, cats, sa, sb, a, b, order))
    examples: list[dict[str, Any]] = []
    for k in range(max((len(q[-1]) for q in queues), default=0)):
        for fs, cats, sa, sb, a, b, order in queues:
            if k >= len(order) or len(examples) >= spec.flipped_examples:
                continue
            r = int(order[k])
            examples.append(
                {
                    "set": fs.name,
                    "row": r,
                    "text": truncate(fs.texts[r], spec.text_chars, spec.redact_texts),
                    "truth": _truth(fs, r, policy),
                    "challenger": {c: round(float(sa[r, j]), 4) for j, c in enumerate(cats)},
                    "champion": {c: round(float(sb[r, j]), 4) for j, c in enumerate(cats)},
                    "challenger_flags": [c for j, c in enumerate(cats) if a[r, j]],
                    "champion_flags": [c for j, c in enumerate(cats) if b[r, j]],
                }
            )
        if len(examples) >= spec.flipped_examples:
            break
    return {"counts": counts, "examples": examples, "redacted": spec.redact_texts, "text_chars": spec.text_chars}
