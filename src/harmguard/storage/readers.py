"""Read tables given by path or URI: CSV, TSV, Parquet, JSONL (plain or gzip-compressed).

What the readers keep, and why:

- CSV follows RFC 4180 (double-quoted fields, quoted newlines, ``""`` escapes). TSV is IANA
  text/tab-separated-values: no quoting, a field holds no tab or newline, a ``"`` is a plain character. Reading
  TSV with CSV quoting silently merges rows wherever a text opens a quote it never closes (sms_spam loses 2 rows
  that way); without quoting the worst case is a loud field-count error. Texts that need quoting belong in CSV.
  Both are UTF-8 with an optional BOM (spreadsheet exports add one).
- ``keep_default_na=False``: no cell is turned into NaN. An empty text stays ``""`` and reaches validation, which
  reports it, and a tweet reading "NA" or "null" stays text. The price: a numeric column with a blank cell is read
  as strings (``"1"``, ``""``), which validation then reports as unknown label values; columns without blanks keep
  their numeric dtype (``class`` reads as int64). ``string_columns`` forces text or id columns to strings as
  written (``"007"`` stays ``"007"``).
- ``low_memory=False``: dtypes are inferred over the whole column, not per chunk, so a large file never yields a
  column of mixed types.
- JSONL keeps JSON's own types (``dtype=False``): pandas' inference would turn ``"123"`` texts into numbers and
  ``"007"`` ids into 7. JSON ``null`` stays missing: unlike CSV, JSON can tell null from ``""``.
- Parquet keeps its schema (read with pyarrow).

Local paths, ``file://`` and ``gs://`` URIs are read (other schemes would be one more entry in ``_OPENERS``);
a ``gs://`` object is downloaded into memory through ``harmguard.storage.gcs`` and parsed by the same readers.
"""

from __future__ import annotations

import csv
import gzip
import re
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from harmguard.storage.gcs import open_uri

FORMATS = ("csv", "tsv", "parquet", "jsonl")
_FORMAT_LIST = ", ".join(FORMATS)

# Suffix (lower case, longest first wins) -> format. gzip is recognised by content, not only by the ".gz" suffix.
_SUFFIXES: dict[str, str] = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson": "jsonl",
    ".ndjson.gz": "jsonl",
}
_GZIP_MAGIC = b"\x1f\x8b"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class DataReadError(ValueError):
    """A table cannot be read; the message names the file and the problem."""


Opener = Callable[[str], BinaryIO]


def _open_local(uri: str) -> BinaryIO:
    path = _local_path(uri)
    if not path.exists():
        raise DataReadError(f"{uri}: file not found ({path})")
    if not path.is_file():
        raise DataReadError(f"{uri}: not a file ({path})")
    return open(path, "rb")


def _open_gcs(uri: str) -> BinaryIO:
    try:
        return open_uri(uri)  # downloaded into memory: a seekable stream, so the readers need no change
    except FileNotFoundError:
        raise DataReadError(f"{uri}: file not found") from None
    except ValueError as e:
        raise DataReadError(f"{uri}: {e}") from None


# Scheme -> opener returning a readable binary stream. A new store is one entry here (issue #8: "gs").
_OPENERS: dict[str, Opener] = {"file": _open_local, "gs": _open_gcs}


def _scheme(uri: str) -> str:
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else "file"


def _local_path(uri: str) -> Path:
    if _scheme(uri) == "file":
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme:  # file:///abs/path (percent-escapes decoded); a bare path has no scheme
            return Path(urllib.request.url2pathname(parsed.path))
    return Path(uri).expanduser()


def infer_format(uri: str) -> str:
    """The format named by a URI's extension (``data.csv.gz`` -> ``csv``).

    Args:
        uri: A path or URI.

    Returns:
        One of ``FORMATS``.

    Raises:
        DataReadError: When the extension is not one harmguard reads.
    """
    name = urllib.parse.urlparse(uri).path if _SCHEME.match(uri) else uri
    lower = name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return _SUFFIXES[suffix]
    known = ", ".join(sorted(_SUFFIXES))
    raise DataReadError(
        f"{uri}: cannot tell the format from the extension (known: {known}); pass fmt= one of {_FORMAT_LIST}"
    )


