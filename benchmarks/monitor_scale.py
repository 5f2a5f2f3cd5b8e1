"""How long `harmguard monitor` takes over a million records (the bound: 30 s on 2 cores).

Writes 1,000,000 davidson2017-shaped records (two categories) through the traffic recorder's own writer, over 7 days,
in parts of ``--part-records`` records (one per flush: ~200 when one replica flushes every 120 s, the recorder's
default, at 1M records a week: 5,040 parts), compacts days 1-6 as the daily ``traffic purge`` would have
(``--no-compact``: not), registers a
version with a reference of 2,500 validation rows, imports 5,000 labels sharing item ids with the traffic (so the
precision check runs too), then times ``run_monitor`` over the week: reading the parts, every check, the verdict and
the HTML report.

Run: `.venv/bin/python benchmarks/monitor_scale.py [--records 1000000] [--part-records 200] [--no-compact]` (a few
minutes, most of it writing 5,040 parts). It uses a temporary home and prints the figures; nothing else is touched.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from harmguard.digests import thresholds_version
from harmguard.labels.store import import_events
from harmguard.monitoring.keys import ItemKey
from harmguard.monitoring.monitor import run_monitor
from harmguard.monitoring.parts import TRAFFIC, compact, live_parts
from harmguard.monitoring.reference import Reference, reference_key
from harmguard.monitoring.traffic import RecorderConfig, TrafficRecorder
from harmguard.policy import load_policy
from harmguard.registry import register_version
from harmguard.registry.models import publish_model
from harmguard.settings import Settings
from harmguard.storage import LocalStore

CATEGORIES = ["hate", "offensive"]
THRESHOLDS = {"hate": 0.35, "offensive": 0.5}
BATCH = 256  # texts per scored request (serving's default cap)


def scores(rng: np.random.Generator, n: int) -> np.ndarray:
    """Bimodal scores like a trained model's: most texts near 0, a share near 1."""
    return np.stack([rng.beta(0.4, 3.0, n), rng.beta(0.8, 0.6, n)], axis=1)


def register(home: Path, store: LocalStore, rng: np.random.Generator) -> str:
    """A registered davidson2017 version whose reference is 2,500 validation rows (a stand-in model folder)."""
    model = home.parent / "model"
    model.mkdir()
    (model / "model.json").write_text('{"family": "stand-in"}')
    digest = publish_model(store, model)
    settings = Settings(home=str(home), cache=home / "cache", mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    ref_scores = scores(rng, 2500)
    ref = Reference(
        model_digest=digest, data_version="benchmark", categories=CATEGORIES, scores=ref_scores,
        truth=(rng.random((2500, 2)) < ref_scores).astype(np.int8), lengths=rng.integers(10, 280, 2500),
        thresholds=THRESHOLDS,
    )  # fmt: skip
    store.create_only(reference_key("davidson2017", digest), ref.to_json())
    record = register_version(
        store, settings, policy="davidson2017", model_digest=digest, thresholds=THRESHOLDS,
        blessing={"blessed": True}, metrics={}, lineage={"data_version": "benchmark"}, run_id="benchmark",
        mlflow_run_id=None, family="stand-in", by="benchmark",
    )  # fmt: skip
    return record.version


def write_records(store: LocalStore, version: str, n: int, part_records: int, start: datetime) -> float:
    """n records through the recorder over 7 days, a part every ``part_records``; returns the seconds it took."""
    rng = np.random.default_rng(1)
    batch = min(BATCH, part_records)
    config = RecorderConfig(sample_rate=0.0, capacity=2 * part_records, flush_records=part_records, flush_seconds=3600)
    recorder = TrafficRecorder(store, ItemKey(b"benchmark-key-" * 3, "benchmark"), config, start=False)
    texts = ["x" * int(k) for k in rng.integers(10, 280, batch)]
    tv = thresholds_version(THRESHOLDS)
    limits = [THRESHOLDS[c] for c in CATEGORIES]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        size = min(batch, n - i)
        s = scores(rng, size)
        recorder.record(
            policy="davidson2017", version=version, thresholds_version=tv, texts=texts[:size],
            ids=[f"item-{j}" for j in range(i, i + size)], scores=s, decisions=s >= limits, categories=CATEGORIES,
            at=start + timedelta(seconds=7 * 86400 * i / n),
        )  # fmt: skip
        if recorder.stats()["pending"] >= part_records:
            recorder.flush()
    recorder.flush()
    assert recorder.dropped == 0
    return time.perf_counter() - t0


def import_labels(store: LocalStore, folder: Path, n_records: int) -> None:
    """5,000 decisions on items the traffic saw."""
    rng = np.random.default_rng(2)
    path = folder / "labels.jsonl"
    with path.open("w") as f:
        for j in rng.choice(n_records, 5000, replace=False):
            labels = {"hate": bool(rng.random() < 0.3), "offensive": bool(rng.random() < 0.7)}
            f.write(json.dumps({"event_id": f"e{j}", "item_id": f"item-{j}", "text": "t", "labels": labels,
                                "source": "moderator", "decided_at": "2025-01-01T00:00:00Z",
                                "reviewer": "r", "overturns": None}) + "\n")  # fmt: skip
    import_events(store, "davidson2017", CATEGORIES, str(path), by="benchmark")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--part-records", type=int, default=200,
        help="records per part (the recorder flushes every 120 s: 1M records a week at one replica is ~200 a flush)",
    )  # fmt: skip
    parser.add_argument("--no-compact", action="store_true", help="time the monitor before the daily compaction")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        store = LocalStore(home)
        version = register(home, store, np.random.default_rng(0))
        start = datetime(2025, 1, 6, tzinfo=UTC)
        took = write_records(store, version, args.records, args.part_records, start)
        parts = len(store.list(TRAFFIC))
        print(f"wrote {args.records:,} records in {parts:,} parts through the recorder in {took:.1f} s", flush=True)
        if not args.no_compact:  # what the daily `traffic purge` has done by the seventh day: days 1-6 compacted
            t0 = time.perf_counter()
            done = compact(store, TRAFFIC, "davidson2017", before=(start + timedelta(days=6)).date())
            print(f"compacted {len(done)} finished days in {time.perf_counter() - t0:.1f} s; "
                  f"{len(live_parts(store, TRAFFIC, 'davidson2017')):,} parts left to read")  # fmt: skip
        import_labels(store, Path(tmp), args.records)
        t0 = time.perf_counter()
        verdict = run_monitor(store, load_policy("davidson2017"), start, start + timedelta(days=7))
        took = time.perf_counter() - t0
        print(f"monitor over {verdict['records']:,} records: {took:.1f} s (bound 30 s) -> status {verdict['status']}")
        print("crossed:", verdict["crossed"], "| days:", len(verdict["daily"]))
        hate = verdict["drift"]["categories"]["hate"]
        print(f"precision check ran on {hate['precision']['labelled_flagged']} labelled flagged items (hate)")


if __name__ == "__main__":
    main()
