"""Typed serving configuration: request limits, batching, and the ``user_config`` a replica applies on reconfigure."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harmguard.models.decide import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CHARS, DEFAULT_MAX_TEXTS
from harmguard.models.loading import ModelSpec
from harmguard.registry import VersionRecord

# Names of the serving application; promotion patches deployments[name=Classifier].user_config.
SERVE_APP = "harmguard"
# The classifier's RayService (manifests/kuberay/ray-service.classifier.yaml), the one promotion patches on a cluster.
RAYSERVICE_NAME = "harmguard-classifier"
SERVE_IMPORT_PATH = "harmguard.serving.app:build_app"
MODEL_DEPLOYMENT = "Classifier"
INGRESS_DEPLOYMENT = "ClassifierIngress"
# Where `harmguard serve` announces its endpoints in HARMGUARD_HOME (promotion reads it to push a new user_config).
ENDPOINT_KEY = "serve/endpoint.json"
# Requests one ingress replica handles at once (it only parses and awaits the model).
INGRESS_MAX_ONGOING = 256
# Serve's health checks and drain time of both deployments (seconds).
HEALTH_CHECKS = {"health_check_period_s": 10, "health_check_timeout_s": 30, "graceful_shutdown_timeout_s": 20}


class Limits(BaseModel):
    """Request limits enforced by the ingress before anything reaches the model."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0, description="Largest request body (bytes).")
    max_texts_per_request: int = Field(default=DEFAULT_MAX_TEXTS, gt=0, description="Most texts in one request.")
    max_chars_per_text: int = Field(default=DEFAULT_MAX_CHARS, gt=0, description="Longest text (characters).")
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds the ingress waits for the model before answering 504."
    )


class FamilyBatching(BaseModel):
    """Batch size and wait that suit one model family (``FAMILY_BATCHING``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(gt=0, description="Most requests scored together in one model call.")
    batch_wait_timeout_s: float = Field(ge=0, description="Seconds a partial batch waits for more requests.")


# Per family, in requests per model call (benchmarks/serve_throughput.py measures them). A baseline scores a text in
# microseconds: most of a request's cost is fixed (HTTP, the handle hop), so large batches of small requests and a
# short wait (it only gathers what is already queued) pay. A transformer's call costs milliseconds per text and
# gains little past a few dozen texts, while a large batch of 16-text requests holds every caller for seconds:
# fewer requests per call, and a wait that is small beside the call.
FAMILY_BATCHING = {
    "baseline": FamilyBatching(max_batch_size=32, batch_wait_timeout_s=0.002),
    "transformer": FamilyBatching(max_batch_size=8, batch_wait_timeout_s=0.005),
}
_OTHER_FAMILY = FamilyBatching(max_batch_size=16, batch_wait_timeout_s=0.005)


class Batching(BaseModel):
    """How the model deployment groups requests (``@serve.batch``) and the CPUs each of its replicas uses."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int | None = Field(
        default=None, gt=0, description="Most requests scored together in one batch. None: the family's default."
    )
    batch_wait_timeout_s: float | None = Field(
        default=None, ge=0, description="Seconds a partial batch waits for more requests. None: the family's default."
    )
    max_ongoing_requests: int = Field(
        default=64,
        gt=0,
        description="Requests a model replica accepts at once; must be >= max_batch_size or batches never fill.",
    )
    num_replicas: int = Field(default=1, gt=0, description="Model replicas.")
    replica_cpus: float = Field(
        default=1.0,
        gt=0,
        description="CPUs Ray reserves for each model replica on this machine (a cluster's autoscaling sets its "
        "own); a transformer's torch uses as many intra-op threads, so it never oversubscribes the proxy's cores.",
    )
    intra_op_threads: int | None = Field(
        default=None, gt=0, description="Torch intra-op threads of a model replica. None: its reserved CPUs."
    )
    max_queued_requests: int | None = Field(
        default=None,
        gt=0,
        description="Requests each caller (an ingress replica) queues for the model beyond those its replicas "
        "hold; past it the ingress answers 503 at once instead of queueing without bound. None: max_ongoing_requests.",
    )

    @property
    def queue_cap(self) -> int:
        """``max_queued_requests``, or ``max_ongoing_requests`` when unset."""
        return self.max_queued_requests or self.max_ongoing_requests

    def for_family(self, family: str) -> FamilyBatching:
        """Batch size and wait for a model family: the ones set here, else the family's defaults."""
        default = FAMILY_BATCHING.get(family, _OTHER_FAMILY)
        return FamilyBatching(
            max_batch_size=self.max_batch_size or default.max_batch_size,
            batch_wait_timeout_s=(
                self.batch_wait_timeout_s if self.batch_wait_timeout_s is not None else default.batch_wait_timeout_s
            ),
        )

    @model_validator(mode="after")
    def _fillable(self) -> Batching:
        largest = self.max_batch_size or max(b.max_batch_size for b in (*FAMILY_BATCHING.values(), _OTHER_FAMILY))
        if self.max_ongoing_requests < largest:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) < max_batch_size ({largest}): "
                "batches could never fill; raise max_ongoing_requests"
            )
        return self


