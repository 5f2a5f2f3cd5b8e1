"""The gate fails closed: a champion that cannot be compared rejects, and a tampered score cache is never trusted."""

from __future__ import annotations

import io

import numpy as np
import pytest

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot
from harmguard.digests import model_digest
from harmguard.evaluation.evaluate import evaluate_against_champion
from harmguard.evaluation.gate import run_gate
from harmguard.policy import load_policy
from harmguard.registry import move_alias, publish_model
from harmguard.storage import LocalStore
from harmguard.training.dispatch import train_model
from tests.promotion.helpers import register


@pytest.fixture
def spam(settings, tmp_path):
    """sms_spam (a stable sample), its policy, a trained challenger published in the test's home."""
    policy = load_policy("sms_spam")
    snap = build_snapshot(load_dataset("sms_spam", settings).head(1500), policy)
    model = train_model(snap, policy)
    model.save(tmp_path / "challenger")
    store = LocalStore(settings.home)
    digest = publish_model(store, tmp_path / "challenger")
    return policy, snap, model, digest, store


def test_a_champion_of_other_categories_fails_every_change_check(spam, settings):
    policy, snap, model, digest, store = spam
    # The champion was registered with thresholds for categories this policy does not have (an edited policy).
    champion = register(store, settings, policy.name, digest, thresholds={"spam": 0.5, "phishing": 0.5})
    move_alias(store, settings, policy=policy.name, alias="champion", to_version=champion.version,
               expected_version=None, by="test", reason="a champion of another category set")  # fmt: skip
    evaluation, paired = evaluate_against_champion(model, digest, snap, policy, settings, store)
    assert evaluation["champion"] is None and "phishing" in evaluation["champion_mismatch"]
    blessing = run_gate(evaluation, policy, model_digest=digest, data_version="d", run_id="r", paired=paired)
    changes = [c for c in blessing["checks"] if c["type"] == "change"]
    assert changes and not any(c["passed"] or c["skipped"] for c in changes)  # never "skipped" as if a first run
    assert not blessing["blessed"]
    assert all("cannot be compared" in r for r in blessing["reasons"])
    assert any("cannot be compared" in n for n in blessing["notes"])


def test_a_tampered_score_file_is_scored_again_not_trusted(spam, settings):
    policy, snap, model, digest, store = spam
    first, _ = evaluate_against_champion(model, digest, snap, policy, settings, store)
    assert first["score_cache"]["misses"] > 0 and first["score_cache"]["rejected"] == 0
    test_digest = first["sets"]["test"]["digest"]
    path = store.path(f"scores/{digest}/{test_digest}.npy")
    proba = np.load(path)
    forged = io.BytesIO()
    np.save(forged, proba[:, ::-1], allow_pickle=False)  # same shape, every decision flipped
    path.chmod(0o644)
    path.write_bytes(forged.getvalue())
    again, _ = evaluate_against_champion(model, digest, snap, policy, settings, store)
    assert again["score_cache"]["rejected"] == 1
    assert again["reference"]["test"] == first["reference"]["test"]  # computed from the model, not the file
    assert again["operating"]["test"] == first["operating"]["test"]
    # a cache file without its record (a writer that crashed between the two) is not trusted either
    store.path(f"scores/{digest}/{test_digest}.json").unlink()
    third, _ = evaluate_against_champion(model, digest, snap, policy, settings, store)
    assert third["score_cache"]["rejected"] == 1 and third["reference"]["test"] == first["reference"]["test"]
    assert model_digest(store.path(f"models/{digest}")) == digest
