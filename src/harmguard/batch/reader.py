"""The input of batch scoring as a Ray Data stream: read in Ray tasks, never whole in the driver.

``open_input`` checks the input in the driver from what it can see cheaply (the file's size, the Parquet footer, the
first block of a CSV, the first lines of a JSONL file) so that a missing column or an empty file is refused before
anything is written. ``input_dataset`` then reads it with Ray Data, on the filesystem of its URI (local, or ``gs://``
through ``storage.gcs``), and turns every block into the three columns the scoring actors take: ``item`` (the id
column as read), ``text`` (the text to score, null when not scored) and ``skipped`` (why not: ``null_text``,
``not_text``, ``too_long``, ``not_utf8``).

The read is a ``FileBasedDatasource`` of Ray Data, the machinery of ``ray.data.read_parquet``/``read_csv``/
``read_json``, with its own ``_read_stream`` rather than those functions, for three reasons: its read task must
reserve no CPU (an actor pool holding every CPU would leave ``read_parquet``'s file listing and read tasks none: the
run hangs); JSONL must keep JSON's own types (``read_json(lines=True)`` infers them: ``"007"`` becomes 7); and a parse
error must name the problem without quoting the row (pyarrow's messages quote it, inputs hold abusive text, and Ray
prints a task's error). It streams: Parquet by row groups, CSV/TSV with pyarrow's streaming reader (what
``read_csv`` runs), JSONL in pandas chunks.

The readers keep the rules of ``harmguard.storage.readers`` where the two could differ: CSV follows RFC 4180 (quoted
newlines), the id and text columns are read as strings exactly as written and never turned into nulls (``""`` and
``"NA"`` are texts), JSONL keeps JSON's own types (a number where a text should be is ``not_text``, ``"007"`` stays a
string), Parquet keeps its schema. TSV has no quoting, as there. Compression (``.gz``) is told by the extension.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from harmguard.storage.gcs import arrow_filesystem
from harmguard.storage.readers import DataReadError, infer_format

ITEM, TEXT, SKIPPED = "item", "text", "skipped"  # the columns of a prepared block
_PEEK_BYTES = 1 << 20  # what the driver reads of a CSV or JSONL file to see its columns
_JSONL_CHUNK_ROWS = 4096  # rows per pandas chunk in a JSONL read task
_PARQUET_BATCH = 8192  # rows per Parquet batch in a read task
_ROW_ERROR = re.compile(r"(Row #\d+: Expected \d+ columns, got \d+)")


class BatchInputError(ValueError):
    """The input cannot be scored as asked (a missing column, an unusable id column...); the message says what."""


@dataclass(frozen=True)
class InputSpec:
    """An input checked by ``open_input``: where it is, how to read it, and the type of its id column."""

    uri: str
    fmt: str
    filesystem: Any  # pyarrow.fs.FileSystem
    path: str
    id_column: str
    text_column: str
    max_chars: int
    id_type: pa.DataType
    size: int  # bytes: Parquet's uncompressed data, else the file's


def _skip_reason(value: Any, max_chars: int) -> str | None:
    if isinstance(value, str):
        if len(value) > max_chars:
            return "too_long"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the server refuses it (422), a tokenizer cannot read it
            return "not_utf8"
        return None
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "null_text"
    return "not_text"


def skip_reasons(texts: pd.Series, max_chars: int) -> tuple[list[str | None], list[str | None]]:
    """Split a text column into what goes to the model and why a row is not scored.

    Returns:
        ``(texts, skipped)``, one entry per row: the text (None when not scored) and the reason (None when scored).
    """
    why = [_skip_reason(v, max_chars) for v in texts.tolist()]
    return [v if r is None else None for v, r in zip(texts.tolist(), why, strict=True)], why


def _csv_options(spec_fmt: str, columns: list[str], *, only: bool = False) -> dict[str, Any]:
    from pyarrow import csv

    parse = (
        csv.ParseOptions(delimiter="\t", quote_char=False)
        if spec_fmt == "tsv"
        else csv.ParseOptions(newlines_in_values=True)  # RFC 4180: quoted newlines are common in tweets
    )
    # Strings exactly as written, never null: "" and "NA" are texts; "007" stays "007".
    types = {c: pa.string() for c in columns}
    convert = csv.ConvertOptions(column_types=types, strings_can_be_null=False, include_columns=columns if only else [])
    return {"read_options": csv.ReadOptions(use_threads=False), "parse_options": parse, "convert_options": convert}


def _compression(path: str) -> str | None:
    return "gzip" if path.lower().endswith(".gz") else None


def _peek(
    spec_fmt: str, filesystem: Any, path: str, uri: str, columns: list[str]
) -> tuple[list[str], pa.DataType, int | None]:
    """The input's column names, the type its id column will have (``columns``: id, text), its data size if known."""
    if spec_fmt == "parquet":
        import pyarrow.parquet as pq

        with filesystem.open_input_file(path) as f:
            meta = pq.read_metadata(f)
        schema = meta.schema.to_arrow_schema()
        names = list(schema.names)
        data = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))  # uncompressed
        return names, schema.field(columns[0]).type if columns[0] in names else pa.string(), data
    with filesystem.open_input_stream(path, compression=_compression(path)) as f:
        head = f.read(_PEEK_BYTES)
        while head and b"\n" not in head and (more := f.read(_PEEK_BYTES)):  # one long first line
            head += more
        whole = len(f.read(1)) == 0
    if not head.strip():
        raise DataReadError(f"{uri}: empty file, no columns to read")
    if spec_fmt == "jsonl":
        lines = head if whole else head[: head.rfind(b"\n") + 1]
        frame = pd.read_json(io.BytesIO(lines), lines=True, dtype=False, encoding="utf-8")
        names = [str(c) for c in frame.columns]
        return names, _id_array(frame, columns[0], uri).type if columns[0] in names else pa.string(), None
    from pyarrow import csv

    reader = csv.open_csv(pa.BufferReader(head), **_csv_options(spec_fmt, columns))
    return list(reader.schema.names), pa.string(), None


