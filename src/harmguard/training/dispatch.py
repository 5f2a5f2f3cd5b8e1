"""Training entry: pick the family, fit on the train split, return an exportable model."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from harmguard.data.snapshot import encode_labels, split_frame
from harmguard.models.base import Classifier
from harmguard.models.baseline import train_baseline
from harmguard.models.transformer import TransformerModel
from harmguard.policy import Policy
from harmguard.training.ray_jobs import run_remote_job
from harmguard.training.ray_train import (
    TrainOutcome,
    build_loop_config,
    effective_spec,
    fit_with_ray,
    load_outcome_model,
    run_plain_loop,
)

FAMILIES = ("baseline", "transformer")


def train_model(
    frame: pd.DataFrame,
    policy: Policy,
    *,
    family: str = "baseline",
    seed: int = 0,
    options: dict[str, Any] | None = None,
    workdir: str | None = None,
) -> Classifier:
    """Fit a model of ``family`` on the snapshot's train split.

    ``options`` are the transformer's run options (TransformerSpec overrides plus ``ray_address``); ``workdir`` is
    where its checkpoints go.
    """
    if family == "transformer":
        opts = dict(options or {})
        address = opts.pop("ray_address", "") or None
        return train_transformer(frame, policy, overrides=opts, seed=seed, workdir=workdir, ray_address=address)
    train = split_frame(frame, "train")
    if family == "baseline":
        weights = train["weight"].to_numpy(dtype=float) if "weight" in train.columns else None
        return train_baseline(
            train["text"].fillna("").tolist(), encode_labels(train, policy), policy, seed=seed, weights=weights
        )
    raise ValueError(f"unknown model family {family!r}; choose one of {FAMILIES}")


def train_transformer(
    frame: pd.DataFrame,
    policy: Policy,
    *,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    workdir: str | None = None,
    use_ray: bool = True,
    ray_address: str | None = None,
    name: str = "train",
) -> TransformerModel:
    """Fine-tune the policy's transformer on a snapshot's train split; the result is the best checkpoint's model.

    Args:
        frame: The snapshot frame.
        policy: The policy (label mode, classes, transformer settings).
        overrides: TransformerSpec fields to change for this run (CLI options).
        seed: Seed of shuffling, sampling and head initialization.
        workdir: Where checkpoints go (local folder or `gs://` URI); a temporary folder when omitted.
        use_ray: Train with Ray Train; False runs the same loop plainly at world size 1.
        ray_address: ``http://HOST:8265`` submits a Ray job (needs a ``gs://`` workdir); another address joins
            that cluster; None starts (and stops) a local one.
        name: Name of the Ray Train run under ``workdir``.
    """
    spec = effective_spec(policy, overrides)
    config = build_loop_config(frame, policy, spec, seed)
    root = workdir or tempfile.mkdtemp(prefix="harmguard-train-")
    if ray_address and ray_address.startswith("http"):
        result = run_remote_job(config, address=ray_address, workdir=root, name=name)
        state = json.loads((result / "run_state.json").read_text())
        outcome = TrainOutcome(best_checkpoint=result, state=state, extra={"ray_address": ray_address})
    elif use_ray:
        outcome = fit_with_ray(config, storage_path=root, name=name, ray_address=ray_address)
    else:
        outcome = run_plain_loop(config, Path(root) / name)
    return load_outcome_model(outcome, config, policy.categories)
