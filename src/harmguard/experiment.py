"""Experiment tracking in MLflow: one MLflow run per pipeline run, with params, metrics, lineage and reports."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from harmguard.settings import Settings

_BAD = re.compile(r"[^0-9A-Za-z_\-./ ]")


def metric_name(key: str) -> str:
    """An MLflow-safe metric name."""
    return _BAD.sub("_", key)


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
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in tags.items() if v is not None})
    rid = run.info.run_id
    try:
        from mlflow.entities import Metric, Param

        client.log_batch(
            rid,
            metrics=[Metric(metric_name(k), float(v), 0, 0) for k, v in metrics.items()],
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
