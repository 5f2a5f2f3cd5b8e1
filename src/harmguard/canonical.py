"""One text canonicalization against evasion, shared by training, evaluation, serving and batch scoring.

Evaders write what a reader still reads as the word: ``h a t e``, ``h.a.t.e``, ``h4te``, ``hаte`` with a Cyrillic
``а``, a zero-width space inside it, ``haaaaate``. ``canonicalize`` folds each back, in this order:

1. HTML entities unescaped, compatibility forms folded (NFKC: fullwidth, mathematical alphabets, ligatures).
2. Invisible characters removed (Unicode format characters: zero-width spaces and joiners, soft hyphens, bidi
   controls) and combining marks dropped (accents, the strike-through and underline marks stacked on letters).
3. Confusables folded to their skeleton: a non-ASCII character that Unicode's confusables table (UTS #39,
   ``confusables.txt``, as the maintained ``confusable_homoglyphs`` package ships it) lists as confusable with an
   ASCII letter or digit becomes that character.
4. Leetspeak folded inside words that also hold letters (``h4te`` -> ``hate``; ``2024`` stays).
5. Letters separated by spaces or punctuation rejoined (``h a t e``, ``h.a.t.e`` -> ``hate``); a single ``.*_-``
   between two letters removed (``ha*te`` -> ``hate``).
6. Runs of three or more of a letter shortened to two (``haaaate`` -> ``haate``).

The version is part of each model's settings (``canonical`` in ``BaselineSpec`` / ``TransformerSpec``, saved in
``model.json``), so it enters the model digest; a model trained with version *n* is always served with version *n*.
Version 0 is no canonicalization (models exported before it existed).
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from functools import lru_cache
from importlib import resources

CANONICAL_VERSION = 1  # the newest; bump with any change to what `canonicalize` returns

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_LEET_CHARS = frozenset("013457@$")
_WORD = re.compile(r"[A-Za-z0-9@$]+")
_SPACED = re.compile(r"(?<![A-Za-z])(?:[A-Za-z][ .*_\-]){2,}[A-Za-z](?![A-Za-z])")
_INNER_PUNCT = re.compile(r"(?<=[A-Za-z])[.*_\-](?=[A-Za-z])")
_REPEAT = re.compile(r"([A-Za-z])\1{2,}")
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=1)
def confusable_map() -> dict[int, str]:
    """Non-ASCII character -> the ASCII letter or digit it is confusable with (``str.translate`` table)."""
    table = json.loads((resources.files("confusable_homoglyphs") / "confusables.json").read_text(encoding="utf-8"))
    out: dict[int, str] = {}
    for char, glyphs in table.items():
        if len(char) != 1 or char.isascii():
            continue
        ascii_forms = sorted(g["c"] for g in glyphs if len(g["c"]) == 1 and g["c"].isascii() and g["c"].isalnum())
        letters = [c for c in ascii_forms if c.isalpha()]
        if letters or ascii_forms:
            out[ord(char)] = (letters or ascii_forms)[0]
    return out


def _fold_leet(match: re.Match[str]) -> str:
    word = match.group(0)
    if any(c.isalpha() for c in word) and any(c in _LEET_CHARS for c in word):
        return word.translate(_LEET)
    return word


def _strip_invisible(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    kept = "".join(c for c in decomposed if unicodedata.category(c) not in ("Cf", "Mn", "Me"))
    return unicodedata.normalize("NFC", kept)


def canonicalize(text: str, version: int = CANONICAL_VERSION) -> str:
    """The canonical form of ``text`` under canonicalization ``version`` (0: the text unchanged)."""
    if version == 0:
        return text
    if version != 1:
        raise ValueError(f"unknown canonicalization version {version} (this harmguard knows 0-{CANONICAL_VERSION})")
    t = unicodedata.normalize("NFKC", html.unescape(text))
    t = _strip_invisible(t)
    t = t.translate(confusable_map())
    t = _WORD.sub(_fold_leet, t)
    t = _SPACED.sub(lambda m: re.sub(r"[ .*_\-]", "", m.group(0)), t)
    t = _INNER_PUNCT.sub("", t)
    t = _REPEAT.sub(r"\1\1", t)
    return _SPACES.sub(" ", t).strip()
