"""The committed-folder protocol of batch scoring (no Ray): parts, the _SUCCESS manifest, and what readers refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from harmguard.batch.output import (
    SUCCESS,
    TEMPORARY,
    AlreadyCommitted,
    CorruptOutput,
    OutputError,
    PartWriter,
    UncommittedOutput,
    open_folder,
    read_manifest,
    read_scored,
)
from harmguard.batch.score import skip_reasons


def _write(out: Path, sizes: list[int], attempt: str = "a1", *, overwrite: bool = False) -> dict:
    writer = PartWriter(open_folder(str(out)), attempt)
    start = 0
    for n in sizes:
        writer.write_part(pa.table({"id": list(range(start, start + n)), "flagged": [i % 2 == 0 for i in range(n)]}))
        start += n
    return writer.commit({"model_version": "p/1"}, overwrite=overwrite)


def test_parts_are_invisible_until_the_manifest_commits_them(tmp_path):
    out = tmp_path / "out"
    writer = PartWriter(open_folder(str(out)), "attempt-1")
    writer.write_part(pa.table({"id": [1, 2]}))
    assert (out / TEMPORARY / "attempt-1" / "part-00000.parquet").is_file()
    with pytest.raises(UncommittedOutput, match="no _SUCCESS"):
        read_scored(str(out))
    manifest = writer.commit({"model_version": "p/1"}, overwrite=False)
    assert sorted(p.name for p in out.iterdir()) == [SUCCESS, "part-00000.parquet"]  # temporary prefix removed
    assert manifest["rows"] == 2 and manifest["parts"][0]["rows"] == 2
    assert read_manifest(str(out)) == json.loads((out / SUCCESS).read_text())
    assert read_scored(str(out))["id"].tolist() == [1, 2]


def test_commit_is_write_once_and_overwrite_removes_stale_parts(tmp_path):
    out = tmp_path / "out"
    first = _write(out, [3, 3, 3])
    assert [p["name"] for p in first["parts"]] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    with pytest.raises(AlreadyCommitted, match="--overwrite"):
        _write(out, [9], "a2")
    assert read_scored(str(out))["id"].tolist() == list(range(9))  # the refused commit changed nothing readable
    _write(out, [5, 4], "a3", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [SUCCESS, "part-00000.parquet", "part-00001.parquet"]
    assert read_scored(str(out))["id"].tolist() == list(range(9))


def test_identical_parts_have_identical_digests(tmp_path):
    a, b = _write(tmp_path / "a", [4, 2]), _write(tmp_path / "b", [4, 2])
    assert [p["sha256"] for p in a["parts"]] == [p["sha256"] for p in b["parts"]]  # deterministic names and bytes


@pytest.mark.parametrize("damage", ["bytes", "missing", "rows", "format"])
def test_reader_refuses_a_damaged_commit(tmp_path, damage):
    out = tmp_path / "out"
    _write(out, [3, 3])
    part = out / "part-00001.parquet"
    manifest = json.loads((out / SUCCESS).read_text())
    if damage == "bytes":  # another writer's part under the same name
        pd.DataFrame({"id": [7, 8, 9], "flagged": [True] * 3}).to_parquet(part)
    elif damage == "missing":
        part.unlink()
    elif damage == "rows":
        manifest["parts"][1]["rows"] = 4
        (out / SUCCESS).write_text(json.dumps(manifest))
    else:
        manifest["format"] = "something/else"
        (out / SUCCESS).write_text(json.dumps(manifest))
    with pytest.raises(CorruptOutput):
        read_scored(str(out))


def test_unsupported_output_scheme_is_refused():
    with pytest.raises(OutputError, match="unsupported output scheme"):
        open_folder("s3://bucket/out")


@pytest.mark.parametrize(
    ("value", "texts", "why"),
    [
        ("hello", "hello", None),
        ("", "", None),  # an empty text is scored, as the server scores it
        ("NA", "NA", None),
        ("x" * 11, None, "too_long"),
        ("x" * 10, "x" * 10, None),  # the limit is inclusive, as the server's
        (None, None, "null_text"),
        (float("nan"), None, "null_text"),
        (pd.NA, None, "null_text"),
        (42, None, "not_text"),
        ("ok \ud800 then", None, "not_utf8"),  # a lone surrogate: refused by the server (422), never scored here
        ("\U0001f600", "\U0001f600", None),  # a real astral character is fine
    ],
)
def test_skip_reasons(value, texts, why):
    assert skip_reasons(pd.Series([value], dtype=object), max_chars=10) == ([texts], [why])


def test_prepare_table_skips_what_the_server_would_refuse():
    """An Arrow block (Parquet, CSV) prepared in the read task: null, too long, bytes that are not UTF-8, not text."""
    from pyarrow import fs

    from harmguard.batch.reader import InputSpec, prepare_table

    spec = InputSpec("in.parquet", "parquet", fs.LocalFileSystem(), "in.parquet", "id", "text", 10, pa.int64(), 1)
    raw = pa.array([b"hello", b"ok \xed\xa0\x80 x", None, b"x" * 11, b""], pa.binary()).cast(pa.string(), safe=False)
    out = prepare_table(pa.table({"id": [1, 2, 3, 4, 5], "text": raw}), spec)
    assert out.column("item").to_pylist() == [1, 2, 3, 4, 5]
    assert out.column("text").to_pylist() == ["hello", None, None, None, ""]
    assert out.column("skipped").to_pylist() == [None, "not_utf8", "null_text", "too_long", None]
    numbers = prepare_table(pa.table({"id": [1, 2], "text": pa.array([7, None], pa.int64())}), spec)
    assert numbers.column("skipped").to_pylist() == ["not_text", "null_text"]
    assert numbers.column("text").null_count == 2
