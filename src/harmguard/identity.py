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
