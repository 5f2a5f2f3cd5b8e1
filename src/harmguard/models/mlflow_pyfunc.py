"""MLflow's loader for registered versions: ``mlflow.pyfunc.load_model("models:/<policy>@champion")`` lands here.

The ``MLmodel`` a version is mirrored with (``harmguard.registry.mlflow_model``) names this module as its pyfunc
``loader_module``; MLflow calls ``_load_pyfunc`` with the folder's ``harmguard.json``. Loading resolves the version
in the registry of record (the MLflow side must name the same model digest and thresholds), recomputes the model
digest exactly as a serving replica does (``load_spec``: a changed file is refused with ``ModelDigestMismatch``),
and answers with ``decide()``, so MLflow, the server and batch scoring give the same scores and decisions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harmguard.models.decide import decide
from harmguard.models.loading import Loaded, ModelDigestMismatch, ModelSpec, load_spec
from harmguard.registry import get_version
from harmguard.registry.mlflow_model import FLAGGED, decision_column, score_column
from harmguard.storage import open_store

TEXT_COLUMN = "text"


class HarmguardPyfunc:
    """A verified registered version as MLflow's pyfunc sees it: ``predict(DataFrame with a text column)``."""

    def __init__(self, loaded: Loaded, categories: list[str]) -> None:
        self.loaded = loaded
        self.categories = categories

    @property
    def version(self) -> str:
        """The registered version ``<policy>/<n>``."""
        return self.loaded.spec.version

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Score texts at the version's thresholds.

        Args:
            model_input: A DataFrame with a ``text`` column (what MLflow's signature enforcement passes), a Series
                or a list of strings.
            params: Unused (the signature declares none).

        Returns:
            One row per text: ``<category>_score`` (float), ``<category>_decision`` (bool) per category, ``flagged``.
        """
        texts = _texts(model_input)
        scored = decide(self.loaded.model, self.loaded.spec.thresholds, texts)
        index = {c: scored.categories.index(c) for c in self.categories}  # the signature's column order
        columns: dict[str, Any] = {score_column(c): scored.scores[:, i].astype(np.float64) for c, i in index.items()}
        columns |= {decision_column(c): scored.decisions[:, i].astype(bool) for c, i in index.items()}
        columns[FLAGGED] = scored.flagged.astype(bool)
        return pd.DataFrame(columns)


def _texts(model_input: Any) -> list[str]:
    """The texts of a pyfunc input; a clear error (naming the row, never its content) for anything else."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            raise ValueError(f"the input needs a {TEXT_COLUMN!r} column; it has {list(model_input.columns)}")
        values = model_input[TEXT_COLUMN].tolist()
    elif isinstance(model_input, pd.Series | list | tuple | np.ndarray):
        values = list(model_input)
    else:
        raise TypeError(f"expected a DataFrame with a {TEXT_COLUMN!r} column, got {type(model_input).__name__}")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"row {i}: {TEXT_COLUMN!r} must be a string, got {type(value).__name__}")
    return values


def load_registered(pointer: dict[str, Any]) -> HarmguardPyfunc:
    """Resolve a pointer document in the registry of record, verify the model digest, load the model.

    Raises:
        ModelDigestMismatch: When the MLflow side names another digest or thresholds than the registry of record,
            or the model's files hash to another digest.
        harmguard.registry.VersionNotFound: When the registry of record has no such version.
    """
    record = get_version(open_store(str(pointer["store"])), str(pointer["version"]))
    claimed = (pointer.get("model_digest"), pointer.get("thresholds_version"))
    if claimed != (record.model_digest, record.thresholds_version):
        raise ModelDigestMismatch(
            f"the MLflow model of {record.version} names model {claimed[0]} and thresholds {claimed[1]}, but the "
            f"registry of record has {record.model_digest} and {record.thresholds_version}; refused"
        )
    spec = ModelSpec(
        version=record.version,
        model_uri=record.model_uri,
        model_digest=record.model_digest,
        thresholds=record.thresholds,
        thresholds_version=record.thresholds_version,
    )
    categories = [str(c) for c in pointer.get("categories") or record.thresholds]
    if sorted(categories) != sorted(record.thresholds):
        raise ModelDigestMismatch(f"the MLflow model of {record.version} lists categories {categories}, not the "
                                  f"registered {sorted(record.thresholds)}; refused")  # fmt: skip
    return HarmguardPyfunc(load_spec(spec, {}), categories)


def _load_pyfunc(path: str) -> HarmguardPyfunc:
    """MLflow's pyfunc entry point: ``path`` is the version folder's ``harmguard.json``."""
    return load_registered(json.loads(Path(path).read_text()))
