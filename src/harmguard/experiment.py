"""Experiment tracking in MLflow: one MLflow run per pipeline run, with params, metrics, lineage and reports."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

from harmguard.settings import Settings

_BAD = re.compile(r"[^0-9A-Za-z_\-./ ]")


def metric_name(key: str) -> str:
    """An MLflow-safe metric name."""
    return _BAD.sub("_", key)


def artifact_root(settings: Settings, experiment: str) -> str:
    """Where an experiment's MLflow artifacts live: under the home (a file URI locally)."""
    if settings.home_is_local:
        return (settings.home_path / "mlflow-artifacts" / experiment).as_uri()
    return f"{settings.home.rstrip('/')}/mlflow-artifacts/{experiment}"


def log_run(
    settings: Settings,
    *,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    files: dict[str, bytes],
) -> str:
    """Create a finished MLflow run; returns its id."""
    from harmguard.tracking import error_code, mlflow_client, mlflow_lock

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

            client.log_batch(
                rid,
                metrics=[Metric(metric_name(k), float(v), now_ms, 0) for k, v in metrics.items()],
                params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            )
            with tempfile.TemporaryDirectory() as tmp:
                for name, data in files.items():
                    p = Path(tmp) / name
                    p.write_bytes(data)
                    client.log_artifact(rid, str(p))
            client.set_terminated(rid, "FINISHED")
        except Exception:
            client.set_terminated(rid, "FAILED")
            raise
    return rid
