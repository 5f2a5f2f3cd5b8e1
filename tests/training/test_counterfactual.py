"""The transformer's training rows: counterfactual identity copies and evasion copies keep their row's label, and the
text its tokenizer reads is the shared canonical, identity-abstracted form."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from harmguard.identity import IDENTITY_TOKEN, shipped_lexicon
from harmguard.models.transformer import tokenizer_text
from harmguard.policy import PolicyError, load_policy
from harmguard.training.ray_train import build_loop_config, effective_spec

GROUP_OF = {t: g for g, terms in shipped_lexicon().items() for t in terms}


def _frame() -> pd.DataFrame:
    train = [("I hate muslims", "hate"), ("gay people are lovely", "none"), ("what a sunny day", "none")] * 10
    rows = [(t, y, "train") for t, y in train] + [("muslims pray", "none", "validation")]
    return pd.DataFrame(rows, columns=["text", "label", "split"])


def test_counterfactual_copies_join_training_with_the_label_of_their_row():
    policy = load_policy("hate_speech")
    raw = {"identity_terms": [], "augment": []}  # raw group words: the setting counterfactual copies are for
    off = build_loop_config(_frame(), policy, effective_spec(policy, {**raw, "counterfactual_rate": 0.0}), seed=0)
    on = build_loop_config(_frame(), policy, effective_spec(policy, {**raw, "counterfactual_rate": 1.0}), seed=0)
    assert len(off["train_texts"]) == 30 and off["train_texts"] == on["train_texts"][:30]
    copies = list(zip(on["train_texts"][30:], on["train_labels"][30:], strict=True))
    assert len(copies) == 20  # every row naming a group, none of the sunny days
    hate, none = policy.classes.index("hate"), policy.classes.index("none")
    for text, label in copies:
        if text.startswith("I hate "):
            assert label == hate and GROUP_OF[text.removeprefix("I hate ")] != "muslim"
        else:
            assert label == none and text.endswith(" people are lovely")
            assert GROUP_OF[text.removesuffix(" people are lovely")] != "lgbtq"
    assert on["val_texts"] == ["muslims pray"]  # validation judges the real rows only


def test_evasion_copies_join_the_transformers_training_with_their_rows_label():
    policy = load_policy("hate_speech")
    assert policy.transformer.augment == ["char_swap"]  # the shipped setting
    on = build_loop_config(_frame(), policy, effective_spec(policy, {"augment_rate": 1.0}), seed=0)
    off = build_loop_config(_frame(), policy, effective_spec(policy, {"augment": []}), seed=0)
    assert on["train_texts"][:30] == off["train_texts"] and len(on["train_texts"]) > 30
    originals = dict(zip(off["train_texts"], off["train_labels"], strict=True))
    for text, label in zip(on["train_texts"][30:], on["train_labels"][30:], strict=True):
        source = [t for t in originals if len(t) == len(text) and sorted(t) == sorted(text)]  # swaps keep letters
        assert text not in originals and source and originals[source[0]] == label
    assert on["val_texts"] == ["muslims pray"]


def test_the_transformer_reads_group_words_as_one_token_when_its_policy_says_so():
    spec = load_policy("hate_speech").transformer
    assert spec.identity_terms and spec.counterfactual_rate == 0
    muslims, jews = tokenizer_text("I hate muslims", spec), tokenizer_text("I hate J3WS", spec)
    assert muslims == jews and IDENTITY_TOKEN in muslims  # leetspeak folded first, then the group abstracted
    raw = effective_spec(load_policy("hate_speech"), {"identity_terms": []})
    assert tokenizer_text("I hate muslims", raw) == "I hate muslims"


def test_abstraction_and_counterfactual_copies_together_are_refused():
    policy = load_policy("hate_speech")
    with pytest.raises(ValidationError, match="counterfactual_rate with transformer.identity_terms"):
        effective_spec(policy, {"counterfactual_rate": 0.5})


def test_a_transformer_augment_seed_equal_to_the_evasion_seed_is_refused(tmp_path):
    doc = load_policy("hate_speech").model_dump(mode="json")
    doc["transformer"]["augment_seed"] = doc["evasion"]["seed"]
    (path := tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(PolicyError, match="transformer.augment_seed"):
        load_policy(str(path))
