"""Committed output folders of batch scoring: Parquet parts under a temporary prefix, a ``_SUCCESS`` manifest last.

An output folder is a local path or ``gs://bucket/prefix``::

    _temporary/<attempt>/part-00000.parquet   parts while a run writes them (one attempt id per run)
    part-00000.parquet, part-00001.parquet    committed parts: deterministic names, in input order
    _SUCCESS                                  the manifest (JSON), written last: the commit

A run writes every part under ``_temporary/<attempt>/`` (a previous committed output stays readable meanwhile),
then commits: with ``overwrite`` it first removes the old ``_SUCCESS`` (the folder is uncommitted from then on),
moves its parts to their final names (a rename locally; a copy and delete on GCS, which has no rename), deletes
final parts the manifest does not name, and writes ``_SUCCESS`` create-only. The manifest names every part with its
row count and sha256, so a reader needs no listing: ``read_scored`` refuses a folder without ``_SUCCESS`` (a run
killed midway leaves none) and a part whose bytes or row count differ from the manifest. A killed run leaves only
``_temporary/`` and, at worst, some moved parts; the next run to commit overwrites or deletes them.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harmguard.digests import sha256_bytes
from harmguard.storage import LocalStore
from harmguard.storage.gcs import GCSStore, make_client

SUCCESS = "_SUCCESS"
TEMPORARY = "_temporary"
MANIFEST_FORMAT = "harmguard.scored/1"
_PART = re.compile(r"^part-\d{5}\.parquet$")


class OutputError(ValueError):
    """An output folder cannot be written or read as asked (the message says why)."""


class AlreadyCommitted(OutputError):
    """The output folder holds a committed result and overwriting was not asked for."""


class UncommittedOutput(OutputError):
    """The folder has no ``_SUCCESS`` manifest: a run is writing it, was killed, or never ran."""


class CorruptOutput(OutputError):
    """A committed part is missing or its bytes or row count differ from the manifest."""


def part_name(index: int) -> str:
    """The deterministic name of the ``index``-th part (0-based, in input order)."""
    return f"part-{index:05d}.parquet"


class LocalFolder:
    """An output folder on the local file system (atomic writes through ``LocalStore``)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._store = LocalStore(Path(uri.removeprefix("file://")).expanduser())

    def write(self, name: str, data: bytes) -> None:
        """Write a file atomically (temporary file beside it, renamed)."""
        self._store.write_atomic(name, data)

    def create_only(self, name: str, data: bytes) -> bool:
        """Create a file; False when it exists."""
        return self._store.create_only(name, data)

    def read(self, name: str) -> bytes:
        """Read a file; FileNotFoundError when missing."""
        return self._store.read_bytes(name)

    def exists(self, name: str) -> bool:
        """Whether the file exists."""
        return self._store.path(name).is_file()

    def list(self) -> list[str]:
        """Names of the files directly in the folder."""
        root = self._store.path(".")
        return sorted(p.name for p in root.iterdir() if p.is_file()) if root.is_dir() else []

    def move(self, src: str, dst: str) -> None:
        """Rename a file (atomic on one file system)."""
        os.replace(self._store.path(src), self._store.path(dst))

    def delete(self, name: str) -> None:
        """Delete a file if it exists."""
        self._store.path(name).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        """Delete a sub-folder and everything under it."""
        shutil.rmtree(self._store.path(prefix), ignore_errors=True)


class GCSFolder:
    """An output folder under ``gs://bucket/prefix`` (uploads with retries through ``storage.gcs.GCSStore``)."""

    def __init__(self, uri: str) -> None:
        self._client = make_client()
        self._store = GCSStore(uri, client=self._client)
        self._bucket = self._client.bucket(self._store.bucket_name)
        self.uri = self._store.uri

    def _blob(self, name: str) -> Any:
        return self._bucket.blob(f"{self._store.prefix}/{name}" if self._store.prefix else name)

    def write(self, name: str, data: bytes) -> None:
        """Upload an object in one request (never seen half-written)."""
        self._store.write_atomic(name, data)

    def create_only(self, name: str, data: bytes) -> bool:
        """Create an object with a generation precondition; False when it exists."""
        return self._store.create_only(name, data)

    def read(self, name: str) -> bytes:
        """Download an object; FileNotFoundError when missing."""
        return self._store.read_bytes(name)

    def exists(self, name: str) -> bool:
        """Whether the object exists."""
        return bool(self._blob(name).exists(timeout=self._store.timeout_s))

    def list(self) -> list[str]:
        """Names of the objects directly under the prefix."""
        prefix = f"{self._store.prefix}/" if self._store.prefix else ""
        blobs = self._client.list_blobs(self._bucket, prefix=prefix, delimiter="/", timeout=self._store.timeout_s)
        return sorted(b.name.removeprefix(prefix) for b in blobs)

    def move(self, src: str, dst: str) -> None:
        """Copy server-side, then delete the source (GCS has no rename)."""
        self._bucket.copy_blob(self._blob(src), self._bucket, self._blob(dst).name, timeout=self._store.timeout_s)
        self.delete(src)

    def delete(self, name: str) -> None:
        """Delete an object if it exists."""
        from google.api_core import exceptions as gex

        try:
            self._blob(name).delete(timeout=self._store.timeout_s)
        except gex.NotFound:
            pass

    def delete_tree(self, prefix: str) -> None:
        """Delete every object under ``prefix/``."""
        for key in self._store.list(prefix):  # keys relative to the folder
            self.delete(key)


