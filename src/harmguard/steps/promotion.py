"""The promotion pipeline's steps as library functions, and `harmguard promote`'s local run through kfp.local.

Each step is the entry point of its own process: it resolves settings from the environment, calls one function of
``harmguard.promotion.promote`` and records what it did in ``runs/<run-id>/promotion-<step>.json``. A refusal is also
written to ``runs/<run-id>/refusal.json`` (step and reason) before the step fails, so the CLI can say why.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from harmguard.k8s.rayservice import rayservice_rollout
from harmguard.promotion.deploy import deploy_version
from harmguard.promotion.promote import (
    check_approved,
    check_champion,
    load_record,
    move_champion,
    validate_infra,
    verify_artifact,
)
from harmguard.registry.runs import record
from harmguard.steps.context import step_context
from harmguard.storage import ArtifactStore

STEPS = ("verify-approval", "check-champion", "validate-infra", "move-champion", "deploy")


@contextlib.contextmanager
def _refusals(store: ArtifactStore, run_id: str, step: str) -> Iterator[None]:
    try:
        yield
    except Exception as e:
        record(store, run_id, "refusal", {"step": step, "reason": str(e), "kind": type(e).__name__})
        raise


def verify_approval_step(version: str, run_id: str) -> str:
    """Valid approval (rules of the policy recorded at registration) and an unchanged model. Returns the digest."""
    _, store = step_context()
    with _refusals(store, run_id, "verify-approval"):
        rec = load_record(store, version)
        approval = check_approved(store, rec)
        verify_artifact(store, rec)
    record(store, run_id, "promotion-verify", {"version": version, "approval": approval})
    return rec.model_digest


def check_champion_step(version: str, run_id: str) -> str:
    """The champion is the one the blessing compared against. Returns it ('' when there is none)."""
    _, store = step_context()
    with _refusals(store, run_id, "check-champion"):
        current = check_champion(store, load_record(store, version))
    record(store, run_id, "promotion-champion", {"version": version, "expected_champion": current})
    return current or ""


def validate_infra_step(version: str, run_id: str) -> float:
    """Load as the server does and answer the golden file. Returns the agreement (-1 when there is no file)."""
    _, store = step_context()
    with _refusals(store, run_id, "validate-infra"):
        result = validate_infra(store, load_record(store, version))
    record(store, run_id, "promotion-infra", result)
    return -1.0 if result.get("agreement") is None else float(result["agreement"])


def move_champion_step(version: str, expected_champion: str, promoted_by: str, run_id: str) -> str:
    """Compare-and-swap ``champion`` from the champion seen by the check step. Returns the previous champion."""
    settings, store = step_context()
    with _refusals(store, run_id, "move-champion"):
        rec = load_record(store, version)
        pointer = move_champion(
            store,
            settings,
            rec,
            expected_champion=expected_champion or None,
            by=promoted_by,
        )
    record(store, run_id, "promotion-move", pointer.model_dump())
    return pointer.previous or ""


def deploy_step(version: str, run_id: str) -> str:
    """Patch the RayService and wait for it (given a Kubernetes API), push to a running local server.

    Returns a one-line note. A RayService that does not run the new version fails the step "moved, not deployed"
    (refused: exit 3); the champion pointer stays moved.
    """
    settings, store = step_context()
    with _refusals(store, run_id, "deploy"):
        result = deploy_version(store, load_record(store, version), run_id, rayservice_rollout(settings))
    record(store, run_id, "promotion-deploy", result)
    return str(result["note"])
