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

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from harmguard.evaluation.significance import wilson_interval
from harmguard.vocabulary import (
    EVASION_METRICS,
    EVASION_PER_PERTURBATION_METRICS,
    EVASION_SUMMARY_METRICS,
    PERTURBATIONS,
)

PER_PERTURBATION_METRICS = EVASION_PER_PERTURBATION_METRICS
SUMMARY_METRICS = EVASION_SUMMARY_METRICS
METRICS = EVASION_METRICS
SLICE = "evasion"  # keys: operating/evasion:<perturbation>/<category>/<metric>, operating/evasion/<category>/max_*
DEMO = "You people are disgusting and should leave"  # shown in the report to explain each perturbation

PREFIX_WORDS = 100
# A harmless opening (written for harmguard): everyday sentences, no identity terms, no profanity.
_HARMLESS = (
    "Thanks for the update on the weekend plans. The weather looks mild on Saturday, so the picnic at the park "
    "should work if we meet around noon near the old fountain. I will bring sandwiches, some fruit and a big bottle "
    "of lemonade, and maybe the folding chairs from the garage. The bus on the main road runs every twenty minutes, "
    "which is easier than finding parking near the lake. Last time the ducks followed us all afternoon and the kids "
    "loved it. If it rains we can move everything to the library cafe instead, they have long tables and decent "
    "coffee. Let me know what time suits you and whether your cousin is still coming along with the new puppy."
).split()
_SPLIT = re.compile(r"(\s+)")
_WORD = re.compile(r"^([\"'(\[*]*)([A-Za-z]{3,})([^\w\s]*)$")
_LEET = str.maketrans("aAeEiIoOsStT", "443311005577")
_HOMOGLYPHS = str.maketrans("aceiopxyABCEHKMOPTX", "асеіорхуАВСЕНКМОРТХ")  # Latin -> Cyrillic look-alikes
_PUNCT = ".*-_"


def _char_swap(word: str, rng: np.random.Generator) -> str:
    spots = [i for i in range(1, len(word) - 1) if word[i] != word[i + 1]]
    if not spots:
        return word
    i = spots[int(rng.integers(len(spots)))]
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _punct_insert(word: str, rng: np.random.Generator) -> str:
    i = int(rng.integers(1, len(word)))
    return word[:i] + _PUNCT[int(rng.integers(len(_PUNCT)))] + word[i:]


_REWRITES: dict[str, Callable[[str, np.random.Generator], str]] = {
    "char_swap": _char_swap,
    "leetspeak": lambda w, _rng: w.translate(_LEET),
    "space_insert": lambda w, _rng: " ".join(w),
    "punct_insert": _punct_insert,
    "homoglyph": lambda w, _rng: w.translate(_HOMOGLYPHS),
}


def perturb_text(text: str, name: str, rng: np.random.Generator, word_rate: float = 0.5) -> str:
    """One text with perturbation ``name`` applied to a random subset of its eligible words."""
    rewrite = _REWRITES[name]
    parts = _SPLIT.split(text)
    eligible = [i for i in range(0, len(parts), 2) if _WORD.match(parts[i])]
    if not eligible:
        return text
    picked = [i for i, u in zip(eligible, rng.random(len(eligible)), strict=True) if u < word_rate]
    for i in picked or [eligible[int(rng.integers(len(eligible)))]]:
        m = _WORD.match(parts[i])
        assert m is not None  # eligible
        parts[i] = m.group(1) + rewrite(m.group(2), rng) + m.group(3)
    return "".join(parts)


def perturb_texts(
    texts: list[str], name: str, *, word_rate: float = 0.5, seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """Perturbed copies of ``texts`` (same order) and which rows changed, (n,) booleans.

    Deterministic: the generator is seeded with (seed, the perturbation's index in ``PERTURBATIONS``).
    """
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; choose from {list(PERTURBATIONS)}")
    rng = np.random.default_rng([seed, PERTURBATIONS.index(name)])
    if name == "long_prefix":
        out = [long_prefix(t, rng) for t in texts]
        return out, np.ones(len(texts), dtype=bool)
    out = [perturb_text(t, name, rng, word_rate) for t in texts]
    return out, np.array([a != b for a, b in zip(texts, out, strict=True)], dtype=bool)


def long_prefix(text: str, rng: np.random.Generator) -> str:
    """``text`` after ``PREFIX_WORDS`` harmless words (the opening starts at a random sentence word)."""
    start = int(rng.integers(len(_HARMLESS)))
    words = [_HARMLESS[(start + i) % len(_HARMLESS)] for i in range(PREFIX_WORDS)]
    return " ".join(words) + " " + text


def demo(name: str) -> str:
    """The report's illustration of a perturbation: ``DEMO`` with every eligible word rewritten."""
    if name == "long_prefix":
        return f"{' '.join(_HARMLESS[:6])} … ({PREFIX_WORDS} harmless words) … {DEMO}"
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
