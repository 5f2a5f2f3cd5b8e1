"""The baseline model on real data (sms_spam): quality, plain-array export, scikit-learn parity."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot, encode_labels, split_frame
from harmguard.digests import model_digest
from harmguard.models.base import ModelError, prepare_text, preprocess_text
from harmguard.models.baseline import BaselineModel, train_baseline
from harmguard.models.loading import load_model
from harmguard.policy import load_policy


@pytest.fixture(scope="module")
def spam(tmp_path_factory):
    from harmguard.settings import Settings
    from tests.conftest import mirror_dir

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


def _sklearn_reference(texts: list[str], y: np.ndarray, spec) -> tuple[object, object]:
    """The same model fitted by scikit-learn alone: TF-IDF blocks, then LogisticRegression with the same weights."""

    def read(t: str) -> str:  # the shared text preparation; what is compared is the TF-IDF + LR arithmetic
        return prepare_text(t, preprocess=spec.preprocess, canonical=spec.canonical, identity_terms=spec.identity_terms)

    docs = [read(t) for t in texts]
    vecs = []
    for analyzer, rng in (("word", spec.word_ngrams), (spec.char_analyzer, spec.char_ngrams)):
        vec = TfidfVectorizer(analyzer=analyzer, ngram_range=tuple(rng), min_df=spec.min_df,
                              max_features=spec.max_features, sublinear_tf=spec.sublinear_tf)  # fmt: skip
        vecs.append(vec.fit(docs))
    values, counts = np.unique(y, return_counts=True)
    weights = (len(y) / (len(values) * counts)) ** spec.class_weight_power
    clf = LogisticRegression(C=spec.C, max_iter=spec.max_iter, solver="lbfgs", random_state=0,
                             class_weight=dict(zip(values.tolist(), weights.tolist(), strict=True)))  # fmt: skip
    clf.fit(sp.hstack([v.transform(docs) for v in vecs], format="csr"), y)

    def featurize(batch: list[str]) -> sp.csr_matrix:
        return sp.hstack([v.transform([read(t) for t in batch]) for v in vecs], format="csr")

    return clf, featurize


@pytest.mark.parametrize("case", ["binary", "three classes, one missing from training", "three classes"])
def test_predict_proba_equals_scikit_learn_on_unseen_texts(case, tmp_path, settings):
    if case == "binary":
        policy = load_policy("sms_spam")
        data = build_snapshot(load_dataset("sms_spam", settings), policy)
    else:
        policy = load_policy("davidson2017")
        data = build_snapshot(load_dataset("davidson2017", settings), policy)
    # windows take a maximum over pieces (tests/models/test_windows.py); here: one piece per text. Augmented copies
    # (tests/models/test_augment.py) add training rows the reference does not have: off.
    spec = policy.baseline.model_copy(update={"window_words": 0, "augment": []})
    policy = policy.model_copy(update={"baseline": spec})
    train, unseen = split_frame(data, "train").head(1500), split_frame(data, "test").head(300)
    if case.endswith("missing from training"):
        train = train[train["label"] != policy.classes[0]]  # e.g. no hate rows at all
    y = encode_labels(train, policy)
    model = train_baseline(train["text"].tolist(), y, policy)
    model.save(tmp_path / "m")
    exported = load_model(tmp_path / "m")  # what serving loads: plain arrays, numpy arithmetic
    clf, featurize = _sklearn_reference(train["text"].tolist(), y, policy.baseline)
    texts = unseen["text"].tolist()
    ref = clf.predict_proba(featurize(texts))
    ours = exported.predict_proba(texts)
    assert ours.shape == (len(texts), len(policy.classes))
    np.testing.assert_allclose(ours[:, clf.classes_], ref, rtol=0, atol=1e-9)
    missing = sorted(set(range(len(policy.classes))) - set(clf.classes_.tolist()))
    assert np.all(ours[:, missing] < 1e-9)  # a class never seen in training is never predicted
