"""The MLflow side of the registry: one client per tracking URI, made safe for a shared SQLite file.

MLflow mirrors the registry of record (CONTRACTS.md): a registered model per policy, one model version per harmguard
version, aliases that follow the pointers. Nothing here decides anything; registry.py calls these helpers after its
own writes have won.

SQLite needs care. Constructing the first ``MlflowClient`` on a new ``sqlite:///`` file creates the tables and runs
the schema migrations (seconds); two processes doing it at once race and one fails ("table already exists"). So
for SQLite URIs client construction and the first queries run under a file lock beside the database
(``<db>.lock``), and the mirror writes take the same lock so concurrent harmguard processes queue instead of
hitting "database is locked". Server URIs need no lock (the server serializes). mlflow is imported lazily so that
importing harmguard (the CLI, spawned workers) stays fast.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Long enough for a first-time migration (about 5-10 s) queued behind a few others.
LOCK_TIMEOUT_S = 300.0

_clients: dict[str, MlflowClient] = {}
_clients_guard = threading.Lock()


def sqlite_db_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for servers and in-memory SQLite).

    Args:
        tracking_uri: An MLflow tracking URI, e.g. ``sqlite:////abs/home/mlflow.db``.

    Returns:
        The database path, or None when the URI is not a SQLite file.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


@contextlib.contextmanager
def mlflow_lock(tracking_uri: str) -> Iterator[None]:
    """Hold the file lock beside a SQLite tracking database (no-op for other URIs).

    Never nest it: take it around a block of MLflow calls, after ``mlflow_client`` returned.

    Args:
        tracking_uri: The MLflow tracking URI.

    Yields:
        Nothing; the lock is held while the block runs.
    """
    db = sqlite_db_path(tracking_uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=LOCK_TIMEOUT_S):
        yield


def mlflow_client(tracking_uri: str) -> MlflowClient:
    """An MLflow client for the tracking and registry URI, created (and the database initialized) once per process.

    Args:
        tracking_uri: The MLflow tracking URI (also used as the registry URI).

    Returns:
        A cached ``MlflowClient``.
    """
    with _clients_guard:
        client = _clients.get(tracking_uri)
        if client is not None:
            return client
        from mlflow import MlflowClient

        if sqlite_db_path(tracking_uri) is not None:
            # Import the SQL stores (SQLAlchemy, alembic: about 2 s) before queueing for the lock, so processes
            # waiting behind a first-time migration do this part in parallel.
            import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

        with mlflow_lock(tracking_uri):
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            # Touch both stores so their tables exist (and migrations ran) before the lock is released.
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
        _clients[tracking_uri] = client
        return client


def error_code(exc: BaseException) -> str | None:
    """The MLflow error code of an exception (``RESOURCE_DOES_NOT_EXIST``...), None for other exceptions."""
    return getattr(exc, "error_code", None)


def tag_value(value: Any) -> str:
    """An MLflow tag value: strings as they are, everything else as compact JSON (``true``, ``[1,2]``)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model ``name`` unless it exists (a concurrent creator is fine)."""
    try:
        client.create_registered_model(name)
    except Exception as e:
        if error_code(e) != "RESOURCE_ALREADY_EXISTS":
            raise


def find_model_version(client: MlflowClient, name: str, harmguard_version: str) -> str | None:
    """The MLflow version number already mirroring a harmguard version (tag ``harmguard_version``), if any."""
    found = client.search_model_versions(f"name='{name}' and tags.harmguard_version='{harmguard_version}'")
    return str(min(int(mv.version) for mv in found)) if found else None


def create_model_version(client: MlflowClient, name: str, source: str, run_id: str | None, tags: dict[str, Any]) -> str:
    """Register ``source`` as a new version of model ``name``; returns the MLflow version number."""
    mv = client.create_model_version(
        name=name, source=source, run_id=run_id, tags={k: tag_value(v) for k, v in tags.items()}
    )
    return str(mv.version)


def set_alias(client: MlflowClient, name: str, alias: str, mlflow_version: str | None) -> None:
    """Point MLflow alias ``alias`` of ``name`` at a version, or remove it when ``mlflow_version`` is None."""
    if mlflow_version is not None:
        client.set_registered_model_alias(name, alias, mlflow_version)
        return
    try:
        client.delete_registered_model_alias(name, alias)
    except Exception as e:
        if error_code(e) != "RESOURCE_DOES_NOT_EXIST":
            raise


def read_aliases(client: MlflowClient, name: str) -> dict[str, str] | None:
    """MLflow aliases of a registered model as ``{alias: version}``; None when the model does not exist."""
    try:
        model = client.get_registered_model(name)
    except Exception as e:
        if error_code(e) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}
