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
