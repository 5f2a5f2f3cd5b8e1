"""Training entry: pick the family, fit on the train split, return an exportable model."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harmguard.evaluate import encode_labels
from harmguard.models import Classifier
from harmguard.policy import Policy
from harmguard.snapshot import split_frame

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
        from harmguard.train_ray import train_transformer

        opts = dict(options or {})
        address = opts.pop("ray_address", "") or None
        return train_transformer(frame, policy, overrides=opts, seed=seed, workdir=workdir, ray_address=address)
    train = split_frame(frame, "train")
    if family == "baseline":
        from harmguard.models.baseline import train_baseline

        return train_baseline(train["text"].fillna("").tolist(), encode_labels(train, policy), policy, seed=seed)
    raise ValueError(f"unknown model family {family!r}; choose one of {FAMILIES}")
