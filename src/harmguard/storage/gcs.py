"""Google Cloud Storage as the artifact root (``HARMGUARD_HOME=gs://bucket/prefix``), with real atomicity.

``GCSStore`` implements the ``storage.ArtifactStore`` protocol through google-cloud-storage:

- **Create-only** objects are uploaded with ``if_generation_match=0``: GCS refuses (412) when the name exists.
- **Pointers** change by compare-and-swap on the object generation: ``read_versioned`` returns the generation as
  the token and ``compare_and_swap`` uploads with ``if_generation_match=token`` (0 when the token is None). A 412
  is a lost race (``storage.LostRace``) and is never retried.
- **Uploads** are single-request multipart uploads (objects up to 8 MiB; google-cloud-storage switches to a
  resumable upload above that), so the precondition is checked on the one request that writes.
- **Transient errors** (408, 429, 5xx, connection resets, timeouts) are retried with exponential backoff through
  a ``google.api_core.retry.Retry`` whose predicate excludes 412. A retried conditional request is safe: the
  precondition makes it idempotent. When a retry meets a 412, the first attempt may have landed before its
  response was lost, so the object is read back: the same bytes mean this writer's upload succeeded.
- **Trees** (model folders) are published file by file, create-only, under ``<key>/``; a ``<key>/.pending``
  marker is written first and the ``<key>/.manifest.json`` completion marker (every file with its sha256) last,
  create-only. Readers trust a tree only with its manifest: ``exists`` is False for a tree still pending (or left
  half-written by a crash), and ``fetch_tree`` downloads exactly the manifest's files and checks their hashes.
  Dot-named markers are hidden from ``list``, as the local store hides its temporary files.

Credentials: with ``STORAGE_EMULATOR_HOST`` set (fake-gcs-server in tests), anonymous credentials and the project
from ``GOOGLE_CLOUD_PROJECT`` (default ``harmguard-emulator``); otherwise Application Default Credentials
(Workload Identity on GKE, ``gcloud auth application-default login`` on a workstation). When neither is usable,
``GCSStore`` raises a ``StoreError`` saying so.

Emulator notes (fake-gcs-server 1.x, checked by
``tests/storage/test_gcs.py::test_emulator_honours_generation_preconditions``): it honours ``ifGenerationMatch`` on
multipart (and resumable) uploads, but ignores preconditions on DELETE, on copy/rewrite, on ``ifMetagenerationMatch``
for uploads and on downloads. harmguard therefore never relies on a conditional delete, copy or read: every guarded
operation is a conditional upload.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harmguard.digests import sha256_bytes
from harmguard.storage.base import LostRace, StoreError

MANIFEST = ".manifest.json"
PENDING = ".pending"
EMULATOR_PROJECT = "harmguard-emulator"
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def split_uri(uri: str) -> tuple[str, str]:
    """Split ``gs://bucket/some/prefix`` into ``("bucket", "some/prefix")``."""
    if not uri.startswith("gs://"):
        raise ValueError(f"{uri!r} is not a gs:// URI")
    bucket, _, path = uri.removeprefix("gs://").partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket: use gs://bucket/prefix")
    return bucket, path.strip("/")


def is_transient(exc: BaseException) -> bool:
    """Whether an error is worth retrying: throttling, server errors, resets, timeouts; never a 412."""
    import requests
    from google.api_core import exceptions as gex
    from google.auth import exceptions as auth_exc

    if isinstance(exc, gex.PreconditionFailed):
        return False
    if isinstance(exc, gex.GoogleAPICallError):
        return exc.code in _TRANSIENT_STATUS
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:  # the upload/download layer's InvalidResponse, before it becomes an api_core error
        return int(status) in _TRANSIENT_STATUS
    return isinstance(
        exc,
        requests.exceptions.ConnectionError
        | requests.exceptions.ChunkedEncodingError
        | requests.exceptions.Timeout
        | ConnectionError
        | auth_exc.TransportError,
    )