def open_input(uri: str, id_column: str, text_column: str, max_chars: int) -> InputSpec:
    """Check an input in the driver (existence, format, columns) without reading it whole.

    Raises:
        DataReadError: The file is missing, empty, of an unknown format, or does not parse.
        BatchInputError: The id or text column is missing, or the id column has values of mixed types.
    """
    fmt = infer_format(uri)
    if fmt not in ("csv", "tsv", "parquet", "jsonl"):
        raise DataReadError(f"{uri}: cannot score a {fmt} file")
    if "://" in uri and not uri.startswith(("gs://", "file://")):
        raise DataReadError(f"{uri}: unsupported URI scheme; use a local path, file:// or gs://")
    from pyarrow import fs

    filesystem, path = arrow_filesystem(uri.removeprefix("file://"))
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        raise DataReadError(f"{uri}: file not found")
    if info.type != fs.FileType.File:
        raise DataReadError(f"{uri}: not a file")
    if not info.size:
        raise DataReadError(f"{uri}: empty file, no columns to read")
    try:
        names, id_type, data_size = _peek(fmt, filesystem, path, uri, [id_column, text_column])
    except (pa.ArrowInvalid, ValueError, OSError, EOFError) as e:
        if isinstance(e, BatchInputError | DataReadError):
            raise
        raise DataReadError(f"{uri}: cannot parse as {fmt}: {_safe_reason(e)}") from None
    missing = [c for c in (id_column, text_column) if c not in names]
    if missing:
        raise BatchInputError(
            f"{uri}: no column {', '.join(map(repr, missing))} (columns: {names}); "
            "name them with --id-column / --text-column"
        )
    size = max(int(info.size), data_size or 0)
    return InputSpec(uri, fmt, filesystem, path, id_column, text_column, max_chars, id_type, size)


def _id_array(frame: pd.DataFrame, column: str, uri: str) -> pa.Array:
    if column not in frame.columns:  # no row of this chunk has the key
        return pa.nulls(len(frame))
    try:
        return pa.Array.from_pandas(frame[column])
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # its message quotes a value: not shown
        raise BatchInputError(
            f"{uri}: id column {column!r} has values of mixed types (e.g. numbers and strings); give one type"
        ) from None


def prepare_frame(frame: pd.DataFrame, spec: InputSpec) -> pa.Table:
    """A prepared block (item, text, skipped) from rows read with pandas (JSONL: any JSON type per cell)."""
    ids = _id_array(frame, spec.id_column, spec.uri)
    if spec.text_column in frame.columns:
        texts, why = skip_reasons(frame[spec.text_column], spec.max_chars)
    else:
        texts, why = [None] * len(frame), ["null_text"] * len(frame)
    return pa.table({ITEM: ids, TEXT: pa.array(texts, pa.string()), SKIPPED: pa.array(why, pa.string())})


