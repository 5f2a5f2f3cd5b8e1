"""The baseline model on real data (sms_spam): quality, plain-array export, scikit-learn parity."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot, encode_labels, split_frame
from harmguard.digests import model_digest
from harmguard.models.base import ModelError, preprocess_text
from harmguard.models.baseline import BaselineModel, train_baseline
from harmguard.models.loading import load_model
from harmguard.policy import load_policy


@pytest.fixture(scope="module")
def spam(tmp_path_factory):
    from harmguard.settings import Settings
    from tests.conftest import mirror_dir

    if mirror_dir() is None:
        pytest.skip("dataset mirror not found")
    tmp = tmp_path_factory.mktemp("spam")
    settings = Settings(home=str(tmp), cache=tmp / "cache", data_mirror=mirror_dir(), mlflow_tracking_uri="sqlite://")
    policy = load_policy("sms_spam")
    snap = build_snapshot(load_dataset("sms_spam", settings), policy)
    train = split_frame(snap, "train")
    model = train_baseline(train["text"].tolist(), encode_labels(train, policy), policy)
    return policy, snap, model


def test_quality_and_export_roundtrip(spam, tmp_path):
    policy, snap, model = spam
    test = split_frame(snap, "test")
    proba = model.predict_proba(test["text"].tolist())
    assert proba.shape == (len(test), 2) and np.allclose(proba.sum(axis=1), 1)
    pred = np.array(model.classes)[proba.argmax(axis=1)]
    y = test["label"].to_numpy()
    tp = ((pred == "spam") & (y == "spam")).sum()
    f1 = 2 * tp / ((pred == "spam").sum() + (y == "spam").sum())
    assert f1 > 0.9

    model.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert all(f.endswith((".json", ".npy")) for f in files)  # plain arrays and JSON, no pickle
    for f in files:
        if f.endswith(".npy"):
            np.load(tmp_path / "m" / f, allow_pickle=False)
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, BaselineModel)
    assert np.allclose(loaded.predict_proba(test["text"].tolist()[:200]), proba[:200])
    # Exporting the same model twice gives the same digest (the registry relies on it).
    model.save(tmp_path / "m2")
    assert model_digest(tmp_path / "m") == model_digest(tmp_path / "m2")


def test_features_match_scikit_learn(spam):
    policy, snap, model = spam
    spec = policy.baseline
    texts = [preprocess_text(t) for t in split_frame(snap, "train")["text"].tolist()]
    ref = []
    for name, analyzer, rng in (("word", "word", spec.word_ngrams), ("char", spec.char_analyzer, spec.char_ngrams)):
        vec = TfidfVectorizer(analyzer=analyzer, ngram_range=tuple(rng), min_df=spec.min_df,
                              max_features=spec.max_features, sublinear_tf=spec.sublinear_tf)  # fmt: skip
        vec.fit(texts)
        assert len(vec.vocabulary_) == len(model.vocab[name])
        ref.append(vec.transform(texts[:50]))
    ours = model.featurize(split_frame(snap, "train")["text"].tolist()[:50])
    assert abs(ours - sp.hstack(ref)).max() < 1e-9


def test_corrupt_export_is_refused(spam, tmp_path):
    _, _, model = spam
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["classes"] = ["a", "b", "c"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="shapes"):
        load_model(tmp_path / "m")
    with pytest.raises(ModelError, match="no model.json"):
        load_model(tmp_path)
