"""Identity-term abstraction: every identity term becomes one token before the baseline reads a text.

A model trained on data where identity words mostly appear in abuse learns the words themselves as abuse ("gay",
"muslim" flagged in "I am a proud gay man"). Replacing each identity term with ``IDENTITY_TOKEN`` leaves the model
only the rest of the sentence to decide on: what is said about a group, not which group. The shipped lexicon
(``lexicons/identity_terms.json``) was written for harmguard from the target groups toxigen_prompts names plus the
majority groups opposite them; no term comes from an evaluation set, whose metrics a lexicon drawn from them would
pass by construction. Slurs are not identity terms: they stay visible to the model.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

import numpy as np

IDENTITY_TOKEN = "identityterm"
SHIPPED = "harmguard"  # the policy value naming the shipped lexicon


@lru_cache(maxsize=1)
def shipped_lexicon() -> dict[str, list[str]]:
    """The shipped lexicon: group -> terms."""
    doc = json.loads((resources.files("harmguard") / "lexicons" / "identity_terms.json").read_text(encoding="utf-8"))
    return {group: list(terms) for group, terms in doc["groups"].items()}


def shipped_terms() -> list[str]:
    """Every term of the shipped lexicon, sorted."""
    return sorted({t for terms in shipped_lexicon().values() for t in terms})


@lru_cache(maxsize=8)
def _pattern(terms: tuple[str, ...]) -> re.Pattern[str]:
    ordered = sorted(terms, key=len, reverse=True)  # "african american" before "african"
    body = "|".join(r"\s+".join(re.escape(w) for w in t.split()) for t in ordered)
    return re.compile(rf"(?<![A-Za-z])(?:{body})(?![A-Za-z])", re.IGNORECASE)


def abstract_identities(text: str, terms: list[str] | tuple[str, ...]) -> str:
    """``text`` with each whole-word occurrence of a term (any case) replaced by ``IDENTITY_TOKEN``."""
    if not terms:
        return text
    return _pattern(tuple(terms)).sub(IDENTITY_TOKEN, text)


# Counterfactual data augmentation (Dixon et al. 2018, "Measuring and Mitigating Unintended Bias in Text
# Classification"; Park et al. 2018 swap gendered words): a copy of a training text with its identity terms swapped
# for another group's, keeping the label. Every group then appears in the same contexts, abusive and benign, so the
# group word stops predicting the label. Abstraction does this for the baseline's features; a transformer's tokenizer
# reads the raw words, so it learns from swapped copies instead.


def _is_plural(term: str) -> bool:
    """Grammatical number, so a swap keeps the sentence's agreement ("gays are" -> "muslims are")."""
    last = term.split()[-1]
    return last.endswith("s") and last not in _SINGULAR_ENDING_IN_S or last in {"men", "women"}


_SINGULAR_ENDING_IN_S = frozenset({"trans", "chinese", "bipolar", "lgbtq", "jewish"})


def _swap_targets(lexicon: dict[str, list[str]]) -> dict[str, dict[bool, list[tuple[str, str]]]]:
    """Per group, the (group, term) pairs of every other group by grammatical number."""
    by_number: dict[bool, list[tuple[str, str]]] = {True: [], False: []}
    for group, terms in lexicon.items():
        for term in terms:
            by_number[_is_plural(term)].append((group, term))
    return {group: {n: [(g, t) for g, t in pairs if g != group] for n, pairs in by_number.items()} for group in lexicon}


def _match_case(replacement: str, original: str) -> str:
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def counterfactual_text(text: str, lexicon: dict[str, list[str]], rng: np.random.Generator) -> str:
    """``text`` with each identity term swapped for a term of another group (same number, same case).

    One text's occurrences of a term all become the same replacement ("gay men and gay women" stays one group).
    """
    group_of = {t.lower(): g for g, terms in lexicon.items() for t in terms}
    if not group_of:
        return text
    targets = _swap_targets(lexicon)
    pattern = _pattern(tuple(group_of))
    chosen: dict[str, str] = {}

    def swap(match: re.Match[str]) -> str:
        found = match.group(0)
        key = " ".join(found.lower().split())
        if key not in chosen:
            pool = targets[group_of[key]][_is_plural(key)]
            chosen[key] = pool[int(rng.integers(len(pool)))][1] if pool else found
        return _match_case(chosen[key], found)

    return pattern.sub(swap, text)


def counterfactual_copies(
    texts: list[str], lexicon: dict[str, list[str]], *, rate: float, seed: int
) -> tuple[list[int], list[str]]:
    """Counterfactual copies of a ``rate`` share of the texts that hold an identity term: (source rows, copies).

    Deterministic for a seed. A row's copy keeps the row's label and weight (the caller repeats them by index).
    """
    if not 0 < rate <= 1:
        raise ValueError(f"counterfactual rate must be in (0, 1], got {rate}")
    terms = tuple(t for ts in lexicon.values() for t in ts)
    if not terms:
        return [], []
    pattern = _pattern(terms)
    rng = np.random.default_rng([seed, 0xC0F])
    rows: list[int] = []
    copies: list[str] = []
    for i, text in enumerate(texts):
        if pattern.search(text) is None or rng.random() >= rate:
            continue
        copy = counterfactual_text(text, lexicon, rng)
        if copy != text:
            rows.append(i)
            copies.append(copy)
    return rows, copies
