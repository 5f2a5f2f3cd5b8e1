"""The MLflow model of a registered version: an ``MLmodel`` whose pyfunc flavor loads through harmguard.

MLflow loads a registered model version from its source folder, which must hold an ``MLmodel`` file. The exported
model (``models/<digest>/``) must not get one: its files are its digest (CONTRACTS.md). So each version gets a
small folder of its own beside the experiment's MLflow artifacts, ``mlflow-artifacts/<policy>/versions/<n>/``,
written create-only when the version is mirrored:

- ``harmguard.json``: where the registry of record is (``store``) and which version this is, with the model URI,
  digest and thresholds it was registered with.
- ``MLmodel``: one ``python_function`` flavor whose ``loader_module`` (``LOADER_MODULE``) resolves the version in the
  registry of record, recomputes the model digest and scores with ``decide()``. No Python object is pickled.
  The signature takes a ``text`` string column and answers ``<category>_score`` (double), ``<category>_decision``
  (boolean) per category and ``flagged`` (boolean).

Both files are deterministic (no creation time, uuid, MLflow or Python version): the same version gives the same
bytes, so mirroring again (``sync_mlflow``) finds identical files and a changed file is refused.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import yaml

from harmguard.storage import ArtifactStore, StoreError


class VersionRecord(Protocol):
    """What this module reads of a registered version (``registry.core.VersionRecord``, which imports this module)."""

    policy: str
    n: int
    version: str
    model_uri: str
    model_digest: str
    thresholds: dict[str, float]
    thresholds_version: str
    family: str


# The module MLflow imports to load the model (``_load_pyfunc(path)``); it lives above the registry (it scores with
# harmguard.models), so the registry names it and never imports it.
LOADER_MODULE = "harmguard.models.mlflow_pyfunc"
POINTER_FILE = "harmguard.json"
MLMODEL_FILE = "MLmodel"
FLAGGED = "flagged"


def mlflow_model_key(policy: str, n: int) -> str:
    """The store key of a version's MLflow model folder (beside the policy's MLflow experiment artifacts)."""
    return f"mlflow-artifacts/{policy}/versions/{n}"


def score_column(category: str) -> str:
    """The output column of a category's score."""
    return f"{category}_score"


def decision_column(category: str) -> str:
    """The output column of a category's decision (score >= threshold)."""
    return f"{category}_decision"


def pointer_document(store: ArtifactStore, record: VersionRecord) -> dict[str, Any]:
    """``harmguard.json``: the registry of record and the version it must resolve to (categories in column order)."""
    return {
        "store": store.uri,
        "version": record.version,
        "model_uri": record.model_uri,
        "model_digest": record.model_digest,
        "thresholds": record.thresholds,
        "thresholds_version": record.thresholds_version,
        "categories": list(record.thresholds),
    }


def signature_document(categories: list[str]) -> dict[str, Any]:
    """The MLmodel ``signature``: a ``text`` string column in; per category a score and a decision, and flagged out."""
    from mlflow.models import ModelSignature  # heavy third-party import (mlflow), only when a version is mirrored
    from mlflow.types import ColSpec, Schema, TensorSpec

    outputs: list[ColSpec | TensorSpec] = [ColSpec("double", score_column(c)) for c in categories]
    outputs += [ColSpec("boolean", decision_column(c)) for c in categories]
    outputs.append(ColSpec("boolean", FLAGGED))
    return ModelSignature(inputs=Schema([ColSpec("string", "text")]), outputs=Schema(outputs)).to_dict()


def mlmodel_document(record: VersionRecord) -> dict[str, Any]:
    """The ``MLmodel`` of a version: the pyfunc flavor with harmguard's loader, the signature, harmguard metadata."""
    return {
        "flavors": {"python_function": {"loader_module": LOADER_MODULE, "data": POINTER_FILE}},
        "signature": signature_document(list(record.thresholds)),
        "metadata": {
            "harmguard_version": record.version,
            "model_digest": record.model_digest,
            "model_uri": record.model_uri,
            "thresholds_version": record.thresholds_version,
            "family": record.family,
        },
    }


def mlflow_model_files(store: ArtifactStore, record: VersionRecord) -> dict[str, bytes]:
    """The files of a version's MLflow model folder, byte for byte (``MLmodel`` last: it makes the folder loadable)."""
    pointer = json.dumps(pointer_document(store, record), indent=2, sort_keys=True) + "\n"
    mlmodel = yaml.safe_dump(mlmodel_document(record), sort_keys=True, default_flow_style=False)
    return {POINTER_FILE: pointer.encode(), MLMODEL_FILE: mlmodel.encode()}


def write_mlflow_model(store: ArtifactStore, record: VersionRecord) -> str:
    """Write a version's MLflow model folder create-only; returns its URI (the MLflow model version's source).

    Raises:
        StoreError: When a file of the folder exists with other bytes (it was changed after it was written).
    """
    key = mlflow_model_key(record.policy, record.n)
    for name, data in mlflow_model_files(store, record).items():
        if not store.create_only(f"{key}/{name}", data) and store.read_bytes(f"{key}/{name}") != data:
            raise StoreError(f"{store.uri_for(f'{key}/{name}')} was modified: it is not what {record.version} wrote")
    return store.uri_for(key)
