"""Transformer fine-tuning: one training loop, run by Ray Train workers (``TorchTrainer``) or plainly at world size 1.

``train_loop_per_worker(config)`` is the canonical Ray Train shape: each worker loads the tokenizer once, tokenizes
its data, takes its own shard of length-bucketed batches (padding is dynamic: to the longest text of a batch), wraps
the model with ``prepare_model`` (DDP) and the loader with ``prepare_data_loader``, trains with AdamW, gradient
accumulation and a linear warm-up/decay schedule (bfloat16 autocast on GPU), validates every epoch (loss and macro
F1, gathered over workers) and reports metrics and checkpoints through ``ray.train.report``. A checkpoint holds the
weights (safetensors), optimizer and scheduler state and ``state.json`` (position, per-epoch history, resumes), so
a restarted worker group resumes where the latest checkpoint left off. The plain loop runs the same code without
Ray. Progress lines start with ``PROGRESS_PREFIX`` so the CLI can pick them out of the step's log.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harmguard.data.snapshot import encode_labels, split_frame
from harmguard.identity import counterfactual_copies, shipped_lexicon
from harmguard.models.base import augment_copies
from harmguard.models.transformer import (
    TransformerModel,
    build_classifier,
    load_tokenizer,
    probabilities,
    tokenizer_text,
)
from harmguard.policy import Policy, TransformerSpec
from harmguard.storage.gcs import arrow_filesystem

PROGRESS_PREFIX = "HGPROGRESS "
SCORE_METRIC = "val_macro_f1"
NOT_VALIDATED = -1.0  # score of a mid-epoch checkpoint: never preferred over a validated one


@dataclass
class TrainOutcome:
    """What a finished training run leaves: the best checkpoint (a local folder) and the run's own records."""

    best_checkpoint: Path
    state: dict[str, Any]  # state.json of the latest checkpoint: history, resumes, best, position
    extra: dict[str, Any] = field(default_factory=dict)


def effective_spec(policy: Policy, overrides: dict[str, Any] | None = None) -> TransformerSpec:
    """The policy's transformer settings with ``overrides`` (CLI options) applied and validated."""
    return TransformerSpec.model_validate({**policy.transformer.model_dump(), **(overrides or {})})


def build_loop_config(frame: pd.DataFrame, policy: Policy, spec: TransformerSpec, seed: int) -> dict[str, Any]:
    """The ``train_loop_config``: settings, classes and the train/validation texts and labels of a snapshot."""
    train = split_frame(frame, "train")
    if not spec.use_gpu and spec.cpu_max_train_rows and len(train) > spec.cpu_max_train_rows:
        train = train.sample(n=spec.cpu_max_train_rows, random_state=seed).sort_index().reset_index(drop=True)
    val = split_frame(frame, "validation")
    texts, labels = train["text"].fillna("").tolist(), encode_labels(train, policy).tolist()
    if spec.augment:
        # evasion-rewritten copies (seed `augment_seed`, never the evaluation's), same label; validation untouched
        rows, copies = augment_copies(texts, list(spec.augment), rate=spec.augment_rate, seed=spec.augment_seed)
        texts, labels = texts + copies, labels + [labels[i] for i in rows]
    if spec.counterfactual_rate > 0:
        # copies with the identity groups swapped, same label: validation stays as it is (it judges the real rows)
        rows, copies = counterfactual_copies(
            texts, shipped_lexicon(), rate=spec.counterfactual_rate, seed=spec.counterfactual_seed
        )
        texts, labels = texts + copies, labels + [labels[i] for i in rows]
    return {
        "spec": spec.model_dump(mode="json"),
        "seed": seed,
        "label_mode": policy.label_mode,
        "classes": policy.classes,
        "train_texts": texts,
        "train_labels": labels,
        "val_texts": val["text"].fillna("").tolist(),
        "val_labels": encode_labels(val, policy).tolist(),
    }


