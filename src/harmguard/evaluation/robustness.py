"""Identity fairness, functional tests and evasion of one model, from its scores on the frozen sets.

The evaluate step calls ``measure_robustness`` once per model (challenger, then champion at its own thresholds) with
the probabilities it already computed for each frozen set; only the evasion perturbations need new scores, and
they go through the same cached scorer (keyed by the perturbed set's digest), so a champion or a rerun scores
nothing twice. The sections it returns join the evaluation document:

- ``fairness``: ``{set: {category, identity, groups, summary, ...}}`` for sets with ``identity`` (``fairness``);
- ``functional``: ``{set: {category, functionalities, overall, ...}}`` for sets with a functionality column;
- ``evasion``: ``{set: "test", perturbations: {name: {per_category, ...}}, summary}`` when the policy has ``evasion``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from harmguard.evaluation.evasion import demo, measure_evasion, summarize_evasion
from harmguard.evaluation.fairness import measure_fairness, uncovered_summary
from harmguard.evaluation.frozen import TEST, FrozenSet, reference_decisions, set_digest
from harmguard.evaluation.functional import measure_functional
from harmguard.evaluation.metrics import truth_matrix
from harmguard.perturbations import perturb_texts
from harmguard.policy import EvasionSpec, Policy

Scorer = Callable[[str, list[str]], np.ndarray]


@dataclass(frozen=True)
class PerturbedSet:
    """The test split's texts after one perturbation: its digest keys the score cache."""

    name: str
    digest: str
    texts: list[str]
    changed: np.ndarray  # (n,) rows whose text differs from the original


def perturbed_sets(test: FrozenSet, spec: EvasionSpec) -> list[PerturbedSet]:
    """Every perturbation of the test split (memoized on the set: the challenger and champion share them)."""
    key = f"evasion:{spec.model_dump_json()}"
    memo = test.derived
    if key not in memo:
        labels = np.asarray(test.y).tolist()
        out = []
        for name in spec.perturbations:
            texts, changed = perturb_texts(test.texts, name, word_rate=spec.word_rate, seed=spec.seed)
            # the perturbation is in the digest so two perturbations that change nothing still score separately
            out.append(PerturbedSet(name, set_digest(texts, [[name, lab] for lab in labels]), texts, changed))
        memo[key] = out
    return memo[key]


def _operating(proba: np.ndarray, policy: Policy, thresholds: dict[str, float]) -> np.ndarray:
    """Decisions at the thresholds, (n, n_categories)."""
    idx = [policy.classes.index(c) for c in policy.categories]
    return proba[:, idx] >= np.array([thresholds[c] for c in policy.categories])


def measure_robustness(
    sets: list[FrozenSet],
    probas: dict[str, np.ndarray],
    policy: Policy,
    thresholds: dict[str, float],
    score: Scorer,
) -> dict[str, Any]:
    """The ``fairness``, ``functional`` and ``evasion`` sections of one model's evaluation document.

    Args:
        sets: The frozen sets (the test split first-class, evaluation sets with their groups and functionalities).
        probas: The model's probabilities on each set, by set name.
        policy: The policy (label mode, categories, evasion settings, bootstrap settings).
        thresholds: The model's operating thresholds per category.
        score: The model's (cached) scorer, for the perturbed texts.
    """
    boot = policy.gate.bootstrap
    out: dict[str, Any] = {"fairness": {}, "functional": {}, "evasion": None}
    for fs in sets:
        if fs.category is None:
            continue
        proba = probas[fs.name]
        i = policy.classes.index(fs.category)
        s = proba[:, i]
        op = s >= thresholds[fs.category]
        head = {"dataset": fs.dataset, "category": fs.category, "positive": fs.positive}
        if fs.groups:
            doc = head | {"identity": fs.identity} | measure_fairness(
                fs.y, s, op, fs.groups,
                min_negatives=fs.min_negatives, confidence=boot.confidence, resamples=boot.resamples, seed=boot.seed,
            )  # fmt: skip
            out["fairness"][fs.name] = doc | {"coverage": uncovered_summary(doc)}
        if fs.functionality is not None:
            ref = reference_decisions(proba, policy.label_mode)[:, i]
            decisions = {"operating": op, "reference": ref}
            out["functional"][fs.name] = head | measure_functional(
                fs.functionality, fs.y, decisions, confidence=boot.confidence
            )
    test = next((fs for fs in sets if fs.name == TEST), None)
    if policy.evasion is not None and test is not None:
        truth = truth_matrix(test.y, policy.classes, policy.categories, policy.label_mode)
        clean = _operating(probas[TEST], policy, thresholds)
        per: dict[str, Any] = {}
        for p in perturbed_sets(test, policy.evasion):
            perturbed = _operating(score(p.digest, p.texts), policy, thresholds)
            per[p.name] = {
                "digest": p.digest,
                "rows": len(p.texts),
                "changed_rows": int(p.changed.sum()),
                "example": demo(p.name),
                "per_category": measure_evasion(truth, clean, perturbed, policy.categories, confidence=boot.confidence),
            }
        out["evasion"] = {
            "set": TEST,
            "word_rate": policy.evasion.word_rate,
            "seed": policy.evasion.seed,
            "perturbations": per,
            "summary": summarize_evasion(per, policy.categories),
        }
    return out
