"""The artifact-store protocol every home implements (local folder or ``gs://``), and its errors."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


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

    def local_tree(self, key: str) -> Path:
        """A local folder holding the complete tree under ``key`` (downloaded first from a remote store).

        Raises:
            FileNotFoundError: When no complete tree is stored under ``key``.
        """
        ...

    def uri_for(self, key: str) -> str:
        """A URI (local path or gs://) that names the object."""
        ...
