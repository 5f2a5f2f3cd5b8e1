"""The evasion canonicalization: each evasion kind in, the canonical text out; versioned with the model."""

from __future__ import annotations

import numpy as np
import pytest

from harmguard.canonical import CANONICAL_VERSION, canonicalize, confusable_map
from harmguard.digests import model_digest
from harmguard.models.baseline import train_baseline
from harmguard.perturbations import perturb_text
from harmguard.policy import Policy


@pytest.mark.parametrize(
    ("evasion", "text", "canonical"),
    [
        ("spaced letters", "you h a t e them", "you hate them"),
        ("dotted letters", "h.a.t.e", "hate"),
        ("punctuation inside a word", "ha*te and sc_um", "hate and scum"),
        ("leetspeak", "h4t3 5cum", "hate scum"),
        ("Cyrillic homoglyphs", "hаtе", "hate"),  # а and е are Cyrillic
        ("Greek homoglyphs", "ΑΒΕ", "ABE"),
        ("zero-width space", "ha\u200bte", "hate"),
        ("soft hyphen and joiner", "ha\u00adt\u200de", "hate"),
        ("fullwidth forms", "ｈａｔｅ", "hate"),
        ("mathematical alphabet", "𝐡𝐚𝐭𝐞", "hate"),
        ("strike-through marks", "h\u0336a\u0336t\u0336e\u0336", "hate"),
        ("letter repeats", "haaaaate", "haate"),
        ("HTML entities", "&lt;3 you &amp; me", "<3 you & me"),
        ("numbers stay numbers", "born in 1985, 4 kids", "born in 1985, 4 kids"),
        ("plain text stays", "a perfectly normal sentence.", "a perfectly normal sentence."),
    ],
)
def test_each_evasion_kind_folds_to_the_canonical_text(evasion: str, text: str, canonical: str):
    assert canonicalize(text) == canonical, evasion


def test_the_projects_perturbations_fold_back_with_unseen_seeds():
    """Leetspeak, homoglyphs, inserted punctuation and spaces, drawn with seeds no model was trained on, fold back."""
    words = "these people are disgusting vermin and should leave".split()
    text = " ".join(words)
    for name in ("leetspeak", "homoglyph", "punct_insert"):
        for seed in range(100, 120):
            perturbed = perturb_text(text, name, np.random.default_rng(seed), word_rate=0.5)
            assert perturbed != text and canonicalize(perturbed) == text, (name, perturbed)
    # spaced letters: one word at a time (two spaced words in a row read as one; see harmguard.canonical)
    for i, word in enumerate(words):
        spaced = " ".join([*words[:i], " ".join(word), *words[i + 1 :]])
        assert canonicalize(spaced) == text, spaced


def test_the_table_is_unicodes_and_versions_are_explicit():
    table = confusable_map()
    assert len(table) > 1000 and table[ord("а")] == "a" and table[ord("ο")] == "o"  # Cyrillic a, Greek omicron
    assert all(chr(k) not in "abcdefghijklmnopqrstuvwxyz" for k in table)  # ASCII is never remapped
    assert canonicalize("h4te", 0) == "h4te"  # version 0: models exported before canonicalization
    with pytest.raises(ValueError, match="unknown canonicalization version"):
        canonicalize("x", CANONICAL_VERSION + 1)


def test_the_version_is_part_of_the_model_and_its_digest(tmp_path):
    def policy(canonical: int) -> Policy:
        return Policy.model_validate(
            {"name": "p", "label_mode": "exclusive", "categories": ["hate"], "data": {"dataset": "d"},
             "baseline": {"min_df": 1, "canonical": canonical}}
        )  # fmt: skip

    texts = ["we hate them all", "lovely weather today", "hate hate hate", "see you at lunch"] * 5
    labels = np.array([0, 1, 0, 1] * 5)
    plain, folded = (train_baseline(texts, labels, policy(c)) for c in (0, 1))
    plain.save(tmp_path / "plain")
    folded.save(tmp_path / "folded")
    assert model_digest(tmp_path / "plain") != model_digest(tmp_path / "folded")
    evasive = ["we h4te them all", "we h a t e them all"]
    # the canonicalizing model reads the evasions as the original; the plain one does not
    assert np.allclose(folded.predict_proba(evasive), folded.predict_proba(["we hate them all"] * 2))
    assert not np.allclose(plain.predict_proba(evasive), plain.predict_proba(["we hate them all"] * 2))
