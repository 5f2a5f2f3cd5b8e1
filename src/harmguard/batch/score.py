"""Batch scoring with Ray Data: a file of texts scored with the model and thresholds that serve online.

``score_file`` reads the input (CSV, Parquet or JSONL, local or ``gs://``, through ``storage.readers``), checks
the model digest and thresholds, and streams ``(row, text)`` blocks through Ray Data ``map_batches`` over an actor pool:
each actor loads and verifies the model once (``harmguard.serving.model.load_spec``, as a Serve replica does) and
decides with ``harmguard.models.decide.decide``, the function online serving calls, so batch and online decisions are
the same arithmetic. The driver receives the scored blocks in input order and writes Parquet parts of ``rows_per_part``
input rows, committed by a ``_SUCCESS`` manifest (``harmguard.batch.output``).

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
- The input file is read by the driver into memory (one table); the scoring is what Ray spreads.
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
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from harmguard.batch.output import SUCCESS, AlreadyCommitted, PartWriter, open_folder
from harmguard.models.base import read_model_meta
from harmguard.models.decide import DEFAULT_MAX_CHARS, check_thresholds, decide
from harmguard.models.loading import ModelSpec, load_spec, verify_model_dir
from harmguard.registry import VersionRecord, get_version, list_policies, parse_version, read_alias
from harmguard.storage import ArtifactStore
from harmguard.storage.readers import read_table

OUTPUT_COLUMNS = ("flagged", "skipped", "model_version", "thresholds_version")
SKIP_REASONS = ("null_text", "not_text", "too_long", "not_utf8")
_MAX_BLOCK = 8192  # rows per Ray Data input block


class BatchInputError(ValueError):
    """The input cannot be scored as asked (a missing column, an unusable id column...); the message says what."""


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


def _utf8(text: str) -> bool:
    """Whether a text can be encoded as UTF-8 (a lone surrogate cannot: the tokenizer would raise on it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def skip_reasons(texts: pd.Series, max_chars: int) -> tuple[list[str | None], list[str | None]]:
    """Split a text column into what goes to the model and why a row is not scored.

    Returns:
        ``(texts, skipped)``, one entry per row: the text (None when not scored) and the reason (None when scored).
    """
    out: list[str | None] = []
    why: list[str | None] = []
    for v in texts.tolist():
        if isinstance(v, str):
            reason = "too_long" if len(v) > max_chars else None if _utf8(v) else "not_utf8"
        elif v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            reason = "null_text"
        else:
            reason = "not_text"
        out.append(v if reason is None else None)
        why.append(reason)
    return out, why


def _scorer(spec_doc: dict[str, Any]) -> type:
    """The actor class for ``map_batches``; the spec is closed over, so actors take no constructor arguments."""

    class Scorer:
        def __init__(self) -> None:
            # Once per actor: download (gs://) and verify the model digest, check the thresholds fit.
            self.loaded = load_spec(ModelSpec.model_validate(spec_doc), {})

        def __call__(self, batch: pa.Table) -> pa.Table:
            texts = batch.column("text").to_pylist()
            valid = np.array([t is not None for t in texts], dtype=bool)
            scored = decide(self.loaded.model, self.loaded.spec.thresholds, [t for t in texts if t is not None])
            missing = ~valid
            cols: dict[str, Any] = {"row": batch.column("row")}
            for j, c in enumerate(scored.categories):
                s = np.zeros(len(texts))
                s[valid] = scored.scores[:, j]
                d = np.zeros(len(texts), dtype=bool)
                d[valid] = scored.decisions[:, j]
                cols[f"score_{c}"] = pa.array(s, mask=missing)
                cols[f"decision_{c}"] = pa.array(d, mask=missing)
            f = np.zeros(len(texts), dtype=bool)
            f[valid] = scored.flagged
            cols["flagged"] = pa.array(f, mask=missing)
            return pa.table(cols)

    return Scorer


def output_schema(id_field: pa.Field, categories: list[str]) -> pa.Schema:
    """The columns of every part: id as read, score and decision per category, flagged, why skipped, versions."""
    fields = [id_field]
    fields += [pa.field(f"score_{c}", pa.float64()) for c in categories]
    fields += [pa.field(f"decision_{c}", pa.bool_()) for c in categories]
    fields += [pa.field(n, pa.bool_() if n == "flagged" else pa.string()) for n in OUTPUT_COLUMNS]
    return pa.schema(fields)


def _read_input(cfg: BatchConfig) -> pd.DataFrame:
    frame = read_table(cfg.input_uri, string_columns=[cfg.id_column, cfg.text_column])
    missing = [c for c in (cfg.id_column, cfg.text_column) if c not in frame.columns]
    if missing:
        raise BatchInputError(
            f"{cfg.input_uri}: no column {', '.join(map(repr, missing))} (columns: {list(frame.columns)}); "
            "name them with --id-column / --text-column"
        )
    return frame


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
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = True  # parts follow the input order: deterministic names and content
    ctx.enable_progress_bars = False  # the driver shows rows and rows/s itself
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(logging.WARNING)
    try:
        yield max(1, min(actors, int(ray.cluster_resources().get("CPU", 1))))
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        data_logger.setLevel(level)
        if started:
            ray.shutdown()


class _Progress:
    """Rows done and rows/s: a live bar on a terminal, a log line every 10 s elsewhere (KFP logs)."""

    def __init__(self, console: Console, total: int) -> None:
        self.console, self.total, self.t0, self.done, self._last = console, total, time.monotonic(), 0, 0.0
        self.first: tuple[float, int] | None = None  # (when, rows) of the first scored batch: start-up is over
        self.bar: Progress | None = None
        if console.is_terminal:
            self.bar = Progress(
                TextColumn("scoring"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} rows"),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console,
            )  # fmt: skip
            self.task = self.bar.add_task("score", total=total, rate="")
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
            self.console.print(f"scored {self.done:,}/{self.total:,} rows ({self.rate():,.0f} rows/s)")

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
        ScoringError: A Ray worker failed; nothing is committed.
    """
    console = console or Console(stderr=True)
    t0 = time.monotonic()
    spec = spec_of(record)
    folder = open_folder(cfg.output_uri)
    if folder.exists(SUCCESS) and not cfg.overwrite:  # refuse before any work, nothing written
        raise AlreadyCommitted(f"{folder.uri} is already committed; pass --overwrite to replace it")
    frame = _read_input(cfg)
    try:
        ids = pa.Array.from_pandas(frame[cfg.id_column])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise BatchInputError(f"{cfg.input_uri}: id column {cfg.id_column!r} has values of mixed types ({e})") from None
    categories = read_model_meta(verify_model_dir(spec.model_uri, spec.model_digest))["categories"]
    check_thresholds(categories, spec.thresholds)
    schema = output_schema(pa.field(cfg.id_column, ids.type), categories)
    if len(set(schema.names)) != len(schema.names):
        raise BatchInputError(f"id column {cfg.id_column!r} collides with an output column ({schema.names})")
    texts, skipped = skip_reasons(frame[cfg.text_column], cfg.max_chars)
    skipped_arr = pa.array(skipped, type=pa.string())
    n = len(frame)
    writer = PartWriter(folder, f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}")
    flags: list[int] = []  # flagged rows per part
    console.print(
        f"scoring {n:,} rows of {cfg.input_uri} with {record.version} (model {record.model_digest[:12]}, "
        f"thresholds {record.thresholds_version[:12]}) → {folder.uri}"
    )

    def write(scored: pa.Table) -> None:
        rows = scored.column("row").to_numpy()
        start = len(writer.parts) * cfg.rows_per_part
        if not np.array_equal(rows, np.arange(start, start + len(rows))):  # preserve_order guarantees this
            raise RuntimeError("scored rows came back out of input order")
        take = pa.array(rows)
        cols = {cfg.id_column: ids.take(take)}
        cols |= {name: scored.column(name) for name in schema.names if name in scored.column_names}
        cols["skipped"] = skipped_arr.take(take)
        cols["model_version"] = pa.array([record.version] * len(rows), pa.string())
        cols["thresholds_version"] = pa.array([record.thresholds_version] * len(rows), pa.string())
        writer.write_part(pa.table([cols[name] for name in schema.names], schema=schema))
        flags.append(int(pc.sum(pc.cast(cols["flagged"], pa.int64())).as_py() or 0))

    with _ray_session(cfg.actors) as pool_size:
        import ray

        # About 8 blocks per actor to balance the pool, at most _MAX_BLOCK rows so progress and parts flow steadily.
        block = max(cfg.batch_size, min(math.ceil(n / (pool_size * 8)), _MAX_BLOCK))
        tables = [
            pa.table(
                {"row": pa.array(np.arange(i, min(i + block, n))), "text": pa.array(texts[i : i + block], pa.string())}
            )
            for i in range(0, n, block)
        ]
        progress = _Progress(console, n)
        pending: list[pa.Table] = []
        pending_rows = 0
        try:
            if n:
                pool_size = min(pool_size, len(tables))  # a small input needs no more actors than blocks
                ds = ray.data.from_arrow(tables).map_batches(
                    _scorer(spec.model_dump()),
                    batch_size=cfg.batch_size,
                    batch_format="pyarrow",
                    compute=ray.data.ActorPoolStrategy(size=pool_size),
                    num_cpus=1,
                )
                for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    out: pa.Table = batch  # batch_format="pyarrow" yields tables
                    pending.append(out)
                    pending_rows += out.num_rows
                    progress.update(out.num_rows)
                    while pending_rows >= cfg.rows_per_part:
                        merged = pa.concat_tables(pending)
                        write(merged.slice(0, cfg.rows_per_part))
                        pending, pending_rows = [merged.slice(cfg.rows_per_part)], merged.num_rows - cfg.rows_per_part
        except ray.exceptions.RayError as e:  # an actor failed (e.g. the model changed after the driver's check)
            raise ScoringFailed(f"scoring failed in a Ray worker, nothing committed: {e}") from e
        finally:
            progress.close()
    if pending_rows or not writer.parts:  # the remainder; an empty input still gets one part with the schema
        rest = pa.concat_tables(pending) if pending else _empty_scored(schema)
        write(rest)
    wall = time.monotonic() - t0
    flagged = sum(flags)
    counts = {r: skipped.count(r) for r in SKIP_REASONS}
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
        "scored": n - sum(counts.values()),
        "skipped": counts,
        "flagged": flagged,
        "actors": pool_size,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 2),
        "rows_per_s": round(n / wall, 1) if wall > 0 else None,  # end to end, start-up included
        **progress.timings(),
    }
    manifest = writer.commit(meta, overwrite=cfg.overwrite)
    console.print(
        f"committed {manifest['rows']:,} rows in {len(manifest['parts'])} part(s) to {folder.uri} "
        f"({manifest['rows_per_s']:,} rows/s, {flagged:,} flagged, skipped {counts})"
    )
    return manifest | {"output_uri": folder.uri}


def _empty_scored(schema: pa.Schema) -> pa.Table:
    names = ["row"] + [n for n in schema.names if n.startswith(("score_", "decision_"))] + ["flagged"]
    return pa.table({n: pa.array([], pa.int64() if n == "row" else schema.field(n).type) for n in names})


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
