"""Promotion of an approved version to `champion`, rollback, and thresholds-only changes.

Promotion runs these checks in order; each refuses with ``PromotionRefused`` saying why, and nothing moves:

1. **approval and artifact**: a valid approval (``harmguard.promotion.approval``: bound to the version's digests, not
   expired, not withdrawn by a later reject) and the model's digest recomputed from its files (a changed byte is
   refused);
2. **champion**: the champion is still the one the blessing compared against (``blessing["champion"]``: None when
   there was no champion, else ``{"version", "model_digest"}``); otherwise the comparison is stale and the gate
   must run again. The observed champion becomes the compare-and-swap expectation of step 4;
3. **infra validation**: the published model loaded as the server loads it, with the version's thresholds, answers
   the policy's golden file with at least the agreement measured at registration (``harmguard.promotion.golden``);
4. **swap**: approval and digest checked once more, then ``champion`` moves by compare-and-swap from the observed
   champion (``previous`` kept), audited as ``promote``; a concurrent promotion that won first makes this one lose;
5. **deploy**: the RayService patch is rendered and a running local server gets the new ``user_config``
   (``harmguard.promotion.deploy``).

Rollback moves ``champion`` back to ``pointer.previous`` through the same compare-and-swap, audited as ``rollback``.
The version it restores must pass what a promotion of it would: a valid approval (bound to its digests, not expired,
no reject after it: ``check_approval``) and its model digest recomputed. Without one, only an audited override
(``override=True`` with the reason, written as an ``override`` event before the swap) restores it: a second rollback
goes back to the version rolled back from, so a version rejected in between is not re-promoted by accident. A
**thresholds-only change** is a new version of the same model digest with new thresholds
(``register_thresholds_change``): its blessing says the operating metrics were not re-measured, so it is unblessed
and approving it takes ``--override-gate`` with a reason; it is then promoted like any version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harmguard.digests import canonical_json, sha256_bytes, thresholds_version
from harmguard.models.base import ModelError
from harmguard.models.loading import load_model
from harmguard.promotion.approval import ApprovalError, Clock, utc_now, valid_approval
from harmguard.promotion.deploy import ClusterRollout, deploy_version
from harmguard.promotion.golden import measure_golden, meets, required_agreement
from harmguard.registry import (
    AliasPointer,
    VersionNotFound,
    VersionRecord,
    append_audit,
    get_version,
    move_alias,
    read_alias,
    register_version,
)
from harmguard.registry.models import TamperedModelError, verify_model
from harmguard.settings import Settings
from harmguard.storage import ArtifactStore, LostRace

CHAMPION = "champion"


class PromotionRefused(RuntimeError):
    """A promotion or rollback is refused; the message says why. The champion did not move."""


def load_record(store: ArtifactStore, version: str) -> VersionRecord:
    """The version record, or PromotionRefused when there is no such version."""
    try:
        return get_version(store, version)
    except (VersionNotFound, ValueError) as e:
        raise PromotionRefused(str(e)) from e


def verify_artifact(store: ArtifactStore, record: VersionRecord) -> Path:
    """Recompute the model digest of a version's published files; refuse a changed or missing model."""
    try:
        return verify_model(store, record.model_digest)
    except (TamperedModelError, FileNotFoundError) as e:
        raise PromotionRefused(f"{record.version}: {e}") from e


def check_approved(store: ArtifactStore, record: VersionRecord, clock: Clock = utc_now) -> dict[str, Any]:
    """The valid approval of a version under the rules recorded at its registration, or PromotionRefused."""
    try:
        return valid_approval(store, record, clock)
    except ApprovalError as e:
        raise PromotionRefused(str(e)) from e


def _blessed_against(record: VersionRecord) -> tuple[str | None, str | None]:
    champion = record.blessing.get("champion")
    if isinstance(champion, dict):
        return champion.get("version"), champion.get("model_digest")
    return None, None


def check_champion(store: ArtifactStore, record: VersionRecord) -> str | None:
    """Refuse when the champion is no longer the one the blessing compared against; return the current champion."""
    current, _ = read_alias(store, record.policy, CHAMPION)
    current_version = current.version if current else None
    if current_version == record.version:
        raise PromotionRefused(f"{record.version} is already the champion of {record.policy}")
    expected_version, expected_digest = _blessed_against(record)
    if current_version != expected_version or (
        expected_digest and current is not None and current.model_digest != expected_digest
    ):
        raise PromotionRefused(
            f"the blessing of {record.version} compared it against champion {expected_version or 'none'}, but the "
            f"champion is now {current_version or 'none'}: run the gate again (`harmguard run`) before promoting"
        )
    return current_version


