"""Identity-term abstraction: whole words, any case, multi-word terms first; slurs and look-alike words untouched."""

from __future__ import annotations

import pytest

from harmguard.identity import IDENTITY_TOKEN, abstract_identities, shipped_lexicon, shipped_terms
from harmguard.policy import BaselineSpec

T = IDENTITY_TOKEN


@pytest.mark.parametrize(
    ("text", "abstracted"),
    [
        ("I am a proud Gay man", f"I am a proud {T} {T}"),
        ("African Americans and Africans", f"{T} and {T}"),  # the longer term wins
        ("muslims, jews and christians", f"{T}, {T} and {T}"),
        ("the blackboard is gayly painted", "the blackboard is gayly painted"),  # whole words only
        ("native   american elders", f"{T} elders"),  # any spacing inside a multi-word term
        ("a lovely day", "a lovely day"),
    ],
)
def test_identity_terms_become_one_token(text: str, abstracted: str):
    assert abstract_identities(text, shipped_terms()) == abstracted


def test_the_lexicon_is_shipped_by_group_and_saved_as_a_list():
    groups = shipped_lexicon()
    assert {"lgbtq", "muslim", "jewish", "women", "majority"} <= set(groups) and len(groups) == 14
    spec = BaselineSpec.model_validate({"identity_terms": "harmguard"})
    assert spec.identity_terms == shipped_terms() and "gay" in spec.identity_terms  # the list itself: in model.json
    assert BaselineSpec().identity_terms == [] and abstract_identities("gay", []) == "gay"


def test_a_counterfactual_copy_swaps_each_group_for_another_keeping_number_and_case():
    import numpy as np

    from harmguard.identity import counterfactual_text

    lexicon = shipped_lexicon()
    group_of = {t: g for g, ts in lexicon.items() for t in ts}
    seen: set[str] = set()
    for seed in range(40):
        out = counterfactual_text("Gay people and gay men are fine", lexicon, np.random.default_rng(seed))
        first, rest = out.removesuffix(" are fine").split(" people and ")
        assert first[0].isupper() and rest.startswith(first.lower() + " ")  # both "gay"s: one term, case kept
        men = rest[len(first) + 1 :]
        assert group_of[first.lower()] != "lgbtq"
        # "men" (plural) becomes a plural of another group, never a singular
        assert group_of[men] != "majority" and (men.endswith("s") or men in {"men", "women"})
        seen.add(first.lower())
    assert len(seen) > 10  # the swap draws across groups, not one fixed counterpart
    untouched = "the blackboard is gayly painted"
    assert counterfactual_text(untouched, lexicon, np.random.default_rng(0)) == untouched


def test_counterfactual_copies_are_deterministic_and_only_of_rows_with_identity_terms():
    from harmguard.identity import counterfactual_copies

    texts = ["muslims are welcome", "a lovely day", "I hate jews", "women can code"] * 25
    rows, copies = counterfactual_copies(texts, shipped_lexicon(), rate=0.5, seed=3)
    assert (rows, copies) == counterfactual_copies(texts, shipped_lexicon(), rate=0.5, seed=3)
    assert rows and all(texts[i] != "a lovely day" for i in rows)
    assert all(c != texts[i] for i, c in zip(rows, copies, strict=True))
    assert 0.3 < len(rows) / 75 < 0.7  # about the rate, of the 75 rows that hold a term
    assert counterfactual_copies(texts, shipped_lexicon(), rate=1.0, seed=3)[0] == [
        i for i, t in enumerate(texts) if t != "a lovely day"
    ]
    with pytest.raises(ValueError, match="rate"):
        counterfactual_copies(texts, shipped_lexicon(), rate=0.0, seed=3)
