"""Published models: ``models/<digest>/`` written create-only, verified by recomputing the digest on every load."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from harmguard.digests import model_digest
from harmguard.settings import default_cache
from harmguard.storage import ArtifactStore, StoreError
from harmguard.storage.gcs import GCSStore

logger = logging.getLogger("harmguard.registry")

_DIGEST = re.compile(r"[0-9a-f]{64}")  # fullmatch: "$" would let a trailing newline pass


class TamperedModelError(StoreError):
    """A published model's files no longer hash to the digest it is stored under."""


def publish_model(store: ArtifactStore, local_dir: Path) -> str:
    """Publish an exported model folder create-only at ``models/<digest>/``.

    Args:
        store: The artifact store.
        local_dir: The exported model folder.

    Returns:
        The model digest. An existing ``models/<digest>/`` is reused (same content by definition).
    """
    digest = model_digest(local_dir)
    if not store.put_tree_create_only(Path(local_dir), f"models/{digest}"):
        logger.info("model %s already published; reusing it", digest)
    return digest


def verify_model(store: ArtifactStore, digest: str) -> Path:
    """Recompute the digest of ``models/<digest>/`` and refuse a model whose files changed.

    Args:
        store: The artifact store (a gs:// model is downloaded to the store's cache first).
        digest: The model digest.

    Returns:
        The local folder of the verified model.

    Raises:
        FileNotFoundError: When no such model is published.
        TamperedModelError: When the files hash to another digest.
    """
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ValueError(f"invalid model digest {digest!r}")
    # Only a complete tree (manifest written last) is downloaded; its digest is recomputed below all the same.
    try:
        folder = store.local_tree(f"models/{digest}")
    except FileNotFoundError:
        raise FileNotFoundError(f"no model {digest} under {store.uri_for('models')}") from None
    except StoreError as e:
        raise TamperedModelError(
            f"model {digest} in {store.uri_for('models')} was modified: {e}; refusing it"
        ) from None
    actual = model_digest(folder)
    if actual != digest:
        raise TamperedModelError(f"model {folder} was modified: its files hash to {actual}, not {digest}; refusing it")
    return folder


def download_model(uri: str, cache: Path | None = None) -> Path:
    """Download and verify a published model given by its URI (``gs://.../models/<digest>``).

    Args:
        uri: The model URI a version record names (``VersionRecord.model_uri``).
        cache: Local cache folder; ``$HARMGUARD_CACHE/gcs`` (``~/.cache/harmguard/gcs``) when omitted.

    Returns:
        The local folder, whose files hash to the digest in the URI (CONTRACTS.md: recomputed when a server loads).

    Raises:
        FileNotFoundError: When the model is not published completely.
        harmguard.registry.TamperedModelError: When its files hash to another digest.
    """
    root, sep, digest = uri.rstrip("/").rpartition("/models/")
    if not sep:
        raise ValueError(f"{uri!r} is not a model URI (…/models/<digest>)")
    if cache is None:
        cache = default_cache() / "gcs"
    return verify_model(GCSStore(root, cache_dir=cache), digest)
