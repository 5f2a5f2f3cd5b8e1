"""Training throughput: Ray Train (1 worker, resources_per_worker={"CPU": N}) against the plain loop.

Both run harmguard's one training loop on the same model, sequence length, data and torch thread count, on this
machine, in one process run. Throughput is the samples/s the loop measures over the last epoch (the first epoch is
the warm-up: allocator, kernels, caches), so Ray's start-up and the per-epoch validation are excluded.

The profile says where the gap goes: while each side trains, every process's CPU time is read from /proc and
grouped (the training process, Ray's own processes, everything else on the machine). On 2 cores, CPU that raylet,
the GCS, the agents and the idle workers use is CPU the training worker does not get.

    HARMGUARD_DATA_MIRROR=../shared/datasets .venv/bin/python benchmarks/train_throughput.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from proc_cpu import cpu_profile, ray_group

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot
from harmguard.policy import load_policy
from harmguard.settings import load_settings
from harmguard.training.ray_train import build_loop_config, effective_spec, fit_with_ray, init_ray, run_plain_loop


def _group(pid: int, comm: str, cmd: str) -> str:
    if "RayTrainWorker" in cmd or "RayTrainWorker" in comm:
        return "train worker"
    return ray_group(pid, comm, cmd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="sms_spam")
    parser.add_argument("--backbone", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--rows", type=int, default=640, help="training rows per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="the first is warm-up")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads = CPUs of the Ray worker")
    parser.add_argument("--repeats", type=int, default=2, help="alternating plain/Ray pairs; medians are compared")
    args = parser.parse_args()

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    policy = load_policy(args.policy)
    frame = build_snapshot(load_dataset(policy.data.primary.dataset or args.policy, load_settings()), policy)
    spec = effective_spec(
        policy,
        {
            "backbone": args.backbone,
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "num_workers": 1,
            "resources_per_worker": {"CPU": args.threads},
            "torch_threads": args.threads,
            "cpu_max_train_rows": args.rows,
            "early_stopping_patience": args.epochs,  # never stop early: every epoch is measured
            "log_every_steps": 1000,
        },
    )
    config = build_loop_config(frame, policy, spec, seed=0)
    config["val_texts"], config["val_labels"] = config["val_texts"][:64], config["val_labels"][:64]  # not timed
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "ray": []}
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        # Alternate the two (plain, Ray, plain, Ray, ...) so a slow minute on a shared machine hits both alike.
        for rep in range(args.repeats):
            t0 = time.monotonic()
            plain_cpu: dict[str, float] = {}
            with cpu_profile(plain_cpu, _group):
                plain = run_plain_loop(config, Path(tmp) / f"plain{rep}")
            runs["plain"].append(
                {"samples_per_s": plain.state["history"][-1]["samples_per_s"], "wall_s": time.monotonic() - t0,
                 "cores": plain_cpu}
            )  # fmt: skip
            t0 = time.monotonic()
            ray_cpu: dict[str, float] = {}
            init_ray(num_cpus=args.threads)  # the same local cluster a pipeline step starts
            try:
                with cpu_profile(ray_cpu, _group):
                    ray_run = fit_with_ray(config, storage_path=str(Path(tmp) / f"ray{rep}"), name="bench")
            finally:
                ray.shutdown()
            runs["ray"].append(
                {"samples_per_s": ray_run.state["history"][-1]["samples_per_s"], "wall_s": time.monotonic() - t0,
                 "cores": ray_cpu}
            )  # fmt: skip
            for kind, cores in (("plain", plain_cpu), ("ray", ray_cpu)):
                shares = " · ".join(f"{g} {c:.2f}" for g, c in sorted(cores.items(), key=lambda kv: -kv[1]))
                print(f"repeat {rep + 1} {kind}: cores used by group: {shares}", flush=True)
            print(
                f"repeat {rep + 1}: plain {runs['plain'][-1]['samples_per_s']:.1f} · ray "
                f"{runs['ray'][-1]['samples_per_s']:.1f} samples/s",
                flush=True,
            )
    results = {
        kind: {"samples_per_s": statistics.median(r["samples_per_s"] for r in rs), "repeats": rs}
        for kind, rs in runs.items()
    }
    ratio = results["ray"]["samples_per_s"] / results["plain"]["samples_per_s"]
    # Where the gap goes: the cores each group used while Ray trained (median over repeats), against the plain loop's.
    groups = sorted({g for r in runs["ray"] + runs["plain"] for g in r["cores"]})
    profile = {
        kind: {g: statistics.median(r["cores"].get(g, 0.0) for r in runs[kind]) for g in groups} for kind in runs
    }
    trainer_plain = profile["plain"].get("driver", 0.0)
    trainer_ray = profile["ray"].get("train worker", 0.0)
    results["profile_cores"] = profile
    results["trainer_cores_ratio"] = trainer_ray / trainer_plain if trainer_plain else None
    summary = {
        "backbone": args.backbone,
        "rows": len(config["train_texts"]),
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "torch_threads": args.threads,
        "measured_epoch": args.epochs,
        **results,
        "ratio_ray_over_plain": ratio,
    }
    print(
        f"plain loop: {results['plain']['samples_per_s']:.1f} samples/s · Ray Train (1 worker, {args.threads} CPUs): "
        f"{results['ray']['samples_per_s']:.1f} samples/s · ratio {ratio:.3f}"
    )
    print(
        f"cores used while training (median): plain loop's process {trainer_plain:.2f} · Ray's train worker "
        f"{trainer_ray:.2f} (ratio {results['trainer_cores_ratio'] or 0:.3f}) · Ray's own processes "
        f"{profile['ray'].get('ray system', 0.0):.2f} · Ray's driver {profile['ray'].get('driver', 0.0):.2f} · "
        f"other processes {profile['ray'].get('other', 0.0):.2f} (plain run: {profile['plain'].get('other', 0.0):.2f})"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
