"""Golden files: short labeled texts a model must keep answering as it did when it was evaluated.

One JSONL file per shipped policy, ``src/harmguard/golden/<policy>.jsonl`` (package data), each line
``{"text": ..., "labels": [categories that apply]}`` (``[]``: none applies). The texts are synthetic, written for
this file, never rows of a training or evaluation dataset.

**Agreement** of a model with thresholds on a golden file: the share of rows whose set of decided categories
(``score >= threshold``, per category, exactly as the server decides) equals the row's label set. It is measured once
at registration on the evaluated artifact and kept in the version record (``metrics["golden"]``, with the golden
file's digest). Promotion loads the published model the way a server does and must reach at least that agreement on
the same golden file; when the version has no measurement for the current golden file (registered before it
existed, or the file changed since), ``MIN_AGREEMENT`` is the floor instead.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from harmguard.digests import sha256_bytes
from harmguard.models.base import Classifier
from harmguard.models.decide import decide as decide_as_server

# Floor when the version carries no measurement on the current golden file.
MIN_AGREEMENT = 0.9
# Agreement is a ratio of counts measured twice by the same arithmetic; allow float noise only.
_EPS = 1e-9


class GoldenError(ValueError):
    """A golden file is missing or malformed."""


def golden_bytes(policy: str, path: str | Path | None = None) -> bytes | None:
    """Bytes of the golden file of a policy (``path`` overrides the shipped one); None when there is none."""
    if path is not None:
        return Path(path).read_bytes()
    res = resources.files("harmguard.golden") / f"{policy}.jsonl"
    return res.read_bytes() if res.is_file() else None


def parse_golden(data: bytes, categories: list[str]) -> list[dict[str, Any]]:
    """Rows of a golden file, checked against the model's categories."""
    rows = []
    for i, line in enumerate(data.decode().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise GoldenError(f"golden line {i} is not JSON: {e}") from e
        if not isinstance(row.get("text"), str) or not isinstance(row.get("labels"), list):
            raise GoldenError(f"golden line {i} needs a string `text` and a list `labels`")
        unknown = set(row["labels"]) - set(categories)
        if unknown:
            raise GoldenError(f"golden line {i} names categories {sorted(unknown)} not among {categories}")
        rows.append(row)
    if not rows:
        raise GoldenError("the golden file has no rows")
    return rows


def decide(model: Classifier, texts: list[str], thresholds: dict[str, float]) -> list[set[str]]:
    """The server's decisions (``harmguard.models.decide.decide``): per text, the categories at or above threshold."""
    hits = decide_as_server(model, thresholds, texts).decisions
    return [{c for c, hit in zip(model.categories, row, strict=True) if hit} for row in hits]


def measure_golden(
    model: Classifier, policy: str, thresholds: dict[str, float], path: str | Path | None = None
) -> dict[str, Any] | None:
    """Agreement of a model at its thresholds on the policy's golden file (None when the policy has none).

    Returns:
        ``{"agreement", "rows", "agreed", "golden_digest", "disagreements": [first 10 texts, truncated]}``.
    """
    data = golden_bytes(policy, path)
    if data is None:
        return None
    missing = set(model.categories) - set(thresholds)
    if missing:
        raise GoldenError(f"no thresholds for categories {sorted(missing)}")
    rows = parse_golden(data, model.categories)
    decisions = decide(model, [r["text"] for r in rows], thresholds)
    agreed = [d == set(r["labels"]) for d, r in zip(decisions, rows, strict=True)]
    wrong = [
        {"text": r["text"][:200], "labels": r["labels"], "decided": sorted(d)}
        for r, d, ok in zip(rows, decisions, agreed, strict=True)
        if not ok
    ]
    return {
        "agreement": sum(agreed) / len(rows),
        "rows": len(rows),
        "agreed": int(sum(agreed)),
        "golden_digest": sha256_bytes(data),
        "disagreements": wrong[:10],
    }


def required_agreement(recorded: dict[str, Any] | None, golden_digest: str) -> tuple[float, str]:
    """The agreement promotion must reach, and where the number comes from.

    Args:
        recorded: ``metrics["golden"]`` of the version (None when absent).
        golden_digest: Digest of the golden file used now.
    """
    if recorded and recorded.get("golden_digest") == golden_digest:
        return float(recorded["agreement"]), "measured at registration"
    return MIN_AGREEMENT, "floor (no measurement on this golden file at registration)"


def meets(agreement: float, required: float) -> bool:
    """Whether a measured agreement reaches the required one."""
    return agreement + _EPS >= required
