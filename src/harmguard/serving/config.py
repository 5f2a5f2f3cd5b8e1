"""Typed serving configuration: request limits, batching, and the ``user_config`` a replica applies on reconfigure."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harmguard.decisions import check_thresholds_version

# Deployment names (harmguard.deploy patches deployments[name=Classifier].user_config).
MODEL_DEPLOYMENT = "Classifier"
INGRESS_DEPLOYMENT = "ClassifierIngress"

# CONTRACTS.md, "Serving defaults".
DEFAULT_MAX_TEXTS = 256
DEFAULT_MAX_CHARS = 10_000
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024


class Limits(BaseModel):
    """Request limits enforced by the ingress before anything reaches the model."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0, description="Largest request body (bytes).")
    max_texts_per_request: int = Field(default=DEFAULT_MAX_TEXTS, gt=0, description="Most texts in one request.")
    max_chars_per_text: int = Field(default=DEFAULT_MAX_CHARS, gt=0, description="Longest text (characters).")
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds the ingress waits for the model before answering 504."
    )


class Batching(BaseModel):
    """How the model deployment groups requests (``@serve.batch``)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(default=16, gt=0, description="Most requests scored together in one batch.")
    batch_wait_timeout_s: float = Field(
        default=0.005, ge=0, description="Seconds a partial batch waits for more requests."
    )
    max_ongoing_requests: int = Field(
        default=64,
        gt=0,
        description="Requests a model replica accepts at once; must be >= max_batch_size or batches never fill.",
    )
    num_replicas: int = Field(default=1, gt=0, description="Model replicas.")

    @model_validator(mode="after")
    def _fillable(self) -> Batching:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) < max_batch_size ({self.max_batch_size}): "
                "batches could never fill; raise max_ongoing_requests"
            )
        return self


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


class UserConfig(ModelSpec):
    """The Serve ``user_config`` of the model deployment (``harmguard.deploy.user_config`` writes it).

    Changing it (RayService edit, ``harmguard serve`` admin route, ``apply_user_config``) calls ``reconfigure`` on
    the running replicas: a new model or new thresholds without a restart.
    """

    policy: str = Field(description="Policy name.")
    shadow: ModelSpec | None = Field(
        default=None, description="Optional challenger scored beside this model; never changes the answers."
    )

    def dump(self) -> dict[str, Any]:
        """Plain JSON form (what Serve stores)."""
        return self.model_dump(mode="json", exclude_none=True)


class ServeArgs(BaseModel):
    """Arguments of ``build_app`` (the ``args`` of a Serve config or RayService ``serveConfigV2``)."""

    model_config = ConfigDict(extra="forbid")

    user_config: UserConfig | None = Field(
        default=None,
        description="Initial model and thresholds; may instead come from the config's deployments[].user_config.",
    )
    limits: Limits = Field(default_factory=Limits, description="Request limits.")
    batching: Batching = Field(default_factory=Batching, description="Batching and replica settings.")
    ingress_replicas: int = Field(default=1, gt=0, description="HTTP ingress replicas.")
