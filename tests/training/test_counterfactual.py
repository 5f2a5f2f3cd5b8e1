"""Counterfactual identity augmentation in the transformer's training rows: copies swap groups and keep labels."""

from __future__ import annotations

import pandas as pd

from harmguard.identity import shipped_lexicon
from harmguard.policy import load_policy
from harmguard.training.ray_train import build_loop_config, effective_spec

GROUP_OF = {t: g for g, terms in shipped_lexicon().items() for t in terms}


def _frame() -> pd.DataFrame:
    train = [("I hate muslims", "hate"), ("gay people are lovely", "none"), ("what a sunny day", "none")] * 10
    rows = [(t, y, "train") for t, y in train] + [("muslims pray", "none", "validation")]
    return pd.DataFrame(rows, columns=["text", "label", "split"])


def test_counterfactual_copies_join_training_with_the_label_of_their_row():
    policy = load_policy("hate_speech")
    off = build_loop_config(_frame(), policy, effective_spec(policy, {"counterfactual_rate": 0.0}), seed=0)
    assert policy.transformer.counterfactual_rate == 0.5  # the shipped setting
    on = build_loop_config(_frame(), policy, effective_spec(policy, {"counterfactual_rate": 1.0}), seed=0)
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
