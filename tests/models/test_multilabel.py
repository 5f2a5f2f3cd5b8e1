"""A multilabel policy end to end at the library level: mapping, training with sigmoid heads, metrics, gate keys."""

import numpy as np
import pandas as pd

from harmguard.data.snapshot import build_snapshot
from harmguard.evaluation.evaluate import evaluate_challenger
from harmguard.evaluation.metrics import flatten
from harmguard.models.baseline import BaselineModel
from harmguard.policy import Policy
from harmguard.training.dispatch import train_model


def test_multilabel_policy_trains_independent_heads(tmp_path):
    policy = Policy.model_validate(
        {
            "name": "toxicity",
            "label_mode": "multilabel",
            "categories": ["insult", "threat"],
            "data": {
                "uri": "x.csv",
                "columns": {"text": "body", "labels": {"insult": "is_insult", "threat": "is_threat"}},
            },
            "baseline": {"min_df": 1, "C": 5.0},
            "calibration": {"insult": {"max_fpr": 0.2}, "threat": {"max_fpr": 0.2}},
        }
    )
    rng = np.random.default_rng(0)
    insult_words, threat_words, neutral = (
        ["idiot", "moron", "clown"],
        ["hurt", "destroy", "attack"],
        ["tea", "park", "book"],
    )
    rows = []
    for i in range(900):
        ins, thr = rng.random() < 0.3, rng.random() < 0.3
        words = (
            list(rng.choice(neutral, 4))
            + ([rng.choice(insult_words)] if ins else [])
            + ([rng.choice(threat_words)] if thr else [])
        )
        rows.append({"body": f"{' '.join(words)} {i}", "is_insult": int(ins), "is_threat": "true" if thr else "false"})
    snap = build_snapshot(pd.DataFrame(rows), policy)
    assert set(snap["label"]) <= {"insult", "threat", "insult|threat", "none"}
    assert snap["y_threat"].sum() > 100  # "true"/"false" strings are read as 0/1

    model = train_model(snap, policy)
    assert isinstance(model, BaselineModel) and model.classes == ["insult", "threat"]
    proba = model.predict_proba(["you idiot i will hurt you", "tea in the park"])
    assert proba.shape == (2, 2)
    assert proba[0].min() > 0.5 and proba[1].max() < 0.5  # independent sigmoids: both heads can fire

    evaluation, _, _ = evaluate_challenger(model, snap, policy)
    flat = flatten(evaluation)
    assert flat["reference/overall/insult/f1"] > 0.9 and flat["operating/overall/threat/recall"] > 0.9
    model.save(tmp_path / "m")
    assert np.allclose(BaselineModel.load(tmp_path / "m").predict_proba(["idiot"]), model.predict_proba(["idiot"]))


def test_a_masked_category_is_not_fitted_on_that_row():
    """-1 (a decision that left the category unlabelled) keeps the row out of that head only: the other head sees it."""
    import torch

    from harmguard.models.baseline import train_baseline
    from harmguard.training.ray_train import _loss

    policy = Policy.model_validate(
        {"name": "m", "label_mode": "multilabel", "categories": ["insult", "threat"],
         "data": {"uri": "x.csv", "columns": {"labels": {"insult": "a", "threat": "b"}}}, "baseline": {"min_df": 1}}
    )  # fmt: skip
    texts = ["zork idiot"] + [f"{w} tea" for w in ["idiot", "park", "hurt", "book"] * 10]  # "zork": row 0 only
    y = np.array([[("idiot" in t), t.startswith("hurt")] for t in texts], dtype=int)
    masked = y.copy()
    masked[0, 1] = -1  # row 0: insult known, threat unknown
    zork = train_baseline(texts, masked, policy).vocab["word"].index("zork")
    with_mask = train_baseline(texts, masked, policy)
    as_threat = train_baseline(texts, np.where(masked < 0, 1, masked), policy)
    # the threat head never saw row 0: a word only row 0 has gets no weight there (but would, read as a threat)...
    assert with_mask.coef[1][zork] == 0.0 and as_threat.coef[1][zork] > 0.1
    # ...while the insult head, which row 0 does label, learns from it
    assert with_mask.coef[0][zork] > 0.1
    # the transformer's loss: a masked cell adds nothing
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    full = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], torch.tensor([1.0, 0.0]))
    assert torch.isclose(_loss(logits, torch.tensor([[1, -1], [0, -1]]), "multilabel"), full)
