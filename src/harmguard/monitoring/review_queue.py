"""``harmguard review-queue export``: which sampled texts reviewers should look at next.

From the review sample (``review/<policy>/``, the texts serving kept with their scores), deduplicated by item id,
leaving out items that already have an imported decision or were taken down, it picks ``n`` items:

- a random share (``random_share``, drawn first, from the whole pool): an unbiased sample for quality checks
  (``source: qa``), whose error rate estimates the model's on live traffic;
- the rest by uncertainty (``source: moderator``): the items whose score is nearest a category's threshold, taking
  each category's next nearest in turn, so every category gets its share of borderline cases.

The file is in the label-event shape (CONTRACTS.md) without the decision: ``event_id`` (fresh), ``item_id``, ``text``,
``source``; ``labels``, ``decided_at`` and ``reviewer`` empty, ``overturns`` null. Reviewers fill in those three and
the file goes back through ``harmguard labels import`` unchanged (an unfilled row is refused there, named). Which item
was picked how is kept in ``review/<policy>/exports/<export-id>.json`` (ids only, no text).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harmguard.digests import canonical_json, sha256_bytes
from harmguard.labels.events import COLUMNS
from harmguard.labels.store import erased_items, load_events
from harmguard.monitoring.monitor import resolve_thresholds
from harmguard.monitoring.parts import REVIEW, SCORE, live_parts, read_parts
from harmguard.policy import Policy
from harmguard.registry import VersionNotFound
from harmguard.storage import ArtifactStore, StoreError, open_store

FORMATS = {".jsonl": "jsonl", ".csv": "csv"}
UNCERTAINTY, RANDOM = "moderator", "qa"  # the `source` of each kind of pick in the exported events


class ReviewQueueError(ValueError):
    """The export cannot be made as asked (an output that exists, an unknown format); the message says why."""


def load_review_sample(store: ArtifactStore, policy: str) -> pd.DataFrame:
    """Every sampled text still kept (purge deletes the old), one row per record."""
    start, end = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    table = read_parts(store, live_parts(store, REVIEW, policy), start=start, end=end)
    if table is None:
        return pd.DataFrame(columns=["ts", "item_id", "text", "version", "thresholds_version"])
    return table.to_pandas()


def _margins(pool: pd.DataFrame, store: ArtifactStore, policy: Policy) -> np.ndarray:
    """|score - threshold| per row and category (NaN where the thresholds the row was decided at are unknown)."""
    out = np.full((len(pool), len(policy.categories)), np.nan)
    for (version, tv), rows in pool.groupby(["version", "thresholds_version"], sort=False).groups.items():
        try:
            thresholds = resolve_thresholds(store, policy.name, str(version), str(tv))
        except VersionNotFound:
            continue  # a version this home does not know: its rows can still be drawn at random
        idx = pool.index.get_indexer(rows)
        for j, c in enumerate(policy.categories):
            if f"{SCORE}{c}" in pool.columns and c in thresholds:
                out[idx, j] = np.abs(pool[f"{SCORE}{c}"].to_numpy(dtype=float)[idx] - thresholds[c])
    return out


def pick_items(margins: np.ndarray, n: int, random_share: float, rng: np.random.Generator) -> list[tuple[int, str]]:
    """(row, kind) of the picks: ``round(n * random_share)`` at random, then the nearest each threshold in turn."""
    rows = margins.shape[0]
    n = min(n, rows)
    n_random = min(round(n * random_share), n)
    picks = [(int(i), RANDOM) for i in rng.choice(rows, size=n_random, replace=False)] if n_random else []
    taken = {i for i, _ in picks}
    order = [np.argsort(np.where(np.isnan(m), np.inf, m), kind="stable") for m in margins.T]
    cursor = [0] * len(order)
    while len(picks) < n:
        moved = False
        for j, ranked in enumerate(order):
            while cursor[j] < rows and (int(ranked[cursor[j]]) in taken or np.isnan(margins[ranked[cursor[j]], j])):
                cursor[j] += 1
            if cursor[j] < rows and len(picks) < n:
                i = int(ranked[cursor[j]])
                picks.append((i, UNCERTAINTY))
                taken.add(i)
                moved = True
        if not moved:
            break  # every row with known thresholds is taken
    return picks


def _events_bytes(rows: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")  # RFC 4180 quoting of texts
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r[k] is None else r[k] for k in COLUMNS})
    return buf.getvalue().encode()


def _write_output(output: str, data: bytes) -> str:
    """Write the file create-only (a reviewers' file is never overwritten); returns its URI."""
    folder, _, name = output.rstrip("/").rpartition("/")
    if not output.startswith("gs://"):
        path = Path(output).expanduser().resolve()
        folder, name = str(path.parent), path.name
    target = open_store(folder)
    try:
        created = target.create_only(name, data)
    except StoreError as e:
        raise ReviewQueueError(f"{output}: {e}") from None
    if not created:
        raise ReviewQueueError(f"{output} exists: a review file is never overwritten; choose another path")
    return target.uri_for(name)


def export_review_queue(
    store: ArtifactStore,
    policy: Policy,
    *,
    n: int,
    output: str,
    random_share: float = 0.2,
    seed: int | None = None,
    by: str = "unknown",
) -> dict[str, Any]:
    """Pick up to ``n`` sampled items for review and write them as label events without decisions.

    Args:
        store: The artifact store of HARMGUARD_HOME.
        policy: The policy.
        n: How many items to pick (fewer when the pool is smaller).
        output: The file to write (``.jsonl`` or ``.csv``; local or ``gs://``); refused when it exists.
        random_share: Share of ``n`` drawn at random for quality checks.
        seed: Seed of the random draw (default: a fresh one, recorded in the manifest).
        by: Who exports (recorded in the manifest).

    Returns:
        ``{"policy", "export_id", "output", "manifest", "pool", "picked", "random", "uncertainty", "picks"}``;
        ``picks`` maps each kind to its item ids.

    Raises:
        ReviewQueueError: An unknown output format, or an output that exists.
    """
    if n < 1 or not 0 <= random_share <= 1:
        raise ReviewQueueError(f"n must be at least 1 and random_share in [0, 1] (got n={n}, {random_share})")
    fmt = FORMATS.get(Path(output).suffix.lower())
    if fmt is None:
        raise ReviewQueueError(f"{output}: write the review queue as {' or '.join(FORMATS)}")
    sample = load_review_sample(store, policy.name)
    decided = set(load_events(store, policy.name)["item_id"]) | erased_items(store, policy.name)
    pool = (
        sample.sort_values("ts", kind="stable")
        .drop_duplicates("item_id", keep="last")  # the newest record of an item: its current scores
        .loc[lambda f: ~f["item_id"].isin(decided)]
        .reset_index(drop=True)
    )
    seed = seed if seed is not None else int(uuid.uuid4().int % 2**32)
    picks = pick_items(_margins(pool, store, policy), n, random_share, np.random.default_rng(seed))
    export_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    rows = []
    for i, kind in picks:
        item = str(pool.at[i, "item_id"])
        rows.append({
            "event_id": f"review-{sha256_bytes(f'{export_id}/{item}'.encode())[:24]}",
            "item_id": item,
            "text": str(pool.at[i, "text"]),
            "labels": None,
            "source": kind,
            "decided_at": None,
            "reviewer": None,
            "overturns": None,
        })  # fmt: skip
    uri = _write_output(output, _events_bytes(rows, fmt))
    by_kind = {k: [r["item_id"] for r in rows if r["source"] == k] for k in (UNCERTAINTY, RANDOM)}
    manifest_key = f"{REVIEW}/{policy.name}/exports/{export_id}.json"
    manifest = {
        "export_id": export_id, "policy": policy.name, "by": by, "at": datetime.now(UTC).isoformat(), "output": uri,
        "n": n, "random_share": random_share, "seed": seed, "pool": len(pool),
        "picks": [{"event_id": r["event_id"], "item_id": r["item_id"], "kind": r["source"]} for r in rows],
    }  # fmt: skip
    store.create_only(manifest_key, canonical_json(manifest))
    return {
        "policy": policy.name,
        "export_id": export_id,
        "output": uri,
        "manifest": store.uri_for(manifest_key),
        "pool": len(pool),
        "picked": len(rows),
        "random": len(by_kind[RANDOM]),
        "uncertainty": len(by_kind[UNCERTAINTY]),
        "picks": {"uncertainty": by_kind[UNCERTAINTY], "random": by_kind[RANDOM]},
    }
