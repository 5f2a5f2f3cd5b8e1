"""Ingest: load the policy's data (or a given URI), split it deterministically and snapshot it."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from harmguard.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest(
    policy: str,
    data_uri: str,
    columns: str,
    sample: int,
    run_id: str,
    snapshot: Output[Dataset],
    labels_watermark: int = -1,
    labels_until: str = "",
) -> NamedTuple("IngestOutputs", [("data_version", str), ("rows", int)]):
    """Snapshot the data (imported labels up to the watermark and cutoff); outputs the data version."""
    from collections import namedtuple

    from harmguard.steps.training import ingest_step

    doc = ingest_step(policy, data_uri, columns, sample, run_id, snapshot.path, labels_watermark, labels_until)
    snapshot.metadata.update({"data_version": doc["data_version"], "rows": doc["rows"], "source": doc["source"]})
    return namedtuple("IngestOutputs", ["data_version", "rows"])(doc["data_version"], doc["rows"])