def validate_infra(store: ArtifactStore, record: VersionRecord, golden_path: str | Path | None = None) -> dict:
    """Load the published model as the server does and check its golden-file agreement at the version's thresholds.

    Returns:
        ``{"agreement", "required", "required_from", "rows", "golden_digest", "disagreements"}``, or a note when the
        policy has no golden file (then only loading and scoring are checked).
    """
    folder = verify_artifact(store, record)
    try:
        model = load_model(folder)
    except ModelError as e:
        raise PromotionRefused(f"{record.version}: the server could not load the model: {e}") from e
    measured = measure_golden(model, record.policy, record.thresholds, golden_path)
    if measured is None:
        model.predict_proba(["harmguard infra validation"])  # loads and scores: the least a server must do
        return {"agreement": None, "note": f"no golden file for {record.policy}: checked loading and scoring only"}
    required, source = required_agreement(record.metrics.get("golden"), measured["golden_digest"])
    result = measured | {"required": required, "required_from": source}
    if not meets(measured["agreement"], required):
        raise PromotionRefused(
            f"{record.version} agrees with {measured['agreed']}/{measured['rows']} golden texts "
            f"({measured['agreement']:.3f}) when loaded as the server loads it; it needs {required:.3f} ({source})"
        )
    return result


def move_champion(
    store: ArtifactStore,
    settings: Settings,
    record: VersionRecord,
    *,
    expected_champion: str | None,
    by: str,
    clock: Clock = utc_now,
) -> AliasPointer:
    """Check approval and digest once more, then compare-and-swap ``champion`` from ``expected_champion``."""
    approval = check_approved(store, record, clock)
    verify_artifact(store, record)
    reason = f"approved by {approval['who']} at {approval['when']}: {approval.get('why', '')}"
    try:
        return move_alias(
            store,
            settings,
            policy=record.policy,
            alias=CHAMPION,
            to_version=record.version,
            expected_version=expected_champion,
            by=by,
            reason=reason,
            event="promote",
            extra={"approval_seq": approval.get("seq"), "approved_by": approval.get("principal")},
        )
    except LostRace as e:
        raise PromotionRefused(f"another promotion won: {e}") from e


def promote_version(
    store: ArtifactStore,
    settings: Settings,
    version: str,
    *,
    by: str,
    run_id: str,
    clock: Clock = utc_now,
    golden_path: str | Path | None = None,
    cluster: ClusterRollout | None = None,
) -> dict[str, Any]:
    """Every promotion step in one process (the pipeline runs the same functions as separate steps).

    ``cluster``: the RayService rollout of the deploy step (``deploy.deploy_version``); None deploys locally only.

    Returns:
        ``{"version", "previous", "infra", "deploy"}``.

    Raises:
        PromotionRefused: At the first failing step; the champion is unchanged.
    """
    record = load_record(store, version)
    check_approved(store, record, clock)
    verify_artifact(store, record)
    expected = check_champion(store, record)
    infra = validate_infra(store, record, golden_path)
    pointer = move_champion(store, settings, record, expected_champion=expected, by=by, clock=clock)

    deployed = deploy_version(store, record, run_id, cluster)
    return {"version": version, "previous": pointer.previous, "infra": infra, "deploy": deployed}


