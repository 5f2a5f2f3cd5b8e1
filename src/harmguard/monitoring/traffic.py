"""The traffic recorder: what serving and batch scoring call once per scored batch. It never stores a text.

``TrafficRecorder.record`` hashes item ids (``monitoring.keys``), copies scores and decisions into a bounded in-memory
buffer and returns; a background thread flushes the buffer every ``flush_seconds`` or ``flush_records`` as
create-only Parquet parts (``monitoring.parts``): the traffic record, and the sampled share of texts for the review
queue apart. When the buffer is full, records are dropped and counted (``dropped``, and the ``on_drop`` hook a server
wires to its metrics). Nothing in ``record`` raises or waits for storage; a killed process loses its buffer, never
corrupts what was written.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from harmguard.monitoring.keys import KEY_ENV, KEY_FILE_ENV, ItemKey, ItemKeyError, item_ids, load_item_key
from harmguard.monitoring.parts import DECISION, REVIEW, SCORE, TRAFFIC, traffic_schema, write_table
from harmguard.settings import Settings
from harmguard.storage import ArtifactStore, open_store

logger = logging.getLogger("harmguard.monitoring")

SOURCES = ("serve", "batch")


def sampled(item_id: str, rate: float) -> bool:
    """Whether an item falls in the review sample: a hash of its id below ``rate`` (the same item, the same answer)."""
    if rate <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).digest()[:8], "big")
    return h < rate * 2**64


class RecorderConfig(BaseModel):
    """How the recorder buffers and flushes."""

    model_config = ConfigDict(extra="forbid")

    sample_rate: float = Field(default=0.01, ge=0, le=1, description="Share of texts kept for the review queue.")
    capacity: int = Field(default=100_000, ge=1, description="Records held in memory at most; more are dropped.")
    flush_records: int = Field(default=20_000, ge=1, description="Flush as soon as this many records wait.")
    flush_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Flush at least this often (seconds). Each flush writes a part, and reading a part costs "
        "milliseconds however small it is: 120 s keeps a day under 720 parts per replica until it is compacted.",
    )


@dataclass
class _Batch:
    """One ``record`` call, columnar: n rows of one policy, version and set of categories."""

    ts_us: int
    policy: str
    version: str
    thresholds_version: str
    source: str
    categories: tuple[str, ...]
    ids: list[str]
    id_sources: list[str]
    lengths: np.ndarray  # (n,) int32, characters
    scores: np.ndarray  # (n, k) float32
    decisions: np.ndarray  # (n, k) bool
    review: dict[int, str] = field(default_factory=dict)  # row -> text, for the sampled rows only

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: Sequence[int]) -> _Batch:
        """The sub-batch of these rows (their review texts kept, renumbered)."""
        idx = np.asarray(rows, dtype=np.int64)
        return _Batch(
            self.ts_us, self.policy, self.version, self.thresholds_version, self.source, self.categories,
            [self.ids[i] for i in idx], [self.id_sources[i] for i in idx], self.lengths[idx], self.scores[idx],
            self.decisions[idx], {j: self.review[i] for j, i in enumerate(idx.tolist()) if i in self.review},
        )  # fmt: skip


def _matrix(values: Any, categories: Sequence[str] | None, dtype: Any) -> tuple[np.ndarray, tuple[str, ...]]:
    """An (n, k) array and its category order from an array (with ``categories``) or one mapping per text."""
    if isinstance(values, np.ndarray):
        if categories is None:
            raise ValueError("scores given as an array need `categories` (their column order)")
        return np.asarray(values, dtype=dtype).reshape(len(values), len(categories)), tuple(categories)
    rows = list(values)
    cats = tuple(categories) if categories is not None else tuple(rows[0]) if rows else ()
    return np.array([[row[c] for c in cats] for row in rows], dtype=dtype).reshape(len(rows), len(cats)), cats


def _table(batches: list[_Batch], *, with_text: bool) -> pa.Table:
    """One table from batches sharing policy and categories (``with_text``: only the sampled rows, with texts)."""
    cats = batches[0].categories
    if with_text:
        batches = [b.take(sorted(b.review)) for b in batches]
    sizes = [len(b) for b in batches]
    cols: dict[str, Any] = {
        "ts": pa.array(np.repeat(np.array([b.ts_us for b in batches], dtype=np.int64), sizes)).cast(
            pa.timestamp("us", tz="UTC")
        )
    }
    for name in ("policy", "version", "thresholds_version", "source"):
        cols[name] = pa.array([v for b in batches for v in [getattr(b, name)] * len(b)], pa.string())
    cols["item_id"] = pa.array([i for b in batches for i in b.ids], pa.string())
    cols["id_source"] = pa.array([s for b in batches for s in b.id_sources], pa.string())
    cols["text_length"] = pa.array(np.concatenate([b.lengths for b in batches]).astype(np.int32))
    scores = np.concatenate([b.scores for b in batches]).reshape(sum(sizes), len(cats))
    decisions = np.concatenate([b.decisions for b in batches]).reshape(sum(sizes), len(cats))
    cols["flagged"] = pa.array(decisions.any(axis=1))
    for j, c in enumerate(cats):
        cols[f"{SCORE}{c}"] = pa.array(scores[:, j], pa.float32())
    for j, c in enumerate(cats):
        cols[f"{DECISION}{c}"] = pa.array(decisions[:, j], pa.bool_())
    if with_text:
        cols["text"] = pa.array([b.review[i] for b in batches for i in range(len(b))], pa.string())
    return pa.Table.from_pydict(cols, schema=traffic_schema(cats, with_text=with_text))


class TrafficRecorder:
    """Records scored texts into the traffic record (and the sampled review share) from a bounded buffer."""

    def __init__(
        self,
        store: ArtifactStore,
        key: ItemKey,
        config: RecorderConfig | None = None,
        *,
        on_drop: Callable[[int], None] | None = None,
        start: bool = True,
    ) -> None:
        """A recorder writing to ``store``.

        Args:
            store: The artifact store of HARMGUARD_HOME.
            key: The item-id key (``monitoring.keys.load_item_key``).
            config: Buffer, flush and sampling settings.
            on_drop: Called with the number of records just dropped (a full buffer or a failed write); a server wires
                it to a counter. Its errors are swallowed.
            start: Start the background flusher now (else only ``flush``/``close`` write).
        """
        self.store = store
        self.config = config or RecorderConfig()
        self._key = key
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time: the thread's and an explicit one
        self._buffer: deque[_Batch] = deque()
        self._pending = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said: set[str] = set()
        self.counts = {"recorded": 0, "dropped": 0, "written": 0, "parts": 0, "sampled": 0, "errors": 0}
        if start:
            self.start()

    # --- the request path ---------------------------------------------------------------------------------------

    def record(
        self,
        *,
        policy: str,
        version: str,
        thresholds_version: str,
        texts: Sequence[str],
        scores: np.ndarray | Sequence[Mapping[str, float]],
        decisions: np.ndarray | Sequence[Mapping[str, bool]],
        ids: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        source: str = "serve",
        at: datetime | None = None,
    ) -> None:
        """Buffer one scored batch; returns at once and never raises (a problem is counted and said once).

        Args:
            policy: The policy name.
            version: The model version that scored (``<policy>/<n>``).
            thresholds_version: The thresholds version the decisions used.
            texts: The texts, for their length, keyed id and the review sample (never written to the traffic record).
            scores: Per-category scores: an (n, k) array with ``categories``, or one mapping per text.
            decisions: Per-category decisions, in the same form.
            ids: The caller's item ids, one per text (optional).
            categories: The column order of array ``scores`` and ``decisions`` (default: the mappings' key order).
            source: ``serve`` or ``batch``.
            at: The scoring time (default now, UTC).
        """
        try:
            batch = self._batch(
                policy, version, thresholds_version, texts, scores, decisions, ids, categories, source, at
            )
        except Exception as e:  # the request has its answer already: recording must never fail it
            self._count_error("record", e)
            return
        if not len(batch):
            return
        with self._lock:
            room = self.config.capacity - self._pending
            keep = max(0, min(room, len(batch)))
            if keep:
                self._buffer.append(batch if keep == len(batch) else batch.take(range(keep)))
                self._pending += keep
            full = self._pending >= self.config.flush_records
            self.counts["recorded"] += keep
            self.counts["sampled"] += sum(1 for i in batch.review if i < keep)
        if keep < len(batch):
            self._dropped(len(batch) - keep)
        if full:
            self._wake.set()

    def _batch(
        self,
        policy: str,
        version: str,
        thresholds_version: str,
        texts: Sequence[str],
        scores: Any,
        decisions: Any,
        ids: Sequence[str] | None,
        categories: Sequence[str] | None,
        source: str,
        at: datetime | None,
    ) -> _Batch:
        texts = list(texts)
        score_m, cats = _matrix(scores, categories, np.float32)
        decision_m, dcats = _matrix(decisions, cats, bool)
        if len(score_m) != len(texts) or len(decision_m) != len(texts) or dcats != cats:
            raise ValueError(f"{len(texts)} texts but {len(score_m)} score rows and {len(decision_m)} decision rows")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}")
        id_list, id_sources = item_ids(self._key, texts, list(ids) if ids is not None else None)
        rate = self.config.sample_rate
        review = {i: texts[i] for i, item in enumerate(id_list) if sampled(item, rate)}
        when = (at or datetime.now(UTC)).astimezone(UTC)
        return _Batch(
            ts_us=int(when.timestamp() * 1_000_000), policy=policy, version=version,
            thresholds_version=thresholds_version, source=source, categories=cats, ids=id_list,
            id_sources=id_sources, lengths=np.fromiter((len(t) for t in texts), np.int32, len(texts)),
            scores=score_m, decisions=decision_m, review=review,
        )  # fmt: skip

    def _dropped(self, n: int) -> None:
        with self._lock:
            self.counts["dropped"] += n
        if "dropped" not in self._said:
            self._said.add("dropped")
            logger.warning("traffic record: buffer full or write failed, %d record(s) dropped (counted from now)", n)
        if self._on_drop is not None:
            try:
                self._on_drop(n)
            except Exception as e:  # a metrics hook must not take the recorder down
                self._count_error("on_drop", e)

    def _count_error(self, where: str, e: BaseException) -> None:
        with self._lock:
            self.counts["errors"] += 1
        if where not in self._said:  # the type only: a message may quote request content
            self._said.add(where)
            logger.error("traffic record: %s failed (%s); counted from now, said once", where, type(e).__name__)

    @property
    def dropped(self) -> int:
        """Records dropped so far (buffer full, or their write failed)."""
        return self.counts["dropped"]

    def stats(self) -> dict[str, int]:
        """Recorded, dropped, written, parts, sampled, errors and records waiting in the buffer."""
        with self._lock:
            return dict(self.counts) | {"pending": self._pending}

    # --- the flusher ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background flusher (once); ``close`` runs at interpreter exit."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="harmguard-traffic-flusher", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write what the buffer holds now as create-only parts; returns the records written (never raises)."""
        with self._flush_lock:
            with self._lock:
                batches, self._buffer = list(self._buffer), deque()
                self._pending = 0
            if not batches:
                return 0
            groups: dict[tuple[str, tuple[str, ...]], list[_Batch]] = {}
            for b in batches:
                groups.setdefault((b.policy, b.categories), []).append(b)
            written = 0
            for group in groups.values():
                rows = sum(len(b) for b in group)
                try:
                    keys = write_table(self.store, TRAFFIC, _table(group, with_text=False))
                    if any(b.review for b in group):
                        keys += write_table(self.store, REVIEW, _table(group, with_text=True))
                except Exception as e:  # storage down: these records are lost, counted, and the next flush tries again
                    self._count_error("write", e)
                    self._dropped(rows)
                    continue
                written += rows
                with self._lock:
                    self.counts["written"] += rows
                    self.counts["parts"] += len(keys)
            return written

    def close(self, timeout: float = 30.0) -> None:
        """Stop the flusher and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.flush()


class DisabledRecorder:
    """Stands in where there is no item-id key: records nothing, says why once (at start-up)."""

    def __init__(self, reason: str) -> None:
        """Keep the reason (``stats()["disabled"]``)."""
        self.reason = reason
        self.dropped = 0

    def record(self, **_: Any) -> None:
        """Record nothing."""

    def flush(self) -> int:
        """Nothing to write."""
        return 0

    def close(self, timeout: float = 30.0) -> None:
        """Nothing to close."""

    def stats(self) -> dict[str, Any]:
        """Why nothing is recorded."""
        return {"disabled": self.reason}


def open_recorder(
    settings: Settings,
    *,
    sample_rate: float,
    config: RecorderConfig | None = None,
    environ: Mapping[str, str] | None = None,
    on_drop: Callable[[int], None] | None = None,
    store: ArtifactStore | None = None,
) -> TrafficRecorder | DisabledRecorder:
    """The recorder a server or batch job uses: a real one, or a disabled one when there is no usable key.

    Args:
        settings: Resolved settings (the home; where a local key lives).
        sample_rate: The policy's ``monitoring.sample_rate``.
        config: Buffer and flush settings (``sample_rate`` here wins over the config's).
        environ: The environment to read the key from (``os.environ`` when omitted).
        on_drop: Hook called with each number of dropped records.
        store: The store to write to (default: the home's).
    """
    try:
        key = load_item_key(settings, environ)
    except (ItemKeyError, OSError) as e:
        logger.warning("traffic record off: %s", e)
        return DisabledRecorder(str(e))
    if key is None:
        reason = f"no item-id key on this cluster (mount the Secret at {KEY_FILE_ENV} or set {KEY_ENV})"
        logger.warning("traffic record off: %s", reason)
        return DisabledRecorder(reason)
    cfg = (config or RecorderConfig()).model_copy(update={"sample_rate": sample_rate})
    return TrafficRecorder(store or open_store(settings.home), key, cfg, on_drop=on_drop)
