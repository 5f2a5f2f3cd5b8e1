"""Shared fixtures: an isolated HARMGUARD_HOME per test, the shared dataset mirror, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harmguard.registry import tracking
from harmguard.settings import Settings
from harmguard.storage import LocalStore

ROOT = Path(__file__).resolve().parents[1]


def mirror_dir() -> Path | None:
    """The shared dataset mirror (HARMGUARD_DATA_MIRROR, else ../shared/datasets beside the project)."""
    env = os.environ.get("HARMGUARD_DATA_MIRROR")
    path = Path(env) if env else ROOT.parent / "shared" / "datasets"
    return path if path.is_dir() else None


@pytest.fixture
def mirror() -> Path:
    path = mirror_dir()
    if path is None:
        pytest.skip("dataset mirror not found (set HARMGUARD_DATA_MIRROR)")
    return path


@pytest.fixture
def settings(tmp_path: Path, mirror: Path) -> Settings:
    home = tmp_path / "home"
    return Settings(
        home=str(home),
        cache=tmp_path / "cache",
        data_mirror=mirror,
        mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
    )


@pytest.fixture
def hg_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for a harmguard subprocess (and for in-process steps) pointing at the isolated home."""
    env = {
        "HARMGUARD_HOME": settings.home,
        "HARMGUARD_CACHE": str(settings.cache),
        "HARMGUARD_DATA_MIRROR": str(settings.data_mirror),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "GX_ANALYTICS_ENABLED": "False",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return {**os.environ, **env}


@pytest.fixture(scope="session")
def schema_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose CRD schemas come from the shared mirror (HARMGUARD_SCHEMA_MIRROR, else ../shared/schemas).

    One cache per session: the first validation of a kind preprocesses its CRD (seconds), later ones reuse it.
    """
    env = os.environ.get("HARMGUARD_SCHEMA_MIRROR")
    path = Path(env) if env else ROOT.parent / "shared" / "schemas"
    if not path.is_dir():
        pytest.skip("CRD schema mirror not found (set HARMGUARD_SCHEMA_MIRROR)")
    tmp = tmp_path_factory.mktemp("schemas")
    return Settings(
        home=str(tmp / "home"),
        cache=tmp / "cache",
        schema_mirror=path.resolve(),
        mlflow_tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
    )


def run_cli(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run the harmguard CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "harmguard.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated SQLite MLflow database for library-level registry tests (a fresh one costs seconds).

    Tests sharing it stay independent by using their own home and a unique policy (= registered model) name.
    """
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    tracking.mlflow_client(uri)
    return uri


@pytest.fixture
def store(settings: Settings) -> LocalStore:
    """The local artifact store of the test's home."""
    return LocalStore(settings.home)