def rollback_champion(
    store: ArtifactStore,
    settings: Settings,
    policy: str,
    *,
    by: str,
    reason: str,
    run_id: str,
    override: bool = False,
    clock: Clock = utc_now,
    cluster: ClusterRollout | None = None,
) -> dict[str, Any]:
    """Move ``champion`` back to the version it pointed to before, by compare-and-swap, and deploy it.

    Args:
        store: The artifact store.
        settings: Settings (for the MLflow mirror).
        policy: Policy name.
        by: Who rolls back (a display name; the principal is recorded by the audit log).
        reason: Why (required; kept in the audit log).
        run_id: Run id for the RayService patch.
        override: Restore the previous version although it has no valid approval (expired, rejected since, never
            approved); written as an ``override`` event with the reason before the swap.
        clock: Returns the current UTC time (approval expiry).
        cluster: The RayService rollout (``deploy.deploy_version``); None deploys to a local server only.

    Returns:
        ``{"version" (restored), "previous" (rolled back from), "deploy", "approval" or "override"}``.

    Raises:
        PromotionRefused: No champion or previous version, a target without a valid approval (and no override), a
            changed model, or a champion that moved meanwhile.
    """
    if not reason.strip():
        raise PromotionRefused("a rollback needs a reason (--reason TEXT): it is kept in the audit log")
    current, _ = read_alias(store, policy, CHAMPION)
    if current is None:
        raise PromotionRefused(f"{policy} has no champion to roll back")
    if current.previous is None:
        raise PromotionRefused(f"champion {current.version} of {policy} has no previous version to roll back to")
    target = load_record(store, current.previous)
    verify_artifact(store, target)
    try:
        approval: dict[str, Any] | None = valid_approval(store, target, clock)
    except ApprovalError as e:
        if not override:
            raise PromotionRefused(
                f"cannot roll back to {target.version}: {e}. Approve it again, or roll back with --override and a "
                "reason (audited)"
            ) from e
        approval = None
        append_audit(
            store,
            policy,
            {
                "event": "override",
                "who": by,
                "why": reason,
                "when": clock().isoformat(),
                "version": target.version,
                "model_digest": target.model_digest,
                "blessing_digest": target.blessing_digest,
                "thresholds_version": target.thresholds_version,
                "action": "rollback",
                "overridden": str(e),
            },
        )
    try:
        move_alias(
            store,
            settings,
            policy=policy,
            alias=CHAMPION,
            to_version=target.version,
            expected_version=current.version,
            by=by,
            reason=reason,
            event="rollback",
            extra={"approval_seq": approval.get("seq") if approval else None, "override": approval is None},
        )
    except LostRace as e:
        raise PromotionRefused(f"the champion moved during the rollback: {e}") from e

    deployed = deploy_version(store, target, run_id, cluster)
    result = {"version": target.version, "previous": current.version, "deploy": deployed}
    return result | ({"approval": approval} if approval else {"override": True})


def register_thresholds_change(
    store: ArtifactStore,
    settings: Settings,
    base_version: str,
    thresholds: dict[str, float],
    *,
    by: str,
    reason: str,
    run_id: str,
    golden_path: str | Path | None = None,
) -> VersionRecord:
    """Register the model of ``base_version`` with new thresholds as a new, unblessed version (see module doc)."""
    base = load_record(store, base_version)
    if set(thresholds) != set(base.thresholds):
        raise PromotionRefused(f"thresholds must name exactly the categories {sorted(base.thresholds)}")
    if any(not 0.0 <= float(t) <= 1.0 for t in thresholds.values()):
        raise PromotionRefused(f"thresholds must lie in [0, 1]: {thresholds}")
    thresholds = {k: float(v) for k, v in thresholds.items()}
    if thresholds_version(thresholds) == base.thresholds_version:
        raise PromotionRefused(f"{base_version} already has these thresholds")
    champion, _ = read_alias(store, base.policy, CHAMPION)
    blessing = {
        "policy": base.policy,
        "kind": "thresholds",
        "run_id": run_id,
        "blessed": False,
        "reasons": [
            f"thresholds-only change of {base.version}: operating metrics were not re-measured at the new "
            "thresholds; approving it takes --override-gate with a reason"
        ],
        "base_version": base.version,
        "base_blessing_digest": base.blessing_digest,
        "model_digest": base.model_digest,
        "thresholds": thresholds,
        "thresholds_version": thresholds_version(thresholds),
        "champion": {"version": champion.version, "model_digest": champion.model_digest} if champion else None,
        "decided_at": datetime.now(UTC).isoformat(),
        "why": reason,
    }
    golden = measure_golden(load_model(verify_artifact(store, base)), base.policy, thresholds, golden_path)
    record = register_version(
        store,
        settings,
        policy=base.policy,
        model_digest=base.model_digest,
        thresholds=thresholds,
        blessing=blessing,
        metrics={**base.metrics, "golden": golden},
        lineage=base.lineage | {"parent_version": base.version},
        run_id=run_id,
        mlflow_run_id=base.mlflow_run_id,
        family=base.family,
        by=by,
    )
    append_audit(
        store,
        base.policy,
        {
            "event": "thresholds",
            "who": by,
            "why": reason,
            "version": record.version,
            "model_digest": record.model_digest,
            "blessing_digest": sha256_bytes(canonical_json(blessing)),
            "thresholds_version": record.thresholds_version,
            "from": base.version,
            "to": record.version,
        },
    )
    return record
