"""Parts of the traffic record and of the review sample: their schema, layout, writing, reading and compaction.

Layout under HARMGUARD_HOME (local folder or ``gs://``), every object create-only:

- ``traffic/<policy>/dt=YYYY-MM-DD/part-<time>-<random>.parquet``: ``ts`` (UTC), ``policy``, ``version``,
  ``thresholds_version``, ``source`` (``serve`` or ``batch``), ``item_id`` (the caller's, else ``hmac:`` + the keyed
  hash of the normalized text: ``monitoring.keys``), ``id_source``, ``text_length`` (characters), ``flagged``, and
  per category ``score_<category>`` (float32) and ``decision_<category>``. No text, in any column.
- ``review/<policy>/dt=YYYY-MM-DD/part-...parquet``: the same columns plus ``text``, for the sampled share.
- ``.../dt=YYYY-MM-DD/compacted-<n>.json`` and the part it names: a finished day's parts merged into one (serving
  writes a part per flush, thousands a day; reading a week of them would take minutes). The manifest lists every part
  it replaces; readers skip those and read the compacted part, and a compacted part without its manifest (a
  compaction that died) is never read. Only then are the replaced parts deleted.

A part is whole or absent: the store writes it under a temporary name and links it into place (local) or uploads it
with ``if_generation_match=0`` (GCS), and readers list keys through the store, which never shows temporary names.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harmguard.digests import canonical_json, sha256_bytes
from harmguard.storage import ArtifactStore, LocalStore, StoreError
from harmguard.storage.gcs import GCSStore, make_client

TRAFFIC = "traffic"
REVIEW = "review"
SCORE = "score_"
DECISION = "decision_"
# The fixed columns of every part, in order; per-category score and decision columns follow.
BASE_FIELDS = [
    pa.field("ts", pa.timestamp("us", tz="UTC")),
    pa.field("policy", pa.string()),
    pa.field("version", pa.string()),
    pa.field("thresholds_version", pa.string()),
    pa.field("source", pa.string()),
    pa.field("item_id", pa.string()),
    pa.field("id_source", pa.string()),
    pa.field("text_length", pa.int32()),
    pa.field("flagged", pa.bool_()),
]
TEXT_FIELD = pa.field("text", pa.string())  # review parts only
COMPACTED = "compacted-"
_READ_THREADS = 8  # parts are small objects: reading them is I/O-bound, on GCS above all
_READ_ATTEMPTS = 3
_DICTIONARY = ["version", "thresholds_version"]  # a handful of values over millions of rows


def traffic_schema(categories: Sequence[str], *, with_text: bool = False) -> pa.Schema:
    """The schema of a traffic part (``with_text``: a review part) for a policy's categories."""
    fields = list(BASE_FIELDS)
    fields += [pa.field(f"{SCORE}{c}", pa.float32()) for c in categories]
    fields += [pa.field(f"{DECISION}{c}", pa.bool_()) for c in categories]
    return pa.schema([*fields, TEXT_FIELD] if with_text else fields)


def categories_of(schema: pa.Schema) -> list[str]:
    """The categories a part's columns carry (``score_<category>``), in column order."""
    return [n.removeprefix(SCORE) for n in schema.names if n.startswith(SCORE)]


def partition_prefix(root: str, policy: str, day: date | None = None) -> str:
    """``<root>/<policy>`` or one day's folder ``<root>/<policy>/dt=YYYY-MM-DD``."""
    return f"{root}/{policy}" + (f"/dt={day.isoformat()}" if day is not None else "")


def part_day(key: str) -> date | None:
    """The ``dt=`` day of a key (None when it is not in a day folder)."""
    for piece in key.split("/"):
        if piece.startswith("dt="):
            try:
                return date.fromisoformat(piece[3:])
            except ValueError:
                return None
    return None


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as one Parquet file (zstd; dictionaries for the repeated strings)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_table(store: ArtifactStore, root: str, table: pa.Table) -> list[str]:
    """Write a table as create-only parts, one per UTC day of ``ts``; returns the keys written."""
    if not table.num_rows:
        return []
    policy = table.column("policy")[0].as_py()
    days = table.column("ts").cast(pa.timestamp("us")).cast(pa.date32())
    keys = []
    for day in pc.unique(days).to_pylist():
        part = table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
        now = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        key = f"{partition_prefix(root, policy, day)}/part-{now}-{uuid.uuid4().hex[:12]}.parquet"
        if store.create_only(key, parquet_bytes(part)):
            keys.append(key)
    return keys


def delete_key(store: ArtifactStore, key: str) -> None:
    """Delete one object (a missing one is not an error).

    The store protocol has no delete (the home is create-only by design); retention and compaction are the only
    deleters, so the two stores are handled here.
    """
    if isinstance(store, LocalStore):
        store.path(key).unlink(missing_ok=True)
        return
    if isinstance(store, GCSStore):
        from google.api_core import exceptions as gex  # google-cloud-storage: only for a gs:// home

        name = f"{store.prefix}/{key}" if store.prefix else key
        try:
            make_client().bucket(store.bucket_name).blob(name).delete(timeout=store.timeout_s)
        except gex.NotFound:
            pass
        return
    raise StoreError(f"cannot delete from a {type(store).__name__}")


