"""Names are checked whole (fullmatch), run ids are claimed once, and policy files are kept by digest."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from harmguard.registry import (
    append_audit,
    get_version,
    parse_version,
    read_alias,
    read_policy_file,
    register_version,
    store_policy_file,
)
from harmguard.registry.models import publish_model, verify_model
from harmguard.registry.runs import RunIdTaken, check_run_id, claim_run_id, new_run_id, read_record, record
from harmguard.settings import Settings
from harmguard.storage import LocalStore, StoreError


@pytest.fixture
def settings(tmp_path: Path, mlflow_uri: str) -> Settings:
    return Settings(home=str(tmp_path / "home"), cache=tmp_path / "cache", mlflow_tracking_uri=mlflow_uri)


@pytest.mark.parametrize("bad", ["sms_spam\n", "sms_spam/1\n", "sms_spam/01", "sms_spam/١", "../x/1", "/1", "p/0"])
def test_version_ids_with_a_trailing_newline_or_odd_digits_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        parse_version(bad)
    assert parse_version("sms_spam/12") == ("sms_spam", 12)


def test_policy_and_alias_names_are_matched_whole(store: LocalStore) -> None:
    with pytest.raises(ValueError, match="invalid policy"):
        append_audit(store, "sms_spam\n", {"event": "bless", "who": "gate"})
    with pytest.raises(ValueError, match="invalid alias"):
        read_alias(store, "sms_spam", "champion\n")
    with pytest.raises(ValueError, match="invalid model digest"):
        verify_model(store, "a" * 64 + "\n")
    with pytest.raises(ValueError, match="invalid version"):
        get_version(store, "sms_spam/1\n")


@pytest.mark.parametrize("bad", ["run\n", "run/../x", "", "-x", "a" * 201, "run id"])
def test_run_ids_are_matched_whole(store: LocalStore, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid run id"):
        check_run_id(bad)
    with pytest.raises(ValueError, match="invalid run id"):
        record(store, bad, "ingest", {})
    with pytest.raises(ValueError, match="invalid run id"):
        read_record(store, bad, "ingest")


def test_two_runs_cannot_share_a_run_id(store: LocalStore) -> None:
    run_id = new_run_id("sms_spam")
    claim = claim_run_id(store, run_id, kind="training", by="alice")
    assert claim["run_id"] == run_id and claim["principal"]
    with pytest.raises(RunIdTaken, match=f"run id {run_id} is already taken by a training run of alice"):
        claim_run_id(store, run_id, kind="promotion", by="bob")
    claim_run_id(store, new_run_id("sms_spam"), kind="training", by="bob")  # another id is free


def test_policy_files_are_kept_create_only_and_checked_by_digest(store: LocalStore) -> None:
    digest = store_policy_file(store, b"name: p\n")
    assert read_policy_file(store, digest) == b"name: p\n"
    assert store_policy_file(store, b"name: p\n") == digest  # the same bytes again: reused
    store.path(f"policies/{digest}.yaml").write_bytes(b"name: p\nallow_self_approval: true\n")
    with pytest.raises(StoreError, match="was modified"):
        read_policy_file(store, digest)
    with pytest.raises(StoreError, match="was modified"):
        store_policy_file(store, b"name: p\n")
    with pytest.raises(FileNotFoundError, match="no policy file"):
        read_policy_file(store, "0" * 64)
    with pytest.raises(ValueError, match="invalid policy digest"):
        read_policy_file(store, "0" * 64 + "\n")


def test_registration_keeps_the_policy_file_the_run_used(store: LocalStore, settings: Settings, tmp_path: Path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.json").write_text("{}")
    digest = publish_model(store, folder)
    policy = f"pf-{uuid.uuid4().hex[:8]}"
    kw = {
        "policy": policy, "model_digest": digest, "thresholds": {"spam": 0.5}, "blessing": {"blessed": True},
        "metrics": {}, "run_id": "r1", "mlflow_run_id": None, "family": "baseline", "by": "trainer",
    }  # fmt: skip
    rec = register_version(store, settings, lineage={}, policy_file=b"name: x\n", principal="test:t", **kw)
    assert read_policy_file(store, rec.lineage["policy_digest"]) == b"name: x\n"
    assert rec.created_principal == "test:t"
    # the policy file changed between the run's ingest (whose digest the lineage carries) and its registration
    with pytest.raises(ValueError, match="changed during the run"):
        register_version(store, settings, lineage={"policy_digest": "a" * 64}, policy_file=b"name: y\n", **kw)
