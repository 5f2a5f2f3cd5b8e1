"""Human decisions about one exact artifact: approve, reject, override the gate, and when an approval still holds.

An approval is an audit event (``registry/<policy>/audit/``) bound to the version's model digest, blessing digest and
thresholds version, with who, when, why and when it expires. Version records are immutable, so the binding is a
second lock: promotion re-reads the record and refuses an approval whose digests differ from it.

Who decides is an authenticated **principal** (``harmguard.registry.principal``: the Kubeflow/Argo user or service
account in a cluster, the Google account of a ``gs://`` home, else the OS account), kept beside the display name the
person gives (``--by``). The display name is free text and proves nothing.

Rules (``ApprovalRules``) come from the policy file **recorded at registration** (stored by digest under
``policies/<sha256>.yaml``, ``ApprovalRules.for_version``), never from a file named at approval or promotion time:

- approving a version the gate did not bless is refused unless ``override_gate`` is given with a reason; the
  override is written as its own ``override`` event (shown by ``harmguard status``) before the ``approve`` event;
- the approver's principal must differ from the principal that registered the version unless the policy sets
  ``allow_self_approval`` (versions registered before principals were kept compare display names);
- an approval expires ``approval_ttl_hours`` after it was given (at most ``MAX_APPROVAL_TTL_HOURS``; the expiry is
  written into the event);
- the latest decision about a version (in audit-chain order, not by anyone's clock) wins: a reject after an approval
  withdraws it, a new approval after a reject restores it.

Time comes from an injectable ``clock`` (a function returning an aware UTC datetime) so expiry is testable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harmguard.policy import MAX_APPROVAL_TTL_HOURS
from harmguard.registry import VersionRecord, append_audit, get_version, read_audit, read_policy_file
from harmguard.registry.principal import Principal, principal_for
from harmguard.storage import ArtifactStore, StoreError

Clock = Callable[[], datetime]
DECISIONS = ("approve", "reject")


class ApprovalError(RuntimeError):
    """A decision or a promotion is refused; the message says why and what to do."""


def utc_now() -> datetime:
    """The default clock: the current time, UTC."""
    return datetime.now(UTC)


class _ApprovalSettings(BaseModel):
    """The approval fields of a policy file (the rest of the file is not read here)."""

    model_config = ConfigDict(extra="ignore")

    allow_self_approval: bool = Field(default=False, description="Whether the registering principal may approve.")
    approval_ttl_hours: float = Field(
        default=72.0, gt=0, le=MAX_APPROVAL_TTL_HOURS, description="Hours an approval stays valid."
    )


@dataclass(frozen=True)
class ApprovalRules:
    """The approval settings of a policy."""

    allow_self_approval: bool = False  # whether the principal that registered a version may approve it
    ttl_hours: float = 72.0  # hours an approval stays valid

    @classmethod
    def from_policy_file(cls, raw: bytes, origin: str) -> ApprovalRules:
        """Rules from the bytes of a policy file (ApprovalError when they do not hold valid approval settings)."""
        try:
            doc = yaml.safe_load(raw)
            settings = _ApprovalSettings.model_validate(doc if isinstance(doc, dict) else {})
        except (yaml.YAMLError, ValidationError) as e:
            raise ApprovalError(f"the approval settings of policy file {origin} are invalid: {e}") from None
        return cls(allow_self_approval=settings.allow_self_approval, ttl_hours=settings.approval_ttl_hours)

    @classmethod
    def for_version(cls, store: ArtifactStore, record: VersionRecord) -> ApprovalRules:
        """Rules of the policy file recorded when ``record`` was registered (by its digest in the lineage)."""
        digest = record.lineage.get("policy_digest")
        if not isinstance(digest, str) or not digest:
            raise ApprovalError(
                f"{record.version} was registered without its policy file, so its approval rules are unknown: "
                "train and register it again"
            )
        try:
            raw = read_policy_file(store, digest)
        except FileNotFoundError:
            raise ApprovalError(
                f"the policy file {digest[:12]} that {record.version} was registered with is not stored in "
                f"{store.uri_for('policies')}: its approval rules are unknown; train and register it again"
            ) from None
        except (StoreError, ValueError) as e:
            raise ApprovalError(f"the policy file of {record.version} cannot be trusted: {e}") from None
        return cls.from_policy_file(raw, f"policies/{digest}.yaml")


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


def _acting(store: ArtifactStore, principal: Principal | str | None, by: str | None) -> tuple[str, str]:
    """``(principal id, display name)`` of whoever decides; the display name defaults to the principal's name."""
    actor = principal if principal is not None else principal_for(store.uri)
    name = actor.name if isinstance(actor, Principal) else str(actor).partition(":")[2] or str(actor)
    display = (by or "").strip() or name
    return str(actor), display


