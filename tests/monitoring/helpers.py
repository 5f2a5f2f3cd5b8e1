"""Helpers of the monitoring tests: score like serving and record, a recorder that writes when told."""

from __future__ import annotations

from typing import Any

import numpy as np

from harmguard.models.decide import decide
from harmguard.monitoring.keys import ItemKey
from harmguard.monitoring.traffic import RecorderConfig, TrafficRecorder
from harmguard.storage import LocalStore

KEY = ItemKey(b"monitoring-tests-key-0123456789abcdef", "tests")


def serve_texts(
    recorder: TrafficRecorder, champion: dict[str, Any], texts: list[str], *, batch: int = 64, **kwargs: Any
) -> np.ndarray:
    """Score texts with the champion exactly as serving does (``decide``) and record each batch; returns the scores."""
    model, thresholds, record = champion["model"], champion["thresholds"], champion["record"]
    out = []
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        scored = decide(model, thresholds, chunk)
        recorder.record(
            policy="sms_spam", version=record.version, thresholds_version=record.thresholds_version, texts=chunk,
            scores=scored.scores, decisions=scored.decisions, categories=scored.categories, **kwargs,
        )  # fmt: skip
        out.append(scored.scores)
    return np.concatenate(out)


def recorder_for(store: LocalStore, **config: Any) -> TrafficRecorder:
    """A recorder that writes only when flushed (tests decide when)."""
    cfg = {"flush_seconds": 3600, "flush_records": 10**9, "capacity": 10**6} | config
    return TrafficRecorder(store, KEY, RecorderConfig(**cfg), start=False)
