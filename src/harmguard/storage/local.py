"""The local artifact store: atomic writes, create-only objects, compare-and-swap pointers on a file system.

Keys are POSIX paths relative to the home (``registry/davidson2017/champion.json``). The local store gives the
guarantees CONTRACTS.md asks for with the file system: a write goes to a temporary file in the same folder and is
renamed into place (readers never see half a file); create-only uses ``link``, which fails when the name exists;
compare-and-swap holds a lock file while it compares the current content's digest with the expected one. After every
rename or link the folder itself is fsynced: the file's data was synced before, but the new name lives in the folder,
and without that sync a power cut can bring back the old pointer (or lose a create-only event) after the swap was
reported.
A ``gs://`` home implements the same protocol with generation preconditions (``harmguard.storage.gcs``).
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

from filelock import FileLock

from harmguard.digests import sha256_bytes
from harmguard.storage.base import LostRace, StoreError


def fsync_dir(folder: Path) -> None:
    """Make a rename or link in ``folder`` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems refuse fsync on a folder; nothing more can be done there
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _sync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        else:
            fsync_dir(path)
    fsync_dir(folder)


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

    @staticmethod
    def _make_folder(folder: Path) -> None:
        """Create a folder and its missing parents, each new name made durable in its parent."""
        missing = []
        p = folder
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        folder.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):
            fsync_dir(created.parent)

    @contextlib.contextmanager
    def _temp_beside(self, target: Path, data: bytes) -> Iterator[Path]:
        self._make_folder(target.parent)
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
        fsync_dir(target.parent)

    def create_only(self, key: str, data: bytes) -> bool:
        """Hard-link a fully written temporary file to the name; link fails if the name exists."""
        target = self.path(key)
        with self._temp_beside(target, data) as tmp:
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
        fsync_dir(target.parent)
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
        self._make_folder(target.parent)
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
        self._make_folder(target.parent)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        shutil.copytree(local_dir, tmp)
        _sync_tree(tmp)  # the files' data first, so the rename never publishes names without their bytes
        try:
            os.rename(tmp, target)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False
            raise
        fsync_dir(target.parent)
        return True

    def local_tree(self, key: str) -> Path:
        """The tree's own folder: a local home needs no copy."""
        folder = self.path(key)
        if not folder.is_dir():
            raise FileNotFoundError(f"no tree {key} under {self.root}")
        return folder
