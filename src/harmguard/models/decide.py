"""Operating-point decisions: the one function that turns a model and thresholds into what serving answers.

A category is decided when its score reaches its threshold (``score >= threshold``); a text is ``flagged`` when any
category is decided. Online serving, batch scoring and promotion's infra validation all call ``decide`` so the three
can never disagree on the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harmguard.digests import thresholds_version
from harmguard.models.base import Classifier, category_scores

# CONTRACTS.md, "Serving defaults": what serving and batch scoring accept per request / per text.
DEFAULT_MAX_TEXTS = 256
DEFAULT_MAX_CHARS = 10_000
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024


class ThresholdsError(ValueError):
    """Thresholds do not fit the model (a category is missing or unknown, or a value is not a number in [0, 1])."""


@dataclass(frozen=True)
class ScoredTexts:
    """Scores and decisions for a list of texts.

    Attributes:
        categories: Category names, the column order of ``scores`` and ``decisions``.
        scores: Per-category scores, shape (n_texts, n_categories), in [0, 1].
        decisions: ``scores >= thresholds``, shape (n_texts, n_categories).
        flagged: Any category decided, shape (n_texts,).
    """

    categories: list[str]
    scores: np.ndarray
    decisions: np.ndarray
    flagged: np.ndarray

    def results(self) -> list[dict[str, Any]]:
        """One ``{"scores": {category: p}, "decisions": {category: bool}, "flagged": bool}`` per text."""
        cats = self.categories
        return [
            {
                "scores": {c: float(s) for c, s in zip(cats, srow, strict=True)},
                "decisions": {c: bool(d) for c, d in zip(cats, drow, strict=True)},
                "flagged": bool(f),
            }
            for srow, drow, f in zip(self.scores.tolist(), self.decisions.tolist(), self.flagged.tolist(), strict=True)
        ]


def check_thresholds(categories: list[str], thresholds: dict[str, float]) -> np.ndarray:
    """Thresholds as an array in category order; ThresholdsError when they do not fit the categories."""
    missing = sorted(set(categories) - set(thresholds))
    unknown = sorted(set(thresholds) - set(categories))
    if missing or unknown:
        raise ThresholdsError(
            f"thresholds must name exactly the model's categories {categories}: missing {missing}, unknown {unknown}"
        )
    values = np.array([thresholds[c] for c in categories], dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0) or np.any(values > 1):
        raise ThresholdsError(f"thresholds must be numbers in [0, 1], got {thresholds}")
    return values


def check_thresholds_version(thresholds: dict[str, float], expected: str | None) -> str:
    """The thresholds version of ``thresholds``; ThresholdsError when ``expected`` is given and differs."""
    actual = thresholds_version(thresholds)
    if expected is not None and expected != actual:
        raise ThresholdsError(f"thresholds hash to version {actual}, not the declared {expected}")
    return actual


def decide_scores(categories: list[str], scores: np.ndarray, thresholds: dict[str, float]) -> ScoredTexts:
    """Decisions from precomputed category scores (shape (n, n_categories), columns in ``categories`` order)."""
    limits = check_thresholds(categories, thresholds)
    decisions = np.asarray(scores >= limits)
    return ScoredTexts(list(categories), scores, decisions, np.asarray(decisions.any(axis=1)))


def decide(model: Classifier, thresholds: dict[str, float], texts: list[str]) -> ScoredTexts:
    """Score texts and decide each category at its threshold, exactly as the server does.

    Args:
        model: Any model family (``harmguard.models.loading.load_model``).
        thresholds: One threshold per category of the model.
        texts: The texts to score.

    Returns:
        Scores, decisions and flags for every text (empty arrays for no texts).
    """
    check_thresholds(model.categories, thresholds)
    if not texts:
        empty = np.zeros((0, len(model.categories)))
        return decide_scores(model.categories, empty, thresholds)
    return decide_scores(model.categories, category_scores(model, model.predict_proba(list(texts))), thresholds)
