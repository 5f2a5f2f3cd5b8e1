"""The feedback loop's learning curve: does `hate_speech` get better as moderators' decisions come in?

Replays the 8 weeks of ``stormfront_moderation``. For k = 0..6 it imports weeks 1..k into a fresh home (the real
import path), snapshots ``hate_speech`` with ``recent_days: 0`` at watermark k (the real multi-source snapshot:
davidson2017 + toxigen_prompts + the decisions), trains the baseline on its train split and scores one fixed
held-out set:

- **held-out weeks**: the items first decided in weeks 7-8, labelled by their latest decision over all 8 weeks
  (re-deliveries and appeals included). Never trained on: their texts are removed from every training split.
- **davidson2017 test**: the davidson2017 rows of the snapshot's test split (hash split: the same rows for every k).
- **hatecheck**: the functional test suite (label ``hateful``).

Goal (issue #17): macro F1 on the held-out weeks rises by at least 0.10 from k=0 to k=6, with no significant drop on
davidson2017's test rows (95% paired bootstrap of the k=6 minus k=0 macro F1). Prints a Markdown table and writes a
plot (``--plot``, default ``benchmarks/results/feedback_loop.png``).

    HARMGUARD_DATA_MIRROR=../shared/datasets .venv/bin/python benchmarks/feedback_loop.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import assemble_snapshot, normalize_text, split_frame
from harmguard.data.sources import load_sources
from harmguard.evaluation.significance import paired_bootstrap
from harmguard.labels.events import read_events
from harmguard.labels.resolve import resolve_latest
from harmguard.labels.store import import_events
from harmguard.policy import load_policy
from harmguard.settings import load_settings
from harmguard.storage import LocalStore
from harmguard.training.dispatch import train_model

HELD_OUT_WEEKS = (7, 8)


def held_out_items(weeks: list[Path], categories: list[str]) -> pd.DataFrame:
    """Items first decided in weeks 7-8, with their latest decision over all weeks (1 = hate)."""
    frames = []
    for i, path in enumerate(weeks, start=1):
        events, _, _ = read_events(str(path), categories)
        frames.append(events.assign(week=i))
    events = pd.concat(frames, ignore_index=True).drop_duplicates("event_id")
    first_week = events.sort_values("decided_at").groupby("item_id")["week"].first()
    held = set(first_week.index[first_week.isin(HELD_OUT_WEEKS)])
    latest = resolve_latest(events[events["item_id"].isin(held)], categories)
    return pd.DataFrame({"text": latest["text"], "y": latest["labels"].map(lambda d: int(d["hate"]))})


def macro_f1(y: np.ndarray, proba: np.ndarray) -> float:
    return float(f1_score(y, proba.argmax(axis=1) == 0, average="macro", zero_division=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, default=Path(__file__).parent / "results" / "feedback_loop.png")
    parser.add_argument("--max-k", type=int, default=6)
    parser.add_argument("--weight", type=float, default=None, help="data.labels.weight (default: the policy's)")
    args = parser.parse_args()
    settings = load_settings()
    mirror = Path(str(settings.data_mirror)) / "stormfront_moderation"
    weeks = sorted(mirror.glob("week-*.jsonl"))
    base = load_policy("hate_speech")
    labels = {"recent_days": 0} | ({"weight": args.weight} if args.weight else {})
    policy = base.model_copy(
        update={"data": base.data.model_copy(update={"labels": base.data.labels.model_copy(update=labels)})}
    )
    held = held_out_items(weeks, policy.categories)
    held_norm = set(held["text"].map(normalize_text))
    hatecheck = load_dataset("hatecheck", settings)
    hc_texts = hatecheck["test_case"].astype(str).tolist()
    hc_y = (hatecheck["label_gold"] == "hateful").to_numpy().astype(int)
    rows, probas = [], {}
    with tempfile.TemporaryDirectory() as home:
        store = LocalStore(home)
        for k in range(args.max_k + 1):
            if k:
                import_events(store, policy.name, policy.categories, str(weeks[k - 1]), by="benchmark")
            t = time.perf_counter()
            parts, cut = load_sources(policy, settings, store, labels_watermark=k)
            frame, _ = assemble_snapshot(parts, policy, cut=cut)
            train = split_frame(frame, "train")
            train = train[~train["text"].fillna("").map(normalize_text).isin(held_norm)]
            model = train_model(train.assign(split="train"), policy)  # as a run trains: decisions weighted
            test = split_frame(frame, "test")
            davidson = test[test["origin"] == "davidson2017"]
            p_held = model.predict_proba(held["text"].tolist())
            p_dav = model.predict_proba(davidson["text"].tolist())
            p_hc = model.predict_proba(hc_texts)
            y_dav = (davidson["label"] == "hate").to_numpy().astype(int)
            probas[k] = (p_held, p_dav)
            rows.append({
                "k": k,
                "decisions trained": int((train["origin"] == "labels").sum()),
                "held-out macro F1": macro_f1(held["y"].to_numpy(), p_held),
                "held-out hate F1": float(f1_score(held["y"], p_held.argmax(axis=1) == 0, zero_division=0)),
                "davidson2017 test macro F1": macro_f1(y_dav, p_dav),
                "hatecheck macro F1": macro_f1(hc_y, p_hc),
                "seconds": round(time.perf_counter() - t, 1),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    print(f"\nheld-out weeks {HELD_OUT_WEEKS}: {len(held)} items ({int(held['y'].sum())} hate); "
          f"davidson2017 test rows: {len(y_dav)}; hatecheck: {len(hc_y)}\n")  # fmt: skip
    shown = table.map(lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)).assign(
        seconds=table["seconds"].map(str)
    )
    print(shown.to_markdown(index=False, floatfmt=".4f", disable_numparse=True))
    first, last = rows[0], rows[-1]
    gain = last["held-out macro F1"] - first["held-out macro F1"]
    truth = np.stack([y_dav == 1, y_dav == 0], axis=1)

    def decisions(p: np.ndarray) -> np.ndarray:
        return np.eye(2, dtype=bool)[p.argmax(axis=1)]

    est = paired_bootstrap(truth, decisions(probas[args.max_k][1]), decisions(probas[0][1]), "macro_f1", None,
                           higher_is_better=True, relative=False, resamples=1000, seed=0, confidence=0.95)  # fmt: skip
    print(
        f"\nheld-out macro F1 k=0 -> k={args.max_k}: {first['held-out macro F1']:.4f} -> "
        f"{last['held-out macro F1']:.4f} ({gain:+.4f}; goal >= +0.10: {'met' if gain >= 0.10 else 'NOT met'})"
    )
    print(f"davidson2017 test macro F1 change k={args.max_k} vs k=0: {est.delta:+.4f} [95% CI {est.low:+.4f}, "
          f"{est.high:+.4f}] ({'a significant drop' if est.high < 0 else 'no significant drop'})")  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for col in ("held-out macro F1", "davidson2017 test macro F1", "hatecheck macro F1"):
        ax.plot(table["k"], table[col], marker="o", label=col)
    ax.set_xlabel("weeks of moderator decisions trained on (k)")
    ax.set_ylabel("macro F1 (argmax)")
    ax.set_title("hate_speech baseline: learning from the moderation stream")
    ax.grid(alpha=0.3)
    ax.legend()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110, bbox_inches="tight")
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
