"""Training on evasion-rewritten copies: the evasion modelled stops working; the evaluation's seed stays unseen."""

from __future__ import annotations

import numpy as np
import pytest

from harmguard.models.baseline import train_baseline
from harmguard.perturbations import perturb_texts
from harmguard.policy import Policy, load_policy


def _policy(**baseline) -> Policy:
    return Policy.model_validate(
        {"name": "p", "label_mode": "exclusive", "categories": ["hate"], "data": {"dataset": "d"},
         "baseline": {"min_df": 1, "char_ngrams": [3, 5], **baseline}}
    )  # fmt: skip


def test_char_swapped_copies_make_swaps_stop_evading():
    rng = np.random.default_rng(0)
    bad = ["vermin", "parasites", "subhuman", "filth", "scum", "animals"]
    good = ["neighbours", "teachers", "friends", "colleagues", "visitors", "players"]
    texts, labels = [], []
    for _ in range(200):
        hate = rng.random() < 0.5
        texts.append(f"those {rng.choice(bad if hate else good)} are {rng.choice(['here', 'there', 'back'])}")
        labels.append(0 if hate else 1)
    y = np.array(labels)
    plain = train_baseline(texts, y, _policy())
    augmented = train_baseline(texts, y, _policy(augment=["char_swap"], augment_rate=1.0, augment_seed=1))
    assert len(augmented.vocab["word"]) > len(plain.vocab["word"])  # the swapped spellings were seen
    hateful = [t for t, lab in zip(texts, labels, strict=True) if lab == 0][:50]
    swapped, changed = perturb_texts(hateful, "char_swap", word_rate=1.0, seed=0)  # the evaluation's seed
    assert changed.all()
    assert augmented.predict_proba(swapped)[:, 0].mean() > plain.predict_proba(swapped)[:, 0].mean() + 0.05


def test_training_may_not_share_the_evaluations_seed():
    doc = load_policy("davidson2017").model_dump()
    doc["baseline"]["augment"] = ["char_swap"]
    assert Policy.model_validate(doc).baseline.augment_seed != doc["evasion"]["seed"]  # the default seeds differ
    doc["baseline"]["augment_seed"] = doc["evasion"]["seed"]
    with pytest.raises(ValueError, match="augment_seed 0 equals evasion.seed"):
        Policy.model_validate(doc)
