"""Experiment tracking in MLflow: one MLflow run per pipeline run, with params, metrics, lineage and reports."""

from __future__ import annotations

import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harmguard.registry.tracking import error_code, mlflow_client, mlflow_lock
from harmguard.settings import Settings

_BAD = re.compile(r"[^0-9A-Za-z_\-./ ]")
MAX_BATCH_METRICS = 1000  # MLflow's log_batch limits
MAX_BATCH_PARAMS = 100
MAX_DATASET_DIGEST = 36  # MLflow's MAX_DATASET_DIGEST_SIZE


def metric_name(key: str) -> str:
    """An MLflow-safe metric name."""
    return _BAD.sub("_", key)


def artifact_root(settings: Settings, experiment: str) -> str:
    """Where an experiment's MLflow artifacts live.

    Under a local home (a file URI). With a gs:// home and a ``sqlite:///`` tracking URI, beside the tracking
    database, so the MLflow side stays self-contained and local; with a tracking server, under the gs:// home
    (MLflow's own GCS artifact store writes there with the same credentials).
    """
    if settings.home_is_local:
        return (settings.home_path / "mlflow-artifacts" / experiment).as_uri()
    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        db = Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///"))
        return (db.resolve().parent / "mlflow-artifacts" / experiment).as_uri()
    return f"{settings.home.rstrip('/')}/mlflow-artifacts/{experiment}"


def history_metrics(history: list[dict[str, Any]]) -> list[tuple[str, float, int]]:
    """(``train.<metric>``, value, epoch) for each numeric value of each epoch of a training history."""
    return [
        (f"train.{k}", float(v), int(h["epoch"]))
        for h in history
        for k, v in h.items()
        if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)
    ]


def training_params(train: dict[str, Any]) -> dict[str, Any]:
    """MLflow params of a train step record: its options, the effective transformer settings, rows, resumes."""
    params = {f"train.{k}": v for k, v in (train.get("params") or {}).items()}
    params.update({f"train.option.{k}": v for k, v in (train.get("options") or {}).items()})
    for key in ("train_rows", "validation_rows"):
        if key in train:
            params[f"train.{key}"] = train[key]
    if train.get("resumes"):
        params["train.resumed_at_steps"] = [r["step"] for r in train["resumes"]]
    return params


@dataclass(frozen=True)
class SnapshotInput:
    """The snapshot a run trained and evaluated on, logged as the MLflow run's dataset input."""

    name: str = field(metadata={"description": "Dataset name in MLflow, e.g. '<policy>-snapshot'."})
    uri: str = field(metadata={"description": "Where the snapshot lives: HARMGUARD_HOME/snapshots/<data-version>."})
    data_version: str = field(metadata={"description": "The data version (sha256 of the snapshot, 64 hex)."})


def dataset_input(snapshot: SnapshotInput) -> Any:
    """An MLflow ``DatasetInput`` for a snapshot: a meta dataset whose digest is the data version.

    MLflow caps a dataset digest at 36 characters (``MAX_DATASET_DIGEST_SIZE``), so the digest is the data version's
    first 36 hex digits (144 bits); the full data version is the input's ``harmguard.data_version`` tag and the last
    part of the source URI.
    """
    from mlflow.data.dataset_source_registry import resolve_dataset_source  # heavy third-party import (mlflow)
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():
        # MLflow registers its local-artifact source twice and warns that a path "can be interpreted in multiple ways"
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted", UserWarning)
        source = resolve_dataset_source(snapshot.uri)
    # MetaDataset implements `profile` (None); its base class declares it abstract, which mypy reports
    dataset = MetaDataset(source, name=snapshot.name, digest=snapshot.data_version[:MAX_DATASET_DIGEST])  # type: ignore[abstract]
    tags = [InputTag("mlflow.data.context", "train"), InputTag("harmguard.data_version", snapshot.data_version)]
    return DatasetInput(dataset._to_mlflow_entity(), tags=tags)


def log_run(
    settings: Settings,
    *,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    files: dict[str, bytes],
    history: list[dict[str, Any]] | None = None,
    snapshot: SnapshotInput | None = None,
) -> str:
    """Create a finished MLflow run; returns its id.

    ``history``: per-epoch training metrics, logged by step. ``snapshot``: the data, logged as the run's dataset input.
    """
    client = mlflow_client(settings.mlflow_tracking_uri)
    with mlflow_lock(settings.mlflow_tracking_uri):
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                # Artifacts stay inside the home (MLflow's default, ./mlruns, would land in the working folder).
                exp_id = client.create_experiment(experiment, artifact_location=artifact_root(settings, experiment))
            except Exception as e:
                if error_code(e) != "RESOURCE_ALREADY_EXISTS":
                    raise
                raced = client.get_experiment_by_name(experiment)  # another process created it first
                assert raced is not None
                exp_id = raced.experiment_id
        else:
            exp_id = exp.experiment_id
        run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in tags.items() if v is not None})
        rid = run.info.run_id
        try:
            from mlflow.entities import Metric, Param

            now_ms = int(time.time() * 1000)

            all_metrics = [Metric(metric_name(k), float(v), now_ms, 0) for k, v in metrics.items()] + [
                Metric(metric_name(k), v, now_ms, step) for k, v, step in history_metrics(history or [])
            ]
            all_params = [Param(k, str(v)[:6000]) for k, v in params.items()]
            # MLflow refuses a batch of over 1000 metrics or 100 params (fairness tables alone give ~500 metrics).
            for start in range(0, len(all_metrics), MAX_BATCH_METRICS):
                client.log_batch(rid, metrics=all_metrics[start : start + MAX_BATCH_METRICS])
            for start in range(0, len(all_params), MAX_BATCH_PARAMS):
                client.log_batch(rid, params=all_params[start : start + MAX_BATCH_PARAMS])
            with tempfile.TemporaryDirectory() as tmp:
                for name, data in files.items():
                    p = Path(tmp) / name
                    p.write_bytes(data)
                    client.log_artifact(rid, str(p))
            if snapshot is not None:
                client.log_inputs(rid, datasets=[dataset_input(snapshot)])
            client.set_terminated(rid, "FINISHED")
        except Exception:
            client.set_terminated(rid, "FAILED")
            raise
    return rid