def format_progress(doc: dict[str, Any]) -> str:
    """One human line for a progress record."""
    if doc.get("event") == "resumed":
        return f"resumed from checkpoint at step {doc['step']} (epoch {doc['epoch'] + 1})"
    if doc.get("event") == "epoch":
        return (
            f"epoch {doc['epoch']}/{doc['epochs']} done: train loss {doc['train_loss']:.4f} · val loss "
            f"{doc['val_loss']:.4f} · val macro F1 {doc['val_macro_f1']:.4f} · {doc['samples_per_s']:.1f} samples/s"
        )
    return (
        f"epoch {doc['epoch']}/{doc['epochs']} · step {doc['step']}/{doc['total_steps']} · loss {doc['loss']:.4f} · "
        f"{doc['samples_per_s']:.1f} samples/s · ETA {doc['eta_s']:.0f} s"
    )


def _emit(doc: dict[str, Any]) -> None:
    # Straight to the stream, not print(): Ray Train patches print() in its workers to log *and* echo each line,
    # which showed every progress line twice in the driver's output.
    sys.stdout.write(PROGRESS_PREFIX + json.dumps(doc) + "\n")
    sys.stdout.flush()


# --- workers: where the loop runs -------------------------------------------------------------------------------


class _RayWorker:
    """A Ray Train worker: rank and world size from the train context, DDP, checkpoints through ray.train."""

    def __init__(self, spec: TransformerSpec) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.cpus = int(spec.resources_per_worker.get("CPU", 1))

    def prepare_model(self, model: Any) -> Any:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def prepare_loader(self, loader: Any) -> Any:
        import ray.train.torch

        return ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)  # batches are sharded already

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield Path(d)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        import ray.train

        ray.train.report(
            metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        )

    def gather(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


class _PlainWorker:
    """World size 1 without Ray: checkpoints are folders under ``workdir``, reports a list."""

    def __init__(self, spec: TransformerSpec, workdir: Path) -> None:
        import torch

        self.rank, self.world_size = 0, 1
        self.device = torch.device("cuda" if spec.use_gpu and torch.cuda.is_available() else "cpu")
        self.cpus = int(spec.resources_per_worker.get("CPU", os.cpu_count() or 1))
        self.workdir = workdir
        self.reports: list[tuple[dict[str, Any], Path | None]] = []

    def prepare_model(self, model: Any) -> Any:
        return model.to(self.device)

    def prepare_loader(self, loader: Any) -> Any:
        return loader

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        found = sorted(self.workdir.glob("checkpoint_*"))
        yield found[-1] if found else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        kept = None
        if checkpoint_dir is not None:
            kept = self.workdir / f"checkpoint_{len(self.reports):06d}"
            shutil.copytree(checkpoint_dir, kept)
        self.reports.append((metrics, kept))

    def gather(self, obj: Any) -> list[Any]:
        return [obj]


# --- the loop -----------------------------------------------------------------------------------------------------


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_batches(
    lengths: np.ndarray, *, rank: int, world_size: int, batch_size: int, bucket_batches: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """This rank's batches of one epoch: a seeded shuffle, an equal shard per rank, length-sorted windows.

    Every rank gets the same number of batches (DDP needs it), and the order is a pure function of (seed, epoch),
    so a resumed epoch skips exactly the batches already trained on.
    """
    rng = np.random.default_rng([seed, epoch])
    per_rank = len(lengths) // world_size
    mine = rng.permutation(len(lengths))[rank * per_rank : (rank + 1) * per_rank]
    window = batch_size * bucket_batches
    batches: list[np.ndarray] = []
    for start in range(0, per_rank, window):
        chunk = mine[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


class _Batches:
    """A map-style dataset whose items are whole, dynamically padded batches (the loader's batch_size is None)."""

    def __init__(self, batches: list[np.ndarray], ids: list[list[int]], labels: np.ndarray, pad_id: int) -> None:
        self.batches, self.ids, self.labels, self.pad_id = batches, ids, labels, pad_id

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return collate([self.ids[j] for j in self.batches[i]], self.labels[self.batches[i]], self.pad_id)


def collate(ids: list[list[int]], labels: np.ndarray | None, pad_id: int) -> dict[str, Any]:
    """Pad token id lists to the longest of the batch: input_ids, attention_mask (and labels)."""
    import torch

    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    out: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask}
    if labels is not None:
        out["labels"] = torch.as_tensor(labels)
    return out


def _loss(logits: Any, labels: Any, label_mode: str) -> Any:
    import torch.nn.functional as F

    if label_mode == "exclusive":
        return F.cross_entropy(logits.float(), labels.long())
    # multilabel: -1 marks a category the decision left unlabelled; it adds nothing to the loss
    known = (labels >= 0).float()
    losses = F.binary_cross_entropy_with_logits(logits.float(), labels.clamp(min=0).float(), reduction="none")
    return (losses * known).sum() / known.sum().clamp(min=1.0)


def _macro_f1(labels: np.ndarray, proba: np.ndarray, label_mode: str) -> float:
    from sklearn.metrics import f1_score

    if label_mode == "exclusive":
        return float(f1_score(labels, proba.argmax(1), average="macro", zero_division=0))
    return float(f1_score(labels, (proba >= 0.5).astype(int), average="macro", zero_division=0))


def _validate(model: Any, worker: Any, ids: list[list[int]], labels: np.ndarray, cfg: dict, pad_id: int) -> tuple:
    """Validation loss and macro F1 over every worker's share of the validation split."""
    import torch

    spec = TransformerSpec.model_validate(cfg["spec"])
    mine = np.arange(worker.rank, len(ids), worker.world_size)
    mine = mine[np.argsort([len(ids[i]) for i in mine], kind="stable")]
    rows, probs = [], []
    model.eval()
    with torch.inference_mode(), _autocast(worker.device):
        for start in range(0, len(mine), spec.eval_batch_size):
            idx = mine[start : start + spec.eval_batch_size]
            batch = collate([ids[i] for i in idx], None, pad_id)
            logits = model(**{k: v.to(worker.device) for k, v in batch.items()}).logits
            rows.append(idx)
            probs.append(probabilities(logits, cfg["label_mode"]).cpu().numpy())
    model.train()
    n_classes = len(cfg["classes"])
    part = (
        np.concatenate(rows) if rows else np.zeros(0, int),
        np.concatenate(probs) if probs else np.zeros((0, n_classes)),
    )
    gathered = worker.gather(part)
    idx = np.concatenate([g[0] for g in gathered])
    proba = np.concatenate([g[1] for g in gathered])
    y = labels[idx]
    eps = 1e-7
    if cfg["label_mode"] == "exclusive":
        loss = float(-np.log(np.clip(proba[np.arange(len(y)), y], eps, 1)).mean())
    else:
        p = np.clip(proba, eps, 1 - eps)
        loss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    return loss, _macro_f1(y, proba, cfg["label_mode"])


def _autocast(device: Any) -> Any:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)  # mixed precision on GPU only
    return contextlib.nullcontext()


def _optimizer(model: Any, spec: TransformerSpec) -> Any:
    import torch

    decay: list[Any] = []
    no_decay: list[Any] = []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in name or name.endswith("bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=spec.learning_rate)


def _save_checkpoint(model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any], directory: Path) -> None:
    import torch

    _unwrap(model).save_pretrained(directory, safe_serialization=True)
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")  # tensors and numbers only: weights_only loads
    torch.save(scheduler.state_dict(), directory / "scheduler.pt")
    (directory / "state.json").write_text(json.dumps(state, indent=2))


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)


