"""Evasion: the spelling tricks evaders use, applied to the test split, and how many decisions they change.

Perturbations (each a word-level rewrite, seeded, so the same rows always become the same texts):

- ``char_swap``: swap two adjacent letters after the first (``idiot`` -> ``idoit``);
- ``leetspeak``: digits for letters (``idiot`` -> ``1d107``);
- ``space_insert``: a space between every letter (``idiot`` -> ``i d i o t``);
- ``punct_insert``: one punctuation mark inside the word (``idiot`` -> ``id*iot``);
- ``homoglyph``: Cyrillic look-alikes for Latin letters (``idiot`` -> ``іdіоt``, unchanged to a reader);
- ``long_prefix``: a harmless opening of ``PREFIX_WORDS`` words before the whole text (abuse placed where a model
  that reads only the start, or averages over everything, does not see it). Text-level, not per word.

A word is eligible when it is 3+ ASCII letters, optionally wrapped in punctuation (mentions, hashtags, HTML
entities and URLs are left alone: they are placeholders to the models). Each eligible word is rewritten with
probability ``word_rate``, and at least one per text that has any. Per perturbation and category the evaluation
reports the **flip rate** (share of rows whose decision at the operating threshold changes) and the **evasion
rate** (share of true positives, flagged on the clean text, that are no longer flagged), each with a Wilson
interval; the summary names the worst perturbation per category.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harmguard.evaluation.significance import wilson_interval
from harmguard.perturbations import HARMLESS_WORDS, PREFIX_WORDS, perturb_text
from harmguard.vocabulary import (
    EVASION_METRICS,
    EVASION_PER_PERTURBATION_METRICS,
    EVASION_SUMMARY_METRICS,
)

PER_PERTURBATION_METRICS = EVASION_PER_PERTURBATION_METRICS
SUMMARY_METRICS = EVASION_SUMMARY_METRICS
METRICS = EVASION_METRICS
SLICE = "evasion"  # keys: operating/evasion:<perturbation>/<category>/<metric>, operating/evasion/<category>/max_*
DEMO = "You people are disgusting and should leave"  # shown in the report to explain each perturbation


def demo(name: str) -> str:
    """The report's illustration of a perturbation: ``DEMO`` with every eligible word rewritten."""
    if name == "long_prefix":
        return f"{' '.join(HARMLESS_WORDS[:6])} … ({PREFIX_WORDS} harmless words) … {DEMO}"
    return perturb_text(DEMO, name, np.random.default_rng(0), word_rate=1.0)


def measure_evasion(
    truth: np.ndarray,
    clean: np.ndarray,
    perturbed: np.ndarray,
    categories: list[str],
    *,
    confidence: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """Flip and evasion rates of one perturbation, per category.

    Args:
        truth: Gold labels, (n, K) booleans over the categories.
        clean: Decisions on the original texts, (n, K).
        perturbed: Decisions on the perturbed texts, (n, K).
        categories: The K category names.
        confidence: Coverage of the Wilson intervals.
    """
    t, c, p = (np.asarray(a, dtype=bool) for a in (truth, clean, perturbed))
    n = len(t)
    out: dict[str, dict[str, Any]] = {}
    for j, cat in enumerate(categories):
        flips = int((c[:, j] != p[:, j]).sum())
        tp = t[:, j] & c[:, j]
        evaded = int((tp & ~p[:, j]).sum())
        n_tp = int(tp.sum())
        out[cat] = {
            "rows": n,
            "flips": flips,
            "flip_rate": flips / n if n else 0.0,
            "flip_rate_interval": wilson_interval(flips, n, confidence),
            "true_positives": n_tp,
            "evaded": evaded,
            "evasion_rate": evaded / n_tp if n_tp else None,
            "evasion_rate_interval": wilson_interval(evaded, n_tp, confidence),
        }
    return out


def summarize_evasion(per: dict[str, dict[str, Any]], categories: list[str]) -> dict[str, dict[str, Any]]:
    """The worst perturbation per category: ``{category: {max_flip_rate: {value, perturbation, interval}, ...}}``."""
    out: dict[str, dict[str, Any]] = {}
    for cat in categories:
        out[cat] = {}
        for metric in PER_PERTURBATION_METRICS:
            rates = {name: p["per_category"][cat][metric] for name, p in per.items()}
            rates = {k: v for k, v in rates.items() if v is not None}
            worst = max(rates, key=lambda k: (rates[k], k)) if rates else None
            out[cat][f"max_{metric}"] = {
                "value": rates[worst] if worst else None,
                "perturbation": worst,
                "interval": per[worst]["per_category"][cat][f"{metric}_interval"] if worst else None,
            }
    return out


def flatten_evasion(doc: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """Flat gate keys of the evasion document and their details (interval, worst perturbation, every value)."""
    values: dict[str, float] = {}
    details: dict[str, Any] = {}
    for name, pert in doc["perturbations"].items():
        for cat, m in pert["per_category"].items():
            for metric in PER_PERTURBATION_METRICS:
                if m[metric] is not None:
                    key = f"operating/{SLICE}:{name}/{cat}/{metric}"
                    values[key] = float(m[metric])
                    details[key] = {"interval": m[f"{metric}_interval"], "where": None}
    for cat, summary in doc["summary"].items():
        for metric, entry in summary.items():
            if entry["value"] is None:
                continue
            key = f"operating/{SLICE}/{cat}/{metric}"
            values[key] = float(entry["value"])
            by = {n: p["per_category"][cat][metric.removeprefix("max_")] for n, p in doc["perturbations"].items()}
            details[key] = {
                "interval": entry["interval"],
                "where": entry["perturbation"],
                "by": "perturbation",
                "values": {k: v for k, v in by.items() if v is not None},
            }
    return values, details
