"""Content identities of CONTRACTS.md: file and tree digests, canonical JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    """JSON with sorted keys and no whitespace: the form every digest of a JSON document is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def tree_manifest(root: str | Path) -> list[tuple[str, str]]:
    """``(relative_path, sha256)`` of every file under ``root``, sorted by path (POSIX separators)."""
    root = Path(root)
    rows = [(p.relative_to(root).as_posix(), sha256_file(p)) for p in root.rglob("*") if p.is_file()]
    return sorted(rows)


def model_digest(root: str | Path) -> str:
    """The model digest: sha256 over the sorted lines ``relative_path<TAB>sha256`` of every exported file."""
    rows = tree_manifest(root)
    if not rows:
        raise ValueError(f"{root} holds no files: nothing to digest")
    return sha256_bytes("".join(f"{rel}\t{digest}\n" for rel, digest in rows).encode())


def thresholds_version(thresholds: dict[str, float]) -> str:
    """The thresholds version: sha256 of the canonical JSON of the per-category thresholds."""
    return sha256_bytes(canonical_json({k: float(v) for k, v in thresholds.items()}))
