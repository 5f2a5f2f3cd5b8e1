"""The transformer's plain loop (world size 1, no Ray) on one GPU: davidson2017's full train split, scored after.

Two halves, because a GPU machine may have torch but not this project's environment:

    # here (the project env): the loop config with every split, and MiniLM's weights in fp16 (half the bytes)
    HARMGUARD_DATA_MIRROR=../shared/datasets .venv/bin/python benchmarks/gpu_plain_loop.py prepare --out .devjob
    # there (python3 with torch + transformers; pydantic carried as wheels if missing), from the repo root
    PYTHONPATH=src python3 benchmarks/gpu_plain_loop.py run --job .devjob --out "$OUT"
    # here again: test metrics with the pipeline's own metric code
    .venv/bin/python benchmarks/gpu_plain_loop.py metrics --job .devjob --results "$OUT"

For the fairness, functional and evasion figures, `texts` (before `run`) lists every text the pipeline's evaluation
scores into `<job>/texts.json`; `run` scores them on the GPU; `replay` runs the pipeline's evaluate and gate here on
those scores.

`run` trains with the policy's transformer settings (max length 64, 2 epochs), reports each epoch's time and
samples/s, and writes the validation and test probabilities (and, when `<job>/texts.json` exists, the
probabilities of those texts, for replaying a whole evaluation).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any


def _frame(job: Path, policy_name: str, weeks: int) -> Any:
    """The policy's snapshot frame as a run builds it: its sources and, for a policy that takes imported labels,
    weeks 1..``weeks`` of the moderation stream, imported once into ``<job>/home``."""
    from harmguard.data.snapshot import assemble_snapshot
    from harmguard.data.sources import load_sources
    from harmguard.labels.store import import_events, read_watermark
    from harmguard.policy import load_policy
    from harmguard.settings import load_settings
    from harmguard.storage import LocalStore

    policy, settings = load_policy(policy_name), load_settings()
    store = LocalStore(job / "home")
    if policy.data.labels is not None and read_watermark(store, policy.name)[0] < weeks:
        stream = Path(str(settings.data_mirror)) / "stormfront_moderation"
        for week in sorted(stream.glob("week-*.jsonl"))[:weeks]:
            import_events(store, policy.name, policy.categories, str(week), by="benchmark")
    parts, cut = load_sources(policy, settings, store, labels_watermark=weeks if policy.data.labels else None)
    return assemble_snapshot(parts, policy, cut=cut)[0]


def prepare(out: Path, policy_name: str, weeks: int) -> None:
    """Write ``<out>/config.json`` (loop config + test split) and ``<out>/backbone16`` (fp16 MiniLM)."""
    from safetensors.torch import load_file, save_file

    from harmguard.data.snapshot import compute_data_version, encode_labels, split_frame
    from harmguard.models.transformer import resolve_backbone
    from harmguard.policy import load_policy
    from harmguard.training.ray_train import build_loop_config, effective_spec

    policy = load_policy(policy_name)
    frame = _frame(out, policy_name, weeks)
    spec = effective_spec(policy, {"use_gpu": True, "num_workers": 1, "cpu_max_train_rows": 0})
    cfg = build_loop_config(frame, policy, spec, seed=0)
    test = split_frame(frame, "test")
    cfg |= {
        "test_texts": test["text"].fillna("").tolist(),
        "test_labels": encode_labels(test, policy).tolist(),
        "categories": policy.categories,
        "data_version": compute_data_version(frame),
        "policy": policy_name,
        "weeks": weeks,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg))
    src, dst = Path(resolve_backbone(spec.backbone)), out / "backbone16"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir()
    for f in src.iterdir():
        if f.name == "model.safetensors":  # fp16 halves the bytes to carry; `run` restores fp32
            tensors = load_file(f)
            save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, dst / f.name)
        elif f.is_file():
            shutil.copy(f, dst / f.name)
    print(f"{len(cfg['train_texts'])} train rows, data version {cfg['data_version']}, written to {out}")


def run(job: Path, out: Path) -> None:
    """Train at world size 1 on the GPU, then score validation, test and ``texts.json``; write results to ``out``."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    from harmguard.training.ray_train import load_outcome_model, run_plain_loop

    backbone = Path(os.environ.get("TMPDIR", "/tmp")) / "backbone32"
    backbone.mkdir(exist_ok=True)
    for f in (job / "backbone16").iterdir():
        if f.name == "model.safetensors":
            tensors = load_file(f)
            save_file({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, backbone / f.name)
        else:
            shutil.copy(f, backbone / f.name)
    cfg = json.loads((job / "config.json").read_text())
    test_texts, categories = cfg.pop("test_texts"), cfg.pop("categories")
    for key in ("test_labels", "policy", "weeks"):
        cfg.pop(key)
    cfg["spec"] |= {"backbone": str(backbone), "log_every_steps": 100}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    results = {"device": device, "torch": torch.__version__, "data_version": cfg.pop("data_version")}
    t0 = time.monotonic()
    outcome = run_plain_loop(cfg, Path(os.environ.get("TMPDIR", "/tmp")) / "plain-loop")
    results |= {"train_wall_s": time.monotonic() - t0, "history": outcome.state["history"]}
    model = load_outcome_model(outcome, cfg, categories)
    model.model.to("cuda" if torch.cuda.is_available() else "cpu")
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "val_proba.npy", model.predict_proba(cfg["val_texts"]))
    np.save(out / "test_proba.npy", model.predict_proba(test_texts))
    if (job / "texts.json").exists():
        texts = json.loads((job / "texts.json").read_text())
        t1 = time.monotonic()
        np.save(out / "texts_proba.npy", model.predict_proba(texts).astype(np.float32))
        results["texts_scored"], results["texts_score_s"] = len(texts), time.monotonic() - t1
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