OutputFolder = LocalFolder | GCSFolder


def open_folder(uri: str) -> OutputFolder:
    """The output folder of a local path, ``file://`` or ``gs://`` URI."""
    if uri.startswith("gs://"):
        return GCSFolder(uri)
    if "://" in uri and not uri.startswith("file://"):
        raise OutputError(f"{uri}: unsupported output scheme; use a local folder or gs://bucket/prefix")
    return LocalFolder(uri)


def table_bytes(table: pa.Table) -> bytes:
    """Serialize a table as Parquet (deterministic for the same table and library versions)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


@dataclass
class PartWriter:
    """Writes the parts of one attempt under ``_temporary/<attempt>/`` and commits them with the manifest."""

    folder: OutputFolder
    attempt: str
    parts: list[dict[str, Any]] = field(default_factory=list)

    def write_part(self, table: pa.Table) -> dict[str, Any]:
        """Write the next part; returns its manifest entry (name, rows, sha256, bytes)."""
        data = table_bytes(table)
        entry = {"name": part_name(len(self.parts)), "rows": table.num_rows, "sha256": sha256_bytes(data)}
        self.folder.write(f"{TEMPORARY}/{self.attempt}/{entry['name']}", data)
        self.parts.append(entry | {"bytes": len(data)})
        return entry

    def commit(self, meta: dict[str, Any], *, overwrite: bool) -> dict[str, Any]:
        """Move the parts into place and write ``_SUCCESS`` last; returns the manifest.

        Raises:
            AlreadyCommitted: When the folder was committed (by another run meanwhile) and ``overwrite`` is False.
        """
        if self.folder.exists(SUCCESS):
            if not overwrite:
                raise AlreadyCommitted(f"{self.folder.uri} is already committed; pass --overwrite to replace it")
            self.folder.delete(SUCCESS)  # uncommitted from here on: readers refuse the folder until the new manifest
        names = {p["name"] for p in self.parts}
        for p in self.parts:
            self.folder.move(f"{TEMPORARY}/{self.attempt}/{p['name']}", p["name"])
        for stale in self.folder.list():
            if _PART.fullmatch(stale) and stale not in names:
                self.folder.delete(stale)
        manifest = {
            "format": MANIFEST_FORMAT,
            **meta,
            "rows": sum(p["rows"] for p in self.parts),
            "parts": self.parts,
        }
        if not self.folder.create_only(SUCCESS, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()):
            raise AlreadyCommitted(f"{self.folder.uri} was committed by another run while this one committed")
        self.folder.delete_tree(TEMPORARY)
        return manifest


def read_manifest(uri: str) -> dict[str, Any]:
    """The ``_SUCCESS`` manifest of a committed output folder.

    Raises:
        UncommittedOutput: When the folder has no ``_SUCCESS`` (killed, still running, or never written).
    """
    folder = open_folder(uri)
    try:
        doc = json.loads(folder.read(SUCCESS))
    except FileNotFoundError:
        raise UncommittedOutput(
            f"{uri} is not a committed scoring output (no {SUCCESS}); refusing to read it"
        ) from None
    if doc.get("format") != MANIFEST_FORMAT:
        raise CorruptOutput(f"{uri}/{SUCCESS} is not a {MANIFEST_FORMAT} manifest")
    return dict(doc)


def read_scored(uri: str) -> pd.DataFrame:
    """Read a committed scoring output: exactly the manifest's parts, each checked against its digest and row count.

    Args:
        uri: The output folder (local path or ``gs://``).

    Returns:
        All rows in part order (= input order); ``DataFrame.attrs["manifest"]`` holds the manifest.

    Raises:
        UncommittedOutput: When the folder has no ``_SUCCESS``.
        CorruptOutput: When a part is missing, or its sha256 or row count differs from the manifest.
    """
    manifest = read_manifest(uri)
    folder = open_folder(uri)
    tables = []
    for p in manifest["parts"]:
        try:
            data = folder.read(p["name"])
        except FileNotFoundError:
            raise CorruptOutput(f"{uri}: part {p['name']} named by {SUCCESS} is missing") from None
        if sha256_bytes(data) != p["sha256"]:
            raise CorruptOutput(f"{uri}: part {p['name']} does not match its sha256 in {SUCCESS}")
        table = pq.read_table(io.BytesIO(data))
        if table.num_rows != p["rows"]:
            raise CorruptOutput(f"{uri}: part {p['name']} has {table.num_rows} rows, {SUCCESS} says {p['rows']}")
        tables.append(table)
    frame = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame()
    frame.attrs["manifest"] = manifest
    return frame