def is_self_approval(record: VersionRecord, principal: str | None, display: str) -> bool:
    """Whether the decider is whoever registered the version: by principal; by display name for older records."""
    if record.created_principal and principal:
        return principal == record.created_principal
    return display == record.created_by


def approve_version(
    store: ArtifactStore,
    version: str,
    *,
    reason: str,
    by: str | None = None,
    principal: Principal | str | None = None,
    override_gate: bool = False,
    clock: Clock = utc_now,
) -> dict[str, Any]:
    """Record an approval of exactly this version's model, blessing and thresholds.

    Args:
        store: The artifact store.
        version: ``<policy>/<n>``.
        reason: Why (required).
        by: The approver's display name (default: the principal's name).
        principal: The approver's authenticated principal (default: this process's, ``registry.principal``).
        override_gate: Approve although the gate did not bless the version (recorded as an ``override`` event).
        clock: Returns the current UTC time.

    Returns:
        The approve event as written.

    Raises:
        ApprovalError: Unblessed without override, self-approval not allowed, no reason, or no recorded policy.
        VersionNotFound: When the version does not exist.
    """
    record = get_version(store, version)
    reason = _require_reason(reason, "an approval")
    rules = ApprovalRules.for_version(store, record)
    actor, display = _acting(store, principal, by)
    if is_self_approval(record, actor, display) and not rules.allow_self_approval:
        raise ApprovalError(
            f"{actor} registered {version} and cannot approve it: another person must approve "
            "(the policy recorded at registration does not set allow_self_approval)"
        )
    if not record.blessed and not override_gate:
        failed = "; ".join(record.blessing.get("reasons") or []) or "no reasons recorded"
        raise ApprovalError(
            f"{version} was not blessed by the gate ({failed}); approving it needs --override-gate with a reason"
        )
    now = clock()
    binding = _binding(record)
    who = {"who": display, "principal": actor}
    if override_gate:
        append_audit(
            store,
            record.policy,
            {"event": "override", **who, "why": reason, "when": now.isoformat(), "blessed": record.blessed} | binding,
        )
    event = {
        "event": "approve",
        **who,
        "why": reason,
        "when": now.isoformat(),
        "expires_at": (now + timedelta(hours=rules.ttl_hours)).isoformat(),
        "override_gate": override_gate,
    } | binding
    append_audit(store, record.policy, event)
    return event


def reject_version(
    store: ArtifactStore,
    version: str,
    *,
    reason: str,
    by: str | None = None,
    principal: Principal | str | None = None,
    clock: Clock = utc_now,
) -> dict[str, Any]:
    """Record a rejection of this version (it withdraws any earlier approval, and bars rollbacks to it).

    Raises:
        ApprovalError: Without a reason.
        VersionNotFound: When the version does not exist.
    """
    record = get_version(store, version)
    reason = _require_reason(reason, "a rejection")
    actor, display = _acting(store, principal, by)
    event = {"event": "reject", "who": display, "principal": actor, "why": reason, "when": clock().isoformat()}
    event |= _binding(record)
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
    if is_self_approval(record, decision.get("principal"), decision["who"]) and not rules.allow_self_approval:
        who = decision.get("principal") or decision["who"]
        raise ApprovalError(f"{record.version} was approved by {who}, who registered it")
    if not record.blessed and not decision.get("override_gate"):
        raise ApprovalError(f"{record.version} was not blessed and its approval does not override the gate")
    return decision


def valid_approval(store: ArtifactStore, record: VersionRecord, clock: Clock = utc_now) -> dict[str, Any]:
    """``check_approval`` against the stored audit log, the rules recorded at registration and the clock."""
    return check_approval(record, read_audit(store, record.policy), ApprovalRules.for_version(store, record), clock())


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
            approved.append(
                {
                    "version": version,
                    "by": decision["who"],
                    "principal": decision.get("principal"),
                    "expires_at": decision["expires_at"],
                }
            )
    overrides = [
        {
            "version": e.get("version"),
            "by": e["who"],
            "principal": e.get("principal"),
            "when": e["when"],
            "why": e.get("why", ""),
        }
        for e in events
        if e.get("event") == "override"
    ]
    shown = [e for e in events if e.get("event") != "intent"]  # an open intent shows under `unfinished`
    recent = [
        {k: e.get(k) for k in ("event", "who", "principal", "when", "why", "version", "from", "to", "seq")}
        for e in shown[-last:]
        if last > 0
    ]
    return {"approved": approved, "overrides": overrides, "last_events": recent}
