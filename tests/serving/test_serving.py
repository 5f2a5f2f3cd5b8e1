"""Ray Serve end to end on loopback: one Serve instance per module, real baseline models trained on sms_spam."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import ray
import requests
from ray import serve

from harmguard.digests import model_digest, thresholds_version
from harmguard.models.decide import decide
from harmguard.models.loading import (
    ModelDigestMismatch,  # noqa: E402
    load_model,
)
from harmguard.promotion.deploy import DeployError, deploy_version
from harmguard.registry import get_version, move_alias, read_alias, register_version
from harmguard.serving.admin import (
    MAX_ADMIN_BODY,
    AdminServer,
    AdminTokenError,
    admin_token_path,
    create_admin_token,
    read_admin_token,
)
from harmguard.serving.config import ENDPOINT_KEY, MODEL_DEPLOYMENT, Batching, Limits, ServeArgs, UserConfig
from harmguard.serving.local import ServeError, apply_user_config, deploy_app, serve_push, start_app
from harmguard.storage import LocalStore

APP = "harmguard"
LIMITS = Limits(max_body_bytes=64 * 1024, max_texts_per_request=8, max_chars_per_text=500, request_timeout_s=20)
CANARY = "zqx-canary-7f3e-never-logged"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(version: str, folder: Path, thresholds: dict[str, float], shadow: UserConfig | None = None) -> UserConfig:
    doc = {
        "policy": "sms_spam",
        "version": version,
        "model_uri": str(folder),
        "model_digest": model_digest(folder),
        "thresholds": thresholds,
        "thresholds_version": thresholds_version(thresholds),
    }
    if shadow is not None:
        doc["shadow"] = shadow.model_dump(
            include={"version", "model_uri", "model_digest", "thresholds", "thresholds_version"}
        )
    return UserConfig.model_validate(doc)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two small real baselines on sms_spam, exported to models/<digest>/ folders."""
    from harmguard.data.datasets import load_dataset
    from harmguard.data.snapshot import build_snapshot, encode_labels, split_frame
    from harmguard.models.baseline import train_baseline
    from harmguard.policy import load_policy
    from harmguard.settings import Settings
    from tests.conftest import mirror_dir

    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=str(home), cache=home / "cache", data_mirror=mirror_dir(), mlflow_tracking_uri="sqlite://")
    policy = load_policy("sms_spam").model_copy(
        update={"baseline": load_policy("sms_spam").baseline.model_copy(update={"max_features": 20000})}
    )
    snap = build_snapshot(load_dataset("sms_spam", settings), policy)
    train = split_frame(snap, "train")
    test_texts = split_frame(snap, "test")["text"].tolist()
    folders = []
    for lo, hi in ((0, 1500), (1500, 3000)):
        part = train.iloc[lo:hi]
        model = train_baseline(part["text"].tolist(), encode_labels(part, policy), policy)
        tmp = home / "export"
        model.save(tmp)
        folder = home / "models" / model_digest(tmp)
        folder.parent.mkdir(exist_ok=True)
        tmp.rename(folder)
        folders.append(folder)
    return {"a": folders[0], "b": folders[1], "texts": test_texts, "home": home, "settings": settings}


@pytest.fixture(scope="module")
def server(models):
    """Serve on a free loopback port for the whole module."""
    # Logical CPUs: room for two model replicas (1 CPU each) and the ingress (0.25) in the swap-under-load test.
    # The node's metrics export port is where Prometheus scrapes the app's ray.serve.metrics; replicas report every
    # second (the floor), not every ten (the default).
    metrics_port = _free_port()
    ray.init(
        num_cpus=3,
        include_dashboard=False,
        logging_level="ERROR",
        _metrics_export_port=metrics_port,
        _system_config={"metrics_report_interval_ms": 1000},
    )
    base = _config("sms_spam/1", models["a"], {"spam": 0.5})
    args = ServeArgs(user_config=base, limits=LIMITS)
    url = start_app(args, port=_free_port(), app_name=APP)
    state = {"url": url, "args": args, "base": base, "metrics": f"http://127.0.0.1:{metrics_port}/metrics"}
    yield state
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def srv(server):
    """The server; afterwards the base config is back in place for the next test."""
    yield server
    if server["args"].user_config != server["base"]:
        server["args"] = apply_user_config(server["args"], server["base"], app_name=APP)


