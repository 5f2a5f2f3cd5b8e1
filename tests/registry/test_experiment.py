"""MLflow run logging: every metric and param of a pipeline run lands, however many there are."""

from __future__ import annotations

import json

from harmguard.registry.experiment import MAX_BATCH_METRICS, MAX_BATCH_PARAMS, SnapshotInput, log_run
from harmguard.registry.tracking import mlflow_client


def test_log_run_splits_batches_past_mlflow_limits(settings, mlflow_uri):
    settings = settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri})
    metrics = {f"fairness.group{i}.bpsn_auc": i / 10_000 for i in range(2 * MAX_BATCH_METRICS + 7)}
    params = {f"train.option{i}": i for i in range(MAX_BATCH_PARAMS + 3)}
    history = [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.4}]
    rid = log_run(
        settings,
        experiment="batching-test",
        run_name="r1",
        params=params,
        metrics=metrics,
        tags={"harmguard.run_id": "r1"},
        files={"summary.md": b"# ok"},
        history=history,
    )
    client = mlflow_client(mlflow_uri)
    run = client.get_run(rid)
    assert run.info.status == "FINISHED"
    assert len(run.data.params) == len(params)
    assert run.data.metrics["fairness.group2006.bpsn_auc"] == 2006 / 10_000
    assert len(run.data.metrics) == len(metrics) + 1  # + train.val_loss (latest value)
    assert [m.value for m in client.get_metric_history(rid, "train.val_loss")] == [0.5, 0.4]


def test_the_snapshot_is_the_runs_dataset_input(settings, mlflow_uri):
    settings = settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri})
    data_version = "ab" * 32
    uri = f"{settings.home}/snapshots/{data_version}"
    logged = {"experiment": "dataset-test", "params": {}, "metrics": {}, "tags": {}, "files": {}}
    snapshot = SnapshotInput(name="sms_spam-snapshot", uri=uri, data_version=data_version)
    first = log_run(settings, run_name="r1", snapshot=snapshot, **logged)
    second = log_run(settings, run_name="r2", snapshot=snapshot, **logged)  # the same data twice: one dataset

    client = mlflow_client(mlflow_uri)
    (entry,) = client.get_run(first).inputs.dataset_inputs
    assert entry.dataset.name == "sms_spam-snapshot" and entry.dataset.source_type == "local"
    assert entry.dataset.digest == data_version[:36] and json.loads(entry.dataset.source)["uri"] == uri
    tags = {t.key: t.value for t in entry.tags}
    assert tags == {"mlflow.data.context": "train", "harmguard.data_version": data_version}
    (again,) = client.get_run(second).inputs.dataset_inputs
    assert (again.dataset.name, again.dataset.digest) == (entry.dataset.name, entry.dataset.digest)