def make_client(project: str | None = None) -> Any:
    """A google-cloud-storage client: anonymous against ``STORAGE_EMULATOR_HOST``, else ADC.

    Raises:
        StoreError: When no emulator is set and Application Default Credentials are not available.
    """
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or EMULATOR_PROJECT
        return storage.Client(project=project, credentials=AnonymousCredentials())
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, default_project = google.auth.default(
            scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
        )
    except DefaultCredentialsError as e:
        raise StoreError(
            "gs:// needs Google credentials: none found. Use Application Default Credentials (Workload Identity "
            "on GKE, or `gcloud auth application-default login`, or GOOGLE_APPLICATION_CREDENTIALS), or set "
            f"STORAGE_EMULATOR_HOST for an emulator ({e})"
        ) from None
    return storage.Client(project=project or default_project, credentials=credentials)


def arrow_filesystem(uri: str) -> tuple[Any, str]:
    """A pyarrow filesystem and path for ``uri`` (``gs://bucket/prefix`` or local), as Ray Train's storage takes them.

    pyarrow's GCS client ignores ``STORAGE_EMULATOR_HOST``, and with no credentials it waits on the metadata server,
    so against an emulator it gets anonymous access to that endpoint over plain HTTP explicitly.
    """
    from pyarrow import fs

    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if uri.startswith("gs://") and emulator:
        scheme, _, host = emulator.rpartition("://")
        return fs.GcsFileSystem(anonymous=True, scheme=scheme or "http", endpoint_override=host), uri[len("gs://") :]
    filesystem, path = fs.FileSystem.from_uri(uri if "://" in uri else str(Path(uri).resolve()))
    return filesystem, path


