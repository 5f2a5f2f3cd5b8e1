"""`retrain-needed` reads the verdict `monitor` writes (issue #19): the two layers agree on the file, not on code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from harmguard.data.snapshot import split_frame
from harmguard.labels.due import retrain_needed
from harmguard.monitoring.monitor import run_monitor
from tests.monitoring.helpers import recorder_for, serve_texts


def test_a_drift_verdict_written_by_monitor_makes_retraining_due(champion, davidson_texts):
    store, policy = champion["store"], champion["policy"]
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    recorder = recorder_for(store)
    serve_texts(
        recorder, champion, split_frame(champion["snapshot"], "test")["text"].tolist(), at=today - timedelta(hours=30)
    )
    serve_texts(recorder, champion, davidson_texts, at=today - timedelta(hours=6))  # tweets to a spam model
    recorder.flush()

    ok = run_monitor(store, policy, today - timedelta(days=2), today - timedelta(days=1))
    assert ok["status"] == "ok"
    answer = retrain_needed(store, policy)
    assert not answer["due"] and answer["drift"]["uri"] == ok["verdict"]

    drift = run_monitor(store, policy, today - timedelta(days=1), today)
    assert drift["status"] == "drift" and drift["crossed"]
    answer = retrain_needed(store, policy)
    assert answer["due"] and answer["drift"]["uri"] == drift["verdict"]
    assert answer["drift"]["crossed"] == drift["crossed"] and answer["drift"]["version"] == "sms_spam/1"
    assert f"found drift: {', '.join(drift['crossed'])}" in answer["reasons"][-1]
