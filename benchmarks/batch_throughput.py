"""Streaming batch scoring vs. the same model in-process: rows/s and the driver's peak RSS at growing input sizes.

    HARMGUARD_DATA_MIRROR=../shared/datasets .venv/bin/python benchmarks/batch_throughput.py \\
        [--sizes 10000,100000,1000000] [--actors 2] [--registered HOME:POLICY|HOME:VERSION]

The model is a registered version: ``--registered`` names one (a policy: its champion), else a baseline is trained on
sms_spam's train split and registered in a temporary HARMGUARD_HOME first (not timed; the transformer family of the
old benchmark: ``--family transformer``, an untrained head on the default backbone, as in serve_throughput.py).
Inputs are Parquet files of sms_spam's test texts repeated up to each size (written before any clock starts).

- in-process: ``harmguard.models.decide.decide`` over batches of ``--batch`` texts, one after another, in this
  process, with the BLAS/OpenMP (and torch) thread count of one actor (1: an actor has one CPU), measured right
  before each batch run;
- batch: ``harmguard score --json`` in a fresh process per size (the driver), joining a local Ray cluster this
  script starts first. rows/s is end to end inside ``score_file``: checking the input, starting the actors and
  loading the model in each, reading, scoring, writing the parts and the traffic record, committing; ``startup_s``
  is the time until the first scored batch arrived. The driver's peak RSS is the child's ``ru_maxrss`` (``wait4``).
- ratio: batch rows/s ÷ (actors × in-process rows/s). Goal (issue #22): at least 0.8 at 1,000,000 rows, and a
  driver peak RSS under 2 GiB that stays flat as the input grows.

Prints one JSON object per size, then the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from serve_throughput import export_model  # noqa: E402  (the same model export as the serving benchmark)

from harmguard.batch.score import resolve_record  # noqa: E402
from harmguard.data.datasets import load_dataset  # noqa: E402
from harmguard.data.snapshot import build_snapshot, split_frame  # noqa: E402
from harmguard.models.decide import decide  # noqa: E402
from harmguard.models.loading import load_model, verify_model_dir  # noqa: E402
from harmguard.policy import load_policy  # noqa: E402
from harmguard.registry import VersionRecord, register_version  # noqa: E402
from harmguard.registry.models import publish_model  # noqa: E402
from harmguard.settings import Settings, load_settings  # noqa: E402
from harmguard.storage import LocalStore  # noqa: E402

ACTOR_THREADS = 1  # an actor has num_cpus=1, and Ray sets OMP_NUM_THREADS to it


def registered(args: argparse.Namespace, work: Path) -> tuple[Path, VersionRecord]:
    """(home, version record): ``--registered``'s, else a sms_spam model registered here first."""
    if args.registered:
        home, _, which = args.registered.rpartition(":")
        store = LocalStore(Path(home).resolve())
        return Path(home).resolve(), resolve_record(
            store, None if "/" in which else which, which if "/" in which else None
        )
    policy = load_policy("sms_spam")
    snap = build_snapshot(load_dataset("sms_spam", load_settings()), policy)
    folder = export_model(args.family, policy, split_frame(snap, "train"))
    home = work / "home"
    store = LocalStore(home)
    settings = Settings(home=str(home), cache=work / "cache", mlflow_tracking_uri=f"sqlite:///{work / 'm.db'}")
    record = register_version(
        store, settings, policy="sms_spam", model_digest=publish_model(store, folder), thresholds={"spam": 0.5},
        blessing={"blessed": True}, metrics={}, lineage={}, run_id="bench", mlflow_run_id=None, family=args.family,
        by="benchmark",
    )  # fmt: skip
    return home, record


def in_process_rate(record: VersionRecord, texts: list[str], batch: int, rows: int) -> float:
    """Rows/s of ``decide`` in this process at one actor's thread count."""
    from threadpoolctl import threadpool_limits

    model = load_model(verify_model_dir(record.model_uri, record.model_digest))
    if model.family == "transformer":
        import torch

        torch.set_num_threads(ACTOR_THREADS)
    sample = [texts[i % len(texts)] for i in range(rows)]
    with threadpool_limits(ACTOR_THREADS):
        decide(model, dict(record.thresholds), sample[:batch])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(sample), batch):
            decide(model, dict(record.thresholds), sample[i : i + batch])
        return len(sample) / (time.perf_counter() - t0)


