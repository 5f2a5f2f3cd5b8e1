"""Approvals bound to the evaluated artifact: who may approve, overrides, expiry (injected clock), rejection."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harmguard.policy import load_policy
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
from harmguard.settings import Settings
from harmguard.storage import LocalStore
from tests.promotion.helpers import register

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
    event = approve_version(store, rec.version, by="reviewer", reason="report looks good", rules=RULES, clock=at(T0))
    assert (event["model_digest"], event["blessing_digest"], event["thresholds_version"]) == (
        rec.model_digest,
        rec.blessing_digest,
        rec.thresholds_version,
    )
    assert event["expires_at"] == (T0 + timedelta(hours=24)).isoformat()
    stored = [e for e in read_audit(store, policy) if e["event"] == "approve"]
    assert len(stored) == 1 and stored[0]["who"] == "reviewer" and stored[0]["why"] == "report looks good"
    assert valid_approval(store, rec, RULES, at(T0 + timedelta(hours=1)))["who"] == "reviewer"

    # an approval whose binding differs from the record (e.g. forged or copied from another version) is refused
    forged = stored[0] | {"model_digest": "0" * 64}
    with pytest.raises(ApprovalError, match="was given for model_digest"):
        check_approval(rec, [forged], RULES, T0)


def test_approval_expires(store, settings, policy, digest):
    rec = register(store, settings, policy, digest)
    approve_version(store, rec.version, by="reviewer", reason="ok", rules=RULES, clock=at(T0))
    assert valid_approval(store, rec, RULES, at(T0 + timedelta(hours=23, minutes=59)))
    with pytest.raises(ApprovalError, match="expired at"):
        valid_approval(store, rec, RULES, at(T0 + timedelta(hours=24)))
    # approving again restores it
    approve_version(store, rec.version, by="reviewer", reason="still ok", rules=RULES, clock=at(T0 + timedelta(days=2)))
    assert valid_approval(store, rec, RULES, at(T0 + timedelta(days=2, hours=1)))


def test_unapproved_and_rejected_versions_have_no_valid_approval(store, settings, policy, digest):
    rec = register(store, settings, policy, digest)
    with pytest.raises(ApprovalError, match="has no approval"):
        valid_approval(store, rec, RULES, at(T0))
    approve_version(store, rec.version, by="reviewer", reason="ok", rules=RULES, clock=at(T0))
    reject_version(store, rec.version, by="lead", reason="bias slice regressed", clock=at(T0 + timedelta(minutes=5)))
    with pytest.raises(ApprovalError, match="rejected by lead .*bias slice regressed"):
        valid_approval(store, rec, RULES, at(T0 + timedelta(minutes=10)))
    with pytest.raises(ApprovalError, match="needs a reason"):
        reject_version(store, rec.version, by="lead", reason=" ")


def test_self_approval_refused_unless_the_policy_allows_it(store, settings, policy, digest):
    rec = register(store, settings, policy, digest, by="alice")
    with pytest.raises(ApprovalError, match="alice started the run .* cannot approve it"):
        approve_version(store, rec.version, by="alice", reason="mine", rules=RULES)
    assert not [e for e in read_audit(store, policy) if e["event"] == "approve"]
    relaxed = ApprovalRules(allow_self_approval=True, ttl_hours=24)
    approve_version(store, rec.version, by="alice", reason="mine", rules=relaxed, clock=at(T0))
    assert valid_approval(store, rec, relaxed, at(T0))
    # the policy was tightened after the approval: the self-approval no longer counts
    with pytest.raises(ApprovalError, match="approved by its own run's starter"):
        valid_approval(store, rec, RULES, at(T0))


def test_unblessed_needs_override_which_is_recorded_and_shown(store, settings, policy, digest):
    rec = register(store, settings, policy, digest, blessed=False)
    with pytest.raises(ApprovalError, match=r"not blessed by the gate \(f1 below gate\).*--override-gate"):
        approve_version(store, rec.version, by="reviewer", reason="ok", rules=RULES)
    with pytest.raises(ApprovalError, match="needs a reason"):
        approve_version(store, rec.version, by="reviewer", reason="", rules=RULES, override_gate=True)
    approve_version(
        store, rec.version, by="reviewer", reason="known label noise", rules=RULES, override_gate=True, clock=at(T0)
    )
    events = read_audit(store, policy)
    assert [e["event"] for e in events][-2:] == ["override", "approve"]
    assert events[-2]["blessing_digest"] == get_version(store, rec.version).blessing_digest
    assert valid_approval(store, rec, RULES, at(T0))["override_gate"] is True

    overview = approval_overview(store, policy, clock=at(T0))
    assert overview["overrides"] == [
        {"version": rec.version, "by": "reviewer", "when": T0.isoformat(), "why": "known label noise"}
    ]
    assert [a["version"] for a in overview["approved"]] == [rec.version]
    assert [e["event"] for e in overview["last_events"]][-2:] == ["override", "approve"]
    assert approval_overview(store, policy, clock=at(T0 + timedelta(days=2)))["approved"] == []


def test_rules_come_from_the_policy():
    policy = load_policy("sms_spam")
    rules = ApprovalRules.from_policy("sms_spam")
    assert rules == ApprovalRules(allow_self_approval=policy.allow_self_approval, ttl_hours=policy.approval_ttl_hours)
    assert rules.ttl_hours > 0 and not rules.allow_self_approval
