"""Run records: ``runs/<run-id>/<step>.json``, the small JSON each step writes of what it did.

A run id names one folder of records, reports and blessings, so two runs must never share one: the process that
starts a run claims its id create-only (``claim_run_id`` writes ``runs/<run-id>/claim.json``) before any step
writes, and a second claim of the same id is refused.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from harmguard.registry.principal import principal_for
from harmguard.storage import ArtifactStore

# fullmatch: with match() and "$", "run\n" would pass and name another folder.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_STEP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class RunIdTaken(RuntimeError):
    """Another run already claimed this run id."""


def check_run_id(run_id: str) -> str:
    """The run id, or ValueError when it is not letters, digits, '.', '_' or '-' (at most 200)."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' or '-' (at most 200)")
    return run_id


def new_run_id(policy: str) -> str:
    """A sortable, unique run id."""
    return check_run_id(f"{policy}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")


def claim_run_id(store: ArtifactStore, run_id: str, *, kind: str, by: str) -> dict[str, Any]:
    """Claim a run id for one run, create-only; call it before the run writes anything.

    Args:
        store: The artifact store.
        run_id: The run id.
        kind: What runs under it (``training``, ``promotion``, ``rollback``...).
        by: Who starts it (a display name; the principal is recorded beside it).

    Returns:
        The claim as written.

    Raises:
        RunIdTaken: When the id was claimed before (by any run, finished or not).
        ValueError: For a malformed run id.
    """
    claim = {
        "run_id": check_run_id(run_id),
        "kind": kind,
        "by": by,
        "principal": str(principal_for(store.uri)),
        "claimed_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "nonce": uuid.uuid4().hex,
    }
    key = f"runs/{run_id}/claim.json"
    if not store.create_only(key, json.dumps(claim, indent=2).encode()):
        try:
            other = json.loads(store.read_bytes(key))
            held = f" by a {other.get('kind')} run of {other.get('by')} at {other.get('claimed_at')}"
        except (FileNotFoundError, ValueError, AttributeError):
            held = ""
        raise RunIdTaken(f"run id {run_id} is already taken{held}: choose another run id")
    return claim


def record(store: ArtifactStore, run_id: str, name: str, doc: dict[str, Any]) -> None:
    """Write ``runs/<run-id>/<name>.json`` atomically."""
    key = f"runs/{check_run_id(run_id)}/{_step(name)}.json"
    store.write_atomic(key, json.dumps(doc, indent=2, default=str).encode())


def read_record(store: ArtifactStore, run_id: str, name: str) -> dict[str, Any] | None:
    """Read a step record, or None when the step did not run."""
    try:
        return json.loads(store.read_bytes(f"runs/{check_run_id(run_id)}/{_step(name)}.json"))
    except FileNotFoundError:
        return None


def _step(name: str) -> str:
    if not _STEP.fullmatch(name):
        raise ValueError(f"invalid step record name {name!r}")
    return name
