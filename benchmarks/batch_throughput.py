"""Batch scoring (Ray Data actor pool) vs. the same model scoring in-process, rows/s on the same texts (one run).

    HARMGUARD_DATA_MIRROR=../shared/datasets .venv/bin/python benchmarks/batch_throughput.py [--actors 2]

Trains a baseline on sms_spam's train split (the transformer: the default backbone, all-MiniLM-L6-v2 at max length
64, with an untrained head, as in serve_throughput.py: throughput does not depend on the head's weights), registers
it in a temporary HARMGUARD_HOME, and scores sms_spam's test texts (repeated ``--repeat`` times) twice:

- in-process: ``harmguard.models.decide.decide`` over batches of ``--batch`` texts, one after another, in this process
  (torch uses every core here);
- batch: ``harmguard.batch.score.score_file`` from a Parquet file to a committed output folder, ``--actors`` actors of
  one CPU each. Its rows/s is end to end: reading the input, starting the actors and loading the model in each,
  scoring, writing and committing the parts (Ray itself is started before the clock starts); ``batch_startup_s`` is
  the time until the first scored batch arrived and ``batch_steady_rows_per_s`` the rate after it.

Prints one JSON object per family.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from serve_throughput import export_model  # noqa: E402  (the same model export as the serving benchmark)

from harmguard.batch.score import BatchConfig, score_file  # noqa: E402
from harmguard.data.datasets import load_dataset  # noqa: E402
from harmguard.data.snapshot import build_snapshot, split_frame  # noqa: E402
from harmguard.models.decide import decide  # noqa: E402
from harmguard.models.loading import load_model  # noqa: E402
from harmguard.policy import load_policy  # noqa: E402
from harmguard.registry import register_version  # noqa: E402
from harmguard.registry.models import publish_model
from harmguard.settings import Settings, load_settings  # noqa: E402
from harmguard.storage import LocalStore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=["baseline", "transformer", "both"], default="both")
    parser.add_argument("--batch", type=int, default=256, help="Texts per model call (in-process and per actor).")
    parser.add_argument("--actors", type=int, default=2, help="Ray Data scoring actors (one CPU each).")
    parser.add_argument("--repeat", type=int, default=0, help="Repeat test texts (0: 100 baseline, 10 transformer).")
    a = parser.parse_args()
    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    try:
        for family in ["baseline", "transformer"] if a.family == "both" else [a.family]:
            repeat = a.repeat or (100 if family == "baseline" else 10)
            print(json.dumps(run_one(family, a.batch, a.actors, repeat)), flush=True)
    finally:
        ray.shutdown()


def run_one(family: str, batch: int, actors: int, repeat: int) -> dict:
    """Benchmark one family: in-process, then batch scoring with Ray Data."""
    settings = load_settings()
    policy = load_policy("sms_spam")
    snap = build_snapshot(load_dataset("sms_spam", settings), policy)
    texts = split_frame(snap, "test")["text"].tolist() * repeat
    folder = export_model(family, policy, split_frame(snap, "train"))
    thresholds = {"spam": 0.5}

    model = load_model(folder)
    decide(model, thresholds, texts[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        decide(model, thresholds, texts[i : i + batch])
    in_process = len(texts) / (time.perf_counter() - t0)

    home = Path(tempfile.mkdtemp())
    store = LocalStore(home / "home")
    run_settings = Settings(home=store.uri, cache=home / "cache", mlflow_tracking_uri=f"sqlite:///{home / 'm.db'}")
    record = register_version(
        store, run_settings, policy="sms_spam", model_digest=publish_model(store, folder), thresholds=thresholds,
        blessing={"blessed": True}, metrics={}, lineage={}, run_id="bench", mlflow_run_id=None, family=family,
        by="benchmark",
    )  # fmt: skip
    src = home / "day.parquet"
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_parquet(src)
    cfg = BatchConfig(input_uri=str(src), output_uri=str(home / "scored"), batch_size=batch, actors=actors)
    manifest = score_file(store, record, cfg, console=Console(stderr=True, quiet=True))
    return {
        "family": family,
        "rows": len(texts),
        "batch": batch,
        "actors": manifest["actors"],
        "cpus": os.cpu_count(),
        "in_process_rows_per_s": round(in_process, 1),
        "batch_rows_per_s": manifest["rows_per_s"],
        "batch_wall_s": manifest["wall_seconds"],
        "batch_startup_s": manifest["startup_seconds"],
        "batch_steady_rows_per_s": manifest["steady_rows_per_s"],
        "ratio_batch_over_in_process": round(manifest["rows_per_s"] / in_process, 3),
    }


if __name__ == "__main__":
    main()
