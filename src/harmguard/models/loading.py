"""Loading a model for scoring: verify its digest, load it by family, check its thresholds fit it.

Serving replicas and batch-scoring actors both go through ``load_spec``: a model that does not hash to the digest
its spec names is refused before it scores anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harmguard.digests import model_digest
from harmguard.models.base import Classifier, ModelError, read_model_meta
from harmguard.models.baseline import BaselineModel
from harmguard.models.decide import check_thresholds, check_thresholds_version
from harmguard.models.transformer import TransformerModel
from harmguard.registry.models import download_model


def load_model(directory: str | Path) -> Classifier:
    """Load an exported model of any family."""
    meta = read_model_meta(directory)
    family = meta.get("family")
    if family == "baseline":
        return BaselineModel.load(Path(directory))
    if family == "transformer":
        return TransformerModel.load(Path(directory))
    raise ModelError(f"{directory}: unknown model family {family!r}")


class ModelSpec(BaseModel):
    """One model with its thresholds: what a replica loads, verifies and decides with."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field(description="The registered version '<policy>/<n>' (echoed in every answer).")
    model_uri: str = Field(description="Exported model folder: HARMGUARD_HOME/models/<digest> (path or file://).")
    model_digest: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="Expected model digest; the replica recomputes it and refuses others."
    )
    thresholds: dict[str, float] = Field(description="Per-category decision thresholds.")
    thresholds_version: str = Field(description="sha256 of the canonical JSON of the thresholds (checked).")

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        check_thresholds_version(self.thresholds, self.thresholds_version)
        return self


class ModelDigestMismatch(ValueError):
    """The model folder's files hash to another digest than the one the config expects: the swap is refused."""


@dataclass(frozen=True)
class Loaded:
    """A verified model with the thresholds it decides at."""

    spec: ModelSpec
    model: Classifier


def local_model_dir(uri: str) -> Path:
    """The local folder of a model URI (a path, file://, or gs://: downloaded and verified into the cache)."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    if uri.startswith("gs://"):
        return download_model(uri)  # only a complete, digest-checked tree; TamperedModelError otherwise
    if "://" in uri:
        raise NotImplementedError(f"serving a model from {uri} is not supported yet (issue #8): use a local path")
    return Path(uri)


def verify_model_dir(uri: str, expected_digest: str) -> Path:
    """Recompute the model digest of a folder; ModelDigestMismatch when it is not the expected one."""
    folder = local_model_dir(uri)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    actual = model_digest(folder)
    if actual != expected_digest:
        raise ModelDigestMismatch(f"model at {uri} hashes to {actual}, not the expected {expected_digest}; refused")
    return folder


def load_spec(spec: ModelSpec, cache: dict[str, Classifier]) -> Loaded:
    """Load (or reuse from ``cache``, keyed by digest) a verified model and check its thresholds fit it."""
    model = cache.get(spec.model_digest)
    if model is None:
        model = load_model(verify_model_dir(spec.model_uri, spec.model_digest))
    check_thresholds(model.categories, spec.thresholds)
    cache[spec.model_digest] = model
    return Loaded(spec, model)
