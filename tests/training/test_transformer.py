"""Transformer fine-tuning through the real Ray Train (2 CPU workers, a tiny BERT built here) and the plain loop.

The backbone is a randomly initialized 2-layer BERT (hidden size 32) with the packaged MiniLM tokenizer: no
pretrained weights are downloaded, and a few hundred steps on a slice of sms_spam are enough to see it learn.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot
from harmguard.models.base import category_scores, read_model_meta
from harmguard.models.loading import load_model
from harmguard.perturbations import long_prefix
from harmguard.policy import load_policy
from harmguard.serving.config import Limits, ServeArgs
from harmguard.storage.gcs import make_client
from harmguard.training.dispatch import train_transformer
from harmguard.training.ray_train import cpus_per_worker, epoch_batches, init_ray
from tests.support.gcs_emulator import fake_gcs_server
from tests.support.serving import publish_export, served_app, user_config

TEXTS = ["WINNER!! Claim your free prize now, call 09061701461", "Are we still meeting for lunch at 1?"]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    init_ray(num_cpus=2)  # the local cluster a pipeline step starts
    yield
    ray.shutdown()


@pytest.fixture
def spam_frame(settings):
    policy = load_policy("sms_spam")
    return policy, build_snapshot(load_dataset("sms_spam", settings), policy, sample=2000)


def _overrides(backbone: Path, **extra) -> dict:
    return {
        "backbone": str(backbone),
        "batch_size": 16,
        "epochs": 3,
        "learning_rate": 2e-3,
        "warmup_ratio": 0.0,
        "max_length": 48,
        "num_workers": 2,
        "early_stopping_patience": 3,
        **extra,
    }


def _check_export(model, tmp_path: Path) -> None:
    out = tmp_path / "export"
    model.save(out)
    assert read_model_meta(out)["family"] == "transformer"
    assert {"model.safetensors", "config.json", "labels.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.pt")) and not list(out.glob("*.bin"))  # no pickle in the export
    loaded = load_model(out)
    proba = loaded.predict_proba(TEXTS)
    assert proba.shape == (2, len(loaded.classes)) and np.allclose(proba.sum(1), 1.0, atol=1e-5)
    assert np.allclose(proba, model.predict_proba(TEXTS), atol=1e-5)  # the export scores like the trained model
    assert category_scores(loaded, proba).shape == (2, 1) and loaded.categories == ["spam"]


def test_ray_train_two_workers_learns_and_exports(tiny_backbone, ray_cluster, spam_frame, tmp_path):
    policy, frame = spam_frame
    model = train_transformer(frame, policy, overrides=_overrides(tiny_backbone), workdir=str(tmp_path / "ray"))
    history = model.train_info["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["val_loss"] < history[0]["val_loss"]  # it learns
    assert model.train_info["best"]["val_macro_f1"] == max(h["val_macro_f1"] for h in history)
    assert model.train_info["resumes"] == []
    assert {h["torch_threads"] for h in history} == {1}  # two workers share the 2-CPU cluster
    _check_export(model, tmp_path)


def test_checkpoints_go_to_gcs_through_pyarrow(tiny_backbone, ray_cluster, spam_frame, tmp_path):
    policy, frame = spam_frame
    with fake_gcs_server(tmp_path / "gcs") as url, pytest.MonkeyPatch.context() as env:
        env.setenv("STORAGE_EMULATOR_HOST", url)
        client = make_client()
        client.create_bucket("hg-train")
        model = train_transformer(
            frame,
            policy,
            overrides=_overrides(tiny_backbone, epochs=1, num_workers=1),
            workdir="gs://hg-train/runs/r1/ray",
        )
        names = [b.name for b in client.list_blobs("hg-train")]
    # Ray Train wrote the checkpoint (weights and the loop's state) into the bucket, and training finished from it.
    assert any(n.startswith("runs/r1/ray/train/checkpoint_") and n.endswith("/model.safetensors") for n in names)
    assert any(n.endswith("/state.json") for n in names)
    assert [h["epoch"] for h in model.train_info["history"]] == [1]
    # one worker on the 2-CPU cluster gets both CPUs (Ray's default would have been one, and torch one thread)
    assert model.train_info["history"][0]["torch_threads"] == 2


def _train_worker_pids() -> list[int]:
    """PIDs of Ray Train worker processes descending from this test process (its own local cluster)."""
    parents: dict[int, int] = {}
    titles: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            titles[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return sorted(p for p, t in titles.items() if "RayTrainWorker" in t and descends(p))


def test_killed_worker_resumes_from_checkpoint(tiny_backbone, ray_cluster, spam_frame, tmp_path):
    policy, frame = spam_frame
    storage = tmp_path / "ray"
    killed: list[int] = []

    def kill_one_worker_after_a_registered_checkpoint() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            # Ray's controller writes this snapshot once it has registered a checkpoint (a checkpoint folder alone
            # may not be registered yet: reports reach the controller when it next polls the workers).
            if (storage / "train" / "checkpoint_manager_snapshot.json").exists():
                pids = _train_worker_pids()
                if pids:
                    os.kill(pids[-1], signal.SIGKILL)  # from outside, mid-run
                    killed.append(pids[-1])
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one_worker_after_a_registered_checkpoint, daemon=True)
    killer.start()
    model = train_transformer(
        frame,
        policy,
        overrides=_overrides(tiny_backbone, epochs=2, checkpoint_every_steps=5, max_failures=2),
        workdir=str(storage),
    )
    killer.join(timeout=5)
    assert killed, "no training worker was killed"
    resumes = model.train_info["resumes"]
    assert resumes and resumes[0]["step"] > 0  # restarted from a checkpoint, not from scratch
    assert [h["epoch"] for h in model.train_info["history"]] == [1, 2]
    _check_export(model, tmp_path)


def test_plain_loop_world_size_one_exports_the_same_kind(tiny_backbone, spam_frame, tmp_path):
    policy, frame = spam_frame
    model = train_transformer(
        frame, policy, overrides=_overrides(tiny_backbone, epochs=2), workdir=str(tmp_path / "plain"), use_ray=False
    )
    assert [h["epoch"] for h in model.train_info["history"]] == [1, 2]
    _check_export(model, tmp_path)
    # long texts: spam after 100 harmless words is cut off at max_length when read whole, seen by window
    spam = policy.classes.index("spam")
    hidden = long_prefix(TEXTS[0], np.random.default_rng(0))
    model.spec = model.spec.model_copy(update={"window_words": 0})
    alone, cut = model.predict_proba([TEXTS[0], hidden])[:, spam]
    model.spec = model.spec.model_copy(update={"window_words": 30})
    windowed = model.predict_proba([hidden])[0, spam]
    assert alone > 0.5 and cut < 0.5 < windowed, (alone, cut, windowed)
    _served_long_text_is_flagged(model, hidden, tmp_path)


def _served_long_text_is_flagged(model, hidden: str, tmp_path: Path) -> None:
    """Over HTTP through the real Ray Serve app: spam after 100 harmless words is flagged, read window by window."""
    folder = publish_export(model, tmp_path, tmp_path / "served")
    cfg = user_config("sms_spam", "sms_spam/1", folder, {"spam": 0.5})
    assert len(hidden.split()) > 100 and load_model(folder).spec.window_words == 30  # the windows travel with it
    # the module's Ray Train cluster may still be up: served_app reuses it and leaves it running
    with served_app(ServeArgs(user_config=cfg, limits=Limits()), app_name="long-text") as url:
        r = requests.post(f"{url}/v1/classify", json={"texts": [hidden, TEXTS[1]]}, timeout=60)
        assert r.status_code == 200, r.text
        long_row, plain_row = r.json()["results"]
        assert long_row["decisions"] == {"spam": True} and long_row["flagged"] is True, long_row
        assert plain_row["flagged"] is False, plain_row


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_epoch_batches_shard_evenly_and_bucket_by_length(world_size):
    lengths = np.random.default_rng(0).integers(3, 60, size=203)
    shards = [
        epoch_batches(lengths, rank=r, world_size=world_size, batch_size=8, bucket_batches=4, seed=1, epoch=0)
        for r in range(world_size)
    ]
    assert len({len(s) for s in shards}) == 1  # DDP: every rank runs the same number of steps
    seen = np.concatenate([np.concatenate(s) for s in shards])
    assert len(seen) == len(set(seen.tolist())) == (203 // world_size) * world_size  # disjoint shards
    again = epoch_batches(lengths, rank=0, world_size=world_size, batch_size=8, bucket_batches=4, seed=1, epoch=0)
    assert all((a == b).all() for a, b in zip(again, shards[0], strict=True))  # a resumed epoch replays the order
    spread = np.mean([np.ptp(lengths[b]) for b in shards[0]])
    assert spread < np.ptp(lengths) / 2  # length bucketing keeps padding small


def test_remote_cluster_without_gcs_storage_is_a_clear_error(tmp_path):
    from harmguard.training.ray_jobs import RemoteTrainingError, run_remote_job

    with pytest.raises(RemoteTrainingError, match="needs gs:// storage"):
        run_remote_job({}, address="http://ray-head:8265", workdir=str(tmp_path), name="train")


def test_transformer_options_need_the_transformer_family(hg_env):
    from tests.conftest import run_cli

    proc = run_cli(["run", "--policy", "sms_spam", "--epochs", "1"], hg_env, timeout=120)
    assert proc.returncode == 2 and "need --family transformer" in proc.stderr


@pytest.mark.parametrize(
    ("workers", "nodes", "share"),
    [(1, [2.0], 2), (2, [2.0], 1), (3, [2.0], 1), (2, [8.0, 8.0, 8.0, 8.0], 8), (3, [8.0, 8.0], 4), (1, [], 1)],
)
def test_cpu_workers_get_the_largest_share_that_places_every_one(workers, nodes, share):
    assert cpus_per_worker(workers, nodes) == share


def test_policy_transformer_settings_validate():
    from harmguard.training.ray_train import effective_spec

    spec = effective_spec(load_policy("davidson2017"), {"num_workers": 4, "max_length": 32})
    assert (spec.num_workers, spec.max_length, spec.cpu_max_train_rows) == (4, 32, 2000)
    with pytest.raises(ValueError, match="max_length"):
        effective_spec(load_policy("davidson2017"), {"max_length": 2})
