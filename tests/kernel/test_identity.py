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
