"""The real Ray Serve app keeps the traffic record (issue #19): every answered text, never a text, ids as given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest
import requests
from ray import serve

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot, encode_labels, split_frame
from harmguard.models.baseline import train_baseline
from harmguard.monitoring.parts import REVIEW, TRAFFIC, read_traffic
from harmguard.policy import load_policy
from harmguard.serving.config import Limits, ServeArgs, Traffic
from harmguard.storage import LocalStore
from tests.support.serving import publish_export, served_app, user_config

SPAM = "WINNER!! Claim your free prize now, call 09061701461"


@pytest.fixture
def served_home(tmp_path, monkeypatch, settings):
    """A baseline on sms_spam in a fresh home, served with the record on (sample rate 1.0: every text reviewed)."""
    home = tmp_path / "home"
    monkeypatch.setenv("HARMGUARD_HOME", str(home))  # the replicas read their settings from the environment
    policy = load_policy("sms_spam")
    policy = policy.model_copy(update={"baseline": policy.baseline.model_copy(update={"max_features": 20000})})
    train = split_frame(build_snapshot(load_dataset("sms_spam", settings), policy), "train").head(1500)
    model = train_baseline(train["text"].tolist(), encode_labels(train, policy), policy)
    folder = publish_export(model, home, tmp_path / "export")
    cfg = user_config("sms_spam", "sms_spam/1", folder, {"spam": 0.5})
    with served_app(ServeArgs(user_config=cfg, limits=Limits(), traffic=Traffic(sample_rate=1.0))) as url:
        yield url, LocalStore(home)


def test_served_texts_are_recorded_without_their_text(served_home):
    url, store = served_home
    texts = [SPAM, "are we still on for lunch at one?", "see you at the station"]
    r = requests.post(f"{url}/v1/classify", json={"texts": texts, "ids": ["post-1", "post-2", "post-3"]}, timeout=60)
    assert r.status_code == 200, r.text
    r = requests.post(f"{url}/v1/classify", json={"texts": [SPAM]}, timeout=60)  # no ids: a keyed hash
    assert r.status_code == 200, r.text
    bad = requests.post(f"{url}/v1/classify", json={"texts": texts, "ids": ["only-one"]}, timeout=60)
    assert bad.status_code == 422 and "one id per text" in bad.json()["error"]
    serve.shutdown()  # the ingress replica writes what it buffers when Serve deletes it

    now = datetime.now(UTC)
    traffic = read_traffic(store, "sms_spam", now - timedelta(hours=1), now + timedelta(hours=1))
    assert traffic is not None and traffic.num_rows == 4  # the refused request is not traffic
    rows = traffic.to_pylist()
    assert [row["item_id"] for row in rows[:3]] == ["post-1", "post-2", "post-3"]
    assert rows[3]["item_id"].startswith("hmac:")
    assert {row["version"] for row in rows} == {"sms_spam/1"} and {row["source"] for row in rows} == {"serve"}
    assert [row["text_length"] for row in rows] == [len(t) for t in [*texts, SPAM]]
    for key in store.list(TRAFFIC):  # no part holds any text
        raw = store.path(key).read_bytes()
        assert all(t.encode() not in raw for t in texts)
    review = pq.read_table([store.path(k) for k in store.list(REVIEW) if k.endswith(".parquet")])
    assert sorted(review.column("text").to_pylist()) == sorted([*texts, SPAM])  # sample rate 1.0, kept apart
