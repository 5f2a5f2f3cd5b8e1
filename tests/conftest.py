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


# The folders that replace the network (CONTRACTS.md): every pipeline, gate, serving and batch test reads them.
MIRRORS = {
    "HARMGUARD_DATA_MIRROR": ROOT.parent / "shared" / "datasets",
    "HARMGUARD_SCHEMA_MIRROR": ROOT.parent / "shared" / "schemas",
}


def _mirror(var: str) -> Path:
    return Path(os.environ.get(var) or MIRRORS[var]).resolve()


def mirror_problems() -> list[str]:
    """What is wrong with the mirrors: a folder that is missing or empty (then no test may run)."""
    problems = []
    for var in MIRRORS:
        path = _mirror(var)
        if not path.is_dir():
            problems.append(f"{var}: {path} does not exist")
        elif not any(path.iterdir()):
            problems.append(f"{var}: {path} is empty")
    return problems


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to start without the mirrors: tests that skip silently would let CI pass with nothing tested."""
    if problems := mirror_problems():
        pytest.exit(
            "harmguard's tests need the shared dataset and schema mirrors:\n  "
            + "\n  ".join(problems)
            + "\nSet HARMGUARD_DATA_MIRROR and HARMGUARD_SCHEMA_MIRROR to the shared datasets/ and schemas/ folders "
            "(`make test` and .ci/run use ../shared/ beside the project).",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def mirror_dir() -> Path:
    """The shared dataset mirror (HARMGUARD_DATA_MIRROR, else ../shared/datasets beside the project)."""
    return _mirror("HARMGUARD_DATA_MIRROR")


@pytest.fixture
def mirror() -> Path:
    return mirror_dir()


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
    path = _mirror("HARMGUARD_SCHEMA_MIRROR")
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


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with the packaged MiniLM's tokenizer: transformer tests train and score it in seconds.

    Session-wide: loading the tokenizer is most of its cost (a minute on a loaded machine).
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from harmguard.models.transformer import resolve_backbone

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("all-MiniLM-L6-v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