class UserConfig(ModelSpec):
    """The Serve ``user_config`` of the model deployment (``harmguard.promotion.deploy.user_config`` writes it).

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


class Traffic(BaseModel):
    """The traffic record the ingress keeps (``harmguard.monitoring.traffic``): no text, keyed item ids."""

    model_config = ConfigDict(extra="forbid")

    sample_rate: float = Field(
        default=0.01, ge=0, le=1, description="Share of texts kept, with scores, for the review queue (the policy's)."
    )


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
    traffic: Traffic | None = Field(
        default=None,
        description="Record each scored text (time, version, scores, decisions, length, keyed id; never the text) "
        "under HARMGUARD_HOME/traffic/<policy>/. None: no record.",
    )
    ingress_max_queued_requests: int | None = Field(
        default=None,
        gt=0,
        description="HTTP requests each proxy queues for the ingress beyond those its replicas hold "
        f"({INGRESS_MAX_ONGOING} each); past it Serve answers 503 at once. None: {INGRESS_MAX_ONGOING}.",
    )


class Autoscaling(BaseModel):
    """Replica scaling of the model deployment on a cluster (Serve autoscaling on ongoing requests)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(default=1, ge=1, description="Fewest model replicas.")
    max_replicas: int = Field(default=4, ge=1, description="Most model replicas (also the ingress's maximum).")
    target_ongoing_requests: int = Field(default=32, ge=1, description="Ongoing requests per replica Serve aims at.")
    replica_cpus: float = Field(default=1.0, gt=0, description="CPUs reserved by each model replica.")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"replicas: need 1 <= min_replicas ({self.min_replicas}) <= max_replicas ({self.max_replicas})"
            )
        return self


def user_config_for(record: VersionRecord, shadow: VersionRecord | None = None) -> UserConfig:
    """The ``user_config`` that serves a registered version (optionally with a shadow version beside it)."""
    fields = ("version", "model_uri", "model_digest", "thresholds", "thresholds_version")
    doc: dict[str, Any] = {k: getattr(record, k) for k in fields} | {"policy": record.policy}
    if shadow is not None:
        doc["shadow"] = {k: getattr(shadow, k) for k in fields}
    return UserConfig.model_validate(doc)


def build_serve_config(
    args: ServeArgs, *, app_name: str = SERVE_APP, autoscaling: Autoscaling | None = None
) -> dict[str, Any]:
    """The declarative Serve config: local ``harmguard serve``, a RayService's ``serveConfigV2`` and promotion's patch.

    The model and thresholds go in ``deployments[Classifier].user_config``, not in ``args``: Serve then applies a
    change as a lightweight ``reconfigure`` of the running replicas instead of replacing them. Both deployments get
    health checks. ``autoscaling`` (a cluster) adds replica autoscaling and the proxy on every node on port 8000;
    without it (this machine) replicas follow ``args.batching`` and the proxy stays where the caller started it.

    Raises:
        ValueError: When ``args`` has no ``user_config``: there would be nothing to serve.
    """
    if args.user_config is None:
        raise ValueError("no user_config: nothing to serve")
    model: dict[str, Any] = {"name": MODEL_DEPLOYMENT}
    ingress: dict[str, Any] = {"name": INGRESS_DEPLOYMENT}
    exclude = {"user_config"}
    if autoscaling is not None:
        exclude.add("ingress_replicas")  # the ingress autoscales too
        # "auto" hands the replica count to autoscaling_config (Serve refuses a number with it).
        model |= {
            "num_replicas": "auto",
            "autoscaling_config": {
                "min_replicas": autoscaling.min_replicas,
                "max_replicas": autoscaling.max_replicas,
                "target_ongoing_requests": autoscaling.target_ongoing_requests,
            },
            "ray_actor_options": {"num_cpus": autoscaling.replica_cpus},
        }
        ingress |= {
            "num_replicas": "auto",
            "autoscaling_config": {"min_replicas": 1, "max_replicas": autoscaling.max_replicas},
        }
    model |= {**HEALTH_CHECKS, "user_config": args.user_config.dump()}
    ingress |= HEALTH_CHECKS
    app = {
        "name": app_name,
        "route_prefix": "/",
        "import_path": SERVE_IMPORT_PATH,
        "args": args.model_dump(mode="json", exclude=exclude, exclude_none=True),  # unset queue caps: defaults
        "deployments": [model, ingress],
    }
    if autoscaling is None:
        return {"applications": [app]}
    return {"proxy_location": "EveryNode", "http_options": {"host": "0.0.0.0", "port": 8000}, "applications": [app]}
