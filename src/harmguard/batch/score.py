"""Batch scoring with Ray Data: a file of texts scored with the model and thresholds that serve online.

``score_file`` checks the input's columns and the model digest and thresholds in the driver, then streams the input
through Ray Data: read in Ray tasks (``harmguard.batch.reader``: CSV, TSV, Parquet or JSONL, local or ``gs://``), each
block prepared into ``(item, text, skipped)``, then ``map_batches`` over an actor pool: each actor loads and verifies
the model once (``harmguard.models.loading.load_spec``, as a Serve replica does) and decides with
``harmguard.models.decide.decide``, the function online serving calls, so batch and online decisions are the same
arithmetic. The driver receives the scored blocks in input order and writes Parquet parts of ``rows_per_part`` input
rows, committed by a ``_SUCCESS`` manifest (``harmguard.batch.output``). The driver never holds the input: at most a
part's worth of scored rows (no texts kept), so its memory stays flat as the input grows.

Choices, documented here once:

- **Which model**: ``--version`` if given, else the policy's ``champion``. Unlike ``harmguard serve``, batch scoring
  never falls back to an unapproved challenger: a scheduled job must not silently score with it.
- **Rows not scored** keep their row (and id) with null scores, decisions and ``flagged``, and say why in
  ``skipped``: ``null_text`` (missing), ``not_text`` (not a string), ``too_long`` (over ``max_chars``, by default
  the serving limit of 10,000 characters: a text the server would refuse gets no decision here either), ``not_utf8``
  (a lone surrogate, which the server refuses with 422 and a tokenizer cannot read). An empty
  string is scored, as the server scores it.
- **Texts are not copied** to the output (they are sensitive): the id column is the join key.
- **Write-once**: a committed output folder is refused unless ``overwrite`` is set (exit 2), so a scheduled rerun
  never replaces a day's decisions by accident; an uncommitted folder (a killed run) is simply written again.
- **The traffic record**: every scored row is recorded as serving records it (``harmguard.monitoring.traffic``),
  with ``source="batch"``: the id column's value as item id (the keyed hash of the text when that value is null or
  blank), scores, decisions, text length, never the text; a sampled share (the registered policy's
  ``monitoring.sample_rate``) is kept with its text for the review queue. Skipped rows are not recorded (no scores).
  The record is written before the output commits; a rerun records its rows again, as a retried request would.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from harmguard.batch.output import SUCCESS, AlreadyCommitted, PartWriter, open_folder
from harmguard.batch.reader import ITEM, SKIPPED, TEXT, BatchInputError, input_dataset, open_input, skip_reasons
from harmguard.models.base import read_model_meta
from harmguard.models.decide import DEFAULT_MAX_CHARS, check_thresholds, decide
from harmguard.models.loading import ModelSpec, load_spec, verify_model_dir
from harmguard.monitoring.traffic import DisabledRecorder, RecorderConfig, TrafficRecorder, open_recorder
from harmguard.policy import MonitoringSpec, Policy
from harmguard.registry import VersionRecord, get_version, list_policies, parse_version, read_alias, read_policy_file
from harmguard.settings import Settings
from harmguard.storage import ArtifactStore
from harmguard.storage.readers import DataReadError

__all__ = ["BatchInputError", "skip_reasons"]  # re-exported: callers and tests name them here

OUTPUT_COLUMNS = ("flagged", "skipped", "model_version", "thresholds_version")
SKIP_REASONS = ("null_text", "not_text", "too_long", "not_utf8")
_BLOCK_BYTES = 256 * 1024  # Ray Data's target block size here: a few thousand texts, so parts and progress flow
_TRAFFIC_FLUSH = 50_000  # traffic records per part the driver writes


class ScoringError(RuntimeError):
    """No model to score with (no champion, unknown version, a version of another policy)."""


class ScoringFailed(RuntimeError):
    """Scoring broke off in a worker; nothing was committed."""


class BatchConfig(BaseModel):
    """What to score, where to write it, and how to spread the work."""

    model_config = ConfigDict(extra="forbid")

    input_uri: str = Field(description="Input table: CSV, Parquet or JSONL; a local path, file:// or gs:// URI.")
    output_uri: str = Field(description="Output folder (local or gs://): Parquet parts and a _SUCCESS manifest.")
    id_column: str = Field(default="id", description="Input column passed through to the output as the join key.")
    text_column: str = Field(default="text", description="Input column holding the texts.")
    max_chars: int = Field(default=DEFAULT_MAX_CHARS, gt=0, description="Longer texts are skipped (too_long).")
    batch_size: int = Field(default=256, gt=0, description="Texts per model call inside an actor.")
    rows_per_part: int = Field(default=100_000, gt=0, description="Input rows per output Parquet part.")
    actors: int = Field(default=2, gt=0, description="Scoring actors (one CPU each; capped at the cluster's CPUs).")
    overwrite: bool = Field(default=False, description="Replace an already committed output folder.")
    record_traffic: bool = Field(
        default=True, description="Write the traffic record (source=batch) and the review sample, as serving does."
    )


def resolve_record(store: ArtifactStore, policy: str | None, version: str | None) -> VersionRecord:
    """The version to score with: ``version`` if given, else the policy's champion (never its challenger).

    Without a policy, the only policy that has a champion. Raises ScoringError saying what to pass otherwise.
    """
    if version:
        try:
            record = get_version(store, version)
        except (LookupError, ValueError) as e:
            raise ScoringError(str(e)) from None
        if policy and parse_version(version)[0] != policy:
            raise ScoringError(f"version {version} does not belong to policy {policy}")
        return record
    if policy is None:
        with_champion = [p for p in list_policies(store) if read_alias(store, p, "champion")[0] is not None]
        if len(with_champion) != 1:
            raise ScoringError(f"choose a policy with --policy (policies with a champion: {with_champion or 'none'})")
        policy = with_champion[0]
    champion, _ = read_alias(store, policy, "champion")
    if champion is None or not champion.version:
        raise ScoringError(f"{policy} has no champion: promote a version first, or pass --version")
    return get_version(store, champion.version)


def spec_of(record: VersionRecord) -> ModelSpec:
    """The model spec a scoring actor loads (the same fields a Serve replica's user_config carries)."""
    fields = ("version", "model_uri", "model_digest", "thresholds", "thresholds_version")
    return ModelSpec.model_validate({k: getattr(record, k) for k in fields})


def _scorer(spec_doc: dict[str, Any], keep_text: bool) -> type:
    """The actor class for ``map_batches``; the spec is closed over, so actors take no constructor arguments.

    It takes prepared blocks (item, text, skipped) and returns item, score and decision per category, flagged and
    skipped (and the texts, for the driver's traffic record, when ``keep_text``); unscored rows get nulls.
    """

    class Scorer:
        def __init__(self) -> None:
            # Once per actor: download (gs://) and verify the model digest, check the thresholds fit.
            self.loaded = load_spec(ModelSpec.model_validate(spec_doc), {})

        def __call__(self, batch: pa.Table) -> pa.Table:
            text = batch.column(TEXT)
            valid = pc.is_valid(text).to_numpy(zero_copy_only=False)
            scored = decide(self.loaded.model, self.loaded.spec.thresholds, text.drop_null().to_pylist())
            missing = ~valid
            cols: dict[str, Any] = {ITEM: batch.column(ITEM)}
            for j, c in enumerate(scored.categories):
                s = np.zeros(len(valid))
                s[valid] = scored.scores[:, j]
                d = np.zeros(len(valid), dtype=bool)
                d[valid] = scored.decisions[:, j]
                cols[f"score_{c}"] = pa.array(s, mask=missing)
                cols[f"decision_{c}"] = pa.array(d, mask=missing)
            f = np.zeros(len(valid), dtype=bool)
            f[valid] = scored.flagged
            cols["flagged"] = pa.array(f, mask=missing)
            cols[SKIPPED] = batch.column(SKIPPED)
            if keep_text:
                cols[TEXT] = text
            return pa.table(cols)

    return Scorer


def output_schema(id_field: pa.Field, categories: list[str]) -> pa.Schema:
    """The columns of every part: id as read, score and decision per category, flagged, why skipped, versions."""
    fields = [id_field]
    fields += [pa.field(f"score_{c}", pa.float64()) for c in categories]
    fields += [pa.field(f"decision_{c}", pa.bool_()) for c in categories]
    fields += [pa.field(n, pa.bool_() if n == "flagged" else pa.string()) for n in OUTPUT_COLUMNS]
    return pa.schema(fields)


def policy_sample_rate(store: ArtifactStore, record: VersionRecord) -> float:
    """``monitoring.sample_rate`` of the policy file ``record`` was registered with (the default when none is kept)."""
    digest = record.lineage.get("policy_digest")
    try:
        doc = yaml.safe_load(read_policy_file(store, digest)) if isinstance(digest, str) and digest else None
        return Policy.model_validate(doc).monitoring.sample_rate if doc else MonitoringSpec().sample_rate
    except (FileNotFoundError, ValueError, yaml.YAMLError):  # registered before policy files were kept
        return MonitoringSpec().sample_rate


class _Traffic:
    """The driver's side of the traffic record: the scored rows of each block, recorded as serving records them."""

    def __init__(self, store: ArtifactStore, record: VersionRecord, categories: list[str]) -> None:
        self.record, self.categories = record, categories
        self.sample_rate = policy_sample_rate(store, record)
        # The key is the home's (locally) or the cluster's Secret, as for serving; only the home matters here.
        settings = Settings(home=store.uri, cache=os.devnull, mlflow_tracking_uri="unused")  # type: ignore[arg-type]
        # No drop: the driver flushes itself every _TRAFFIC_FLUSH records, the buffer holds a few blocks more.
        config = RecorderConfig(capacity=4 * _TRAFFIC_FLUSH, flush_records=_TRAFFIC_FLUSH, flush_seconds=3600)
        self.recorder: TrafficRecorder | DisabledRecorder = open_recorder(
            settings, sample_rate=self.sample_rate, config=config, store=store
        )

    def add(self, batch: pa.Table) -> None:
        scored = batch.filter(pc.is_null(batch.column(SKIPPED)))
        if not scored.num_rows or isinstance(self.recorder, DisabledRecorder):
            return
        cats = self.categories
        # A null id gets the keyed hash of its text (the recorder's rule for a missing or blank caller id).
        ids: list[Any] = [None if v is None else str(v) for v in scored.column(ITEM).to_pylist()]
        self.recorder.record(
            policy=self.record.policy,
            version=self.record.version,
            thresholds_version=self.record.thresholds_version,
            texts=scored.column(TEXT).to_pylist(),
            scores=np.column_stack([scored.column(f"score_{c}").to_numpy() for c in cats]),
            decisions=np.column_stack([scored.column(f"decision_{c}").to_numpy(zero_copy_only=False) for c in cats]),
            ids=ids,
            categories=cats,
            source="batch",
        )
        if self.recorder.stats()["pending"] >= _TRAFFIC_FLUSH:
            self.recorder.flush()

    def close(self) -> dict[str, Any]:
        self.recorder.close()
        stats = self.recorder.stats()
        if isinstance(self.recorder, TrafficRecorder):
            stats = {k: stats[k] for k in ("recorded", "written", "sampled", "dropped", "parts", "errors")}
        return stats | {"source": "batch", "sample_rate": self.sample_rate}


@contextlib.contextmanager
def _ray_session(actors: int) -> Iterator[int]:
    """Join RAY_ADDRESS's cluster or start a local one (unless Ray is initialized); yields the actor pool size."""
    import ray
    from ray.data import DataContext

    started = not ray.is_initialized()
    if started:
        if address := os.environ.get("RAY_ADDRESS"):
            ray.init(address=address, logging_level=logging.WARNING)
        else:  # "local", not None: without it ray.init joins any cluster a `ray start` left on this machine
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    ctx = DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.target_max_block_size)
    ctx.execution_options.preserve_order = True  # parts follow the input order: deterministic names and content
    ctx.enable_progress_bars = False  # the driver shows rows and rows/s itself
    ctx.target_max_block_size = _BLOCK_BYTES  # small blocks: every actor busy early, a first part soon
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(logging.WARNING)
    try:
        yield max(1, min(actors, int(ray.cluster_resources().get("CPU", 1))))
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.target_max_block_size = saved
        data_logger.setLevel(level)
        if started:
            ray.shutdown()


