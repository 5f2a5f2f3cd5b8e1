"""Run records: ``runs/<run-id>/<step>.json``, the small JSON each step writes of what it did."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from harmguard.storage import ArtifactStore


def new_run_id(policy: str) -> str:
    """A sortable, unique run id."""
    return f"{policy}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def record(store: ArtifactStore, run_id: str, name: str, doc: dict[str, Any]) -> None:
    """Write ``runs/<run-id>/<name>.json`` atomically."""
    store.write_atomic(f"runs/{run_id}/{name}.json", json.dumps(doc, indent=2, default=str).encode())


def read_record(store: ArtifactStore, run_id: str, name: str) -> dict[str, Any] | None:
    """Read a step record, or None when the step did not run."""
    try:
        return json.loads(store.read_bytes(f"runs/{run_id}/{name}.json"))
    except FileNotFoundError:
        return None
