"""Imported moderation events under ``HARMGUARD_HOME/labels/<policy>/``: create-only parts, manifests last.

Layout (local folder or ``gs://``):

- ``watermark.json``: the per-policy import counter, advanced by compare-and-swap; each import claims the next value.
- ``events/dt=YYYY-MM-DD/w<watermark>.parquet``: the import's new events decided on that day (create-only).
- ``imports/<watermark>.json``: the import's manifest (file digest, who, counts, parts with their sha256), written
  last: parts without a manifest (an import that died half-way) are never read.
- ``rejects/<watermark>.jsonl``: with ``--skip-invalid``, the refused records and why.
- ``tombstones/<sha256(item_id)>.json``: a takedown; no event of that item is read again, so no later snapshot holds
  its text.

An event id imported before with the same content is a redelivery (counted, not added); the same id with other
content is a conflict that refuses the whole file.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from harmguard.digests import canonical_json, sha256_bytes
from harmguard.labels.events import COLUMNS, LabelFileError, read_events
from harmguard.registry import append_audit
from harmguard.storage import ArtifactStore, LostRace
from harmguard.storage.readers import DataReadError, read_bytes

_PART_COLUMNS = [*COLUMNS, "digest"]
_CLAIM_ATTEMPTS = 100


def _root(policy: str) -> str:
    return f"labels/{policy}"


def read_watermark(store: ArtifactStore, policy: str) -> tuple[int, str | None]:
    """The policy's current import watermark (0 before the first import) and its CAS token."""
    data, token = store.read_versioned(f"{_root(policy)}/watermark.json")
    return (int(json.loads(data)["watermark"]) if data else 0), token


def claim_watermark(store: ArtifactStore, policy: str) -> int:
    """Advance the watermark by one with compare-and-swap and return the value this import owns."""
    for _ in range(_CLAIM_ATTEMPTS):
        current, token = read_watermark(store, policy)
        try:
            store.compare_and_swap(f"{_root(policy)}/watermark.json", canonical_json({"watermark": current + 1}), token)
        except LostRace:
            continue  # another import claimed it first: take the next one
        return current + 1
    raise LostRace(f"could not claim an import watermark for {policy} after {_CLAIM_ATTEMPTS} attempts")


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    out = frame[_PART_COLUMNS].copy()
    out["labels"] = out["labels"].map(lambda d: json.dumps(d, sort_keys=True))  # one schema whatever the categories
    out.to_parquet(buf, index=False)
    return buf.getvalue()


def manifests(store: ArtifactStore, policy: str) -> list[dict[str, Any]]:
    """Every completed import's manifest, in watermark order."""
    keys = sorted(k for k in store.list(f"{_root(policy)}/imports") if k.endswith(".json"))
    return [json.loads(store.read_bytes(k)) for k in keys]


def erased_items(store: ArtifactStore, policy: str) -> set[str]:
    """Item ids taken down (their events are never read)."""
    return {
        json.loads(store.read_bytes(k))["item_id"]
        for k in store.list(f"{_root(policy)}/tombstones")
        if k.endswith(".json")
    }


def load_events(store: ArtifactStore, policy: str, *, watermark: int | None = None) -> pd.DataFrame:
    """The imported events up to ``watermark`` (default: all), without erased items, one row per event id.

    Each part is checked against the sha256 its manifest recorded; a part that changed is refused.
    """
    frames = []
    for manifest in manifests(store, policy):
        if watermark is not None and manifest["watermark"] > watermark:
            continue
        for part in manifest["parts"]:
            data = store.read_bytes(part["key"])
            if sha256_bytes(data) != part["sha256"]:
                raise LabelFileError(f"{store.uri_for(part['key'])} does not match its manifest: refusing it")
            frame = pd.read_parquet(io.BytesIO(data))
            frames.append(frame.assign(watermark=manifest["watermark"]))
    if not frames:
        return pd.DataFrame(columns=[*_PART_COLUMNS, "watermark"])
    events = pd.concat(frames, ignore_index=True)
    events["labels"] = events["labels"].map(json.loads)
    events = events.sort_values(["watermark", "event_id"]).drop_duplicates("event_id")  # a racing import's twin
    erased = erased_items(store, policy)
    return events[~events["item_id"].isin(erased)].reset_index(drop=True)