class _Progress:
    """Rows done and rows/s: a live bar on a terminal, a log line every 10 s elsewhere (KFP logs)."""

    def __init__(self, console: Console) -> None:
        self.console, self.t0, self.done, self._last = console, time.monotonic(), 0, 0.0
        self.first: tuple[float, int] | None = None  # (when, rows) of the first scored batch: start-up is over
        self.bar: Progress | None = None
        if console.is_terminal:
            self.bar = Progress(
                TextColumn("scoring"), BarColumn(), TextColumn("{task.completed:,} rows"),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console,
            )  # fmt: skip
            self.task = self.bar.add_task("score", total=None, rate="")  # the row count is known at the end
            self.bar.start()

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.t0, 1e-9)

    def update(self, rows: int) -> None:
        self.done += rows
        if self.first is None:
            self.first = (time.monotonic(), rows)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, rate=f"{self.rate():,.0f} rows/s")
        elif time.monotonic() - self._last >= 10:
            self._last = time.monotonic()
            self.console.print(f"scored {self.done:,} rows ({self.rate():,.0f} rows/s)")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()

    def timings(self) -> dict[str, float | None]:
        """Seconds until the first scored batch (actors started, model loaded) and rows/s after it."""
        if self.first is None:
            return {"startup_seconds": None, "steady_rows_per_s": None}
        after = time.monotonic() - self.first[0]
        rows = self.done - self.first[1]
        return {
            "startup_seconds": round(self.first[0] - self.t0, 2),
            "steady_rows_per_s": round(rows / after, 1) if rows and after > 0 else None,
        }


