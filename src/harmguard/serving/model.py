"""The model side of serving, free of Ray: load and verify a model, and score one batch with champion and shadow.

A replica holds one immutable ``Loaded`` snapshot per model; ``reconfigure`` builds new snapshots completely and
swaps one reference, so a batch that started on the old model finishes on it. ``score_isolated`` scores a batch in
one model call and, when that call fails, each request on its own: one request the model cannot read fails alone,
never the requests batched with it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from harmguard.models.decide import ScoredTexts, decide
from harmguard.models.loading import Loaded

logger = logging.getLogger("harmguard.serving")


def _split(rows: list[Any], sizes: list[int]) -> list[list[Any]]:
    out, start = [], 0
    for n in sizes:
        out.append(rows[start : start + n])
        start += n
    return out


def score_requests(champion: Loaded, shadow: Loaded | None, requests: list[list[str]]) -> list[dict[str, Any]]:
    """Score a batch of requests in one model call and split the answers back per request.

    Returns, per request: ``results`` (the response rows), ``model_version``, ``thresholds_version``,
    ``categories`` with the request's ``scores`` and ``decisions`` as (n_texts, n_categories) arrays in their order
    (for the traffic record and the metrics), ``batch_texts`` (texts in the whole batch) and ``shadow`` (None, or
    per-category disagreement counts and the shadow's version; ``{"error": ...}`` when the shadow failed, which
    never affects the answer).
    """
    sizes = [len(r) for r in requests]
    flat = [t for r in requests for t in r]
    scored = decide(champion.model, champion.spec.thresholds, flat)
    per_request = _split(scored.results(), sizes)
    bounds = np.cumsum(sizes)[:-1]
    scores, decisions = np.split(scored.scores, bounds), np.split(scored.decisions, bounds)
    shadow_info: list[dict[str, Any] | None] = [None] * len(requests)
    if shadow is not None:
        shadow_info = _shadow(scored, shadow, flat, sizes)
    return [
        {
            "results": rows,
            "model_version": champion.spec.version,
            "thresholds_version": champion.spec.thresholds_version,
            "categories": scored.categories,
            "scores": s,
            "decisions": d,
            "batch_texts": len(flat),
            "shadow": info,
        }
        for rows, s, d, info in zip(per_request, scores, decisions, shadow_info, strict=True)
    ]


def _shadow(scored: ScoredTexts, shadow: Loaded, flat: list[str], sizes: list[int]) -> list[dict[str, Any] | None]:
    try:
        other = decide(shadow.model, shadow.spec.thresholds, flat)
        common = [c for c in scored.categories if c in other.categories]
        mine = scored.decisions[:, [scored.categories.index(c) for c in common]]
        theirs = other.decisions[:, [other.categories.index(c) for c in common]]
        differ = mine != theirs  # (n_texts, n_common)
    except Exception as e:  # a failing shadow must never fail the champion's answer
        return [{"version": shadow.spec.version, "error": type(e).__name__}] * len(sizes)
    out: list[dict[str, Any] | None] = []
    for block in _split(list(differ), sizes):
        counts = np.sum(block, axis=0) if block else np.zeros(len(common))
        out.append(
            {
                "version": shadow.spec.version,
                "texts": len(block),
                "disagreements": {c: int(n) for c, n in zip(common, counts, strict=True)},
            }
        )
    return out


def score_isolated(champion: Loaded, shadow: Loaded | None, requests: list[list[str]]) -> list[dict[str, Any]]:
    """``score_requests`` over the batch; if that fails, over each request alone (answers flagged ``isolated``).

    Returns:
        One answer per request, in order: ``score_requests``'s, or ``{"error": <exception type>}`` for a request
        that fails even alone. Only exception types are logged: an exception's message may quote the text.
    """
    try:
        return score_requests(champion, shadow, requests)
    except Exception as e:
        if len(requests) == 1:
            logger.error("a request failed to score: %s", type(e).__name__)
            return [{"error": type(e).__name__}]
        logger.error("a batch of %d requests failed (%s): scoring each alone", len(requests), type(e).__name__)
    out: list[dict[str, Any]] = []
    for request in requests:
        try:
            out.append(score_requests(champion, shadow, [request])[0] | {"isolated": True})
        except Exception as e:
            logger.error("a request failed to score alone: %s", type(e).__name__)
            out.append({"error": type(e).__name__})
    return out
