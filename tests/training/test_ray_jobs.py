"""The remote path of `harmguard run --family transformer --ray-address http://HOST:8265`, against a real Ray head.

A Ray head started with `ray start` (dashboard and Jobs API on loopback) stands in for the remote cluster, and
fake-gcs-server for the gs:// work folder that the driver and the job share: the driver uploads the loop config,
the Jobs API runs `ray/train_entry.py` with Ray Train, the job uploads the best checkpoint, the driver downloads it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot
from harmguard.policy import load_policy
from harmguard.storage.gcs import make_client
from harmguard.training.dispatch import train_transformer
from harmguard.training.ray_jobs import RemoteTrainingError
from tests.support.gcs_emulator import fake_gcs_server, free_port

pytestmark = pytest.mark.slow  # a second Ray cluster with its dashboard: ~1-2 min (make test-slow)

BUCKET = "hg-remote"
_MARKER = "HARMGUARD_TEST_RAY_INSTANCE"


@pytest.fixture(scope="module")
def remote_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server plus a Ray head with the Jobs API; yields the head's http:// address."""
    with fake_gcs_server(tmp_path_factory.mktemp("gcs")) as gcs_url, pytest.MonkeyPatch.context() as env:
        env.setenv("STORAGE_EMULATOR_HOST", gcs_url)  # the driver's side; the head inherits it below
        # Ray's token authentication, as a real cluster has it: the Jobs client sends the token from the environment.
        env.setenv("RAY_AUTH_MODE", "token")
        env.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
        make_client().create_bucket(BUCKET)
        port, dashboard = free_port(), free_port()
        bin_dir = str(Path(sys.executable).parent)
        # Its own temp dir: its address file stays out of /tmp/ray, so no other ray.init() on this machine joins it,
        # and its processes are told apart from any other Ray instance's when it is stopped.
        temp_dir = tempfile.mkdtemp(prefix="hg-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        head_env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",  # the job's `python` is this environment's
            "RAY_USAGE_STATS_ENABLED": "0",
            "TOKENIZERS_PARALLELISM": "false",
            _MARKER: temp_dir,  # inherited by every process of this instance: how _stop_instance finds them
            "HF_HUB_OFFLINE": "1",  # a missing backbone fails at once instead of retrying a download
        }
        ray = [f"{bin_dir}/ray"]
        subprocess.run(
            [*ray, "start", "--head", f"--temp-dir={temp_dir}", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats",
             # free ports for every agent: another Ray instance on this machine must not collide with this one
             f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
             f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
             f"--ray-client-server-port={free_port()}"],
            check=True, env=head_env, capture_output=True, timeout=180,
        )  # fmt: skip
        try:
            yield f"http://127.0.0.1:{dashboard}"
        finally:
            _stop_instance(temp_dir)  # not `ray stop`: that stops every Ray instance on the machine


def _stop_instance(temp_dir: str) -> None:
    """Stop the processes of the Ray instance started with ``temp_dir`` (SIGTERM, then SIGKILL)."""
    marker = f"{_MARKER}={temp_dir}".encode()

    def belongs(proc: Path) -> bool:
        # Ray renames its processes (ray::DashboardAgent, ...), so not by command line: by the marker in the
        # environment, or by a log file open under this instance's temp dir (the agents keep theirs open).
        if marker in (proc / "environ").read_bytes():
            return True
        return any(os.readlink(fd).startswith(temp_dir) for fd in (proc / "fd").iterdir())

    def pids() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and int(entry.name) != os.getpid() and belongs(entry):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 15
        while pids() and time.monotonic() < deadline:
            time.sleep(0.2)
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_training_runs_as_a_ray_job_with_gcs_storage(remote_cluster, settings, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from harmguard.models.transformer import resolve_backbone

    backbone = tmp_path / "tiny-bert"  # the "cluster" is this machine, so a local path is visible to it
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("all-MiniLM-L6-v2"))
    BertModel(
        BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, max_position_embeddings=128)
    ).save_pretrained(backbone)  # fmt: skip
    tokenizer.save_pretrained(backbone)
    policy = load_policy("sms_spam")
    frame = build_snapshot(load_dataset("sms_spam", settings), policy, sample=1000)
    overrides = {"backbone": str(backbone), "epochs": 2, "num_workers": 1, "batch_size": 16, "max_length": 32,
                 "learning_rate": 2e-3, "warmup_ratio": 0.0, "early_stopping_patience": 2}  # fmt: skip

    model = train_transformer(
        frame, policy, overrides=overrides, workdir=f"gs://{BUCKET}/runs/r1/train", ray_address=remote_cluster
    )
    assert [h["epoch"] for h in model.train_info["history"]] == [1, 2]
    assert model.train_info["ray_address"] == remote_cluster
    names = {b.name for b in make_client().list_blobs(BUCKET)}
    assert "runs/r1/train/input/loop_config.json" in names  # what the driver sent
    assert "runs/r1/train/result/model.safetensors" in names  # what the job sent back
    assert any(n.startswith("runs/r1/train/train/checkpoint_") for n in names)  # Ray Train's own checkpoints
    proba = model.predict_proba(["WINNER!! claim your prize", "see you at lunch"])
    assert proba.shape == (2, 2) and np.allclose(proba.sum(1), 1.0, atol=1e-5)

    # A job that fails on the cluster surfaces its reason and the tail of its logs.
    with pytest.raises(RemoteTrainingError, match=r"FAILED") as failed:
        train_transformer(
            frame,
            policy,
            overrides={**overrides, "backbone": str(tmp_path / "no-such-backbone")},
            workdir=f"gs://{BUCKET}/runs/r2/train",
            ray_address=remote_cluster,
        )
    assert "no-such-backbone" in str(failed.value)
