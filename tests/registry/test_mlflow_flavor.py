"""MLflow loads what harmguard registers: an MLmodel per version, outside the model's digest, loading verified.

Versions are registered, approved and promoted through the library's real local flow (tests/promotion/helpers.py),
against a real SQLite MLflow; MLflow then loads ``models:/<policy>@champion`` through its own API.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from harmguard.digests import model_digest, tree_manifest
from harmguard.models.decide import decide
from harmguard.models.loading import ModelDigestMismatch, load_model
from harmguard.promotion.approval import approve_version
from harmguard.promotion.promote import promote_version
from harmguard.registry import VersionRecord, mlflow_version_of, sync_mlflow, tracking
from harmguard.registry.mlflow_model import LOADER_MODULE, mlflow_model_files, mlflow_model_key
from harmguard.registry.models import publish_model
from harmguard.settings import Settings
from harmguard.storage import LocalStore, StoreError
from tests.conftest import mirror_dir
from tests.promotion.helpers import GOLDEN, golden_of, register, train_spam_model

TEXTS = [
    "WINNER!! You have been selected to receive a £900 prize reward! Call 09061701461 to claim",
    "are we still on for dinner tonight?",
    "Free entry in 2 a wkly comp to win FA Cup final tkts, text FA to 87121",
    "",
    "ok " * 400,
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("model")
    return train_spam_model(base / "export", base / "cache", mirror_dir())


@pytest.fixture(scope="module")
def golden(model_dir: Path) -> dict[str, Any]:
    measured = golden_of(model_dir)
    assert measured is not None
    return measured


@pytest.fixture
def settings(tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # mlflow.pyfunc resolves models:/ URIs with the process's tracking URI: the environment's, as a user's would
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return Settings(home=str(tmp_path / "home"), cache=tmp_path / "cache", mlflow_tracking_uri=mlflow_uri)


@pytest.fixture
def policy() -> str:
    return f"spam-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def champion(store: LocalStore, settings: Settings, policy: str, model_dir: Path, golden: dict) -> VersionRecord:
    """A version registered, approved by a second person and promoted, as the local flow does it."""
    digest = publish_model(store, model_dir)
    record = register(store, settings, policy, digest, golden=golden)
    approve_version(store, record.version, by="reviewer", principal="test:reviewer", reason="read the report")
    promote_version(store, settings, record.version, by="releaser", run_id=f"p-{uuid.uuid4().hex[:6]}",
                    golden_path=GOLDEN)  # fmt: skip
    return record


def frame(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text": texts})


def test_champion_loads_through_mlflow_and_scores_like_decide(champion, store, settings, policy, model_dir):
    before = tree_manifest(model_dir)
    loaded = mlflow.pyfunc.load_model(f"models:/{policy}@champion")
    out = loaded.predict(frame(TEXTS))

    expected = decide(load_model(model_dir), champion.thresholds, TEXTS)
    assert list(out.columns) == ["spam_score", "spam_decision", "flagged"]
    assert out["spam_score"].dtype == np.float64 and out["spam_decision"].dtype == bool
    np.testing.assert_allclose(out["spam_score"].to_numpy(), expected.scores[:, 0], rtol=0, atol=1e-9)
    assert out["spam_decision"].tolist() == expected.decisions[:, 0].tolist()
    assert out["flagged"].tolist() == expected.flagged.tolist()
    assert out["spam_decision"].tolist()[:3] == [True, False, True]  # the scores mean something

    # registration left the exported model exactly as it was: same files, same digest, no MLmodel inside
    published = store.path(f"models/{champion.model_digest}")
    assert model_digest(published) == champion.model_digest == model_digest(model_dir)
    assert tree_manifest(published) == before and not (published / "MLmodel").exists()

    client = tracking.mlflow_client(settings.mlflow_tracking_uri)
    mv = client.get_model_version_by_alias(policy, "champion")
    assert str(mv.version) == mlflow_version_of(store, champion.version)
    assert mv.source == store.uri_for(mlflow_model_key(policy, champion.n))
    assert mv.tags["model_uri"] == champion.model_uri and mv.tags["model_digest"] == champion.model_digest


def test_the_mlmodel_names_harmguards_loader_and_signature_and_is_deterministic(champion, store, settings, policy):
    folder = store.path(mlflow_model_key(policy, champion.n))
    assert sorted(p.name for p in folder.iterdir()) == ["MLmodel", "harmguard.json"]  # nothing pickled beside it
    doc = yaml.safe_load((folder / "MLmodel").read_text())
    assert doc["flavors"] == {"python_function": {"loader_module": LOADER_MODULE, "data": "harmguard.json"}}
    assert not {"utc_time_created", "model_uuid", "mlflow_version", "run_id", "model_id"} & set(doc)
    inputs = json.loads(doc["signature"]["inputs"])
    outputs = {c["name"]: c["type"] for c in json.loads(doc["signature"]["outputs"])}
    assert inputs == [{"type": "string", "name": "text", "required": True}]
    assert outputs == {"spam_score": "double", "spam_decision": "boolean", "flagged": "boolean"}
    assert doc["metadata"]["model_digest"] == champion.model_digest

    # the same version gives the same bytes; mirroring again keeps the folder as it is
    on_disk = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert mlflow_model_files(store, champion) == on_disk
    assert sync_mlflow(store, settings, policy) == []
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == on_disk

    # MLflow reads it as a pyfunc model with that signature
    info = mlflow.models.get_model_info(f"models:/{policy}@champion")
    assert info.flavors["python_function"]["loader_module"] == LOADER_MODULE
    assert [c.name for c in info.signature.inputs.inputs] == ["text"]


def test_a_tampered_model_file_makes_the_mlflow_load_fail(champion, store, policy):
    weights = next(p for p in sorted(store.path(f"models/{champion.model_digest}").rglob("*")) if p.suffix == ".npy")
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelDigestMismatch, match="not the expected"):
        mlflow.pyfunc.load_model(f"models:/{policy}@champion")


def test_an_mlflow_folder_naming_another_model_is_refused(champion, store, settings, policy, tmp_path):
    # Someone who can write the MLflow side points the version at another published model with its own digest.
    other = tmp_path / "other"
    other.mkdir()
    for p in store.path(f"models/{champion.model_digest}").iterdir():
        (other / p.name).write_bytes(p.read_bytes())
    meta = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**meta, "note": "swapped"}))
    swapped = publish_model(store, other)
    pointer = store.path(f"{mlflow_model_key(policy, champion.n)}/harmguard.json")
    doc = json.loads(pointer.read_text())
    pointer.write_text(json.dumps({**doc, "model_digest": swapped, "model_uri": store.uri_for(f"models/{swapped}")}))
    with pytest.raises(ModelDigestMismatch, match="registry of record"):
        mlflow.pyfunc.load_model(f"models:/{policy}@champion")
    # and mirroring again does not paper over the change
    with pytest.raises(StoreError, match="was modified"):
        from harmguard.registry.mlflow_model import write_mlflow_model

        write_mlflow_model(store, champion)


def test_bad_input_is_refused(champion, policy):
    from mlflow.exceptions import MlflowException

    loaded = mlflow.pyfunc.load_model(f"models:/{policy}@champion")
    with pytest.raises(MlflowException, match="missing inputs \\['text'\\]"):  # the signature, enforced by MLflow
        loaded.predict(pd.DataFrame({"body": ["some words"]}))
    raw = loaded._model_impl  # harmguard's own checks, below MLflow's: name the row, never echo the text
    with pytest.raises(TypeError, match="row 1") as e:
        raw.predict(["secret words", None])
    with pytest.raises(ValueError, match="needs a 'text' column") as e2:
        raw.predict(pd.DataFrame({"body": ["secret words"]}))
    assert "secret words" not in str(e.value) + str(e2.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlflow_models_predict_scores_a_json_request_like_decide(champion, policy, model_dir, tmp_path):
    # MLflow's scoring path (JSON parsing, signature enforcement, serialization) in this process: what `mlflow
    # models serve` runs per request, without starting a server
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}))
    answer = tmp_path / "answer.json"
    mlflow.models.predict(f"models:/{policy}@champion", input_path=str(request), output_path=str(answer),
                          content_type="json", env_manager="local")  # fmt: skip
    predictions = json.loads(answer.read_text())["predictions"]
    expected = decide(load_model(model_dir), champion.thresholds, TEXTS)
    assert [p["spam_decision"] for p in predictions] == expected.decisions[:, 0].tolist()
    np.testing.assert_allclose([p["spam_score"] for p in predictions], expected.scores[:, 0], rtol=0, atol=1e-9)


@pytest.mark.slow  # starts `mlflow models serve` (uvicorn) in a subprocess: 20-40 s on 2 cores
def test_mlflow_models_serve_answers_with_the_champion(champion, settings, policy, model_dir, tmp_path):
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, "MLFLOW_ENABLE_TELEMETRY": "false"}
    # MLflow starts the server as `bash -c "exec uvicorn ..."`: the environment's scripts must be on PATH, as they
    # are in an activated virtualenv
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    mlflow_cli = [sys.executable, "-m", "mlflow"]
    args = ["models", "serve", "-m", f"models:/{policy}@champion", "--env-manager", "local", "-p", str(port)]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([*mlflow_cli, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping within 120 s"
            time.sleep(0.5)
        body = json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS[:3]]}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            predictions = json.loads(r.read())["predictions"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    expected = decide(load_model(model_dir), champion.thresholds, TEXTS[:3])
    assert [p["spam_decision"] for p in predictions] == expected.decisions[:, 0].tolist()
    np.testing.assert_allclose([p["spam_score"] for p in predictions], expected.scores[:, 0], rtol=0, atol=1e-9)
