"""The training pipeline's components in the image, as Kubeflow runs them: ``kfp.local.DockerRunner`` starts every
step in a container of the image (user 1000, no network), from the pipeline spec ``harmguard compile`` stamps with
the image. The dataset mirror is mounted read-only and ``HARMGUARD_HOME`` is a mounted folder, at the same path as
here, so what the steps recorded is checked from this side: a blessed, registered challenger with the image's lineage.

The policy is davidson2017 on a 3000-row sample, with its value floors left out: a sample that small cannot reach
the full data's floors (weighted F1 0.87, HateCheck functionalities...), and the model's quality is not what this
tests (tests/runners/test_pipeline_local.py does that). Every step, evaluation set and evasion check still runs.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker.types import Mount
from kfp import local
from kfp.local import pipeline_orchestrator

from harmguard.digests import model_digest, sha256_file
from harmguard.k8s.cluster import with_image
from harmguard.pipelines.training import training_pipeline
from harmguard.policy import read_policy_bytes
from harmguard.registry import get_version, read_alias, read_audit
from harmguard.registry.runs import new_run_id
from harmguard.runners import kfp_local
from harmguard.runners.local import summarize
from harmguard.storage import open_store
from tests.conftest import ROOT, mirror_dir

pytestmark = pytest.mark.container

POLICY = "davidson2017"
SAMPLE = 3000  # rows: enough for the gate to bless (the steps are what is tested, not the model's quality)
USER = 1000  # the image's user (Dockerfile: USER 1000:1000)
MIRROR_IN_CONTAINER = "/mirror/datasets"


def sample_policy(folder: Path) -> Path:
    """davidson2017 without value floors (its change thresholds are skipped on a first run): a sample can pass."""
    doc = yaml.safe_load(read_policy_bytes(POLICY)[0])
    doc["gate"]["thresholds"] = [t for t in doc["gate"]["thresholds"] if "change" in t]
    path = folder / f"{POLICY}-sample.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _writable_by_the_image_user(path: Path) -> None:
    if os.geteuid() == 0:
        os.chown(path, USER, USER)
    else:  # not root: the container user cannot be given the folder, only the right to write in it
        path.chmod(0o777)


@pytest.fixture
def trained(image: str, image_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """One training run in the image; its summary, with the home and the log."""
    home, inputs = tmp_path / "home", tmp_path / "inputs"
    inputs.mkdir()
    policy = sample_policy(inputs)
    run_id = new_run_id(POLICY)
    pipeline_root = home / "runs" / run_id / "kfp"
    pipeline_root.mkdir(parents=True)
    for p in (home, home / "runs", home / "runs" / run_id, pipeline_root):
        _writable_by_the_image_user(p)
    runner = local.DockerRunner(
        mounts=[
            Mount(target=str(home), source=str(home), type="bind"),
            Mount(target=str(inputs), source=str(inputs), type="bind", read_only=True),
            Mount(target=MIRROR_IN_CONTAINER, source=str(mirror_dir()), type="bind", read_only=True),
        ],
        # What the cluster's ConfigMap gives every step (the image sets the rest: cache, telemetry off).
        environment={
            "HARMGUARD_HOME": str(home),
            "HARMGUARD_DATA_MIRROR": MIRROR_IN_CONTAINER,
            "HARMGUARD_IMAGE": image,
        },
        network_mode="none",  # the mirror replaces the network, as in CI
        shm_size="512m",
    )
    arguments = {
        "policy": str(policy),
        "data_uri": "",
        "columns": "",
        "family": "baseline",
        "train_config": "",
        "sample": SAMPLE,
        "seed": 0,
        "run_id": run_id,
        "started_by": "test-container",
        "labels_watermark": -1,
        "labels_until": "",
    }
    log = tmp_path / "pipeline.log"
    error = None
    local.init(runner=runner, pipeline_root=str(pipeline_root))
    try:
        with open(log, "w") as sink, kfp_local.control_flow_fix(), contextlib.redirect_stdout(sink):
            pipeline_orchestrator.run_local_pipeline(
                pipeline_spec=with_image(training_pipeline.pipeline_spec, image), arguments=arguments
            )
    except RuntimeError as e:
        error = str(e)
    finally:
        local.init(runner=local.SubprocessRunner(use_venv=False))  # no later test inherits the Docker runner
    summary = summarize(open_store(str(home)), run_id, POLICY, error=error, steps={})
    return {**summary, "home": home, "log_tail": log.read_text()[-4000:]}


def test_the_training_pipeline_runs_in_the_image_and_registers_a_blessed_challenger(
    trained: dict[str, Any], image: str, image_config: dict[str, Any]
):
    assert trained["ok"], trained["error"] + "\n" + trained["log_tail"]
    assert trained["blessed"] and trained["version"] == f"{POLICY}/1", trained["reasons"]
    assert trained["rows"] and trained["metrics"]["reference"]["test"]["macro_f1"] > 0.3
    home: Path = trained["home"]
    store = open_store(str(home))
    challenger, _ = read_alias(store, POLICY, "challenger")
    assert challenger is not None and challenger.version == trained["version"]
    digest = trained["model_digest"]
    assert challenger.model_digest == digest == model_digest(home / "models" / digest)  # intact, from this side
    events = [e["event"] for e in read_audit(store, POLICY)]
    assert "bless" in events and "register" in events

    # Written inside the containers, as the image's user, at the paths recorded.
    assert (home / "models" / digest).stat().st_uid == USER
    assert (home / "mlflow.db").is_file() and (home / "mlflow.db").stat().st_uid == USER
    report = Path(trained["report"])
    assert report.is_file() and report.read_text().count("<img") >= 2

    # Lineage names the image, the commit baked into it and its lock file.
    env = dict(e.split("=", 1) for e in image_config["Config"]["Env"])
    lineage = get_version(store, trained["version"]).lineage
    assert lineage["image"] == image
    assert lineage["git_commit"] == env["HARMGUARD_GIT_COMMIT"] != "unknown"
    assert lineage["lock_digest"] == sha256_file(ROOT / "requirements.prod.lock")  # the lock the image installed
    assert (
        json.loads((home / "runs" / trained["run_id"] / "registration.json").read_text())["version"] == "davidson2017/1"
    )
