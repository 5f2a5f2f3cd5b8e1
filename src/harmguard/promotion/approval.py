"""Human decisions about one exact artifact: approve, reject, override the gate, and when an approval still holds.

An approval is an audit event (``registry/<policy>/audit/``) bound to the version's model digest, blessing digest and
thresholds version, with who, when, why and when it expires. Version records are immutable, so the binding is a
second lock: promotion re-reads the record and refuses an approval whose digests differ from it.

Rules (``ApprovalRules``, from the policy):

- approving a version the gate did not bless is refused unless ``override_gate`` is given with a reason; the
  override is written as its own ``override`` event (shown by ``harmguard status``) before the ``approve`` event;
- the approver must differ from whoever started the run (``created_by`` of the version) unless the policy sets
  ``allow_self_approval``;
- an approval expires ``approval_ttl_hours`` after it was given (the expiry is written into the event, so changing
  the policy later does not change what was approved);
- the latest decision about a version wins: a reject after an approval withdraws it, a new approval after a reject
  restores it.

Time comes from an injectable ``clock`` (a function returning an aware UTC datetime) so expiry is testable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from harmguard.policy import load_policy
from harmguard.registry import VersionRecord, append_audit, get_version, read_audit
from harmguard.storage import ArtifactStore

Clock = Callable[[], datetime]
DECISIONS = ("approve", "reject")


class ApprovalError(RuntimeError):
    """A decision or a promotion is refused; the message says why and what to do."""


def utc_now() -> datetime:
    """The default clock: the current time, UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class ApprovalRules:
    """The approval settings of a policy."""

    allow_self_approval: bool = False  # whether the run's starter may approve their own run
    ttl_hours: float = 72.0  # hours an approval stays valid

    @classmethod
    def from_policy(cls, policy_ref: str) -> ApprovalRules:
        """Rules of a policy given as a shipped name or a path (PolicyError when it cannot be loaded)."""
        policy = load_policy(policy_ref)
        return cls(allow_self_approval=policy.allow_self_approval, ttl_hours=policy.approval_ttl_hours)


def _binding(record: VersionRecord) -> dict[str, Any]:
    return {
        "version": record.version,
        "model_digest": record.model_digest,
        "blessing_digest": record.blessing_digest,
        "thresholds_version": record.thresholds_version,
    }


def _require_reason(reason: str, what: str) -> str:
    if not reason or not reason.strip():
        raise ApprovalError(f"{what} needs a reason (--reason TEXT): it is kept in the audit log")
    return reason.strip()


def approve_version(
    store: ArtifactStore,
    version: str,
    *,
    by: str,
    reason: str,
    rules: ApprovalRules,
    override_gate: bool = False,
    clock: Clock = utc_now,
) -> dict[str, Any]:
    """Record an approval of exactly this version's model, blessing and thresholds.

    Args:
        store: The artifact store.
        version: ``<policy>/<n>``.
        by: The approver.
        reason: Why (required).
        rules: The policy's approval rules.
        override_gate: Approve although the gate did not bless the version (recorded as an ``override`` event).
        clock: Returns the current UTC time.

    Returns:
        The approve event as written.

    Raises:
        ApprovalError: Unblessed without override, self-approval not allowed, or no reason.
        VersionNotFound: When the version does not exist.
    """
    record = get_version(store, version)
    reason = _require_reason(reason, "an approval")
    if not by.strip():
        raise ApprovalError("an approval needs the approver's name (--by NAME)")
    if by == record.created_by and not rules.allow_self_approval:
        raise ApprovalError(
            f"{by} started the run that produced {version} and cannot approve it: another person must approve "
            "(the policy does not set allow_self_approval)"
        )
    if not record.blessed and not override_gate:
        failed = "; ".join(record.blessing.get("reasons") or []) or "no reasons recorded"
        raise ApprovalError(
            f"{version} was not blessed by the gate ({failed}); approving it needs --override-gate with a reason"
        )
    now = clock()
    binding = _binding(record)
    if override_gate:
        append_audit(
            store,
            record.policy,
            {"event": "override", "who": by, "why": reason, "when": now.isoformat(), "blessed": record.blessed}
            | binding,
        )
    event = {
        "event": "approve",
        "who": by,
        "why": reason,
        "when": now.isoformat(),
        "expires_at": (now + timedelta(hours=rules.ttl_hours)).isoformat(),
        "override_gate": override_gate,
    } | binding
    append_audit(store, record.policy, event)
    return event


