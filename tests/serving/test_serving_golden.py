"""The committed davidson2017 golden texts over HTTP on a real davidson2017 model (issue #7's end-to-end test).

The model is the shipped policy's baseline trained on the full train split; thresholds are calibrated on the
validation split as the pipeline does. The server must give every golden text the decisions the same model gives
in-process, so its agreement with the golden labels equals the agreement measured in-process.
"""

from __future__ import annotations

import socket

import pytest
import ray
import requests
from ray import serve

from harmguard.digests import model_digest
from harmguard.promotion.golden import golden_bytes, measure_golden, parse_golden
from harmguard.serving.config import ServeArgs, UserConfig
from harmguard.serving.local import start_app


@pytest.fixture(scope="module")
def davidson_model(tmp_path_factory):
    from harmguard.data.datasets import load_dataset
    from harmguard.data.snapshot import build_snapshot
    from harmguard.evaluation.evaluate import evaluate_challenger
    from harmguard.policy import load_policy
    from harmguard.settings import Settings
    from harmguard.training.dispatch import train_model
    from tests.conftest import mirror_dir

    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=str(home), cache=home / "cache", data_mirror=mirror_dir(), mlflow_tracking_uri="sqlite://")
    policy = load_policy("davidson2017")
    snap = build_snapshot(load_dataset("davidson2017", settings), policy)
    model = train_model(snap, policy)
    evaluation, _, _ = evaluate_challenger(model, snap, policy)
    tmp = home / "export"
    model.save(tmp)
    folder = home / "models" / model_digest(tmp)
    folder.parent.mkdir()
    tmp.rename(folder)
    return model, folder, evaluation


def test_golden_texts_get_the_measured_decisions_over_http(davidson_model):
    model, folder, evaluation = davidson_model
    thresholds, tv = evaluation["thresholds"], evaluation["thresholds_version"]
    measured = measure_golden(model, "davidson2017", thresholds)
    assert measured is not None and measured["rows"] >= 50
    rows = parse_golden(golden_bytes("davidson2017") or b"", model.categories)

    cfg = UserConfig.model_validate(
        {"policy": "davidson2017", "version": "davidson2017/1", "model_uri": str(folder),
         "model_digest": model_digest(folder), "thresholds": thresholds, "thresholds_version": tv}
    )  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        url = start_app(ServeArgs(user_config=cfg), port=port, app_name="golden")
        r = requests.post(f"{url}/v1/classify", json={"texts": [row["text"] for row in rows]}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
    finally:
        serve.shutdown()
        ray.shutdown()

    assert body["model_version"] == "davidson2017/1" and body["thresholds_version"] == tv
    served = [{c for c, hit in res["decisions"].items() if hit} for res in body["results"]]
    agreement = sum(d == set(row["labels"]) for d, row in zip(served, rows, strict=True)) / len(rows)
    assert agreement == pytest.approx(measured["agreement"])
    assert all(res["flagged"] == bool(d) for res, d in zip(body["results"], served, strict=True))
    print(f"davidson2017 golden agreement over HTTP: {agreement:.3f} ({len(rows)} texts)")
