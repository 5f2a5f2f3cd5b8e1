"""Reproduce how the davidson2017 baseline settings were chosen: a small grid scored on the validation split.

Selection uses validation macro F1 only; test numbers are printed beside them for the record, never used to pick.
Run: `HARMGUARD_DATA_MIRROR=../shared/datasets .venv/bin/python benchmarks/baseline_selection.py` (about 3 minutes).
"""

from __future__ import annotations

import itertools
import time

from sklearn.metrics import f1_score

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot, encode_labels, split_frame
from harmguard.models.baseline import train_baseline
from harmguard.policy import load_policy
from harmguard.settings import load_settings

GRID = {"C": [2.0, 3.0, 5.0], "class_weight_power": [0.6, 0.8, 1.0]}


def main() -> None:
    settings = load_settings()
    base = load_policy("davidson2017")
    snap = build_snapshot(load_dataset("davidson2017", settings), base)
    train, val, test = (split_frame(snap, s) for s in ("train", "validation", "test"))
    rows = []
    for c, power in itertools.product(GRID["C"], GRID["class_weight_power"]):
        policy = base.model_copy(deep=True)
        policy.baseline.C, policy.baseline.class_weight_power = c, power
        t0 = time.perf_counter()
        model = train_baseline(train["text"].tolist(), encode_labels(train, policy), policy)
        took = time.perf_counter() - t0
        scores = {}
        for name, part in (("val", val), ("test", test)):
            pred = model.predict_proba(part["text"].tolist()).argmax(axis=1)
            y = encode_labels(part, policy)
            scores[name] = (f1_score(y, pred, average="macro"), f1_score(y, pred, average="weighted"))
        rows.append((scores["val"][0], c, power, scores, took))
        print(
            f"C={c:<4} power={power:<4} val macro {scores['val'][0]:.4f} weighted {scores['val'][1]:.4f} | "
            f"test macro {scores['test'][0]:.4f} weighted {scores['test'][1]:.4f} | fit {took:.1f} s",
            flush=True,
        )
    best = max(rows, key=lambda r: r[0])
    print(f"selected by validation macro F1: C={best[1]} class_weight_power={best[2]}")


if __name__ == "__main__":
    main()
