"""The training pipeline end to end through kfp.local, real Great Expectations and real MLflow, via the CLI."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harmguard.data.datasets import load_dataset
from harmguard.exit_codes import ExitCode
from harmguard.policy import read_policy_bytes
from harmguard.registry import get_version, read_audit, read_policy_file, verify_audit
from harmguard.registry.principal import principal_for
from harmguard.storage import LocalStore
from tests.conftest import run_cli


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_sms_spam_run_registers_a_blessed_challenger(hg_env, settings):
    proc = run_cli(["run", "--policy", "sms_spam", "--json", "--by", "ci-bot"], hg_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = last_json(proc.stdout)
    assert s["blessed"] and s["version"] == "sms_spam/1" and s["ok"]
    assert s["metrics"]["reference"]["test"]["per_class"]["spam"]["f1"] >= 0.95
    assert set(s["steps"]) == {"ingest", "validate", "train", "evaluate", "gate", "register"}
    # every step's wall time, own work (reported by the step process through kfp.local) and overhead
    assert set(s["timing"]) == set(s["steps"])
    for t in s["timing"].values():
        assert t["wall_s"] >= t["work_s"] > 0 and t["overhead_s"] == pytest.approx(t["wall_s"] - t["work_s"], abs=0.02)
    assert Path(s["report"]).read_text().count("<img") >= 2  # PR curves and confusion matrix are inline plots

    home = Path(settings.home)
    assert (home / "models" / s["model_digest"] / "model.json").is_file()
    assert (home / "snapshots" / s["data_version"] / "data.parquet").is_file()
    store = LocalStore(home)
    events = [e["event"] for e in read_audit(store, "sms_spam")]
    assert "bless" in events and "register" in events and verify_audit(store, "sms_spam") == []
    # the run claimed its id, and the registration kept the policy file the approval rules will come from
    assert json.loads((home / "runs" / s["run_id"] / "claim.json").read_text())["kind"] == "training"
    rec = get_version(store, "sms_spam/1")
    assert read_policy_file(store, rec.lineage["policy_digest"]) == read_policy_bytes("sms_spam")[0]
    assert rec.created_principal and rec.created_principal == str(principal_for(store.uri))

    status = run_cli(["status", "--json"], hg_env)
    assert status.returncode == 0, status.stderr
    pol = json.loads(status.stdout)["policies"]["sms_spam"]
    assert pol["challenger"]["version"] == "sms_spam/1" and pol["champion"] is None
    assert pol["pending"] == ["sms_spam/1"] and pol["mismatches"] == []

    from mlflow import MlflowClient

    mv = MlflowClient(tracking_uri=settings.mlflow_tracking_uri).get_model_version_by_alias("sms_spam", "challenger")
    assert mv.tags["model_uri"].endswith(s["model_digest"])
    assert mv.source.endswith("/mlflow-artifacts/sms_spam/versions/1")  # the MLflow model folder, not models/
    assert mv.tags["data_version"] == s["data_version"]
    (data,) = MlflowClient(tracking_uri=settings.mlflow_tracking_uri).get_run(mv.run_id).inputs.dataset_inputs
    assert data.dataset.digest == s["data_version"][:36] and data.dataset.name == "sms_spam-snapshot"


def test_planted_defects_fail_validation_and_register_nothing(hg_env, settings, tmp_path):
    raw = load_dataset("sms_spam", settings).drop_duplicates("text").head(1500).reset_index(drop=True)
    raw["split"] = ["test" if i % 10 == 0 else "validation" if i % 10 == 1 else "train" for i in range(len(raw))]
    raw.loc[3:5, "text"] = ""  # empty texts
    raw.loc[7:8, "label"] = "phishing"  # labels the policy does not know
    leaked = raw[raw["split"] == "test"].head(4).assign(split="train")  # test rows repeated as train rows
    path = tmp_path / "defects.csv"
    pd.concat([raw, leaked], ignore_index=True).to_csv(path, index=False)

    proc = run_cli(["run", "--policy", "sms_spam", "--data", str(path), "--json"], hg_env)
    assert proc.returncode == ExitCode.INVALID_INPUT == 4
    s = last_json(proc.stdout)
    assert not s["ok"] and not s["blessed"] and s["version"] is None
    failed = {c["name"]: c for c in s["validation"]["failed"]}
    assert {"text_not_blank", "label_set", "leakage"} <= set(failed)
    assert failed["label_set"]["examples"][0]["label"] == "phishing"
    assert s["steps"].get("fail-run") == "FAILURE" and "train" not in s["steps"]
    for name in ("text_not_blank", "label_set", "leakage"):
        assert name in proc.stderr
    assert Path(s["report"]).name == "validation.html"
    assert not (Path(settings.home) / "registry").exists()


def test_rejected_model_is_not_registered(hg_env, settings, tmp_path):
    from harmguard.policy import read_policy_bytes

    doc = yaml.safe_load(read_policy_bytes("sms_spam")[0])
    doc["gate"]["thresholds"].append({"metric": "f1", "kind": "reference", "category": "spam", "min": 0.9999})
    doc["validation"]["min_rows"] = 100
    path = tmp_path / "strict_spam.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = run_cli(["run", "--policy", str(path), "--sample", "1500", "--json"], hg_env)
    assert proc.returncode == ExitCode.REJECTED == 3, proc.stderr[-2000:]
    s = last_json(proc.stdout)
    assert s["ok"] and not s["blessed"] and s["version"] is None
    assert "register" not in s["steps"]  # the nested dsl.If skipped it
    assert any("needs >= 0.9999" in r for r in s["reasons"])
    assert not (Path(settings.home) / "registry" / "sms_spam").exists()


def test_usage_errors_exit_2_and_a_malformed_policy_exits_4(hg_env, tmp_path):
    proc = run_cli(["run", "--policy", "nope", "--json"], hg_env)
    assert proc.returncode == ExitCode.USAGE == 2 and "unknown policy 'nope'" in proc.stderr
    proc = run_cli(["run", "--policy", "sms_spam", "--columns", "{not json"], hg_env)
    assert proc.returncode == 2 and "--columns is not valid JSON" in proc.stderr
    proc = run_cli(["run", "--no-such-option"], hg_env)
    assert proc.returncode == 2 and "No such option" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nlabel_mode: sometimes\n")
    proc = run_cli(["run", "--policy", str(bad)], hg_env)
    assert proc.returncode == ExitCode.INVALID_INPUT == 4 and "is invalid" in " ".join(proc.stderr.split())


@pytest.mark.slow
def test_davidson2017_full_run_reaches_published_quality(hg_env):
    proc = run_cli(["run", "--policy", "davidson2017", "--json"], hg_env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = last_json(proc.stdout)["metrics"]["reference"]["test"]
    # Davidson et al. 2017 report weighted F1 0.90. The evasion and identity defences (issue #18) may cost at most 0.01
    # of macro F1 against the 0.7434 before them; they cost 0.009 (0.7345), and 0.004 of weighted F1 (0.887).
    assert ref["weighted_f1"] >= 0.88 and ref["macro_f1"] >= 0.7334
