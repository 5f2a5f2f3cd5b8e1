"""`retrain-needed`: due when enough decisions came in after the champion's labels watermark; the Argo check step."""

from __future__ import annotations

import json
from pathlib import Path

from harmguard.k8s.argo import due_outputs
from harmguard.k8s.argo import main as argo_main
from harmguard.labels.due import retrain_needed
from harmguard.labels.store import import_events
from harmguard.policy import load_policy
from harmguard.registry import move_alias, register_version
from harmguard.storage import LocalStore
from tests.conftest import run_cli


def _import(store: LocalStore, tmp_path: Path, name: str, n: int, day: int) -> None:
    rows = [
        {"event_id": f"{name}-{k}", "item_id": f"{name}-{k}", "text": f"post {name} {k}",
         "labels": {"hate": k % 3 == 0}, "source": "moderator", "decided_at": f"2026-10-{day:02d}T08:00:00Z",
         "reviewer": "mod-1", "overturns": None}
        for k in range(n)
    ]  # fmt: skip
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import_events(store, "hate_speech", ["hate"], str(path), by="mod")


def _champion(store: LocalStore, settings, watermark: int) -> None:
    digest = "a" * 64
    (store.root / "models" / digest).mkdir(parents=True)
    record = register_version(
        store, settings, policy="hate_speech", model_digest=digest, thresholds={"hate": 0.5},
        blessing={"blessed": True, "reasons": []}, metrics={}, run_id="r1", mlflow_run_id=None, family="baseline",
        lineage={"data_version": "d" * 64, "labels_watermark": watermark}, by="trainer",
    )  # fmt: skip
    move_alias(store, settings, policy="hate_speech", alias="champion", to_version=record.version,
               expected_version=None, by="test", reason="test champion")  # fmt: skip


def test_due_counts_only_events_after_the_champions_watermark(tmp_path, settings, store):
    policy = load_policy("hate_speech")
    first = retrain_needed(store, policy)
    assert first["due"] and first["champion"] is None and first["labels_until"] is None  # no champion: a first run
    _import(store, tmp_path, "w1", 150, 1)
    _import(store, tmp_path, "w2", 120, 8)
    _champion(store, settings, watermark=1)
    answer = retrain_needed(store, policy)
    assert (answer["due"], answer["new_labels"], answer["champion_watermark"]) == (False, 120, 1)
    assert "only 120 new decision(s)" in answer["reasons"][0] and "200 make a run due" in answer["reasons"][0]
    assert retrain_needed(store, policy, min_new_labels=100)["due"]
    _import(store, tmp_path, "w3", 90, 15)
    answer = retrain_needed(store, policy)
    assert answer["due"] and answer["new_labels"] == 210 and answer["labels_watermark"] == 3
    assert answer["labels_until"] == "2026-10-15T08:00:00.000000Z"  # the cut a run should take
    # the Argo step: output files for the next steps; `force` runs anyway with the same cut
    outputs, message = due_outputs(answer | {"due": False}, force=True)
    assert outputs == {"due": True, "labels_watermark": "3", "labels_until": answer["labels_until"]}
    assert message.startswith("retraining hate_speech") and "forced" in message
    assert due_outputs(answer | {"due": False})[1].startswith("nothing to retrain for hate_speech")


def test_the_check_step_and_the_cli(tmp_path, settings, store, hg_env):
    _import(store, tmp_path, "w1", 30, 1)
    _champion(store, settings, watermark=1)
    out = tmp_path / "out"
    assert argo_main(["due", "hate_speech", str(out)]) == 0
    assert (out / "due").read_text() == "false" and (out / "labels_watermark").read_text() == "1"
    proc = run_cli(["retrain-needed", "--policy", "hate_speech", "--min-new-labels", "1", "--json"], hg_env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["due"] is False and doc["new_labels"] == 0 and "not due" in proc.stderr
    sms = run_cli(["retrain-needed", "--policy", "sms_spam", "--json"], hg_env)
    assert sms.returncode == 0 and json.loads(sms.stdout)["due"] is True  # no champion yet