def prepare_table(table: pa.Table, spec: InputSpec) -> pa.Table:
    """A prepared block (item, text, skipped) from an Arrow block (Parquet, CSV), vectorized."""
    n = table.num_rows
    raw = table.column(spec.text_column).combine_chunks()
    null = pa.scalar(None, pa.string())
    if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type):
        text = raw.cast(pa.string())
        try:
            text.validate(full=True)  # UTF-8: a Python str cannot hold invalid bytes, a Parquet file can
            bad = pa.array([False] * n)
        except pa.ArrowInvalid:
            bad = pa.array([_not_utf8(v) for v in raw.cast(pa.binary()).to_pylist()])
            text = pc.if_else(bad, null, raw.cast(pa.binary())).cast(pa.string())
        why = pc.if_else(
            pc.is_null(raw),
            "null_text",
            pc.if_else(bad, "not_utf8", pc.if_else(pc.greater(pc.utf8_length(text), spec.max_chars), "too_long", null)),
        )
        text = pc.if_else(pc.is_null(why), text, null)
    else:  # a column of numbers, bytes, ...: nothing to score
        why = pc.if_else(pc.is_null(raw), "null_text", "not_text")
        text = pa.nulls(n, pa.string())
    item = table.column(spec.id_column).combine_chunks()
    return pa.table({ITEM: item, TEXT: text, SKIPPED: why.cast(pa.string())})


def _not_utf8(value: bytes | None) -> bool:
    if value is None:
        return False
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _safe_reason(e: BaseException) -> str:
    """What went wrong, without the content of the row: parser messages quote it, and inputs hold abusive text."""
    found = _ROW_ERROR.search(str(e))
    return found.group(1) if found else f"{type(e).__name__} (the parser's message is not shown: it quotes the input)"


def _stream_datasource(spec: InputSpec) -> Any:
    """A Ray Data file datasource that parses the input in chunks in its read task and yields prepared blocks.

    CSV/TSV: pyarrow's streaming CSV reader (what ``ray.data.read_csv`` runs), the id and text columns as strings.
    JSONL: pandas in chunks, keeping JSON's own types (``read_json(lines=True)`` would infer types: ``"007"`` -> 7).
    A parse error is raised as ``DataReadError`` naming the problem but not quoting the row.
    """
    from ray.data.datasource import FileBasedDatasource

    def chunks(f: Any) -> Iterator[pa.Table]:
        if spec.fmt == "parquet":
            import pyarrow.parquet as pq

            # Row group by row group (the file is opened for random access), in batches of _PARQUET_BATCH rows.
            parquet = pq.ParquetFile(f)
            for batch in parquet.iter_batches(_PARQUET_BATCH, columns=[spec.id_column, spec.text_column]):
                yield prepare_table(pa.Table.from_batches([batch]), spec)
            return
        if spec.fmt == "jsonl":
            stream = io.BufferedReader(_Raw(f), buffer_size=1 << 20)
            with pd.read_json(stream, lines=True, dtype=False, encoding="utf-8", chunksize=_JSONL_CHUNK_ROWS) as frames:
                for frame in frames:
                    yield prepare_frame(frame, spec)
            return
        from pyarrow import csv

        reader = csv.open_csv(f, **_csv_options(spec.fmt, [spec.id_column, spec.text_column], only=True))
        for batch in reader:
            yield prepare_table(pa.Table.from_batches([batch]), spec)

    class StreamDatasource(FileBasedDatasource):
        def _open_input_source(self, filesystem: Any, path: str, **open_args: Any) -> Any:
            if spec.fmt == "parquet":  # a footer first: random access, no compression layer
                return filesystem.open_input_file(path)
            return super()._open_input_source(filesystem, path, **open_args)

        def _read_stream(self, f: Any, path: str) -> Iterator[pa.Table]:
            try:
                yield from chunks(f)
            except (BatchInputError, DataReadError):
                raise
            except (ValueError, OSError, EOFError) as e:  # ArrowInvalid and pandas' JSON errors are ValueErrors
                raise DataReadError(f"{spec.uri}: cannot parse as {spec.fmt}: {_safe_reason(e)}") from None

        def get_name(self) -> str:
            return f"Read{spec.fmt.upper()}"

    return StreamDatasource(
        spec.path, filesystem=spec.filesystem, open_stream_args={"compression": _compression(spec.path)}
    )


class _Raw(io.RawIOBase):
    """A pyarrow input stream as a Python raw stream (pandas reads lines from a buffered one)."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._f.read(len(b))
        b[: len(data)] = data
        return len(data)


def input_dataset(spec: InputSpec) -> Any:
    """The prepared blocks (item, text, skipped) of the input, in input order, as a lazy Ray Data dataset.

    The read task reserves no CPU: it parses and prepares, a small share of the work beside scoring, and an actor
    pool sized to the cluster's CPUs would otherwise leave it none to be scheduled on (the run would hang).
    """
    import ray

    return ray.data.read_datasource(_stream_datasource(spec), num_cpus=0)