class GCSStore:
    """An artifact store under ``gs://bucket/prefix``."""

    def __init__(
        self,
        uri: str,
        *,
        cache_dir: Path | None = None,
        client: Any = None,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 16.0,
        deadline_s: float = 120.0,
        timeout_s: float = 60.0,
    ) -> None:
        """Open a store; nothing is read until the first operation.

        Args:
            uri: ``gs://bucket/prefix``.
            cache_dir: Local folder for downloaded trees (verified models); a temporary folder when omitted.
            client: A ``google.cloud.storage.Client``; ``make_client()`` when omitted.
            initial_backoff_s: First retry delay for transient errors, seconds (doubles up to ``max_backoff_s``).
            max_backoff_s: Longest retry delay, seconds.
            deadline_s: Total time spent retrying one operation before its error is raised, seconds.
            timeout_s: Per-request HTTP timeout, seconds.
        """
        self.bucket_name, self.prefix = split_uri(uri)
        self.uri = f"gs://{self.bucket_name}" + (f"/{self.prefix}" if self.prefix else "")
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "harmguard-gcs"
        self._client = client if client is not None else make_client()
        self._bucket = self._client.bucket(self.bucket_name)
        self._backoff = (initial_backoff_s, max_backoff_s, deadline_s)
        self.timeout_s = timeout_s

    # --- plumbing ---------------------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        parts = key.strip("/").split("/")
        if not key.strip("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"key {key!r} is not a plain relative path under {self.uri}")
        return f"{self.prefix}/{'/'.join(parts)}" if self.prefix else "/".join(parts)

    def _key(self, name: str) -> str:
        return name.removeprefix(f"{self.prefix}/") if self.prefix else name

    def _retry(self, on_error: Callable[[BaseException], None] | None = None) -> Any:
        from google.api_core.retry import Retry

        initial, maximum, deadline = self._backoff
        return Retry(
            predicate=is_transient,
            initial=initial,
            maximum=maximum,
            multiplier=2.0,
            timeout=deadline,
            on_error=on_error,
        )

    def _upload(self, key: str, data: bytes, generation: int | None) -> tuple[int, bool]:
        """Upload ``data`` (multipart) with an optional generation precondition.

        Returns:
            ``(new generation, retried)``; ``retried`` says whether a transient error made it send again.
        """
        errors: list[BaseException] = []
        blob = self._bucket.blob(self._name(key))
        blob.chunk_size = None  # multipart, not chunked resumable, up to the library's 8 MiB threshold
        blob.upload_from_string(
            data,
            content_type="application/octet-stream",
            if_generation_match=generation,
            retry=self._retry(errors.append),
            timeout=self.timeout_s,
        )
        return int(blob.generation), bool(errors)

    def _read(self, key: str) -> tuple[bytes, int] | None:
        from google.api_core import exceptions as gex

        blob = self._bucket.blob(self._name(key))
        try:
            data = blob.download_as_bytes(retry=self._retry(), timeout=self.timeout_s)
        except gex.NotFound:
            return None
        return data, int(blob.generation)

    def _conditional_upload(self, key: str, data: bytes, generation: int) -> int | None:
        """Upload under a generation precondition; None when it failed (412) because of another writer."""
        from google.api_core import exceptions as gex

        try:
            return self._upload(key, data, generation)[0]
        except gex.PreconditionFailed:
            # Did an earlier attempt of ours land before its response was lost? Only then do the bytes match
            # (pointers and audit events carry a timestamp and writer; models and snapshots are content-addressed).
            current = self._read(key)
            if current is not None and current[0] == data:
                return current[1]
            return None

    # --- the ArtifactStore protocol ---------------------------------------------------------------------------

    def uri_for(self, key: str) -> str:
        """The gs:// URI of a key."""
        return f"gs://{self.bucket_name}/{self._name(key)}"

    def read_bytes(self, key: str) -> bytes:
        """Read an object; FileNotFoundError when it does not exist."""
        found = self._read(key)
        if found is None:
            raise FileNotFoundError(f"{self.uri_for(key)} does not exist")
        return found[0]

    def exists(self, key: str) -> bool:
        """Whether an object exists at the key, or a complete tree / any object under the prefix.

        A tree published by ``put_tree_create_only`` counts only once its manifest exists.
        """
        name = self._name(key)
        retry = self._retry()
        if self._bucket.blob(name).exists(retry=retry, timeout=self.timeout_s):
            return True
        if self._bucket.blob(f"{name}/{MANIFEST}").exists(retry=retry, timeout=self.timeout_s):
            return True
        if self._bucket.blob(f"{name}/{PENDING}").exists(retry=retry, timeout=self.timeout_s):
            return False  # a tree being written, or left half-written: not there yet
        blobs = self._client.list_blobs(
            self._bucket, prefix=f"{name}/", max_results=1, retry=retry, timeout=self.timeout_s
        )
        return any(True for _ in blobs)

    def write_atomic(self, key: str, data: bytes) -> None:
        """Replace an object in one upload (GCS objects are never seen half-written).

        Retried after transient errors without a precondition: it writes the same bytes again (last writer wins,
        as for the local store's rename).
        """
        self._upload(key, data, None)

    def create_only(self, key: str, data: bytes) -> bool:
        """Create an object with ``if_generation_match=0``; False (nothing changed) when it already exists."""
        return self._conditional_upload(key, data, 0) is not None

    def list(self, prefix: str) -> list[str]:
        """Keys of the objects under a prefix, sorted (dot-named markers excluded)."""
        name = self._name(prefix)
        blobs = self._client.list_blobs(self._bucket, prefix=f"{name}/", retry=self._retry(), timeout=self.timeout_s)
        keys = (self._key(b.name) for b in blobs)
        return sorted(k for k in keys if not k.rsplit("/", 1)[-1].startswith("."))

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        """Content and its generation (as a string) for compare-and-swap; (None, None) when missing."""
        found = self._read(key)
        if found is None:
            return None, None
        return found[0], str(found[1])

    def compare_and_swap(self, key: str, data: bytes, expected_token: str | None) -> str:
        """Upload only if the generation still equals ``expected_token`` (None: must not exist).

        Returns:
            The new generation.

        Raises:
            LostRace: When GCS answers 412: another writer moved the object first. Never retried.
        """
        generation = int(expected_token) if expected_token is not None else 0
        new = self._conditional_upload(key, data, generation)
        if new is None:
            raise LostRace(f"{self.uri_for(key)} changed since it was read (expected generation {generation})")
        return str(new)

    def put_tree_create_only(self, local_dir: Path, key: str) -> bool:
        """Publish a local folder as ``key/``: pending marker, files create-only, manifest last (create-only).

        Returns:
            False when a complete tree already exists at the key (its content is reused).

        Raises:
            StoreError: When a file already under ``key/`` differs from the local one (never overwritten).
        """
        name = self._name(key)
        manifest_key = f"{key}/{MANIFEST}"
        if self._bucket.blob(f"{name}/{MANIFEST}").exists(retry=self._retry(), timeout=self.timeout_s):
            return False
        local_dir = Path(local_dir)
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        manifest = {
            "files": {p.relative_to(local_dir).as_posix(): sha256_bytes(p.read_bytes()) for p in files},
            "writer": uuid.uuid4().hex,
        }
        self.create_only(f"{key}/{PENDING}", b"")  # marks the prefix as a tree in progress (kept afterwards)
        for path in files:
            rel = path.relative_to(local_dir).as_posix()
            data = path.read_bytes()
            if not self.create_only(f"{key}/{rel}", data):
                existing = self.read_bytes(f"{key}/{rel}")
                if existing != data:  # a concurrent writer of the same key writes the same bytes, by construction
                    raise StoreError(f"{self.uri_for(f'{key}/{rel}')} exists with other content; refusing to publish")
        return self.create_only(manifest_key, json.dumps(manifest, indent=2, sort_keys=True).encode())

    # --- beyond the protocol ----------------------------------------------------------------------------------

    def _remote_md5s(self, key: str) -> dict[str, str]:
        """``relative path -> md5Hash`` (base64) of the objects under ``key/``, from one listing."""
        name = self._name(key)
        blobs = self._client.list_blobs(self._bucket, prefix=f"{name}/", retry=self._retry(), timeout=self.timeout_s)
        return {b.name.removeprefix(f"{name}/"): b.md5_hash for b in blobs}

    def read_manifest(self, key: str) -> dict[str, str]:
        """The ``relative path -> sha256`` files of a complete tree; FileNotFoundError when it is not complete."""
        try:
            doc = json.loads(self.read_bytes(f"{key}/{MANIFEST}"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no complete tree at {self.uri_for(key)} (no {MANIFEST})") from None
        return dict(doc["files"])

    def fetch_tree(self, key: str, dest: Path | None = None) -> Path:
        """Download a complete tree (exactly its manifest's files, hashes checked) into a local folder.

        Args:
            key: The tree's key (``models/<digest>``).
            dest: Where to put it; ``cache_dir/<bucket>/<key>`` when omitted. An existing folder whose files
                match the manifest is reused; anything else there is replaced.

        Returns:
            The local folder.

        Raises:
            FileNotFoundError: When no complete tree exists at the key.
            StoreError: When a downloaded file does not match its manifest hash.
        """
        files = self.read_manifest(key)
        dest = Path(dest) if dest else self.cache_dir / self.bucket_name / self._name(key)
        if dest.is_dir() and _matches(dest, files, self._remote_md5s(key)):
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            for rel, digest in files.items():
                data = self.read_bytes(f"{key}/{rel}")
                if sha256_bytes(data) != digest:
                    raise StoreError(f"{self.uri_for(f'{key}/{rel}')} does not match its manifest hash")
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            if dest.exists():
                shutil.rmtree(dest)
            with contextlib.suppress(OSError):  # a concurrent fetch renamed the same content into place first
                os.rename(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def local_tree(self, key: str) -> Path:
        """The complete tree under ``key``, downloaded into the cache (``fetch_tree``)."""
        return self.fetch_tree(key)


def _matches(folder: Path, files: dict[str, str], remote_md5: dict[str, str]) -> bool:
    """Whether a cached tree holds exactly the manifest's files and the bucket still holds the same bytes."""
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    if present != set(files):
        return False
    for rel, digest in files.items():
        data = (folder / rel).read_bytes()
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # GCS's md5Hash, to compare without downloading
        if hashlib.sha256(data).hexdigest() != digest or remote_md5.get(rel) != md5:
            return False
    return True


def open_uri(uri: str) -> io.BytesIO:
    """Download a ``gs://bucket/object`` into memory (a seekable stream for the table readers).

    Raises:
        FileNotFoundError: When the object does not exist.
    """
    bucket, name = split_uri(uri)
    if not name:
        raise ValueError(f"{uri!r} names no object")
    parent, _, base = name.rpartition("/")
    store = GCSStore(f"gs://{bucket}/{parent}")
    return io.BytesIO(store.read_bytes(base))
