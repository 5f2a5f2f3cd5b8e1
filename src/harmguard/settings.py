"""Where harmguard keeps things, resolved once from the environment by the entry point (never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

# The one image every pipeline step, RayJob and RayService runs (built from the Dockerfile); HARMGUARD_IMAGE
# overrides it, read by the entry point (compile, submit, the steps' lineage), never at import.
DEFAULT_IMAGE = "ghcr.io/harmguard/harmguard:0.1.0"


def default_cache(env: Mapping[str, str] | None = None) -> Path:
    """The local download cache: HARMGUARD_CACHE, else ``~/.cache/harmguard`` (CONTRACTS.md)."""
    env = os.environ if env is None else env
    return Path(env.get("HARMGUARD_CACHE") or Path.home() / ".cache" / "harmguard").expanduser()


class Settings(BaseModel):
    """Places shared by every command (names fixed by CONTRACTS.md)."""

    home: str = Field(description="Artifact root: a local folder or gs://bucket/prefix (HARMGUARD_HOME).")
    cache: Path = Field(description="Local download cache for datasets and schemas (HARMGUARD_CACHE).")
    data_mirror: Path | None = Field(
        default=None, description="Local folder replacing the network for named datasets (HARMGUARD_DATA_MIRROR)."
    )
    schema_mirror: Path | None = Field(
        default=None, description="Local folder replacing the network for pinned CRD schemas (HARMGUARD_SCHEMA_MIRROR)."
    )
    mlflow_tracking_uri: str = Field(description="MLflow tracking URI; SQLite inside a local home by default.")
    image: str = Field(default=DEFAULT_IMAGE, description="Container image tag (HARMGUARD_IMAGE).")
    git_commit: str | None = Field(
        default=None, description="Commit the code was built from, baked into the image (HARMGUARD_GIT_COMMIT)."
    )
    lock_file: Path | None = Field(
        default=None, description="The lock file the environment was installed from (HARMGUARD_LOCK_FILE)."
    )
    namespace: str | None = Field(
        default=None, description="Kubernetes namespace of RayJobs; default: the pod's own (HARMGUARD_NAMESPACE)."
    )
    kube_api: str | None = Field(
        default=None, description="Kubernetes API URL; default: in-cluster config or kubeconfig (HARMGUARD_KUBE_API)."
    )

    @property
    def home_is_local(self) -> bool:
        """True when the artifact root is a local folder."""
        return "://" not in self.home or self.home.startswith("file://")

    @property
    def home_path(self) -> Path:
        """The local artifact root (only for a local home)."""
        if not self.home_is_local:
            raise ValueError(f"HARMGUARD_HOME={self.home} is not a local folder")
        return Path(self.home.removeprefix("file://"))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Resolve settings from environment variables, applying the CONTRACTS.md defaults.

    Args:
        env: The environment to read; ``os.environ`` when omitted.

    Returns:
        The resolved settings.

    Raises:
        ValueError: When HARMGUARD_HOME is remote and MLFLOW_TRACKING_URI is not given.
    """
    env = os.environ if env is None else env
    home = env.get("HARMGUARD_HOME") or ".harmguard"
    if "://" not in home:
        home = str(Path(home).expanduser().resolve())
    cache = default_cache(env)
    mirror = env.get("HARMGUARD_DATA_MIRROR") or None
    schema_mirror = env.get("HARMGUARD_SCHEMA_MIRROR") or None
    tracking = env.get("MLFLOW_TRACKING_URI")
    if not tracking:
        if "://" in home and not home.startswith("file://"):
            raise ValueError(
                f"HARMGUARD_HOME={home} is remote: set MLFLOW_TRACKING_URI (a local sqlite:/// path or a server URL)"
            )
        tracking = f"sqlite:///{Path(home.removeprefix('file://')) / 'mlflow.db'}"
    kwargs: dict[str, Any] = {}
    if env.get("HARMGUARD_IMAGE"):
        kwargs["image"] = env["HARMGUARD_IMAGE"]
    optional = {
        "git_commit": "HARMGUARD_GIT_COMMIT",
        "lock_file": "HARMGUARD_LOCK_FILE",
        "namespace": "HARMGUARD_NAMESPACE",
        "kube_api": "HARMGUARD_KUBE_API",
    }
    kwargs |= {field: env[var] for field, var in optional.items() if env.get(var)}
    return Settings(
        home=home,
        cache=cache,
        data_mirror=Path(mirror).expanduser().resolve() if mirror else None,
        schema_mirror=Path(schema_mirror).expanduser().resolve() if schema_mirror else None,
        mlflow_tracking_uri=tracking,
        **kwargs,
    )
