"""One real sms_spam champion for the monitoring tests: a baseline trained here, calibrated, its reference stored.

Trained once per session (seconds); each test gets its own copy of the home, so traffic never leaks between tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot, encode_labels, split_frame
from harmguard.models.baseline import train_baseline
from harmguard.policy import load_policy
from harmguard.settings import Settings
from harmguard.storage import LocalStore
from tests.conftest import mirror_dir
from tests.support.serving import register_champion


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
    train = split_frame(snap, "train").head(1500)
    model = train_baseline(train["text"].tolist(), encode_labels(train, policy), policy)
    export = base / "export"
    champ = register_champion(store, settings, policy, model, snap, export=export, run_id="monitoring-tests")
    return {
        "home": home,
        "mlflow_uri": mlflow_uri,
        "mirror": mirror_dir(),
        "policy": policy,
        "snapshot": snap,
        "model": model,
        "export": export,
        "digest": champ.digest,
        "data_version": champ.data_version,
        "thresholds": champ.thresholds,
        "record": champ.record,
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