def _name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _manifests(store: ArtifactStore, keys: list[str]) -> list[tuple[int, str, dict[str, Any]]]:
    """(generation, key, manifest) of a day's compaction manifests, oldest first."""
    found = []
    for key in keys:
        name = _name(key)
        if name.startswith(COMPACTED) and name.endswith(".json"):
            found.append((int(name[len(COMPACTED) : -len(".json")]), key, json.loads(store.read_bytes(key))))
    return sorted(found)


def _live(keys: list[str], manifests: list[tuple[int, str, dict[str, Any]]]) -> list[str]:
    """The parts to read among a day's keys: every part no manifest replaced, and each manifest's compacted part."""
    replaced = {k for _, _, m in manifests for k in m["sources"]}
    compacted = {m["part"] for _, _, m in manifests}
    return [
        k
        for k in keys
        if k.endswith(".parquet") and k not in replaced and (not _name(k).startswith(COMPACTED) or k in compacted)
    ]


def _by_day(store: ArtifactStore, root: str, policy: str) -> dict[date, list[str]]:
    days: dict[date, list[str]] = {}
    for key in store.list(partition_prefix(root, policy)):
        day = part_day(key)
        if day is not None:
            days.setdefault(day, []).append(key)
    return days


def live_parts(
    store: ArtifactStore, root: str, policy: str, first: date | None = None, last: date | None = None
) -> list[str]:
    """Keys of the parts to read for the days ``first..last`` (both included; default all)."""
    out = []
    for day, keys in sorted(_by_day(store, root, policy).items()):
        if (first is None or day >= first) and (last is None or day <= last):
            out += _live(keys, _manifests(store, keys))
    return out


def read_parts(
    store: ArtifactStore, keys: list[str], *, start: datetime, end: datetime, columns: list[str] | None = None
) -> pa.Table | None:
    """The rows of ``keys`` with ``start <= ts < end`` (only ``columns``, which must include ``ts``); None if none."""

    def one(key: str) -> pa.Table:
        # ParquetFile.read, one thread per part: pq.read_table's dataset machinery costs milliseconds per small file
        part = pq.ParquetFile(pa.BufferReader(store.read_bytes(key)), read_dictionary=_DICTIONARY)
        wanted = None if columns is None else [c for c in columns if c in part.schema_arrow.names]
        return part.read(columns=wanted, use_threads=False)

    if not keys:
        return None
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        tables = list(pool.map(one, keys))
    table = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    ts = table.column("ts")
    lo, hi = pa.scalar(start.astimezone(UTC), ts.type), pa.scalar(end.astimezone(UTC), ts.type)
    table = table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))
    return table if table.num_rows else None


def read_traffic(
    store: ArtifactStore, policy: str, start: datetime, end: datetime, *, columns: list[str] | None = None
) -> pa.Table | None:
    """The traffic record of ``policy`` in ``[start, end)``; None when there is none.

    A compaction finishing between listing and reading deletes parts the listing named: the read starts over.
    """
    first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
    for attempt in range(_READ_ATTEMPTS):
        try:
            return read_parts(
                store, live_parts(store, TRAFFIC, policy, first, last), start=start, end=end, columns=columns
            )
        except FileNotFoundError:
            if attempt == _READ_ATTEMPTS - 1:
                raise
    return None


def compact_day(store: ArtifactStore, root: str, policy: str, day: date) -> dict[str, Any] | None:
    """Merge a finished day's parts into one compacted part; returns its manifest (None: nothing to merge).

    Order matters for readers at every instant: the compacted part, then its manifest (create-only under the next
    generation number: of two racing compactions one wins, the other removes its part), then the deletions. The new
    manifest lists everything earlier manifests replaced, so those manifests can go too.
    """
    keys = store.list(partition_prefix(root, policy, day))
    manifests = _manifests(store, keys)
    live = _live(keys, manifests)
    if len(live) < 2:
        return None
    table = read_parts(store, live, start=datetime.min.replace(tzinfo=UTC), end=datetime.max.replace(tzinfo=UTC))
    assert table is not None
    generation = (manifests[-1][0] if manifests else 0) + 1
    part_key = f"{partition_prefix(root, policy, day)}/{COMPACTED}{generation:06d}-{uuid.uuid4().hex[:12]}.parquet"
    data = parquet_bytes(table)
    store.create_only(part_key, data)
    earlier = {k for _, _, m in manifests for k in m["sources"]}
    manifest = {
        "part": part_key,
        "rows": table.num_rows,
        "sha256": sha256_bytes(data),
        "sources": sorted(earlier | set(live)),
        "compacted_at": datetime.now(UTC).isoformat(),
    }
    if not store.create_only(
        f"{partition_prefix(root, policy, day)}/{COMPACTED}{generation:06d}.json", canonical_json(manifest)
    ):
        delete_key(store, part_key)  # another compaction took this generation: its manifest counts
        return None
    for key in [*live, *earlier, *(k for _, k, _ in manifests)]:
        delete_key(store, key)
    return manifest


def compact(store: ArtifactStore, root: str, policy: str, *, before: date) -> list[dict[str, Any]]:
    """Compact every day before ``before`` (today: its parts are still being written)."""
    return [
        m
        for day in sorted(_by_day(store, root, policy))
        if day < before and (m := compact_day(store, root, policy, day))
    ]