def metrics(job: Path, results: Path) -> None:
    """Reference and operating-point test metrics (thresholds calibrated on validation, as the pipeline does)."""
    import numpy as np

    from harmguard.evaluation.metrics import calibrate_threshold, operating_metrics, reference_metrics, truth_matrix
    from harmguard.policy import load_policy

    cfg = json.loads((job / "config.json").read_text())
    policy = load_policy(cfg.get("policy", "davidson2017"))
    val, test = np.load(results / "val_proba.npy"), np.load(results / "test_proba.npy")
    yv, yt = np.asarray(cfg["val_labels"]), np.asarray(cfg["test_labels"])
    ref = reference_metrics(yt, test, policy.classes, policy.label_mode)
    idx = [policy.classes.index(c) for c in policy.categories]
    tv = truth_matrix(yv, policy.classes, policy.categories, policy.label_mode)
    tt = truth_matrix(yt, policy.classes, policy.categories, policy.label_mode)
    thresholds = {
        c: calibrate_threshold(tv[:, j], val[:, idx[j]], policy.target(c).max_fpr).threshold
        for j, c in enumerate(policy.categories)
    }
    op = operating_metrics(tt, test[:, idx], policy.categories, thresholds)
    print(json.dumps({
        "weighted_f1": ref["weighted_f1"],
        "macro_f1": ref["macro_f1"],
        "f1": {c: ref["per_class"][c]["f1"] for c in policy.classes},
        "operating": {c: {k: op["per_category"][c][k] for k in ("precision", "recall", "f1", "fpr", "threshold")}
                      for c in policy.categories},
    }, indent=1))  # fmt: skip


class _Replay:
    """A classifier of the job's policy that answers from a table of scores (texts -> probabilities), recording what
    it saw."""

    family = "transformer"

    def __init__(self, table: dict[str, Any] | None, policy_name: str) -> None:
        from harmguard.policy import load_policy

        policy = load_policy(policy_name)
        self.label_mode, self.classes, self.categories = policy.label_mode, policy.classes, policy.categories
        self.table, self.seen = table, []  # type: ignore[var-annotated]

    def predict_proba(self, texts: list[str]) -> Any:
        import numpy as np

        self.seen.extend(texts)
        if self.table is None:  # collecting: any valid probabilities do
            return np.full((len(texts), len(self.classes)), 1.0 / len(self.classes))
        return np.stack([self.table[t] for t in texts]).astype(np.float64)

    def save(self, directory: Path) -> None:
        raise NotImplementedError("a replay is not exported")


