"""Served vs. in-process throughput of the same model on the same texts at the same batch size (one run).

    HARMGUARD_DATA_MIRROR=../shared/datasets .venv/bin/python benchmarks/serve_throughput.py [--batch 32]

Trains a baseline on sms_spam's train split, exports it to a models/<digest> folder, serves it with Ray Serve on
loopback, and sends every test text in requests of ``--batch`` texts from ``--clients`` concurrent clients. The
in-process reference scores the same requests one after another with ``harmguard.models.decide.decide``.
Prints one JSON object per family. The transformer is the default backbone (all-MiniLM-L6-v2, max length 64) with
an untrained head: throughput does not depend on the head's weights, and fine-tuning it first would cost minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot, encode_labels, split_frame
from harmguard.digests import model_digest, thresholds_version
from harmguard.models.baseline import train_baseline
from harmguard.models.decide import decide
from harmguard.models.loading import load_model
from harmguard.policy import load_policy
from harmguard.serving.config import ServeArgs, UserConfig
from harmguard.serving.local import start_app
from harmguard.settings import load_settings


def _stats(latencies: list[float], texts: int, wall: float) -> dict[str, float]:
    ms = np.array(latencies) * 1000
    return {
        "texts_per_s": round(texts / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32, help="Texts per request (and per in-process call).")
    parser.add_argument("--clients", type=int, default=4, help="Concurrent HTTP clients.")
    parser.add_argument("--family", choices=["baseline", "transformer", "both"], default="both")
    a = parser.parse_args()
    families = ["baseline", "transformer"] if a.family == "both" else [a.family]
    for family in families:
        print(json.dumps(run_one(family, a.batch, a.clients)), flush=True)


def export_model(family: str, policy: Any, train: Any) -> Path:
    """Export the model to benchmark into a fresh folder."""
    folder = Path(tempfile.mkdtemp()) / "model"
    if family == "baseline":
        train_baseline(train["text"].tolist(), encode_labels(train, policy), policy).save(folder)
        return folder
    from harmguard.models.transformer import TransformerModel, build_classifier, load_tokenizer, resolve_backbone

    spec = policy.transformer
    TransformerModel(
        model=build_classifier(spec.backbone, policy.classes, policy.label_mode),
        tokenizer=load_tokenizer(resolve_backbone(spec.backbone)),
        label_mode=policy.label_mode,
        classes=policy.classes,
        categories=policy.categories,
        spec=spec,
    ).save(folder)
    return folder


def run_one(family: str, batch: int, clients: int) -> dict:
    """Benchmark one family: in-process, then served."""
    import ray

    settings = load_settings()
    policy = load_policy("sms_spam")
    snap = build_snapshot(load_dataset("sms_spam", settings), policy)
    train = split_frame(snap, "train")
    texts = split_frame(snap, "test")["text"].tolist() * (4 if family == "baseline" else 1)
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    folder = export_model(family, policy, train)
    thresholds = {"spam": 0.5}
    model = load_model(folder)

    decide(model, thresholds, batches[0])  # warm-up
    lat, t0 = [], time.perf_counter()
    for b in batches:
        s = time.perf_counter()
        decide(model, thresholds, b)
        lat.append(time.perf_counter() - s)
    in_process = _stats(lat, len(texts), time.perf_counter() - t0)

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = UserConfig(
        policy="sms_spam", version="sms_spam/bench", model_uri=str(folder), model_digest=model_digest(folder),
        thresholds=thresholds, thresholds_version=thresholds_version(thresholds),
    )  # fmt: skip
    url = start_app(ServeArgs(user_config=cfg), port=port) + "/v1/classify"
    session = requests.Session()

    def post(b: list[str]) -> float:
        s = time.perf_counter()
        r = session.post(url, json={"texts": b}, timeout=60)
        r.raise_for_status()
        return time.perf_counter() - s

    post(batches[0])  # warm-up
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lat = list(pool.map(post, batches))
    served = _stats(lat, len(texts), time.perf_counter() - t0)
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    return {
        "family": family,
        "texts": len(texts),
        "batch": batch,
        "clients": clients,
        "cpus": os.cpu_count(),
        "in_process": in_process,
        "served": served,
        "throughput_ratio_served_over_in_process": round(served["texts_per_s"] / in_process["texts_per_s"], 3),
    }


if __name__ == "__main__":
    main()
