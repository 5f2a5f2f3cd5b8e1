"""One real sms_spam champion for the monitoring tests: a baseline trained here, calibrated, its reference stored.

Trained once per session (seconds); each test gets its own copy of the home, so traffic never leaks between tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot, encode_labels, split_frame, write_snapshot
from harmguard.evaluation.evaluate import calibrate
from harmguard.evaluation.frozen import ScoreCache
from harmguard.models.baseline import train_baseline
from harmguard.monitoring.reference import write_score_reference
from harmguard.policy import load_policy
from harmguard.registry import move_alias, register_version
from harmguard.registry.models import publish_model
from harmguard.settings import Settings
from harmguard.storage import LocalStore
from tests.conftest import mirror_dir


@pytest.fixture(scope="session")
def spam_champion(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """sms_spam/1: a baseline on 1,500 train rows, thresholds calibrated on validation, reference written, champion.

    Its MLflow database is its own: the session's shared one is shared by policy name, and other tests register
    `sms_spam` there and check MLflow's aliases against their own registry.
    """
    from harmguard.registry import tracking

    base = tmp_path_factory.mktemp("monitoring-base")
    mlflow_uri = f"sqlite:///{base / 'mlflow.db'}"
    tracking.mlflow_client(mlflow_uri)
    home = base / "home"
    settings = Settings(home=str(home), cache=base / "cache", data_mirror=mirror_dir(), mlflow_tracking_uri=mlflow_uri)
    store = LocalStore(home)
    policy = load_policy("sms_spam")
    snap = build_snapshot(load_dataset("sms_spam", settings), policy)
    info = write_snapshot(store, snap, policy=policy, source="sms_spam")
    train = split_frame(snap, "train").head(1500)
    model = train_baseline(train["text"].tolist(), encode_labels(train, policy), policy)
    export = base / "export"
    model.save(export)
    digest = publish_model(store, export)
    # as the evaluate step does: calibration scores the validation split through the score cache
    doc, _ = calibrate(model, snap, policy, ScoreCache(store).scorer(model, digest))
    thresholds = doc["thresholds"]
    write_score_reference(
        store, policy, model_dir=export, model_digest=digest, thresholds=thresholds, data_version=info.data_version
    )
    record = register_version(
        store, settings, policy="sms_spam", model_digest=digest, thresholds=thresholds, blessing={"blessed": True},
        metrics={}, lineage={"data_version": info.data_version}, run_id="monitoring-tests", mlflow_run_id=None,
        family="baseline", by="test",
    )  # fmt: skip
    move_alias(
        store, settings, policy="sms_spam", alias="champion", to_version=record.version, expected_version=None,
        by="test", reason="monitoring tests",
    )  # fmt: skip
    return {
        "home": home,
        "mlflow_uri": mlflow_uri,
        "mirror": mirror_dir(),
        "policy": policy,
        "snapshot": snap,
        "model": model,
        "export": export,
        "digest": digest,
        "data_version": info.data_version,
        "thresholds": thresholds,
        "record": record,
    }


@pytest.fixture
def champion(spam_champion: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The session's champion in a home of this test's own (a copy)."""
    home = tmp_path / "home"
    shutil.copytree(spam_champion["home"], home)
    settings = Settings(
        home=str(home), cache=tmp_path / "cache", data_mirror=spam_champion["mirror"],
        mlflow_tracking_uri=spam_champion["mlflow_uri"],
    )  # fmt: skip
    return spam_champion | {"home": home, "store": LocalStore(home), "settings": settings}


@pytest.fixture(scope="session")
def davidson_texts(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """800 tweets from davidson2017: content an SMS spam model was never meant for."""
    tmp = tmp_path_factory.mktemp("davidson")
    settings = Settings(home=str(tmp), cache=tmp / "cache", data_mirror=mirror_dir(), mlflow_tracking_uri="sqlite://")
    tweets = load_dataset("davidson2017", settings)["tweet"]
    return tweets.sample(800, random_state=0).astype(str).tolist()