@dataclass
class ImportResult:
    """What one import did."""

    policy: str
    watermark: int | None
    file_digest: str
    read: int
    new: int
    duplicates: int
    rejected: int
    unseen_overturns: int
    parts: list[str]
    rejects: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (``--json``)."""
        return dict(vars(self))


def import_events(
    store: ArtifactStore, policy: str, categories: list[str], uri: str, *, by: str, skip_invalid: bool = False
) -> ImportResult:
    """Import a file of moderation events for ``policy``.

    Args:
        store: The artifact store of HARMGUARD_HOME.
        policy: The policy name.
        categories: Its categories (labels of others are invalid).
        uri: The file (JSONL, CSV or Parquet; local or ``gs://``).
        by: Who imports (the authenticated user; recorded in the audit log).
        skip_invalid: Import the valid events and write the refused ones to a rejects file; otherwise any invalid
            event refuses the whole file and nothing is written.

    Raises:
        LabelFileError: An invalid event (without ``skip_invalid``), or an event id imported before with other
            content (always); the message names every problem with up to 5 rows each.
    """
    try:
        file_digest = sha256_bytes(read_bytes(uri))
    except DataReadError as e:  # a missing or unreadable file is invalid input, named, not a traceback
        raise LabelFileError(str(e)) from None
    events, problems, invalid = read_events(uri, categories)
    if problems and not skip_invalid:
        raise LabelFileError(f"{uri}: {len(problems.bad_rows)} invalid event(s); nothing imported\n{problems.report()}")
    known = load_events(store, policy)
    known_digest = dict(zip(known["event_id"], known["digest"], strict=True))
    seen_in_file: dict[str, str] = {}
    conflicts, duplicate_rows = [], []
    for row, event_id, digest in zip(events["row"], events["event_id"], events["digest"], strict=True):
        previous = known_digest.get(event_id) or seen_in_file.get(event_id)
        if previous is None:
            seen_in_file[event_id] = digest
        elif previous == digest:
            duplicate_rows.append(row)
        else:
            conflicts.append(f"row {row}: event {event_id!r} was imported before with other content")
    if conflicts:
        shown = "\n    ".join(conflicts[:5])
        raise LabelFileError(
            f"{uri}: {len(conflicts)} event id(s) conflict with events already imported; nothing imported\n"
            f"conflicting event ids: {len(conflicts)} event(s)\n    {shown}"
        )
    new = events[~events["row"].isin(duplicate_rows)]
    ids = set(known["event_id"]) | set(new["event_id"])
    unseen = int(sum(1 for o in new["overturns"] if isinstance(o, str) and o not in ids))  # out of order: accepted
    watermark = claim_watermark(store, policy) if len(new) or len(invalid) else None
    parts: list[dict[str, Any]] = []
    if watermark is not None:
        for day, frame in new.groupby(new["decided_at"].str.slice(0, 10), sort=True):
            key = f"{_root(policy)}/events/dt={day}/w{watermark:06d}.parquet"
            data = _parquet(frame)
            store.create_only(key, data)
            parts.append({"key": key, "rows": len(frame), "sha256": sha256_bytes(data)})
    rejects_key = None
    if watermark is not None and len(invalid):
        rejects_key = f"{_root(policy)}/rejects/w{watermark:06d}.jsonl"
        lines = [json.dumps(r, ensure_ascii=False) for r in invalid.to_dict(orient="records")]
        store.create_only(rejects_key, ("\n".join(lines) + "\n").encode())
    result = ImportResult(
        policy=policy,
        watermark=watermark,
        file_digest=file_digest,
        read=len(events) + len(invalid),
        new=len(new),
        duplicates=len(duplicate_rows),
        rejected=len(invalid),
        unseen_overturns=unseen,
        parts=[p["key"] for p in parts],
        rejects=rejects_key,
    )
    if watermark is not None:
        manifest = result.to_dict() | {
            "file": uri,
            "by": by,
            "imported_at": datetime.now(UTC).isoformat(),
            "parts": parts,
            "problems": problems.to_dict(),
        }
        store.create_only(f"{_root(policy)}/imports/{watermark:06d}.json", canonical_json(manifest))
    append_audit(
        store,
        policy,
        {
            "event": "labels_import",
            "who": by,
            "why": f"imported {uri}",
            "file_digest": file_digest,
            "watermark": watermark,
            "counts": {"new": result.new, "duplicates": result.duplicates, "rejected": result.rejected},
        },
    )
    return result


def erase_item(store: ArtifactStore, policy: str, item_id: str, *, reason: str, by: str) -> dict[str, Any]:
    """Record a takedown of ``item_id``: from now on no event of it is read, so no snapshot holds its text."""
    if not reason.strip():
        raise ValueError("a takedown needs a reason")
    tomb = {"item_id": item_id, "reason": reason, "by": by, "erased_at": datetime.now(UTC).isoformat()}
    key = f"{_root(policy)}/tombstones/{sha256_bytes(item_id.encode())}.json"
    created = store.create_only(key, canonical_json(tomb))
    append_audit(store, policy, {"event": "labels_erase", "who": by, "why": reason, "item_id": item_id})
    return tomb | {"new": created}
