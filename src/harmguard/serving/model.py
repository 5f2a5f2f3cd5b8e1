"""The model side of serving, free of Ray: load and verify a model, and score one batch with champion and shadow.

A replica holds one immutable ``Loaded`` snapshot per model; ``reconfigure`` builds new snapshots completely and
swaps one reference, so a batch that started on the old model finishes on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harmguard.decisions import ScoredTexts, check_thresholds, decide
from harmguard.digests import model_digest
from harmguard.models import Classifier, load_model
from harmguard.serving.config import ModelSpec


class ModelDigestMismatch(ValueError):
    """The model folder's files hash to another digest than the one the config expects: the swap is refused."""


@dataclass(frozen=True)
class Loaded:
    """A verified model with the thresholds it decides at."""

    spec: ModelSpec
    model: Classifier


def local_model_dir(uri: str) -> Path:
    """The local folder of a model URI (a path, file://, or gs://: downloaded and verified into the cache)."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    if uri.startswith("gs://"):
        from harmguard.gcs import download_model

        return download_model(uri)  # only a complete, digest-checked tree; TamperedModelError otherwise
    if "://" in uri:
        raise NotImplementedError(f"serving a model from {uri} is not supported yet (issue #8): use a local path")
    return Path(uri)


def verify_model_dir(uri: str, expected_digest: str) -> Path:
    """Recompute the model digest of a folder; ModelDigestMismatch when it is not the expected one."""
    folder = local_model_dir(uri)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    actual = model_digest(folder)
    if actual != expected_digest:
        raise ModelDigestMismatch(f"model at {uri} hashes to {actual}, not the expected {expected_digest}; refused")
    return folder


def load_spec(spec: ModelSpec, cache: dict[str, Classifier]) -> Loaded:
    """Load (or reuse from ``cache``, keyed by digest) a verified model and check its thresholds fit it."""
    model = cache.get(spec.model_digest)
    if model is None:
        model = load_model(verify_model_dir(spec.model_uri, spec.model_digest))
    check_thresholds(model.categories, spec.thresholds)
    cache[spec.model_digest] = model
    return Loaded(spec, model)


def _split(rows: list[Any], sizes: list[int]) -> list[list[Any]]:
    out, start = [], 0
    for n in sizes:
        out.append(rows[start : start + n])
        start += n
    return out


def score_requests(champion: Loaded, shadow: Loaded | None, requests: list[list[str]]) -> list[dict[str, Any]]:
    """Score a batch of requests in one model call and split the answers back per request.

    Returns, per request: ``results`` (the response rows), ``model_version``, ``thresholds_version``,
    ``batch_texts`` (texts in the whole batch) and ``shadow`` (None, or per-category disagreement counts and the
    shadow's version; ``{"error": ...}`` when the shadow failed, which never affects the answer).
    """
    sizes = [len(r) for r in requests]
    flat = [t for r in requests for t in r]
    scored = decide(champion.model, champion.spec.thresholds, flat)
    per_request = _split(scored.results(), sizes)
    shadow_info: list[dict[str, Any] | None] = [None] * len(requests)
    if shadow is not None:
        shadow_info = _shadow(scored, shadow, flat, sizes)
    return [
        {
            "results": rows,
            "model_version": champion.spec.version,
            "thresholds_version": champion.spec.thresholds_version,
            "batch_texts": len(flat),
            "shadow": info,
        }
        for rows, info in zip(per_request, shadow_info, strict=True)
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
