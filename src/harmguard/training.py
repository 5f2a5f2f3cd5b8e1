"""Training entry: pick the family, fit on the train split, return an exportable model."""

from __future__ import annotations

import pandas as pd

from harmguard.evaluate import encode_labels
from harmguard.models import Classifier
from harmguard.policy import Policy
from harmguard.snapshot import split_frame

FAMILIES = ("baseline",)


def train_model(frame: pd.DataFrame, policy: Policy, *, family: str = "baseline", seed: int = 0) -> Classifier:
    """Fit a model of ``family`` on the snapshot's train split."""
    train = split_frame(frame, "train")
    if family == "baseline":
        from harmguard.models.baseline import train_baseline

        return train_baseline(train["text"].fillna("").tolist(), encode_labels(train, policy), policy, seed=seed)
    raise ValueError(f"unknown model family {family!r}; choose one of {FAMILIES} (transformer arrives with #3)")