def _maybe_gunzip(stream: BinaryIO) -> BinaryIO:
    """Wrap a gzip stream in a decompressor, found by its magic bytes so ``fmt=`` needs no ``.gz`` variant."""
    if hasattr(stream, "peek"):  # buffered files: look without consuming
        head = stream.peek(2)[:2]
    else:  # openers without peek must hand back a seekable stream
        head = stream.read(2)
        stream.seek(0)
    return gzip.GzipFile(fileobj=stream, mode="rb") if head == _GZIP_MAGIC else stream  # type: ignore[return-value]


def read_table(uri: str, fmt: str | None = None, *, string_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a table from a local path or URI.

    Args:
        uri: A local path, ``file://`` or ``gs://`` URI.
        fmt: ``csv``, ``tsv``, ``parquet`` or ``jsonl``; inferred from the extension when omitted. gzip
            compression (csv, tsv, jsonl) is detected from the content.
        string_columns: CSV/TSV columns read as strings exactly as written (text and id columns).

    Returns:
        The table; see the module docstring for how missing values and types are kept.

    Raises:
        DataReadError: For a missing file, an unknown format or scheme, or a file that does not parse.
    """
    fmt = fmt.lower() if fmt else infer_format(uri)
    if fmt not in FORMATS:
        raise DataReadError(f"{uri}: unknown format {fmt!r}; use one of {_FORMAT_LIST}")
    scheme = _scheme(uri)
    opener = _OPENERS.get(scheme)
    if opener is None:
        raise DataReadError(f"{uri}: unsupported URI scheme {scheme!r}; use a local path or file:// URI")
    with opener(uri) as raw:
        try:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                # to_pandas keeps the schema's types; strings become pandas' string dtype.
                return pq.read_table(raw).to_pandas()
            with _maybe_gunzip(raw) as stream:
                if fmt == "jsonl":
                    return pd.read_json(stream, lines=True, dtype=False, encoding="utf-8")
                with warnings.catch_warnings():
                    # With index_col=False a row longer than the header warns and loses its extra fields; without
                    # it pandas silently turns the extra leading fields into an index. Either shifts data: refuse.
                    warnings.simplefilter("error", pd.errors.ParserWarning)
                    return pd.read_csv(
                        stream,
                        sep="\t" if fmt == "tsv" else ",",
                        quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
                        encoding="utf-8-sig",
                        keep_default_na=False,
                        low_memory=False,
                        index_col=False,
                        dtype={c: str for c in string_columns} or None,
                    )
        except pd.errors.EmptyDataError as exc:
            raise DataReadError(f"{uri}: empty file, no columns to read ({exc})") from exc
        except pd.errors.ParserWarning as exc:
            raise DataReadError(f"{uri}: cannot parse as {fmt}: a row has more fields than the header ({exc})") from exc
        except (ValueError, OSError, EOFError) as exc:
            # ParserError, ArrowInvalid, UnicodeDecodeError and JSON errors are ValueErrors; bad gzip: OSError/EOFError.
            raise DataReadError(f"{uri}: cannot parse as {fmt}: {type(exc).__name__}: {exc}") from exc


def read_bytes(uri: str) -> bytes:
    """The whole content of a local path or URI (gzip undone), for formats parsed line by line by the caller.

    Raises:
        DataReadError: For a missing file, an unsupported scheme or a broken gzip stream.
    """
    opener = _OPENERS.get(_scheme(uri))
    if opener is None:
        raise DataReadError(f"{uri}: unsupported URI scheme {_scheme(uri)!r}; use a local path or file:// URI")
    with opener(uri) as raw:
        try:
            with _maybe_gunzip(raw) as stream:
                return stream.read()
        except (OSError, EOFError) as exc:
            raise DataReadError(f"{uri}: cannot read: {type(exc).__name__}: {exc}") from exc
