"""Lineage facts recorded with every version: code, environment and image identities.

Nothing here reads the environment: the entry point resolves ``Settings`` (``HARMGUARD_GIT_COMMIT``,
``HARMGUARD_LOCK_FILE``, ``HARMGUARD_IMAGE``) and passes them in.
"""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from harmguard.digests import sha256_file
from harmguard.settings import Settings


def project_root() -> Path | None:
    """The source checkout of an editable install (PEP 610's ``direct_url.json``); None for a wheel or an image."""
    try:
        raw = metadata.distribution("harmguard").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not raw:
        return None
    doc = json.loads(raw)
    url = urlparse(doc.get("url", ""))
    if url.scheme != "file" or not doc.get("dir_info", {}).get("editable"):
        return None
    root = Path(unquote(url.path))
    return root if (root / "pyproject.toml").is_file() else None


def git_commit(settings: Settings) -> str | None:
    """HEAD of the checkout (or the commit baked into an image), with ``+dirty`` for local changes."""
    if settings.git_commit:
        return settings.git_commit
    root = project_root()
    if root is None:
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def lock_digest(settings: Settings) -> str | None:
    """sha256 of the lock file the environment was installed from (the image's, else the checkout's)."""
    root = project_root()
    candidates = [settings.lock_file, root / "requirements.lock" if root is not None else None]
    for c in candidates:
        if c is not None and Path(c).is_file():
            return sha256_file(c)
    return None
