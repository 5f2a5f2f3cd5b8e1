"""Approvals bound to the evaluated artifact: who may approve, overrides, expiry (injected clock), rejection."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harmguard.policy import MAX_APPROVAL_TTL_HOURS, PolicyError, load_policy
from harmguard.promotion.approval import (
    ApprovalError,
    ApprovalRules,
    approval_overview,
    approve_version,
    check_approval,
    reject_version,
    valid_approval,
)
from harmguard.registry import get_version, read_audit
from harmguard.registry.models import publish_model
from harmguard.registry.principal import principal_for
from harmguard.settings import Settings
from harmguard.storage import LocalStore
from tests.conftest import run_cli
from tests.promotion.helpers import policy_file, register

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
RULES = ApprovalRules(allow_self_approval=False, ttl_hours=24)


def at(t: datetime):
    return lambda: t


@pytest.fixture
def settings(tmp_path: Path, mlflow_uri: str) -> Settings:
    return Settings(home=str(tmp_path / "home"), cache=tmp_path / "cache", mlflow_tracking_uri=mlflow_uri)


@pytest.fixture
def policy() -> str:
    return f"appr-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def digest(tmp_path: Path, store: LocalStore) -> str:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.json").write_text('{"family": "baseline"}')
    return publish_model(store, folder)


def test_approval_is_bound_to_the_versions_digests(store, settings, policy, digest):
    rec = register(store, settings, policy, digest)
    event = approve_version(
        store, rec.version, by="reviewer", principal="test:reviewer", reason="report looks good", clock=at(T0)
    )
    assert (event["model_digest"], event["blessing_digest"], event["thresholds_version"]) == (
        rec.model_digest,
        rec.blessing_digest,
        rec.thresholds_version,
    )
    assert event["expires_at"] == (T0 + timedelta(hours=24)).isoformat()
    stored = [e for e in read_audit(store, policy) if e["event"] == "approve"]
    assert len(stored) == 1 and stored[0]["who"] == "reviewer" and stored[0]["why"] == "report looks good"
    assert valid_approval(store, rec, at(T0 + timedelta(hours=1)))["who"] == "reviewer"

    # an approval whose binding differs from the record (e.g. forged or copied from another version) is refused
    forged = stored[0] | {"model_digest": "0" * 64}
    with pytest.raises(ApprovalError, match="was given for model_digest"):
        check_approval(rec, [forged], RULES, T0)


def test_approval_expires(store, settings, policy, digest):
    rec = register(store, settings, policy, digest)
    approve_version(store, rec.version, by="reviewer", principal="test:reviewer", reason="ok", clock=at(T0))
    assert valid_approval(store, rec, at(T0 + timedelta(hours=23, minutes=59)))
    with pytest.raises(ApprovalError, match="expired at"):
        valid_approval(store, rec, at(T0 + timedelta(hours=24)))
    # approving again restores it
    approve_version(
        store,
        rec.version,
        by="reviewer",
        principal="test:reviewer",
        reason="still ok",
        clock=at(T0 + timedelta(days=2)),
    )
    assert valid_approval(store, rec, at(T0 + timedelta(days=2, hours=1)))


def test_unapproved_and_rejected_versions_have_no_valid_approval(store, settings, policy, digest):
    rec = register(store, settings, policy, digest)
    with pytest.raises(ApprovalError, match="has no approval"):
        valid_approval(store, rec, at(T0))
    approve_version(store, rec.version, by="reviewer", principal="test:reviewer", reason="ok", clock=at(T0))
    reject_version(
        store,
        rec.version,
        by="lead",
        principal="test:lead",
        reason="bias slice regressed",
        clock=at(T0 + timedelta(minutes=5)),
    )
    with pytest.raises(ApprovalError, match="rejected by lead .*bias slice regressed"):
        valid_approval(store, rec, at(T0 + timedelta(minutes=10)))
    with pytest.raises(ApprovalError, match="needs a reason"):
        reject_version(store, rec.version, by="lead", principal="test:lead", reason=" ")


def test_self_approval_is_refused_on_the_principal_not_the_display_name(store, settings, policy, digest):
    rec = register(store, settings, policy, digest, by="alice")
    assert rec.created_principal == "test:alice"
    # the attack: the registering principal types someone else's name
    with pytest.raises(ApprovalError, match="test:alice registered .* cannot approve it"):
        approve_version(store, rec.version, by="bob", principal="test:alice", reason="mine")
    assert not [e for e in read_audit(store, policy) if e["event"] == "approve"]
    # another principal may use any display name, even the registrant's: names prove nothing either way
    event = approve_version(store, rec.version, by="alice", principal="test:carol", reason="read it", clock=at(T0))
    assert (event["who"], event["principal"]) == ("alice", "test:carol")
    assert valid_approval(store, rec, at(T0))["principal"] == "test:carol"
    # a forged event claiming another principal's approval of one's own version is caught at promotion too
    forged = event | {"principal": "test:alice"}
    with pytest.raises(ApprovalError, match="approved by test:alice, who registered it"):
        check_approval(rec, [forged], RULES, T0)


def test_self_approval_allowed_only_by_the_policy_recorded_at_registration(store, settings, policy, digest):
    relaxed = register(store, settings, policy, digest, by="alice", policy=policy_file(allow_self_approval=True))
    approve_version(store, relaxed.version, principal="test:alice", reason="mine", clock=at(T0))
    assert valid_approval(store, relaxed, at(T0))
    strict = register(store, settings, policy, digest, by="alice")
    with pytest.raises(ApprovalError, match="cannot approve it"):
        approve_version(store, strict.version, principal="test:alice", reason="mine")
    # the rules are those of the stored file: rewriting it (to allow self-approval) is detected, not obeyed
    key = f"policies/{strict.lineage['policy_digest']}.yaml"
    store.path(key).write_bytes(policy_file(allow_self_approval=True))
    with pytest.raises(ApprovalError, match="cannot be trusted: .* was modified"):
        approve_version(store, strict.version, principal="test:alice", reason="mine")


def test_a_version_without_its_recorded_policy_cannot_be_approved(store, settings, policy, digest):
    rec = register(store, settings, policy, digest)
    store.path(f"policies/{rec.lineage['policy_digest']}.yaml").unlink()
    with pytest.raises(ApprovalError, match="is not stored in .*policies"):
        approve_version(store, rec.version, principal="test:reviewer", reason="ok")


def test_the_approval_ttl_comes_from_the_recorded_policy_and_is_bounded(store, settings, policy, digest):
    rec = register(store, settings, policy, digest, policy=policy_file(ttl_hours=2))
    event = approve_version(store, rec.version, principal="test:reviewer", reason="ok", clock=at(T0))
    assert event["expires_at"] == (T0 + timedelta(hours=2)).isoformat()
    with pytest.raises(ApprovalError, match="approval_ttl_hours"):
        ApprovalRules.from_policy_file(policy_file(ttl_hours=MAX_APPROVAL_TTL_HOURS + 1), "test")
    assert ApprovalRules.from_policy_file(policy_file(ttl_hours=MAX_APPROVAL_TTL_HOURS), "t").ttl_hours == 720


def test_a_policy_with_a_longer_approval_ttl_is_invalid_input(tmp_path, hg_env):
    shipped = load_policy("sms_spam")
    assert shipped.approval_ttl_hours <= MAX_APPROVAL_TTL_HOURS
    path = tmp_path / "long_ttl.yaml"
    path.write_bytes(policy_file(ttl_hours=MAX_APPROVAL_TTL_HOURS + 1))
    with pytest.raises(PolicyError, match="approval_ttl_hours"):
        load_policy(str(path))
    proc = run_cli(["labels", "status", "--policy", str(path)], hg_env)
    assert proc.returncode == 4 and "approval_ttl_hours" in " ".join(proc.stderr.split()), proc.stderr


def test_unblessed_needs_override_which_is_recorded_and_shown(store, settings, policy, digest):
    rec = register(store, settings, policy, digest, blessed=False)
    with pytest.raises(ApprovalError, match=r"not blessed by the gate \(f1 below gate\).*--override-gate"):
        approve_version(store, rec.version, by="reviewer", principal="test:reviewer", reason="ok")
    with pytest.raises(ApprovalError, match="needs a reason"):
        approve_version(store, rec.version, by="reviewer", principal="test:reviewer", reason="", override_gate=True)
    approve_version(
        store,
        rec.version,
        by="reviewer",
        principal="test:reviewer",
        reason="known label noise",
        override_gate=True,
        clock=at(T0),
    )
    events = read_audit(store, policy)
    assert [e["event"] for e in events][-2:] == ["override", "approve"]
    assert events[-2]["blessing_digest"] == get_version(store, rec.version).blessing_digest
    assert valid_approval(store, rec, at(T0))["override_gate"] is True

    overview = approval_overview(store, policy, clock=at(T0))
    assert overview["overrides"] == [
        {
            "version": rec.version,
            "by": "reviewer",
            "principal": "test:reviewer",
            "when": T0.isoformat(),
            "why": "known label noise",
        }
    ]
    assert [a["version"] for a in overview["approved"]] == [rec.version]
    assert [e["event"] for e in overview["last_events"]][-2:] == ["override", "approve"]
    assert approval_overview(store, policy, clock=at(T0 + timedelta(days=2)))["approved"] == []


def test_approval_rules_are_read_from_the_policy_file_recorded_at_registration(store, settings, policy, digest):
    rec = register(store, settings, policy, digest, policy=policy_file(allow_self_approval=True, ttl_hours=5))
    assert ApprovalRules.for_version(store, rec) == ApprovalRules(allow_self_approval=True, ttl_hours=5)


def test_cli_approver_is_the_login_and_by_is_only_a_display_name(store, settings, policy, digest, hg_env):
    me = str(principal_for(store.uri))  # the OS account of this process: the CLI's principal here
    mine = register(store, settings, policy, digest, by="trainer", principal=me)
    refused = run_cli(["approve", mine.version, "--by", "someone-else", "--reason", "looks fine"], hg_env)
    assert refused.returncode == 3 and "cannot approve it" in " ".join(refused.stderr.split()), refused.stderr
    assert not [e for e in read_audit(store, policy) if e["event"] == "approve"]

    theirs = register(store, settings, policy, digest, by="trainer")
    ok = run_cli(["approve", theirs.version, "--by", "Reviewer Name", "--reason", "report read"], hg_env)
    assert ok.returncode == 0, ok.stderr
    approval = next(e for e in read_audit(store, policy) if e["event"] == "approve")
    assert (approval["who"], approval["principal"]) == ("Reviewer Name", me)
    # --policy is gone: the rules come from the policy recorded at registration
    stale = run_cli(["approve", theirs.version, "--reason", "x", "--policy", "sms_spam"], hg_env)
    assert stale.returncode == 2


def test_status_prints_reasons_as_text_not_rich_markup(store, settings, policy, digest, hg_env):
    rec = register(store, settings, policy, digest)
    reject_version(store, rec.version, by="[bold]lead", principal="test:lead", reason="[/] closes nothing [red]")
    proc = run_cli(["status"], hg_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = " ".join(proc.stderr.split())
    assert "[/] closes nothing [red]" in text and "[bold]lead" in text
