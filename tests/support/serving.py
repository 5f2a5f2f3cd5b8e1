"""Serve a model through the real Ray Serve app on loopback, and register a champion the monitoring path can check.

One place for what the serving, training and monitoring tests each need: a trained model published under a home's
``models/<digest>/``, a ``UserConfig`` for it, a free port, Ray and Serve started and always shut down, and a champion
registered as the register step does it (thresholds calibrated on validation, the score reference stored, the policy
file kept so ``harmguard serve`` reads its ``monitoring.sample_rate``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harmguard.data.snapshot import write_snapshot
from harmguard.digests import model_digest, thresholds_version
from harmguard.evaluation.evaluate import calibrate
from harmguard.evaluation.frozen import ScoreCache
from harmguard.monitoring.reference import write_score_reference
from harmguard.policy import Policy
from harmguard.registry import VersionRecord, move_alias, register_version
from harmguard.registry.models import publish_model
from harmguard.serving.config import ServeArgs, UserConfig
from harmguard.serving.local import start_app
from harmguard.settings import Settings
from harmguard.storage import LocalStore


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def publish_export(model: Any, home: Path, scratch: Path) -> Path:
    """Save ``model`` and move the export to ``home/models/<digest>/`` (as publishing does); returns that folder."""
    model.save(scratch)
    folder = home / "models" / model_digest(scratch)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch.rename(folder)
    return folder


def user_config(policy: str, version: str, folder: Path, thresholds: dict[str, float]) -> UserConfig:
    """The ``user_config`` that serves the model in ``folder`` at ``thresholds`` as ``version``."""
    return UserConfig.model_validate(
        {
            "policy": policy,
            "version": version,
            "model_uri": str(folder),
            "model_digest": model_digest(folder),
            "thresholds": thresholds,
            "thresholds_version": thresholds_version(thresholds),
        }
    )


@contextmanager
def served_app(args: ServeArgs, *, app_name: str = "harmguard", num_cpus: int = 2) -> Iterator[str]:
    """Run the app on a free loopback port; yields its base URL. Serve always shuts down (and Ray, if started here).

    A Ray cluster already up (a module's Ray Train cluster) is reused and left running.
    """
    import ray  # heavy: only the tests that serve import it
    from ray import serve

    owned = not ray.is_initialized()
    if owned:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR")
    try:
        yield start_app(args, port=free_port(), app_name=app_name)
    finally:
        serve.shutdown()  # the ingress replica writes its buffered traffic record here
        if owned:
            ray.shutdown()


@dataclass
class Champion:
    """A registered champion: its record, thresholds and model, in ``store``."""

    record: VersionRecord
    thresholds: dict[str, float]
    digest: str
    data_version: str
    model: Any


def register_champion(
    store: LocalStore,
    settings: Settings,
    policy: Policy,
    model: Any,
    snapshot: pd.DataFrame,
    *,
    export: Path,
    policy_file: bytes | None = None,
    run_id: str = "tests",
) -> Champion:
    """Register ``model`` (trained on ``snapshot``) as the champion of ``policy``, as the training pipeline would.

    The snapshot is written, the model published, thresholds calibrated on its validation split through the score
    cache, the score reference stored (what ``monitor`` compares with) and the version moved to ``champion``. With
    ``policy_file`` the version records that file, whose ``monitoring`` settings ``harmguard serve`` follows.
    """
    info = write_snapshot(store, snapshot, policy=policy, source=policy.name)
    model.save(export)
    digest = publish_model(store, export)
    doc, _ = calibrate(model, snapshot, policy, ScoreCache(store).scorer(model, digest))
    thresholds = doc["thresholds"]
    write_score_reference(
        store, policy, model_dir=export, model_digest=digest, thresholds=thresholds, data_version=info.data_version
    )
    record = register_version(
        store, settings, policy=policy.name, model_digest=digest, thresholds=thresholds,
        blessing={"blessed": True}, metrics={}, lineage={"data_version": info.data_version}, run_id=run_id,
        mlflow_run_id=None, family="baseline", by="test", policy_file=policy_file,
    )  # fmt: skip
    move_alias(
        store, settings, policy=policy.name, alias="champion", to_version=record.version, expected_version=None,
        by="test", reason=f"{run_id}: the tests' champion",
    )  # fmt: skip
    return Champion(record, thresholds, digest, info.data_version, model)
