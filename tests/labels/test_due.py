"""`retrain-needed`: due when enough decisions came in after the champion's labels watermark; the Argo check step."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harmguard.k8s.argo import due_outputs
from harmguard.k8s.argo import main as argo_main
from harmguard.labels.due import VERDICT_KIND, VERDICT_NAME, VerdictError, retrain_needed, verdicts_prefix
from harmguard.labels.store import import_events
from harmguard.policy import load_policy
from harmguard.registry import move_alias, register_version
from harmguard.settings import Settings
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


# --- drift monitoring's verdict as a reason (issue #19) ------------------------------------------------------------


def _verdict(
    store: LocalStore,
    status: str,
    *,
    version: str = "hate_speech/1",
    at: datetime | None = None,
    crossed: list[str] | None = None,
    raw: bytes | None = None,
) -> str:
    """Write a verdict where `harmguard monitor` writes them (the format monitoring.monitor documents); its key."""
    at = at or datetime.now(UTC)
    key = f"{verdicts_prefix('hate_speech')}/{at.strftime('%Y%m%dT%H%M%S%fZ')}-0000abcd/{VERDICT_NAME}"
    doc = {
        "kind": VERDICT_KIND, "policy": "hate_speech", "generated_at": at.isoformat(), "version": version,
        "status": status, "crossed": crossed or [], "reasons": [],
        "window": {"from": "2026-11-01T00:00:00+00:00", "until": "2026-11-02T00:00:00+00:00"},
    }  # fmt: skip
    assert store.create_only(key, raw if raw is not None else json.dumps(doc).encode())
    return key


@pytest.fixture(scope="module")
def champion_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose hate_speech champion (version 1) was promoted now; built once (MLflow's database costs seconds)."""
    base = tmp_path_factory.mktemp("due-champion")
    settings = Settings(home=str(base / "home"), cache=base / "cache", mlflow_tracking_uri=f"sqlite:///{base / 'm.db'}")
    _champion(LocalStore(base / "home"), settings, watermark=0)
    return base / "home"


@pytest.fixture
def champion_store(champion_home: Path, tmp_path: Path) -> LocalStore:
    """This test's own copy of the champion's home."""
    shutil.copytree(champion_home, tmp_path / "home")
    return LocalStore(tmp_path / "home")


def test_a_drift_verdict_on_the_champion_makes_a_run_due_naming_its_checks(champion_store):
    store, policy = champion_store, load_policy("hate_speech")
    _verdict(store, "ok")
    assert not retrain_needed(store, policy)["due"]
    key = _verdict(store, "drift", crossed=["psi:hate", "length_ks"])
    answer = retrain_needed(store, policy)
    assert answer["due"] and answer["new_labels"] == 0  # drift alone makes it due
    assert answer["drift"]["uri"] == store.uri_for(key) and answer["drift"]["crossed"] == ["psi:hate", "length_ks"]
    assert "found drift: psi:hate, length_ks" in answer["reasons"][-1]
    assert "2026-11-01T00:00:00+00:00" in answer["reasons"][-1]  # the window judged
    _verdict(store, "ok")  # a newer verdict says the drift is gone
    answer = retrain_needed(store, policy)
    assert not answer["due"] and answer["drift"]["status"] == "ok" and "is ok" in answer["reasons"][-1]


@pytest.mark.parametrize("status", ["ok", "insufficient_data", "no_traffic", "no_reference"])
def test_a_verdict_without_drift_is_no_reason(champion_store, status):
    _verdict(champion_store, status)
    answer = retrain_needed(champion_store, load_policy("hate_speech"))
    assert not answer["due"] and answer["drift"]["status"] == status


def test_a_verdict_on_another_version_or_before_the_promotion_does_not_count(settings, store):
    policy = load_policy("hate_speech")
    _verdict(store, "drift", version="hate_speech/1", at=datetime.now(UTC) - timedelta(days=2), crossed=["ks:hate"])
    _champion(store, settings, watermark=0)  # promoted after that verdict: it judged traffic before this champion
    _verdict(store, "drift", version="hate_speech/7", crossed=["ks:hate"])  # newer, but about another version
    answer = retrain_needed(store, policy)
    assert not answer["due"] and answer["drift"] is None, answer["reasons"]
    assert not any("drift" in r for r in answer["reasons"])


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{not json", "is not JSON"),
        (b'{"kind": "something/1"}', "is not a drift verdict"),
        (json.dumps({"kind": VERDICT_KIND, "status": "drifting", "version": 3, "crossed": "psi",
                     "generated_at": "yesterday"}).encode(),
         "status must be one of ok, drift"),
        (json.dumps({"kind": VERDICT_KIND, "status": "drift", "version": "hate_speech/1", "crossed": [],
                     "generated_at": "2026-11-02T00:00:00"}).encode(), "has no time zone"),
    ],
    ids=["not-json", "wrong-kind", "wrong-types", "naive-time"],
)  # fmt: skip
def test_a_malformed_verdict_is_a_clear_error(champion_store, raw, problem):
    key = _verdict(champion_store, "ok", raw=raw)
    with pytest.raises(VerdictError, match=problem) as caught:
        retrain_needed(champion_store, load_policy("hate_speech"))
    assert champion_store.uri_for(key) in str(caught.value)


def test_the_cli_answers_a_malformed_verdict_with_exit_4(champion_store, hg_env):
    _verdict(champion_store, "ok", raw=b"\x00\xff not a verdict")
    proc = run_cli(
        ["retrain-needed", "--policy", "hate_speech", "--json"], hg_env | {"HARMGUARD_HOME": str(champion_store.root)}
    )
    assert proc.returncode == 4, proc.stderr
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["exit_code"] == 4 and "is not JSON" in doc["error"] and "Traceback" not in proc.stderr


def test_the_argo_due_step_answers_a_malformed_verdict_with_exit_4(
    champion_store, hg_env, monkeypatch, tmp_path, capsys
):
    """4 is invalid input, which the retrain CronWorkflow never retries (1, a crash, would be retried three times)."""
    _verdict(champion_store, "ok", raw=b"[1, 2]")
    monkeypatch.setenv("HARMGUARD_HOME", str(champion_store.root))
    assert argo_main(["due", "hate_speech", str(tmp_path / "out")]) == 4
    assert "error:" in capsys.readouterr().err and not (tmp_path / "out").exists()  # no outputs for the next step
