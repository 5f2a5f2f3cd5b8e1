"""Lineage facts recorded with every version: code, environment and image identities."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from harmguard.digests import sha256_file
from harmguard.settings import DEFAULT_IMAGE


def project_root() -> Path | None:
    """The source checkout harmguard runs from (editable install), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def git_commit() -> str | None:
    """HEAD of the checkout (or HARMGUARD_GIT_COMMIT baked into an image), with ``+dirty`` for local changes."""
    if os.environ.get("HARMGUARD_GIT_COMMIT"):
        return os.environ["HARMGUARD_GIT_COMMIT"]
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


def lock_digest() -> str | None:
    """sha256 of the lock file the environment was installed from."""
    candidates = [os.environ.get("HARMGUARD_LOCK_FILE")]
    root = project_root()
    if root is not None:
        candidates.append(str(root / "requirements.lock"))
    for c in candidates:
        if c and Path(c).is_file():
            return sha256_file(c)
    return None


def image_tag() -> str:
    """The container image tag the steps run in (HARMGUARD_IMAGE, else the default tag)."""
    return os.environ.get("HARMGUARD_IMAGE") or DEFAULT_IMAGE  # compiled steps get it set to their own image
