"""Ray Serve loads a model published to a gs:// home (fake-gcs-server), verifies its digest, and answers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import ray
import requests
from ray import serve

from harmguard.digests import model_digest, thresholds_version
from harmguard.models.decide import decide
from harmguard.models.loading import load_model
from harmguard.serving.config import ServeArgs, UserConfig
from harmguard.serving.local import start_app
from harmguard.storage.gcs import GCSStore, make_client
from tests.support.gcs_emulator import fake_gcs_server


def test_serve_loads_a_model_from_gcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror: Path) -> None:
    from harmguard.data.datasets import load_dataset
    from harmguard.data.snapshot import build_snapshot, encode_labels, split_frame
    from harmguard.models.baseline import train_baseline
    from harmguard.policy import load_policy
    from harmguard.settings import Settings

    settings = Settings(
        home=str(tmp_path), cache=tmp_path / "cache", data_mirror=mirror, mlflow_tracking_uri="sqlite://"
    )
    policy = load_policy("sms_spam")
    train = split_frame(build_snapshot(load_dataset("sms_spam", settings), policy), "train").head(1500)
    local = tmp_path / "export"
    train_baseline(train["text"].tolist(), encode_labels(train, policy), policy).save(local)
    digest = model_digest(local)
    thresholds = {"spam": 0.5}
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "see you at lunch?"]
    expected = decide(load_model(local), thresholds, texts)

    with fake_gcs_server(tmp_path / "gcs") as url:
        # Set before Ray starts so the Serve replicas inherit the emulator endpoint and the download cache.
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        monkeypatch.setenv("HARMGUARD_CACHE", str(tmp_path / "replica-cache"))
        make_client().create_bucket("serve-test")
        store = GCSStore("gs://serve-test/home", cache_dir=tmp_path / "store-cache")
        assert store.put_tree_create_only(local, f"models/{digest}")
        cfg = UserConfig(
            policy="sms_spam", version="sms_spam/1", model_uri=store.uri_for(f"models/{digest}"), model_digest=digest,
            thresholds=thresholds, thresholds_version=thresholds_version(thresholds),
        )  # fmt: skip
        assert cfg.model_uri.startswith("gs://")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        try:
            base = start_app(ServeArgs(user_config=cfg), port=port, app_name="gcs")
            r = requests.post(f"{base}/v1/classify", json={"texts": texts}, timeout=60)
        finally:
            serve.shutdown()
            ray.shutdown()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "sms_spam/1"
    assert [res["decisions"]["spam"] for res in body["results"]] == [bool(d[0]) for d in expected.decisions]
