"""The gate against a real champion, through the pipeline (kfp.local, CLI): a twin passes, a bad challenger fails."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from harmguard.digests import model_digest
from harmguard.evaluation.evaluate import evaluate_against_champion
from harmguard.evaluation.gate import run_gate
from harmguard.policy import load_policy
from harmguard.registry import move_alias
from harmguard.storage import LocalStore
from harmguard.training.dispatch import train_model
from tests.conftest import run_cli


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _blessing(home: Path, run_id: str) -> dict:
    return json.loads((home / "runs" / run_id / "blessing.json").read_text())


def test_challenger_against_a_real_champion(hg_env, settings, tmp_path):
    home = Path(settings.home)
    # 1. First run: no champion, change checks skipped; the version becomes champion (as approval would do).
    proc = run_cli(["run", "--policy", "sms_spam", "--sample", "1500", "--json"], hg_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = last_json(proc.stdout)
    assert first["blessed"] and first["version"] == "sms_spam/1"
    b1 = _blessing(home, first["run_id"])
    assert b1["champion"] is None and "first run" in b1["notes"][0]
    assert all(c["skipped"] for c in b1["checks"] if c["type"] == "change")
    store = LocalStore(home)
    move_alias(store, settings, policy="sms_spam", alias="champion", to_version="sms_spam/1",
               expected_version=None, by="test", reason="test champion")  # fmt: skip

    # 2. A retrain with the same data and seed is the champion's twin: every change is exactly 0 and passes.
    proc = run_cli(["run", "--policy", "sms_spam", "--sample", "1500", "--json"], hg_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    twin = last_json(proc.stdout)
    assert twin["blessed"] and twin["model_digest"] == first["model_digest"]
    b2 = _blessing(home, twin["run_id"])
    assert b2["champion"]["version"] == "sms_spam/1" and b2["champion"]["model_digest"] == first["model_digest"]
    assert b2["model_digest"] == twin["model_digest"]
    test_set = b2["evaluation_sets"]["test"]
    assert len(test_set["digest"]) == 64 and test_set["rows"] > 100
    changes = [c for c in b2["checks"] if c["type"] == "change"]
    assert changes and all(c["passed"] and c["delta"] == 0 and c["interval"] == [0, 0] for c in changes)
    evaluation = json.loads((home / "runs" / twin["run_id"] / "evaluation.json").read_text())
    assert evaluation["score_cache"] == {
        "hits": 3,
        "misses": 0,
        "rejected": 0,
    }  # validation + test for both: scored in run 1
    assert (home / "scores" / first["model_digest"] / f"{test_set['digest']}.npy").is_file()
    thresholds = json.loads((home / "runs" / twin["run_id"] / "thresholds.json").read_text())
    assert thresholds["thresholds_version"] == twin["thresholds_version"]
    report = Path(twin["report"]).read_text()
    assert "Challenger vs champion" in report and "sms_spam/1" in report

    # 3. A challenger trained on label-shuffled data (validation and test kept) is rejected, the failing checks
    # named. In process (library steps, same registry and champion) to keep the test fast.
    snap = pd.read_parquet(home / "snapshots" / first["data_version"] / "data.parquet")
    train = (snap["split"] == "train").to_numpy()
    snap.loc[train, "label"] = np.random.default_rng(0).permutation(snap.loc[train, "label"].to_numpy())
    policy = load_policy("sms_spam")
    model = train_model(snap, policy)
    model.save(tmp_path / "shuffled")
    digest = model_digest(tmp_path / "shuffled")
    evaluation, paired = evaluate_against_champion(model, digest, snap, policy, settings, store)
    assert evaluation["sets"]["test"]["digest"] == test_set["digest"]  # the same frozen test rows
    b3 = run_gate(evaluation, policy, model_digest=digest, data_version="shuffled", run_id="r3", paired=paired)
    assert not b3["blessed"] and b3["champion"]["version"] == "sms_spam/1"
    failed = {c["key"] for c in b3["checks"] if c["type"] == "change" and not c["passed"]}
    assert {"reference/overall/spam/f1", "operating/overall/spam/recall"} <= failed
    assert any(r.startswith("change in reference/overall/spam/f1 vs champion sms_spam/1") for r in b3["reasons"])
