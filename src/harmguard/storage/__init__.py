"""Artifact stores: one protocol (``base``), a local folder (``local``) and Google Cloud Storage (``gcs``).

``open_store`` picks the store for HARMGUARD_HOME. Modules inside this package import ``storage.base`` and
``storage.local`` directly; everyone else imports from ``harmguard.storage``.
"""

from __future__ import annotations

from pathlib import Path

from harmguard.settings import default_cache
from harmguard.storage.base import ArtifactStore, LostRace, StoreError
from harmguard.storage.gcs import GCSStore
from harmguard.storage.local import LocalStore

__all__ = ["ArtifactStore", "LocalStore", "LostRace", "StoreError", "open_store"]


def open_store(home: str, cache: Path | None = None) -> ArtifactStore:
    """The store for HARMGUARD_HOME: a local folder, or ``gs://bucket/prefix`` (``harmguard.storage.gcs.GCSStore``).

    Args:
        home: The artifact root.
        cache: Local cache for trees downloaded from a remote store (verified models); default
            ``$HARMGUARD_CACHE/gcs`` (``~/.cache/harmguard/gcs``). Unused for a local home.
    """
    if home.startswith("gs://"):
        if cache is None:
            cache = default_cache()
        return GCSStore(home, cache_dir=cache / "gcs")
    if "://" in home and not home.startswith("file://"):
        raise StoreError(f"HARMGUARD_HOME={home}: unsupported scheme; use a local folder or gs://bucket/prefix")
    return LocalStore(home.removeprefix("file://"))