def score_file(
    store: ArtifactStore, record: VersionRecord, cfg: BatchConfig, *, console: Console | None = None
) -> dict[str, Any]:
    """Score a file with a registered version and commit the output folder.

    Args:
        store: The artifact store of HARMGUARD_HOME (the model lives under ``models/<digest>/``).
        record: The version to score with (``resolve_record``).
        cfg: Input, output and parallelism.
        console: Where progress goes (stderr by default).

    Returns:
        The committed manifest: versions, row counts, skipped counts, flagged count, parts, rows/s.

    Raises:
        harmguard.storage.readers.DataReadError: The input cannot be read.
        BatchInputError: A named column is missing, or the id column cannot be stored.
        harmguard.batch.output.AlreadyCommitted: The output is committed and ``overwrite`` is False.
        harmguard.serving.model.ModelDigestMismatch: The model's files do not hash to its digest.
        ScoringFailed: A Ray worker failed; nothing is committed.
    """
    console = console or Console(stderr=True)
    t0 = time.monotonic()
    spec = spec_of(record)
    folder = open_folder(cfg.output_uri)
    if folder.exists(SUCCESS) and not cfg.overwrite:  # refuse before any work, nothing written
        raise AlreadyCommitted(f"{folder.uri} is already committed; pass --overwrite to replace it")
    source = open_input(cfg.input_uri, cfg.id_column, cfg.text_column, cfg.max_chars)
    categories = read_model_meta(verify_model_dir(spec.model_uri, spec.model_digest))["categories"]
    check_thresholds(categories, spec.thresholds)
    schema = output_schema(pa.field(cfg.id_column, source.id_type), categories)
    if len(set(schema.names)) != len(schema.names):
        raise BatchInputError(f"id column {cfg.id_column!r} collides with an output column ({schema.names})")
    writer = PartWriter(folder, f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}")
    counts = dict.fromkeys(SKIP_REASONS, 0)
    flagged = 0
    traffic = _Traffic(store, record, categories) if cfg.record_traffic else None
    console.print(
        f"scoring {cfg.input_uri} with {record.version} (model {record.model_digest[:12]}, "
        f"thresholds {record.thresholds_version[:12]}) → {folder.uri}"
    )

    def write(scored: pa.Table) -> None:
        nonlocal flagged
        item = scored.column(ITEM)
        if item.type != source.id_type:
            if not pa.types.is_null(item.type):  # JSONL: one chunk's ids of another type than the first's
                raise BatchInputError(
                    f"{cfg.input_uri}: id column {cfg.id_column!r} has values of mixed types ({source.id_type} and "
                    f"{item.type}); give one type"
                )
            item = item.cast(source.id_type)
        n = scored.num_rows
        cols = {name: scored.column(name) for name in schema.names[1:] if name in scored.column_names}
        cols[cfg.id_column] = item
        cols["model_version"] = pa.array([record.version] * n, pa.string())
        cols["thresholds_version"] = pa.array([record.thresholds_version] * n, pa.string())
        writer.write_part(pa.table([cols[name] for name in schema.names], schema=schema))
        for row in pc.value_counts(cols["skipped"].drop_null()).to_pylist():
            counts[row["values"]] += row["counts"]
        flagged += int(pc.sum(pc.cast(cols["flagged"], pa.int64())).as_py() or 0)

    with _ray_session(cfg.actors) as pool_size:
        import ray

        # An input under a block or two needs one actor: a second would only load the model (seconds on 2 cores).
        pool_size = min(pool_size, max(1, math.ceil(source.size / _BLOCK_BYTES)))
        progress = _Progress(console)
        pending: list[pa.Table] = []
        pending_rows = 0
        try:
            ds = input_dataset(source).map_batches(
                _scorer(spec.model_dump(), keep_text=traffic is not None),
                batch_size=cfg.batch_size,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=pool_size),
                num_cpus=1,
            )
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                out: pa.Table = batch  # batch_format="pyarrow" yields tables
                if traffic is not None:
                    traffic.add(out)
                    out = out.drop_columns([TEXT])  # texts are never kept
                pending.append(out)
                pending_rows += out.num_rows
                progress.update(out.num_rows)
                while pending_rows >= cfg.rows_per_part:
                    merged = pa.concat_tables(pending)
                    write(merged.slice(0, cfg.rows_per_part))
                    pending, pending_rows = [merged.slice(cfg.rows_per_part)], merged.num_rows - cfg.rows_per_part
        except (BatchInputError, DataReadError) as e:  # raised in a read task: Ray's wrapper carries a traceback
            raise type(e)(_cause_message(e)) from None
        except ray.exceptions.RayError as e:  # an actor failed (e.g. the model changed after the driver's check)
            raise ScoringFailed(f"scoring failed in a Ray worker, nothing committed: {type(e).__name__}") from e
        finally:
            progress.close()
            # Every scored row was recorded as it arrived: write what the buffer holds, also when scoring failed.
            recorded = traffic.close() if traffic is not None else {"disabled": "record_traffic is off"}
    if pending_rows or not writer.parts:  # the remainder; an empty input still gets one part with the schema
        write(pa.concat_tables(pending) if pending else _empty_scored(schema))
    wall = time.monotonic() - t0
    rows = sum(p["rows"] for p in writer.parts)
    meta = {
        "policy": record.policy,
        "model_version": record.version,
        "model_digest": record.model_digest,
        "thresholds_version": record.thresholds_version,
        "thresholds": record.thresholds,
        "input_uri": cfg.input_uri,
        "id_column": cfg.id_column,
        "text_column": cfg.text_column,
        "max_chars": cfg.max_chars,
        "columns": schema.names,
        "scored": rows - sum(counts.values()),
        "skipped": counts,
        "flagged": flagged,
        "actors": pool_size,
        "traffic": recorded,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 2),
        "rows_per_s": round(rows / wall, 1) if wall > 0 else None,  # end to end, start-up included
        **progress.timings(),
    }
    manifest = writer.commit(meta, overwrite=cfg.overwrite)
    console.print(
        f"committed {manifest['rows']:,} rows in {len(manifest['parts'])} part(s) to {folder.uri} "
        f"({manifest['rows_per_s']:,} rows/s, {flagged:,} flagged, skipped {counts})"
    )
    return manifest | {"output_uri": folder.uri}


def _cause_message(e: BaseException) -> str:
    """The message of the exception a Ray task raised (``RayTaskError`` prefixes it with the task's traceback)."""
    cause = getattr(e, "cause", None)
    return str(cause if isinstance(cause, BaseException) else e.args[0] if e.args else e)


def _empty_scored(schema: pa.Schema) -> pa.Table:
    names = [n for n in schema.names if n.startswith(("score_", "decision_"))] + ["flagged", "skipped"]
    return pa.table({ITEM: pa.array([], schema.field(0).type)} | {n: pa.array([], schema.field(n).type) for n in names})


def score_registered(
    store: ArtifactStore,
    cfg: BatchConfig,
    *,
    policy: str | None = None,
    version: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Resolve the version (``version``, else the policy's champion) and score ``cfg.input_uri`` with it."""
    return score_file(store, resolve_record(store, policy, version or None), cfg, console=console)