def _evaluate(model: _Replay, job: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from harmguard.data.snapshot import compute_data_version
    from harmguard.evaluation.evaluate import evaluate_challenger
    from harmguard.evaluation.gate import run_gate
    from harmguard.policy import load_policy
    from harmguard.settings import load_settings

    cfg = json.loads((job / "config.json").read_text())
    policy, settings = load_policy(cfg["policy"]), load_settings()
    frame = _frame(job, cfg["policy"], cfg["weeks"])
    doc, _, _ = evaluate_challenger(model, frame, policy, settings)
    version = compute_data_version(frame)
    blessing = run_gate(doc, policy, model_digest="replay", data_version=version, run_id="replay")
    return doc, blessing


def texts(job: Path) -> None:
    """Write ``<job>/texts.json``: every text the pipeline's evaluation scores (splits, evaluation sets, evasion)."""
    cfg = json.loads((job / "config.json").read_text())
    model = _Replay(None, cfg["policy"])
    _evaluate(model, job)
    unique = sorted(set(model.seen))
    (job / "texts.json").write_text(json.dumps(unique))
    print(f"{len(model.seen)} texts scored by the evaluation, {len(unique)} unique, written to {job / 'texts.json'}")


def replay(job: Path, results: Path) -> None:
    """The pipeline's evaluation and gate on the GPU model's scores of ``texts.json``: the #5 headline figures."""
    import numpy as np

    unique = json.loads((job / "texts.json").read_text())
    cfg = json.loads((job / "config.json").read_text())
    table = dict(zip(unique, np.load(results / "texts_proba.npy"), strict=True))
    doc, blessing = _evaluate(_Replay(table, cfg["policy"]), job)
    fairness = {
        name: {k: doc["fairness"][name]["summary"][k] for k in ("min_bpsn_auc", "fpr_spread")}
        for name in doc["fairness"]
    }
    evasion = {
        name: {c: v["evasion_rate"] for c, v in p["per_category"].items()}
        for name, p in doc["evasion"]["perturbations"].items()
    }
    hatecheck = doc["evaluation_sets"]["hatecheck"]
    op = hatecheck["operating"]  # balanced accuracy: the mean of the accuracy on hateful and on non-hateful cases
    print(json.dumps({
        "test_macro_f1": doc["reference"]["test"]["macro_f1"],
        "recent_macro_f1": (doc.get("recent") or {}).get("reference", {}).get("macro_f1"),
        "hatecheck_accuracy": {k: hatecheck[k]["accuracy"] for k in ("operating", "reference")},
        "hatecheck_balanced_accuracy": (op["recall"] + 1 - op["fpr"]) / 2,
        "fairness": fairness,
        "evasion_rate": evasion,
        "blessed": blessing["blessed"],
        "reasons": blessing["reasons"],
    }, indent=1, default=str))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["prepare", "texts", "run", "metrics", "replay"])
    parser.add_argument("--out", type=Path, default=Path(".devjob"))
    parser.add_argument("--job", type=Path, default=Path(".devjob"))
    parser.add_argument("--results", type=Path, default=Path(".devjob/results"))
    parser.add_argument("--policy", default="davidson2017", help="prepare: the policy trained")
    parser.add_argument("--labels-weeks", type=int, default=6, help="prepare: weeks of the moderation stream imported")
    args = parser.parse_args()
    if args.what == "prepare":
        prepare(args.out, args.policy, args.labels_weeks)
    elif args.what == "texts":
        texts(args.job)
    elif args.what == "run":
        run(args.job, args.out)
    elif args.what == "metrics":
        metrics(args.job, args.results)
    else:
        replay(args.job, args.results)


if __name__ == "__main__":
    main()