class _Clients:
    """Threads posting the same texts until stopped; an exception in any of them fails the test that uses them."""

    def __init__(self, url: str, texts: list[str], n: int) -> None:
        self.url, self.texts = url, texts
        self.answers: list[tuple[int, int, dict | None]] = []  # (phase, HTTP status, body when 200)
        self.phase = 0
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        self.cond = threading.Condition()

    def _run(self) -> None:
        try:
            with requests.Session() as s:
                while not self.stop.is_set():
                    phase = self.phase
                    r = s.post(f"{self.url}/v1/classify", json={"texts": self.texts}, timeout=30)
                    with self.cond:
                        self.answers.append((phase, r.status_code, r.json() if r.status_code == 200 else None))
                        self.cond.notify_all()
        except BaseException as e:  # noqa: BLE001 - every failure of a client must reach the test
            with self.cond:
                self.errors.append(e)
                self.cond.notify_all()

    def wait_for(self, predicate, timeout_s: float = 120.0) -> None:
        """Block until ``predicate(answers so far)`` holds; fail on a client error or the deadline."""
        with self.cond:
            ok = self.cond.wait_for(lambda: self.errors or predicate(self.answers), timeout=timeout_s)
        assert not self.errors, self.errors
        assert ok, f"condition not reached in {timeout_s} s ({len(self.answers)} answers)"

    def __enter__(self) -> _Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in self.threads), "a client thread hung"
        assert not self.errors, self.errors