def _fit(cfg: dict[str, Any], worker: Any) -> None:
    """The training loop shared by Ray workers and the plain world-size-1 run."""
    import torch
    from safetensors.torch import load_file
    from transformers import get_linear_schedule_with_warmup

    spec = TransformerSpec.model_validate(cfg["spec"])
    torch.set_num_threads(spec.torch_threads or worker.cpus)
    _seed_all(cfg["seed"])
    label_mode = cfg["label_mode"]
    tokenizer = load_tokenizer(spec.backbone)  # once per worker, not per batch

    def tokenize(texts: list[str]) -> list[list[int]]:
        texts = [tokenizer_text(t, spec) for t in texts]
        return tokenizer(texts, truncation=True, max_length=spec.max_length)["input_ids"]

    train_ids, val_ids = tokenize(cfg["train_texts"]), tokenize(cfg["val_texts"])
    train_y, val_y = np.asarray(cfg["train_labels"]), np.asarray(cfg["val_labels"])
    pad_id = tokenizer.pad_token_id or 0
    lengths = np.array([len(x) for x in train_ids])

    model = build_classifier(spec.backbone, cfg["classes"], label_mode)
    state: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "history": [], "resumes": [], "best": None, "bad": 0}
    with worker.latest_checkpoint() as ckpt:
        if ckpt is not None:
            model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
            state = json.loads((ckpt / "state.json").read_text())
            optim_state = torch.load(ckpt / "optimizer.pt", weights_only=True)
            sched_state = torch.load(ckpt / "scheduler.pt", weights_only=True)
    model = worker.prepare_model(model)
    optimizer = _optimizer(_unwrap(model), spec)
    per_rank = len(train_ids) // worker.world_size
    batches_per_epoch = math.ceil(per_rank / spec.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / spec.grad_accumulation)
    total_steps = steps_per_epoch * spec.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(spec.warmup_ratio * total_steps), total_steps)
    if ckpt is not None:
        optimizer.load_state_dict(optim_state)
        scheduler.load_state_dict(sched_state)
        state["resumes"].append({"step": state["step"], "epoch": state["epoch"], "batch": state["batch"]})
        if worker.rank == 0:
            _emit({"event": "resumed", "step": state["step"], "epoch": state["epoch"]})
    samples_per_step = spec.batch_size * spec.grad_accumulation * worker.world_size  # approximate at epoch ends

    def checkpoint_and_report(metrics: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            target = None
            if worker.rank == 0:
                target = Path(tmp)
                _save_checkpoint(model, optimizer, scheduler, state, target)
            worker.report(metrics, target)

    model.train()
    t_start, steps_at_start = time.monotonic(), state["step"]
    while state["epoch"] < spec.epochs and state["bad"] < spec.early_stopping_patience:
        epoch = state["epoch"]
        batches = epoch_batches(
            lengths,
            rank=worker.rank,
            world_size=worker.world_size,
            batch_size=spec.batch_size,
            bucket_batches=spec.bucket_batches,
            seed=cfg["seed"],
            epoch=epoch,
        )
        skip = state["batch"]
        loader = worker.prepare_loader(
            torch.utils.data.DataLoader(_Batches(batches[skip:], train_ids, train_y, pad_id), batch_size=None)  # type: ignore[arg-type]  # map-style: __len__ and __getitem__
        )
        t_epoch, losses = time.monotonic(), []
        for i, batch in enumerate(loader, start=skip):
            batch = {k: v.to(worker.device) for k, v in batch.items()}
            labels = batch.pop("labels")
            sync = (i + 1) % spec.grad_accumulation == 0 or i + 1 == len(batches)
            no_sync = not sync and worker.world_size > 1 and hasattr(model, "no_sync")
            with model.no_sync() if no_sync else contextlib.nullcontext(), _autocast(worker.device):
                loss = _loss(model(**batch).logits, labels, label_mode)
                (loss / spec.grad_accumulation).backward()
            losses.append(loss.detach())  # a tensor: no device sync per step (GPU); averaged when logged
            if not sync:
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch"] = i + 1
            rate = (state["step"] - steps_at_start) / max(time.monotonic() - t_start, 1e-9)
            if worker.rank == 0 and state["step"] % spec.log_every_steps == 0:
                _emit(
                    {
                        "event": "step",
                        "epoch": epoch + 1,
                        "epochs": spec.epochs,
                        "step": state["step"],
                        "total_steps": total_steps,
                        "loss": float(
                            torch.stack(losses[-spec.log_every_steps * spec.grad_accumulation :]).float().mean()
                        ),
                        "samples_per_s": rate * samples_per_step,
                        "eta_s": (total_steps - state["step"]) / max(rate, 1e-9),
                    }
                )
            every = spec.checkpoint_every_steps
            if every and state["step"] % every == 0 and i + 1 < len(batches):
                checkpoint_and_report({"epoch": epoch + 1, "step": state["step"], SCORE_METRIC: NOT_VALIDATED})
        seconds = time.monotonic() - t_epoch
        val_loss, val_f1 = _validate(model, worker, val_ids, val_y, cfg, pad_id)
        entry = {
            "epoch": epoch + 1,
            "step": state["step"],
            "train_loss": float(torch.stack(losses).float().mean()) if losses else float("nan"),
            "val_loss": val_loss,
            SCORE_METRIC: val_f1,
            "seconds": seconds,
            "samples_per_s": (len(batches) - skip) * spec.batch_size * worker.world_size / max(seconds, 1e-9),
            "torch_threads": torch.get_num_threads(),  # per worker: its CPUs unless the spec sets torch_threads
        }
        state["history"].append(entry)
        if state["best"] is None or val_f1 > state["best"][SCORE_METRIC]:
            state["best"], state["bad"] = {"epoch": epoch + 1, "step": state["step"], SCORE_METRIC: val_f1}, 0
        else:
            state["bad"] += 1
        state["epoch"], state["batch"] = epoch + 1, 0
        if worker.rank == 0:
            _emit({"event": "epoch", "epochs": spec.epochs, **entry})
        checkpoint_and_report({**entry, "epoch_end": True})


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker entry: the shared loop with ray.train's context, DDP and checkpoints."""
    _fit(config, _RayWorker(TransformerSpec.model_validate(config["spec"])))


# --- drivers ------------------------------------------------------------------------------------------------------


def run_plain_loop(config: dict[str, Any], workdir: Path) -> TrainOutcome:
    """Train at world size 1 without Ray; checkpoints land in ``workdir`` (a rerun resumes from them)."""
    workdir.mkdir(parents=True, exist_ok=True)
    worker = _PlainWorker(TransformerSpec.model_validate(config["spec"]), workdir)
    _fit(config, worker)
    kept = sorted(workdir.glob("checkpoint_*"))
    validated = [(m, p) for m, p in worker.reports if p is not None and m.get("epoch_end")]
    best = max(validated, key=lambda mp: mp[0][SCORE_METRIC])[1] if validated else kept[-1]
    assert best is not None
    return TrainOutcome(best_checkpoint=best, state=json.loads((kept[-1] / "state.json").read_text()))


# Environment of the Ray processes (driver, raylet and so every worker) of a cluster the step starts itself.
_WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
# Only for a throwaway local cluster: no Prometheus scrapes Ray Train's metrics there and no node is a preemptible
# VM, so the metrics callbacks and the preemption watcher would only take CPU from the training threads.
_LOCAL_ONLY_ENV = {"RAY_TRAIN_METRICS_ENABLED": "0", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def init_ray(*, address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to the Ray cluster at ``address`` or start a local one (no dashboard) sized ``num_cpus``."""
    import ray

    # Inside a Ray job (the remote path) RAY_ADDRESS names the job's own cluster; elsewhere "local" starts a new one,
    # never joining whatever a `ray start` left running on this machine.
    address = address or os.environ.get("RAY_ADDRESS") or None
    env = dict(_WORKER_ENV) if address else {**_WORKER_ENV, **_LOCAL_ONLY_ENV}
    for key, value in env.items():
        os.environ.setdefault(key, value)  # a local cluster's raylet, so every worker, inherits the driver's env
    ray.init(
        address=address or "local",
        num_cpus=None if address else num_cpus,
        include_dashboard=False,
        log_to_driver=True,  # every progress line reaches the driver's log
        runtime_env={"env_vars": env},
    )


def cpus_per_worker(num_workers: int, node_cpus: list[float]) -> int:
    """The most CPUs each of ``num_workers`` can have with every worker placed on one of these nodes (at least 1).

    Ray gives a worker one CPU unless told otherwise, so one CPU worker on a 2-core machine ran torch on one thread
    and left the other core idle. This packs the workers onto the nodes instead: the largest whole share that fits.
    """
    for share in range(int(max(node_cpus, default=1)), 1, -1):
        if sum(int(cpus // share) for cpus in node_cpus) >= num_workers:
            return share
    return 1


def _resolved_resources(spec: TransformerSpec) -> TransformerSpec:
    """The spec with its workers' resources set: as given, else (CPU training) an even share of the cluster's CPUs."""
    if spec.resources_per_worker or spec.use_gpu:
        return spec
    import ray

    nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    return spec.model_copy(update={"resources_per_worker": {"CPU": float(cpus_per_worker(spec.num_workers, nodes))}})


def fit_with_ray(
    config: dict[str, Any], *, storage_path: str, name: str, ray_address: str | None = None
) -> TrainOutcome:
    """Train with Ray Train's TorchTrainer; start (and stop) a local Ray cluster unless one is running."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    spec = TransformerSpec.model_validate(config["spec"])
    filesystem, storage = arrow_filesystem(storage_path)
    started = False
    if not ray.is_initialized():
        init_ray(address=ray_address)
        started = True
    try:
        spec = _resolved_resources(spec)
        config = {**config, "spec": spec.model_dump(mode="json")}  # the workers size torch's threads from it
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config=config,
            scaling_config=ScalingConfig(
                num_workers=spec.num_workers,
                use_gpu=spec.use_gpu,
                resources_per_worker=spec.resources_per_worker or None,
            ),
            run_config=RunConfig(
                name=name,
                storage_path=storage,
                storage_filesystem=filesystem,  # gs:// through pyarrow (an emulator too); local folders as they are
                failure_config=FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=CheckpointConfig(
                    num_to_keep=spec.checkpoints_to_keep,
                    checkpoint_score_attribute=SCORE_METRIC,
                    checkpoint_score_order="max",
                ),
            ),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError("Ray Train finished without a checkpoint")
        local = Path(tempfile.mkdtemp(prefix="harmguard-ckpt-"))
        latest = result.checkpoint.to_directory(str(local / "latest"))
        validated = [(c, m) for c, m in (result.best_checkpoints or []) if m.get("epoch_end")]
        best_ckpt = max(validated, key=lambda cm: cm[1][SCORE_METRIC])[0] if validated else result.checkpoint
        best = best_ckpt.to_directory(str(local / "best"))
        state = json.loads((Path(latest) / "state.json").read_text())
        return TrainOutcome(best_checkpoint=Path(best), state=state, extra={"ray_result_path": result.path})
    finally:
        if started:
            ray.shutdown()


def load_outcome_model(outcome: TrainOutcome, config: dict[str, Any], categories: list[str]) -> TransformerModel:
    """The exportable model of a finished run: the best checkpoint's weights with the backbone's tokenizer."""
    from transformers import AutoModelForSequenceClassification

    spec = TransformerSpec.model_validate(config["spec"])
    model = AutoModelForSequenceClassification.from_pretrained(outcome.best_checkpoint, use_safetensors=True)
    return TransformerModel(
        model=model,
        tokenizer=load_tokenizer(spec.backbone),
        label_mode=config["label_mode"],
        classes=config["classes"],
        categories=categories,
        spec=spec,
        train_info={
            "history": outcome.state["history"],
            "resumes": outcome.state["resumes"],
            "best": outcome.state["best"],
            "train_rows": len(config["train_texts"]),
            "validation_rows": len(config["val_texts"]),
            "params": spec.model_dump(mode="json"),
            **outcome.extra,
        },
    )
