"""The artifact store under HARMGUARD_HOME: atomic writes, create-only objects, compare-and-swap pointers.

Keys are POSIX paths relative to the home (``registry/davidson2017/champion.json``). The local store gives the
guarantees CONTRACTS.md asks for with the file system: a write goes to a temporary file in the same folder and is
renamed into place (readers never see half a file); create-only uses ``link``, which fails when the name exists;
compare-and-swap holds a lock file while it compares the current content's digest with the expected one.
A ``gs://`` home implements the same protocol with generation preconditions (``harmguard.gcs``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from filelock import FileLock

from harmguard.digests import sha256_bytes


class StoreError(RuntimeError):
    """A store operation failed in a way the caller should report."""


class LostRace(StoreError):
    """A compare-and-swap found another writer's value: someone else moved the pointer first."""


class ArtifactStore(Protocol):
    """What harmguard needs from an artifact root."""

    uri: str

    def read_bytes(self, key: str) -> bytes:
        """Read an object; FileNotFoundError when it does not exist."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object (or, for a prefix, any object under it) exists."""
        ...

    def write_atomic(self, key: str, data: bytes) -> None:
        """Write or replace an object so readers see the old or the new content, never a mix."""
        ...

    def create_only(self, key: str, data: bytes) -> bool:
        """Create an object; return False (and change nothing) when it already exists."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Keys of the objects under a prefix, sorted."""
        ...

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        """Content and an opaque version token (None, None when missing) for compare-and-swap."""
        ...

    def compare_and_swap(self, key: str, data: bytes, expected_token: str | None) -> str:
        """Replace an object only if its version token still equals ``expected_token`` (None: must not exist).

        Returns the new token; raises LostRace when the object changed in between.
        """
        ...

    def put_tree_create_only(self, local_dir: Path, key: str) -> bool:
        """Publish a local folder as ``key/`` in one step; False when ``key/`` already exists (content reused)."""
        ...

    def uri_for(self, key: str) -> str:
        """A URI (local path or gs://) that names the object."""
        ...


class LocalStore:
    """An artifact store in a local folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.uri = str(self.root)

    def path(self, key: str) -> Path:
        """Local path of a key (refuses keys that escape the root)."""
        p = (self.root / key).resolve()
        if p != self.root.resolve() and self.root.resolve() not in p.parents:
            raise StoreError(f"key {key!r} escapes the store root {self.root}")
        return p

    def uri_for(self, key: str) -> str:
        """Local path of a key, as a string."""
        return str(self.path(key))

    def read_bytes(self, key: str) -> bytes:
        """Read an object."""
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        """Whether a file or folder exists at the key."""
        return self.path(key).exists()

    @contextlib.contextmanager
    def _temp_beside(self, target: Path, data: bytes) -> Iterator[Path]:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            yield Path(tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def write_atomic(self, key: str, data: bytes) -> None:
        """Write to a temporary file beside the target, fsync, rename over it."""
        target = self.path(key)
        with self._temp_beside(target, data) as tmp:
            os.replace(tmp, target)

    def create_only(self, key: str, data: bytes) -> bool:
        """Hard-link a fully written temporary file to the name; link fails if the name exists."""
        target = self.path(key)
        with self._temp_beside(target, data) as tmp:
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
        return True

    def list(self, prefix: str) -> list[str]:
        """Keys of files under a prefix (temporary files excluded)."""
        base = self.path(prefix)
        if not base.exists():
            return []
        return sorted(
            p.relative_to(self.root.resolve()).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        """Content and its sha256 as the version token."""
        try:
            data = self.read_bytes(key)
        except FileNotFoundError:
            return None, None
        return data, sha256_bytes(data)

    def compare_and_swap(self, key: str, data: bytes, expected_token: str | None) -> str:
        """Lock, compare the current digest with the expected one, rename the new content in, unlock."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock", timeout=60):
            _, current = self.read_versioned(key)
            if current != expected_token:
                raise LostRace(f"{key} changed since it was read (expected {expected_token}, found {current})")
            self.write_atomic(key, data)
        return sha256_bytes(data)

    def put_tree_create_only(self, local_dir: Path, key: str) -> bool:
        """Copy into a temporary folder beside the target, then rename it into place (fails if it exists)."""
        target = self.path(key)
        if target.exists():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        shutil.copytree(local_dir, tmp)
        try:
            os.rename(tmp, target)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False
            raise
        return True


def open_store(home: str, cache: Path | None = None) -> ArtifactStore:
    """The store for HARMGUARD_HOME: a local folder, or ``gs://bucket/prefix`` (``harmguard.gcs.GCSStore``).

    Args:
        home: The artifact root.
        cache: Local cache for trees downloaded from a remote store (verified models); default
            ``$HARMGUARD_CACHE/gcs`` (``~/.cache/harmguard/gcs``). Unused for a local home.
    """
    if home.startswith("gs://"):
        from harmguard.gcs import GCSStore

        if cache is None:
            cache = Path(os.environ.get("HARMGUARD_CACHE") or Path.home() / ".cache" / "harmguard").expanduser()
        return GCSStore(home, cache_dir=cache / "gcs")
    if "://" in home and not home.startswith("file://"):
        raise StoreError(f"HARMGUARD_HOME={home}: unsupported scheme; use a local folder or gs://bucket/prefix")
    return LocalStore(home.removeprefix("file://"))