def _samples(metrics_url: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric in the node's Prometheus export: (labels, value) each."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(metrics_url, timeout=10).text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def _total(metrics_url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels`` (over replicas)."""
    return sum(v for lab, v in _samples(metrics_url, name) if all(lab.get(k) == x for k, x in labels.items()))


def _wait_for_metric(metrics_url: str, name: str, at_least: float, timeout_s: float = 30.0, **labels: str) -> float:
    """Poll the export until the metric reaches ``at_least`` (replicas report every second); its final value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = _total(metrics_url, name, **labels)
        if value >= at_least or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def _classify(url: str, texts: list[str]) -> dict:
    r = requests.post(f"{url}/v1/classify", json={"texts": texts}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_classify_end_to_end(srv, models):
    texts = models["texts"][:6] + ["WINNER!! Claim your free prize now, call 09061701461", "see you at lunch?"]
    body = _classify(srv["url"], texts)
    base = srv["base"]
    assert body["model_version"] == "sms_spam/1"
    assert body["thresholds_version"] == base.thresholds_version
    local = decide(load_model(models["a"]), base.thresholds, texts)
    assert len(body["results"]) == len(texts)
    for row, scores, decisions, flagged in zip(
        body["results"], local.scores, local.decisions, local.flagged, strict=True
    ):
        assert set(row) == {"scores", "decisions", "flagged"}
        assert row["scores"]["spam"] == pytest.approx(float(scores[0]), abs=1e-12)
        assert row["decisions"] == {"spam": bool(decisions[0])}
        assert row["flagged"] is bool(flagged)
    assert body["results"][-2]["flagged"] and not body["results"][-1]["flagged"]


def test_health_readiness_openapi(srv):
    url = srv["url"]
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["model_version"] == "sms_spam/1"
    schema = requests.get(f"{url}/openapi.json", timeout=10).json()
    op = schema["paths"]["/v1/classify"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["properties"]["texts"]["minItems"] == 1
    assert "413" in op["responses"] and "422" in op["responses"]


BAD_REQUESTS = {
    # name: (body bytes or JSON-able, headers, expected status, limit named)
    "not json": (b"{texts: [", {}, 400, None),
    "non-utf8 bytes": (b'{"texts": ["\xff\xfe\xfa"]}', {}, 400, None),
    "empty body": (b"", {}, 400, None),
    "json null": (b"null", {}, 422, None),
    "top-level list": (b'["a", "b"]', {}, 422, None),
    "texts missing": (b'{"text": ["a"]}', {}, 422, None),
    "texts a string": (b'{"texts": "hello"}', {}, 422, None),
    "texts of numbers": (b'{"texts": [1, 2]}', {}, 422, None),
    "texts with null": (b'{"texts": ["a", null]}', {}, 422, None),
    "nested lists": (b'{"texts": [["a"]]}', {}, 422, None),
    "empty texts": (b'{"texts": []}', {}, 422, None),
    "extra field": (b'{"texts": ["a"], "threshold": 0}', {}, 422, None),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, {}, 413, "max_body_bytes"),
    "deep nesting small": (b"[" * 20_000 + b"]" * 20_000, {}, 400, None),
    "too many texts": (json.dumps({"texts": ["hi"] * 9}).encode(), {}, 413, "max_texts_per_request"),
    "text too long": (json.dumps({"texts": ["ok", "x" * 501]}).encode(), {}, 413, "max_chars_per_text"),
    "body too large": (json.dumps({"texts": ["y" * 400] * 200}).encode(), {}, 413, "max_body_bytes"),
    "chunked, too large": ((b"[" * 1024 for _ in range(100)), {}, 413, "max_body_bytes"),
    "form body": (b"texts=a&texts=b", {"Content-Type": "application/x-www-form-urlencoded"}, 400, None),
    "NaN": (b'{"texts": NaN}', {}, 422, None),
    "lone surrogate": (b'{"texts": ["fine", "\\ud800 x"]}', {}, 422, None),
    "lone low surrogate": (b'{"texts": ["\\udfff"]}', {}, 422, None),
}


def test_malformed_and_oversized_requests_get_4xx(srv):
    url = f"{srv['url']}/v1/classify"
    for name, (body, headers, status, limit) in BAD_REQUESTS.items():
        r = requests.post(url, data=body, headers={"Content-Type": "application/json", **headers}, timeout=30)
        assert r.status_code == status, (name, r.status_code, r.text[:300])
        doc = r.json()
        assert "error" in doc, name
        assert doc.get("limit") == limit, (name, doc)
    assert requests.get(url, timeout=10).status_code == 405
    # The server still answers normally afterwards.
    assert _classify(srv["url"], ["still fine"])["model_version"] == "sms_spam/1"


def test_reconfigure_thresholds_under_load(srv, models):
    """New thresholds take effect while a client sends continuously; every answer is 200 and self-consistent."""
    url, texts = srv["url"], models["texts"][:8]
    model = load_model(models["a"])
    expected = {}
    for t in ({"spam": 0.5}, {"spam": 0.0}):
        expected[thresholds_version(t)] = decide(model, t, texts).decisions[:, 0].tolist()
    new = _config("sms_spam/1", models["a"], {"spam": 0.0})  # every text becomes spam
    with _Clients(url, texts, n=1) as clients:
        clients.wait_for(lambda done: len(done) >= 3)  # answers under the old thresholds first
        srv["args"] = apply_user_config(srv["args"], new, app_name=APP)
        clients.wait_for(
            lambda done: sum(1 for *_, d in done if d and d["thresholds_version"] == new.thresholds_version) >= 5
        )
    answers = [(status, doc) for _, status, doc in clients.answers]
    assert answers and all(status == 200 for status, _ in answers), [s for s, _ in answers if s != 200]
    versions = [doc["thresholds_version"] for _, doc in answers if doc]
    assert versions[0] == srv["base"].thresholds_version and versions[-1] == new.thresholds_version
    # Once the new thresholds answer, the old ones never come back (one replica, one reference swap).
    assert versions[versions.index(new.thresholds_version) :] == [new.thresholds_version] * (
        len(versions) - versions.index(new.thresholds_version)
    )
    for _, doc in answers:
        assert doc is not None
        # Each answer's decisions are exactly those of the thresholds version it names.
        assert [row["decisions"]["spam"] for row in doc["results"]] == expected[doc["thresholds_version"]]
    assert all(expected[new.thresholds_version])


def test_model_swap_under_load_with_two_replicas(srv, models):
    """A new model (new digest) rolls out to two replicas while two clients send continuously: every answer is 200,
    each names the version whose model computed it, and once the swap returns only the new model answers."""
    url, texts = srv["url"], models["texts"][:8]
    old, new = srv["base"], _config("sms_spam/2", models["b"], {"spam": 0.5})
    expected = {
        cfg.version: decide(load_model(folder), cfg.thresholds, texts).scores[:, 0]
        for cfg, folder in ((old, models["a"]), (new, models["b"]))
    }
    assert not np.allclose(expected[old.version], expected[new.version])  # the two models tell apart
    one = srv["args"]
    two = one.model_copy(update={"batching": one.batching.model_copy(update={"num_replicas": 2})})
    deploy_app(two, app_name=APP)
    try:
        with _Clients(url, texts, n=2) as clients:
            clients.wait_for(lambda done: len(done) >= 10)
            srv["args"] = apply_user_config(two, new, app_name=APP)
            clients.phase = 1  # requests sent from here on must be answered by the new model
            clients.wait_for(lambda done: sum(1 for p, _, d in done if p == 1 and d) >= 20)
    finally:
        srv["args"] = one
        deploy_app(one, app_name=APP)  # back to one replica and the base model
    statuses = [status for _, status, _ in clients.answers]
    assert statuses and set(statuses) == {200}, statuses
    for phase, _, doc in clients.answers:
        scores = [row["scores"]["spam"] for row in doc["results"]]
        assert scores == pytest.approx(expected[doc["model_version"]].tolist(), abs=1e-12)  # self-consistent
        if phase == 1:
            assert doc["model_version"] == new.version
    assert any(doc["model_version"] == old.version for phase, _, doc in clients.answers if phase == 0)


def test_digest_mismatch_is_refused_and_old_model_keeps_serving(srv, models):
    url = srv["url"]
    good = srv["base"]
    wrong = good.model_copy(update={"version": "sms_spam/2", "model_digest": model_digest(models["b"])})
    with pytest.raises(ModelDigestMismatch):
        apply_user_config(srv["args"], wrong, app_name=APP)
    assert _classify(url, ["hello"])["model_version"] == "sms_spam/1"
    # Past the caller's check (e.g. a hand-edited RayService config): the replica itself refuses the swap.
    srv["args"] = srv["args"].model_copy(update={"user_config": wrong})  # so the fixture restores the good one
    with pytest.raises(ServeError, match="refused"):
        deploy_app(srv["args"], app_name=APP, verify=False)
    assert _classify(url, ["hello"])["model_version"] == "sms_spam/1"
    ready = requests.get(f"{url}/readyz", timeout=10).json()
    assert ready["model_version"] == "sms_spam/1" and "ModelDigestMismatch" in ready["last_refusal"]


def test_model_swap_and_shadow_metrics(srv, models):
    url, texts = srv["url"], models["texts"][:8]
    b = _config("sms_spam/2", models["b"], {"spam": 0.3})
    # Champion a, shadow b: answers stay a's.
    cfg = _config("sms_spam/1", models["a"], {"spam": 0.5}, shadow=b)
    srv["args"] = apply_user_config(srv["args"], cfg, app_name=APP)
    body = _classify(url, texts)
    local = decide(load_model(models["a"]), {"spam": 0.5}, texts)
    assert body["model_version"] == "sms_spam/1"
    assert [r["decisions"]["spam"] for r in body["results"]] == local.decisions[:, 0].tolist()
    # The shadow's counts reach the node's metrics export, tagged by both versions (disagreements only when some).
    m = srv["metrics"]
    shadow = {"policy": "sms_spam", "model_version": "sms_spam/1", "shadow_version": "sms_spam/2"}
    assert _wait_for_metric(m, "ray_harmguard_shadow_texts_total", len(texts), **shadow) >= len(texts)
    assert all(v >= 0 for _, v in _samples(m, "ray_harmguard_shadow_disagreements_total"))
    # Swap to model b as champion: answers now come from b.
    srv["args"] = apply_user_config(srv["args"], b, app_name=APP)
    body = _classify(url, texts)
    assert body["model_version"] == "sms_spam/2"
    local_b = decide(load_model(models["b"]), {"spam": 0.3}, texts)
    assert [r["scores"]["spam"] for r in body["results"]] == pytest.approx(local_b.scores[:, 0].tolist(), abs=1e-12)


def test_metrics_reach_the_nodes_export_tagged_by_policy_and_version(srv, models):
    """ray.serve.metrics: counts from both deployments in the node's metrics export, with the expected values.

    A version no other test serves (sms_spam/7) keeps this test's counts apart from the module's other traffic.
    """
    url, m = srv["url"], srv["metrics"]
    cfg = _config("sms_spam/7", models["a"], {"spam": 0.5})
    srv["args"] = apply_user_config(srv["args"], cfg, app_name=APP)
    requests_ = [models["texts"][i : i + 1 + (i // 8) % 8] for i in range(0, 120, 8)]  # 15 requests of 1-8 texts
    for texts in requests_:
        assert _classify(url, texts)["model_version"] == "sms_spam/7"
    too_many = requests.post(f"{url}/v1/classify", json={"texts": ["x"] * 9}, timeout=10)
    assert too_many.status_code == 413
    flat = [t for texts in requests_ for t in texts]
    local = decide(load_model(models["a"]), {"spam": 0.5}, flat)
    tags = {"policy": "sms_spam", "model_version": "sms_spam/7"}

    assert _wait_for_metric(m, "ray_harmguard_texts_total", len(flat), **tags) == len(flat)
    assert _wait_for_metric(m, "ray_harmguard_score_count", len(flat), category="spam", **tags) == len(flat)
    below = int(np.sum(local.scores[:, 0] <= 0.5))
    assert _total(m, "ray_harmguard_score_bucket", category="spam", le="0.5", **tags) == below
    assert _total(m, "ray_harmguard_flagged_total", category="spam", **tags) == int(local.decisions[:, 0].sum())
    assert _total(m, "ray_harmguard_flagged_texts_total", **tags) == int(local.flagged.sum())
    # One observation per model call (Ray exports a histogram's _sum from bucket midpoints: not checked).
    assert 1 <= _total(m, "ray_harmguard_batch_size_texts_count", **tags) <= len(requests_)
    # The ingress: requests by status, latency, the refusal by its limit.
    assert _wait_for_metric(m, "ray_harmguard_requests_total", len(requests_), status="200", **tags) == len(requests_)
    assert _wait_for_metric(m, "ray_harmguard_rejections_total", 1, limit="max_texts_per_request", **tags) == 1
    assert _total(m, "ray_harmguard_request_latency_seconds_count", **tags) == len(requests_) + 1
    # Serve's own tags say which deployment and replica counted.
    deployments = {lab.get("deployment") for lab, _ in _samples(m, "ray_harmguard_texts_total")}
    assert deployments == {MODEL_DEPLOYMENT}
    replicas = {lab.get("replica") for lab, _ in _samples(m, "ray_harmguard_requests_total") if lab.get("replica")}
    assert replicas and {lab["deployment"] for lab, _ in _samples(m, "ray_harmguard_requests_total")} == {
        "ClassifierIngress"
    }
    # No replica-local route on the serving port any more: the node's export is the one place to scrape.
    assert requests.get(f"{url}/metrics", timeout=10).status_code == 404


def test_dropped_traffic_records_are_counted_in_the_nodes_export(srv):
    """The recorder's drop hook, wired as the ingress wires it, counts into the node's export (a full buffer).

    Recorded from this driver, a Ray worker like a replica (without Serve's deployment tags).
    """
    from harmguard.monitoring.keys import ItemKey
    from harmguard.monitoring.traffic import RecorderConfig, TrafficRecorder
    from harmguard.serving.metrics import IngressMetrics

    metrics = IngressMetrics()
    metrics.serving("sms_spam/dropped-test")
    recorder = TrafficRecorder(
        LocalStore("/nonexistent-never-flushed"),
        ItemKey(secret=b"k" * 32, origin="test"),
        RecorderConfig(capacity=2, flush_records=100),
        on_drop=metrics.dropped,
        start=False,
    )
    arrays = {"scores": np.zeros((5, 1)), "decisions": np.zeros((5, 1), bool), "categories": ["spam"]}
    recorder.record(policy="sms_spam", version="v", thresholds_version="t", texts=["a"] * 5, **arrays)
    assert recorder.dropped == 3
    tags = {"policy": "sms_spam", "model_version": "sms_spam/dropped-test"}
    assert _wait_for_metric(srv["metrics"], "ray_harmguard_traffic_dropped_records_total", 3, **tags) == 3


def test_request_texts_are_never_logged(srv):
    url = srv["url"]
    _classify(url, [f"{CANARY} call now to win"])
    requests.post(f"{url}/v1/classify", json={"texts": [CANARY * 100]}, timeout=10)  # over the char limit
    requests.post(f"{url}/v1/classify", json={"texts": [CANARY], "extra": CANARY}, timeout=10)  # schema error
    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())

    def files_with(needle: bytes) -> list[Path]:
        return [p for p in logs.rglob("*") if p.is_file() and needle in p.read_bytes()]

    # Positive control: the scan must read the logs a leak would land in. The access log records the requests
    # (path, status), the model replica's log records the version it serves; wait until both are flushed.
    deadline = time.monotonic() + 60
    while not (access := files_with(b"/v1/classify")) or not (replica := files_with(b"serving sms_spam/1")):
        assert time.monotonic() < deadline, "no Serve access or replica log found: the scan would prove nothing"
        time.sleep(0.2)
    assert any("serve" in p.parts for p in access + replica), (access, replica)
    leaked = files_with(CANARY.encode())
    assert not leaked, leaked


def test_lone_surrogate_is_refused_before_scoring_and_a_real_pair_is_scored(srv):
    url = f"{srv['url']}/v1/classify"
    r = requests.post(
        url, data=b'{"texts": ["ok", "\\ud800"]}', headers={"Content-Type": "application/json"}, timeout=30
    )
    assert r.status_code == 422 and "text 1 is not valid Unicode" in r.json()["error"]
    pair = requests.post(url, data=b'{"texts": ["\\ud83d\\ude00 free prize"]}', timeout=30)  # an emoji, escaped
    assert pair.status_code == 200 and len(pair.json()["results"]) == 1


@pytest.mark.slow  # two redeploys and sixteen heavy requests: 35-50 s here; the logic has fast unit tests
def test_a_failing_request_fails_alone_and_overload_answers_503_at_once(srv, models):
    """One deployment with batches of 2 and two queued requests per caller (one redeploy for both checks).

    Two requests in one @serve.batch, one the model cannot read: the other is answered. Then sixteen heavy HTTP
    requests at once: two in the replica, two queued, the others refused at once with 503 and Retry-After.
    """
    tight = srv["args"].model_copy(
        update={
            "limits": Limits(request_timeout_s=60),
            "batching": Batching(max_batch_size=2, batch_wait_timeout_s=2.0, max_ongoing_requests=2,
                                 max_queued_requests=2),
        }
    )  # fmt: skip
    deploy_app(tight, app_name=APP)
    try:
        handle = serve.get_deployment_handle(MODEL_DEPLOYMENT, APP)
        # Past the ingress (it refuses a non-string with 422): the deployment itself isolates the failure.
        calls = [handle.classify.remote(t) for t in (["win a prize", "see you"], [None])]
        good, bad = (c.result(timeout_s=60) for c in calls)

        texts = [" ".join(models["texts"])[:4000]] * 64  # a request the model takes a while over
        answers: list[tuple[int, float, dict, str | None]] = []
        lock = threading.Lock()

        def post() -> None:
            t0 = time.monotonic()
            r = requests.post(f"{srv['url']}/v1/classify", json={"texts": texts}, timeout=120)
            with lock:
                answers.append((r.status_code, time.monotonic() - t0, r.json(), r.headers.get("Retry-After")))

        threads = [threading.Thread(target=post) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=150)
    finally:
        deploy_app(srv["args"], app_name=APP)

    assert set(bad) == {"error"}
    assert len(json.loads(good["body"])["results"]) == 2 and good["model_version"] == "sms_spam/1"
    assert good["isolated"] and good["batch_texts"] == 2  # it shared the failed batch and was scored on its own

    statuses = sorted(status for status, *_ in answers)
    assert len(answers) == 16 and set(statuses) == {200, 503}, statuses
    slowest_ok = max(took for status, took, *_ in answers if status == 200)
    for status, took, doc, retry_after in answers:
        if status == 503:
            assert doc["limit"] == "max_queued_requests" and retry_after == "1", doc
            assert took < slowest_ok, (took, slowest_ok)  # refused without waiting for the model
    print(f"overload: {statuses.count(503)} of 16 refused with 503, slowest 200 in {slowest_ok:.1f} s")


def test_readyz_names_no_paths_or_buckets(srv, models, tmp_path):
    """A refused config's message names its model URI; /readyz gives only the exception type."""
    # A digest no model has, at a path that does not exist: a replica keeps recent models by digest, so a digest an
    # earlier test served (model b) would be answered from that cache without reading the path.
    digest = "ab" * 32
    missing = tmp_path / "bucket-canary-zq" / "models" / digest
    bad = srv["base"].model_copy(update={"version": "sms_spam/9", "model_uri": str(missing), "model_digest": digest})
    srv["args"] = srv["args"].model_copy(update={"user_config": bad})  # so the fixture restores the good one
    with pytest.raises(ServeError, match="refused") as refused:
        deploy_app(srv["args"], app_name=APP, verify=False)
    assert "bucket-canary-zq" in str(refused.value)  # the operator who deployed it reads where
    ready = requests.get(f"{srv['url']}/readyz", timeout=10)
    body = ready.text
    assert ready.status_code == 200 and "bucket-canary-zq" not in body and str(tmp_path) not in body
    doc = ready.json()
    assert doc["model_version"] == "sms_spam/1" and doc["refused_version"] == "sms_spam/9"
    assert doc["last_refusal"] in {"FileNotFoundError", "ModelDigestMismatch"}
    assert set(doc) <= {"ready", "policy", "model_version", "model_digest", "thresholds_version", "shadow_version",
                        "last_refusal", "refused_version"}  # fmt: skip


# --- the local admin route -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(models):
    """sms_spam/1 (model a, 0.5) and sms_spam/2 (model b, 0.3) registered in the models' home; champion: 1."""
    store = LocalStore(models["home"])
    versions = {}
    for name, thresholds in (("a", {"spam": 0.5}), ("b", {"spam": 0.3})):
        versions[name] = register_version(
            store, models["settings"], policy="sms_spam", model_digest=model_digest(models[name]),
            thresholds=thresholds, blessing={"blessed": True}, metrics={}, lineage={}, run_id="r-serving",
            mlflow_run_id=None, family="baseline", by="test",
        )  # fmt: skip
    assert [v.version for v in versions.values()] == ["sms_spam/1", "sms_spam/2"]
    move_alias(store, models["settings"], policy="sms_spam", alias="champion", to_version="sms_spam/1",
               expected_version=None, by="test", reason="serving tests")  # fmt: skip
    return {"store": store, **versions}


@pytest.fixture
def admin(srv, models, registry):
    """The admin route of a running server, pumped as `harmguard serve` does, with its token file."""
    store = registry["store"]
    token = create_admin_token(admin_token_path(store))
    server = AdminServer(token).start()
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            push = server.next_push(timeout=0.1)
            if push is not None:
                version, reply = push
                status, answer, srv["args"] = serve_push(store, srv["args"], version, app_name=APP)
                reply.put((status, answer))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    yield {"url": server.url, "token": token, "store": store}
    stop.set()
    thread.join(timeout=30)
    server.close()
    admin_token_path(store).unlink(missing_ok=True)
    current, _ = read_alias(store, "sms_spam", "champion")
    if current is not None and current.version != "sms_spam/1":  # leave the champion as the module set it
        move_alias(store, models["settings"], policy="sms_spam", alias="champion", to_version="sms_spam/1",
                   expected_version=current.version, by="test", reason="reset")  # fmt: skip


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """A raw POST: the headers exactly as given (no Content-Length added), then the body."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("POST", parts.path, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            conn.send(body)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    except (ConnectionResetError, BrokenPipeError):  # the server answered early and closed
        return 0, {}
    finally:
        conn.close()


def _served(srv) -> dict:
    return requests.get(f"{srv['url']}/readyz", timeout=10).json()


def test_admin_token_file_is_private_and_checked(admin, tmp_path):
    path = admin_token_path(admin["store"])
    assert (path.stat().st_mode & 0o777) == 0o600 and read_admin_token(path) == admin["token"]
    path.chmod(0o644)
    try:
        with pytest.raises(AdminTokenError, match="mode 0600"):
            read_admin_token(path)
    finally:
        path.chmod(0o600)
    link = tmp_path / "token-link"
    link.symlink_to(path)
    with pytest.raises(AdminTokenError, match="link"):
        read_admin_token(link)
    with pytest.raises(AdminTokenError, match="harmguard serve"):
        read_admin_token(tmp_path / "absent")


def test_admin_route_refuses_every_forged_push(admin, srv, registry):
    url, token = admin["url"], admin["token"]
    good = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    two = json.dumps({"version": "sms_spam/2"}).encode()
    one = json.dumps({"version": "sms_spam/1"}).encode()

    def sized(body: bytes, headers: dict[str, str], status: int) -> tuple[bytes, dict[str, str], int]:
        return body, {**headers, "Content-Length": str(len(body))}, status

    attacks = {
        # name: (body, headers, expected status)
        "no token": sized(two, {"Content-Type": "application/json"}, 401),
        "wrong token": sized(two, {**good, "Authorization": "Bearer " + "x" * len(token)}, 401),
        "token as basic auth": sized(two, {**good, "Authorization": f"Basic {token}"}, 401),
        "not the champion": sized(two, good, 409),
        "another policy": sized(b'{"version": "davidson2017/1"}', good, 409),
        "not a version": sized(b'{"version": "x"}', good, 422),
        "version not a string": sized(b'{"version": 2}', good, 422),
        "no version": sized(b'{"thresholds": {"spam": 0.0}}', good, 422),
        "negative length": (one, {**good, "Content-Length": "-1"}, 400),
        "signed length": (one, {**good, "Content-Length": "+25"}, 400),
        "text length": (one, {**good, "Content-Length": "abc"}, 400),
        "missing length": (b"", good, 411),
        "chunked": (b"19\r\n" + one + b"\r\n0\r\n\r\n", {**good, "Transfer-Encoding": "chunked"}, 400),
        "declared oversized": (one, {**good, "Content-Length": str(10**9)}, 413),
        "oversized body": (b" " * (MAX_ADMIN_BODY + 1), {**good, "Content-Length": str(MAX_ADMIN_BODY + 1)}, 413),
        "not json": sized(b"version=sms_spam/1", good, 400),
        "not utf-8": sized(b'{"version": "\xff"}', good, 400),
        "json list": sized(b'["sms_spam/1"]', good, 422),
    }
    for name, (body, headers, status) in attacks.items():
        got, doc = _post(url, body, headers)
        assert got == status, (name, got, doc)
        assert "error" in doc, name
    r = requests.post(url.replace("/user_config", "/other"), data=one, headers=good, timeout=10)
    assert r.status_code == 404
    assert requests.get(url, headers=good, timeout=10).status_code == 501
    ready = _served(srv)
    assert ready["model_version"] == "sms_spam/1" and ready["thresholds_version"] == srv["base"].thresholds_version


def test_admin_route_serves_the_champion_from_the_registry_ignoring_forged_fields(admin, srv, models, registry):
    """The champion moves to 2; a push naming 2 with forged thresholds, digest and URI serves the registry's 2."""
    store, url = admin["store"], admin["url"]
    move_alias(store, models["settings"], policy="sms_spam", alias="champion", to_version="sms_spam/2",
               expected_version="sms_spam/1", by="test", reason="promotion under test")  # fmt: skip
    all_spam = {"spam": 0.0}  # forged: every text would be flagged
    forged = {
        "version": "sms_spam/2",
        "thresholds": all_spam,
        "thresholds_version": thresholds_version(all_spam),
        "model_digest": model_digest(models["a"]),
        "model_uri": str(models["a"]),
        "policy": "other",
    }
    r = requests.post(url, json=forged, headers={"Authorization": f"Bearer {admin['token']}"}, timeout=120)
    assert r.status_code == 200, r.text
    two = registry["b"]
    assert r.json() == {"applied": True, "version": "sms_spam/2", "thresholds_version": two.thresholds_version}
    ready = _served(srv)
    assert (ready["model_version"], ready["model_digest"], ready["thresholds_version"]) == (
        "sms_spam/2", two.model_digest, two.thresholds_version)  # fmt: skip
    body = _classify(srv["url"], ["see you at lunch?"])
    assert body["model_version"] == "sms_spam/2" and body["thresholds_version"] == thresholds_version({"spam": 0.3})

    # A rollback: the pointer moves back first, then promotion's deploy step pushes (reading the token file).
    move_alias(store, models["settings"], policy="sms_spam", alias="champion", to_version="sms_spam/1",
               expected_version="sms_spam/2", by="test", reason="rollback under test")  # fmt: skip
    store.write_atomic(ENDPOINT_KEY, json.dumps({"user_config_url": url, "pid": os.getpid()}).encode())
    try:
        result = deploy_version(store, get_version(store, "sms_spam/1"), "r-rollback")
        assert result["pushed"] and "HTTP 200" in result["note"]
        assert _served(srv)["model_version"] == "sms_spam/1"
        # Pushing a version that is not the champion any more is refused, and the promotion says why.
        with pytest.raises(DeployError, match="HTTP 409.*not the champion"):
            deploy_version(store, get_version(store, "sms_spam/2"), "r-stale")
        # Without the token file (another user's server, or none), nothing is sent.
        admin_token_path(store).unlink()
        with pytest.raises(DeployError, match="no admin token"):
            deploy_version(store, get_version(store, "sms_spam/1"), "r-no-token")
    finally:
        store.path(ENDPOINT_KEY).unlink(missing_ok=True)
    assert _served(srv)["model_version"] == "sms_spam/1"
