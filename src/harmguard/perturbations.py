"""Evasion perturbations: the spelling tricks evaders use, as seeded text rewrites.

Used to measure evasion (``harmguard.evaluation.evasion``, on the test split, with the policy's evasion seed) and to
augment training (``baseline.augment``, with a seed the policy keeps different from the evaluation's). See
``harmguard.evaluation.evasion`` for what each perturbation does.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from harmguard.vocabulary import PERTURBATIONS

PREFIX_WORDS = 100
# A harmless opening (written for harmguard): everyday sentences, no identity terms, no profanity.
HARMLESS_WORDS = (
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
    start = int(rng.integers(len(HARMLESS_WORDS)))
    words = [HARMLESS_WORDS[(start + i) % len(HARMLESS_WORDS)] for i in range(PREFIX_WORDS)]
    return " ".join(words) + " " + text
