"""Reading tables by path or URI: formats, compression, missing values kept as written, clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from harmguard.storage.readers import DataReadError, infer_format, read_table

CSV = 'id,text,label\n1,"hello\nworld",0\n2,"she said ""hi""",1\n3,,2\n4,NA,1\n'


def test_csv_quoted_newline_and_kept_empties(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text(CSV, encoding="utf-8")
    df = read_table(str(path))
    assert len(df) == 4
    assert df.loc[0, "text"] == "hello\nworld"  # RFC 4180: newline inside quotes stays in the field
    assert df.loc[1, "text"] == 'she said "hi"'
    assert df.loc[2, "text"] == ""  # empty text stays "", for validation to report
    assert df.loc[3, "text"] == "NA"  # not a missing value
    assert df["label"].dtype.kind == "i"  # numeric labels stay numeric


def test_csv_blank_label_becomes_string_for_validation(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text,label\na,1\nb,\n", encoding="utf-8")
    df = read_table(str(path))
    assert df["label"].tolist() == ["1", ""]  # never NaN: validation reports "" as an unknown label


def test_csv_string_columns_and_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes('\ufeffid,text\r\n007,"a\r\nb"\r\n'.encode())
    df = read_table(str(path), string_columns=["id"])
    assert list(df.columns) == ["id", "text"]  # BOM stripped from the first header
    assert df.loc[0, "id"] == "007"
    assert df.loc[0, "text"] == "a\r\nb"


def test_tsv_reads_quotes_literally(tmp_path: Path) -> None:
    path = tmp_path / "data.tsv"
    # An unclosed quote must not swallow the following lines (IANA TSV has no quoting).
    path.write_text('text\tlabel\nsay "hi\tham\nplain\tspam\n""\tham\n', encoding="utf-8")
    df = read_table(str(path))
    assert df.to_dict("records") == [
        {"text": 'say "hi', "label": "ham"},
        {"text": "plain", "label": "spam"},
        {"text": '""', "label": "ham"},
    ]


def test_tsv_field_count_error_is_loud(tmp_path: Path) -> None:
    path = tmp_path / "data.tsv"
    path.write_text("text\tlabel\na\tham\nb\tc\tspam\n", encoding="utf-8")
    with pytest.raises(DataReadError, match="cannot parse as tsv"):
        read_table(str(path))


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "data.pq"
    expected = pd.DataFrame({"text": ["a\nb", "", "c"], "label": [0, 1, 2]})
    expected.to_parquet(path)
    pd.testing.assert_frame_equal(read_table(str(path)), expected)


def test_jsonl_keeps_json_types(tmp_path: Path) -> None:
    path = tmp_path / "data.ndjson"
    path.write_text('{"id": "007", "text": "123", "label": 1}\n{"id": "008", "text": "", "label": 0}\n')
    df = read_table(str(path))
    assert df.to_dict("records") == [{"id": "007", "text": "123", "label": 1}, {"id": "008", "text": "", "label": 0}]


@pytest.mark.parametrize(("name", "body"), [("data.csv.gz", CSV), ("data.jsonl.gz", '{"text": "a\\nb", "label": 1}\n')])
def test_gzip_by_extension(tmp_path: Path, name: str, body: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(body.encode()))
    df = read_table(str(path))
    assert df.loc[0, "text"] == ("hello\nworld" if name.startswith("data.csv") else "a\nb")


def test_gzip_detected_with_explicit_format(tmp_path: Path) -> None:
    path = tmp_path / "export.bin"
    path.write_bytes(gzip.compress(CSV.encode()))
    assert len(read_table(str(path), fmt="csv")) == 4


def test_file_uri(tmp_path: Path) -> None:
    path = tmp_path / "with space.csv"
    path.write_text(CSV)
    assert len(read_table(path.as_uri())) == 4  # percent-escaped space decoded


@pytest.mark.parametrize(
    ("uri", "fmt"),
    [
        ("a.CSV", "csv"),
        ("a.tsv.gz", "tsv"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson.gz", "jsonl"),
        ("file:///x/a.csv", "csv"),
        ("gs://bucket/a.jsonl", "jsonl"),
    ],
)
def test_infer_format(uri: str, fmt: str) -> None:
    assert infer_format(uri) == fmt


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"whatever")
    with pytest.raises(DataReadError, match=r"data\.xlsx: cannot tell the format"):
        read_table(str(path))


def test_unknown_format_given(tmp_path: Path) -> None:
    with pytest.raises(DataReadError, match="unknown format 'xml'"):
        read_table(str(tmp_path / "a.csv"), fmt="xml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataReadError, match="file not found") as exc:
        read_table(str(tmp_path / "nope.csv"))
    assert "nope.csv" in str(exc.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataReadError, match="not a file"):
        read_table(str(tmp_path / "dir.csv"))


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("bad.csv", b'text,label\n"unterminated,1\n', "cannot parse as csv"),
        ("long_first.csv", b"a,b\n1,2,3,4\n", "more fields than the header"),  # not an implicit index
        ("long_later.csv", b"a,b\n1,2\n1,2,3\n", "cannot parse as csv"),
        ("header_unnamed.tsv", b"a\tb\n1\t2\t3\n", "more fields than the header"),
        ("empty.csv", b"", "empty file"),
        ("latin1.csv", "text\ncaf\xe9\n".encode("latin-1"), "cannot parse as csv"),
        ("bad.jsonl", b'{"text": \n', "cannot parse as jsonl"),
        ("bad.parquet", b"not parquet at all", "cannot parse as parquet"),
        ("bad.csv.gz", b"\x1f\x8b\x08\x00truncated", "cannot parse as csv"),
    ],
)
def test_unparsable_file(tmp_path: Path, name: str, content: bytes, problem: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataReadError, match=problem) as exc:
        read_table(str(path))
    assert name in str(exc.value)


def test_unsupported_scheme() -> None:
    with pytest.raises(DataReadError, match="unsupported URI scheme 'http'"):
        read_table("http://example.com/data.csv")