def write_input(path: Path, texts: list[str], rows: int) -> None:
    """A Parquet input of ``rows`` rows (``id``, ``text``), in row groups of 64k rows so it can be read in pieces."""
    with pq.ParquetWriter(path, pa.schema([("id", pa.int64()), ("text", pa.string())])) as w:
        for start in range(0, rows, 65_536):
            n = min(65_536, rows - start)
            ids = pa.array(range(start, start + n), pa.int64())
            w.write_table(pa.table({"id": ids, "text": [texts[i % len(texts)] for i in range(start, start + n)]}))


def score_in_child(env: dict[str, str], version: str, src: Path, out: Path, actors: int, batch: int) -> dict:
    """Run ``harmguard score --json`` as a fresh driver; its manifest, process wall time and peak RSS."""
    args = [sys.executable, "-m", "harmguard.cli", "score", "--version", version, "--input", str(src)]
    args += ["--output", str(out)]
    args += ["--actors", str(actors), "--batch-size", str(batch), "--json"]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(args, env=env, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        stdout.seek(0)
        stderr.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"harmguard score exited {proc.returncode}: {stderr.read().decode()[-3000:]}")
        manifest = json.loads(stdout.read().decode().strip().splitlines()[-1])
    return {"manifest": manifest, "process_wall_s": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="Input rows per run, comma-separated.")
    parser.add_argument("--actors", type=int, default=2, help="Ray Data scoring actors (one CPU each).")
    parser.add_argument("--batch", type=int, default=256, help="Texts per model call (in-process and per actor).")
    parser.add_argument("--in-process-rows", type=int, default=10_000, help="Rows the in-process side scores.")
    parser.add_argument("--family", choices=["baseline", "transformer"], default="baseline")
    parser.add_argument("--registered", metavar="HOME:POLICY|HOME:VERSION", help="Score this registered version.")
    a = parser.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    home, record = registered(a, work)
    settings = load_settings()
    policy = load_policy("sms_spam")
    texts = split_frame(build_snapshot(load_dataset("sms_spam", settings), policy), "test")["text"].tolist()
    sizes = [int(s) for s in a.sizes.split(",")]
    for n in sizes:
        write_input(work / f"in-{n}.parquet", texts, n)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    env = {
        **os.environ, "HARMGUARD_HOME": str(home), "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{work / 'm.db'}",
    }  # fmt: skip
    rows_out = []
    try:
        for n in sizes:
            # Measured right before each run: other work on a shared machine moves both sides alike.
            in_process = in_process_rate(record, texts, a.batch, a.in_process_rows)
            r = score_in_child(env, record.version, work / f"in-{n}.parquet", work / f"out-{n}", a.actors, a.batch)
            m = r["manifest"]
            row = {
                "rows": n, "version": m["model_version"], "actors": m["actors"], "cpus": os.cpu_count(),
                "in_process_rows_per_s": round(in_process, 1), "in_process_threads": ACTOR_THREADS,
                "batch_rows_per_s": m["rows_per_s"], "ratio": round(m["rows_per_s"] / (m["actors"] * in_process), 3),
                "startup_s": m["startup_seconds"], "steady_rows_per_s": m["steady_rows_per_s"],
                "wall_s": m["wall_seconds"], "process_wall_s": r["process_wall_s"],
                "driver_peak_rss_mib": r["peak_rss_mib"], "traffic_written": m["traffic"].get("written"),
            }  # fmt: skip
            rows_out.append(row)
            print(json.dumps(row), flush=True)
    finally:
        ray.shutdown()
    print(f"\nin-process at {ACTOR_THREADS} thread(s), measured before each run; ratio: rows/s / (actors x in-process)")
    head = f"{'rows':>9} {'actors':>6} {'in-proc r/s':>11} {'rows/s':>8} {'ratio':>6} {'startup s':>9}"
    print(f"{head} {'steady r/s':>10} {'wall s':>7} {'RSS MiB':>8}")
    for r in rows_out:
        print(
            f"{r['rows']:>9,} {r['actors']:>6} {r['in_process_rows_per_s']:>11,.0f} {r['batch_rows_per_s']:>8,.0f} "
            f"{r['ratio']:>6.3f} {r['startup_s'] or 0:>9.1f} "
            f"{r['steady_rows_per_s'] or 0:>10,.0f} {r['wall_s']:>7.1f} {r['driver_peak_rss_mib']:>8,.0f}"
        )


if __name__ == "__main__":
    main()