def reject_version(store: ArtifactStore, version: str, *, by: str, reason: str, clock: Clock = utc_now) -> dict:
    """Record a rejection of this version (it withdraws any earlier approval).

    Raises:
        ApprovalError: Without a reason.
        VersionNotFound: When the version does not exist.
    """
    record = get_version(store, version)
    reason = _require_reason(reason, "a rejection")
    event = {"event": "reject", "who": by, "why": reason, "when": clock().isoformat()} | _binding(record)
    append_audit(store, record.policy, event)
    return event


def latest_decision(events: list[dict[str, Any]], version: str) -> dict[str, Any] | None:
    """The last approve or reject event about a version, in audit-log order."""
    decisions = [e for e in events if e.get("event") in DECISIONS and e.get("version") == version]
    return decisions[-1] if decisions else None


def check_approval(
    record: VersionRecord, events: list[dict[str, Any]], rules: ApprovalRules, now: datetime
) -> dict[str, Any]:
    """The approval that allows promoting ``record`` at ``now``, or ApprovalError saying why there is none.

    Args:
        record: The version to promote.
        events: The policy's audit log (``read_audit``).
        rules: The policy's approval rules (self-approval is checked again: the policy may have changed).
        now: The current UTC time.

    Returns:
        The approve event.
    """
    decision = latest_decision(events, record.version)
    if decision is None:
        raise ApprovalError(f"{record.version} has no approval: run `harmguard approve {record.version}` first")
    if decision["event"] == "reject":
        raise ApprovalError(
            f"{record.version} was rejected by {decision['who']} at {decision['when']}: {decision.get('why')}"
        )
    for key, expected in _binding(record).items():
        if decision.get(key) != expected:
            raise ApprovalError(
                f"the approval of {record.version} was given for {key} {decision.get(key)}, but the version has "
                f"{expected}: approve the version as it is now"
            )
    expires = datetime.fromisoformat(decision["expires_at"])
    if now >= expires:
        raise ApprovalError(
            f"the approval of {record.version} by {decision['who']} at {decision['when']} expired at "
            f"{decision['expires_at']}: approve it again"
        )
    if decision["who"] == record.created_by and not rules.allow_self_approval:
        raise ApprovalError(f"{record.version} was approved by its own run's starter {decision['who']}")
    if not record.blessed and not decision.get("override_gate"):
        raise ApprovalError(f"{record.version} was not blessed and its approval does not override the gate")
    return decision


def valid_approval(
    store: ArtifactStore, record: VersionRecord, rules: ApprovalRules, clock: Clock = utc_now
) -> dict[str, Any]:
    """``check_approval`` against the stored audit log and the clock."""
    return check_approval(record, read_audit(store, record.policy), rules, clock())


def approval_overview(
    store: ArtifactStore, policy: str, *, clock: Clock = utc_now, last: int = 5
) -> dict[str, list[dict[str, Any]]]:
    """What ``harmguard status`` adds per policy: valid approvals, gate overrides and the last events.

    Returns:
        ``{"approved": [...], "overrides": [...], "last_events": [...]}``, each a list of small dicts.
    """
    events = read_audit(store, policy)
    now = clock()
    approved = []
    for version in sorted({str(e["version"]) for e in events if e.get("event") == "approve"}):
        decision = latest_decision(events, version)
        if decision and decision["event"] == "approve" and now < datetime.fromisoformat(decision["expires_at"]):
            approved.append({"version": version, "by": decision["who"], "expires_at": decision["expires_at"]})
    overrides = [
        {"version": e.get("version"), "by": e["who"], "when": e["when"], "why": e.get("why", "")}
        for e in events
        if e.get("event") == "override"
    ]
    recent = [
        {k: e.get(k) for k in ("event", "who", "when", "why", "version", "from", "to")}
        for e in events[-last:]
        if last > 0
    ]
    return {"approved": approved, "overrides": overrides, "last_events": recent}
