"""The Ray Serve application: a FastAPI ingress (limits, metrics, health) and a batched model deployment.

``build_app`` is the import path a Serve config or RayService uses (``harmguard.serving.app:build_app``). The model
deployment ``Classifier`` takes its model and thresholds from ``user_config``: Serve calls ``reconfigure`` on the
running replicas when it changes, the replica verifies the model digest and swaps one reference, so requests in
flight finish on the model they started with. Request texts are never logged.

Hostile or heavy input fails alone and fast: a text that is not valid Unicode (a lone surrogate, which a JSON
escape such as U+D800's can carry) is a 422 before scoring; a batch whose model call fails is scored request by
request, so only the request the model cannot read fails (500); each caller queues at most ``max_queued_requests`` for a
deployment and answers 503 past it; ``/readyz`` tells versions and digests, never paths, bucket names or error
messages (which may quote them).

Metrics go through ``ray.serve.metrics`` to each node's Ray metrics agent (``harmguard.serving.metrics``), not to
a route here. The hot path does each piece of work once: the model replica scores a batch, counts it and writes
each request's answer as JSON bytes; the ingress validates the body in one pydantic pass (the slower path only
explains a refusal), hands the traffic recorder the score arrays, and sends the model's bytes unchanged.
"""

import asyncio
import json
import logging
import sys
import time
from typing import Any

import numpy as np
import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from ray import serve
from ray.serve import Application
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from harmguard.models.base import Classifier as ClassifierModel
from harmguard.models.loading import Loaded, load_spec
from harmguard.serving.config import (
    INGRESS_DEPLOYMENT,
    INGRESS_MAX_ONGOING,
    MODEL_DEPLOYMENT,
    Batching,
    FamilyBatching,
    Limits,
    ServeArgs,
    Traffic,
    UserConfig,
)
from harmguard.serving.metrics import IngressMetrics, ModelMetrics
from harmguard.serving.model import score_isolated

logger = logging.getLogger("harmguard.serving")

# Models kept in a replica: champion, shadow and the one before (a rollback back needs no reload).
_CACHE_SIZE = 3
# What /readyz shows of Classifier.info(): versions and digests, never model URIs or refusal messages.
_READY_FIELDS = ("ready", "policy", "model_version", "model_digest", "thresholds_version", "shadow_version")


# --- wire format -------------------------------------------------------------------------------------------------


class ClassifyRequest(BaseModel):
    """Body of ``POST /v1/classify``."""

    model_config = ConfigDict(extra="forbid")

    texts: list[StrictStr] = Field(min_length=1, description="Texts to classify (at least one).")
    ids: list[StrictStr] | None = Field(
        default=None,
        description="Optional item ids, one per text: the traffic record keys each text by its id (else by a keyed "
        "hash of its normalized text), so moderators' later decisions join it.",
    )


class TextResult(BaseModel):
    """The answer for one text."""

    scores: dict[str, float] = Field(description="Score per category, in [0, 1].")
    decisions: dict[str, bool] = Field(description="Per category: score >= the category's threshold.")
    flagged: bool = Field(description="Whether any category is decided.")


class ClassifyResponse(BaseModel):
    """Body of a successful ``POST /v1/classify``: one result per text, in request order."""

    results: list[TextResult] = Field(description="One result per text.")
    model_version: str = Field(description="The model version that scored the texts ('<policy>/<n>').")
    thresholds_version: str = Field(description="The thresholds version the decisions used.")


class ErrorResponse(BaseModel):
    """Body of every error answer."""

    error: str = Field(description="What is wrong, without echoing the texts.")
    limit: str | None = Field(default=None, description="The limit exceeded, when one was.")
    max: float | None = Field(default=None, description="The limit's value.")
    details: list[dict[str, Any]] | None = Field(default=None, description="Validation errors (location, message).")


def _error(status: int, error: str, **extra: Any) -> JSONResponse:
    body = ErrorResponse(error=error, **extra).model_dump(exclude_none=True)
    return JSONResponse(status_code=status, content=body)


# --- model deployment --------------------------------------------------------------------------------------------


def _open_recorder(traffic: dict[str, Any] | None, metrics: IngressMetrics) -> Any:
    """The traffic recorder of this ingress replica (a disabled one when the record is off or has no key)."""
    from harmguard.monitoring.traffic import DisabledRecorder, open_recorder
    from harmguard.settings import load_settings

    if traffic is None:
        return DisabledRecorder("the traffic record is off in this app's args")
    spec = Traffic.model_validate(traffic)
    return open_recorder(load_settings(), sample_rate=spec.sample_rate, on_drop=metrics.dropped)


def _replica_cpus() -> int:
    """CPUs Ray reserved for this replica (at least one): the intra-op threads its model may use."""
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    except Exception:  # outside a Ray worker
        cpus = 1.0
    return max(1, round(cpus))


def _wire(answer: dict[str, Any]) -> dict[str, Any]:
    """What the model replica sends the ingress for one request: the response body as bytes, and the arrays.

    The body is encoded once, here; the ingress sends it as it is. ``scores``/``decisions`` travel as arrays (cheap
    to pickle) for the traffic record, never as a list of dicts.
    """
    if "error" in answer:
        return answer
    body = {k: answer[k] for k in ("results", "model_version", "thresholds_version")}
    try:  # as Starlette's JSONResponse encodes; a score that is not a number fails this request alone
        encoded = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as e:
        return {"error": type(e).__name__}
    return {k: v for k, v in answer.items() if k != "results"} | {"body": encoded}


@serve.deployment(name=MODEL_DEPLOYMENT, ray_actor_options={"num_cpus": 1})
class Classifier:
    """Scores batches of requests with the configured model; the shadow model, if any, scores beside it."""

    def __init__(self, batching: dict[str, Any]) -> None:
        """Keep batching; the model arrives with ``reconfigure`` (Serve calls it right after construction)."""
        self._batching = Batching.model_validate(batching)
        self._applied: FamilyBatching | None = None
        self._threads = self._batching.intra_op_threads or _replica_cpus()
        self._metrics = ModelMetrics()
        self._cache: dict[str, ClassifierModel] = {}
        self._serving: tuple[Loaded, Loaded | None] | None = None
        self._last_refusal: str | None = None
        self._refusal_type: str | None = None
        self._refused_version: str | None = None

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Verify and load the configured model(s), then swap; a refused config keeps the current model serving.

        Raises:
            Exception: Only when there is no model yet (the replica cannot serve anything).
        """
        try:
            cfg = UserConfig.model_validate(user_config)
            serving = await asyncio.to_thread(self._load, cfg)
        except Exception as e:
            if self._serving is None:
                raise
            self._last_refusal, self._refusal_type = f"{type(e).__name__}: {e}", type(e).__name__
            self._refused_version = str(user_config.get("version")) if isinstance(user_config, dict) else None
            logger.error("reconfigure refused, still serving %s: %s", self._serving[0].spec.version, e)
            return
        self._tune(serving[0].model.family)
        self._serving = serving  # one reference swap: batches in flight keep the tuple they read
        self._last_refusal = self._refusal_type = self._refused_version = None
        keep = {serving[0].spec.model_digest} | ({serving[1].spec.model_digest} if serving[1] else set())
        while len(self._cache) > _CACHE_SIZE:
            drop = next(d for d in self._cache if d not in keep)
            del self._cache[drop]
        logger.info("serving %s (thresholds %s)", cfg.version, cfg.thresholds_version[:12])

    def _tune(self, family: str) -> None:
        """Batch size and wait for the champion's family (unless set), and intra-op threads = the replica's CPUs."""
        tuned = self._batching.for_family(family)
        if tuned != self._applied:
            # serve.batch wraps the method with setters the type checker cannot see.
            self.score_batch.set_max_batch_size(tuned.max_batch_size)  # type: ignore[attr-defined]
            self.score_batch.set_batch_wait_timeout_s(tuned.batch_wait_timeout_s)  # type: ignore[attr-defined]
            self._applied = tuned
        torch = sys.modules.get("torch")  # loaded by a transformer model; a baseline replica never imports it
        if torch is not None and torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)

    def _load(self, cfg: UserConfig) -> tuple[Loaded, Loaded | None]:
        champion = load_spec(cfg, self._cache)
        shadow = load_spec(cfg.shadow, self._cache) if cfg.shadow else None
        return champion, shadow

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def score_batch(self, requests: list[list[str]]) -> list[dict[str, Any]]:
        """Score many requests in one model call (each request is a list of texts); one by one if that fails."""
        serving = self._serving
        if serving is None:
            raise RuntimeError("no model loaded")
        return await asyncio.to_thread(self._score, serving, requests)

    def _score(self, serving: tuple[Loaded, Loaded | None], requests: list[list[str]]) -> list[dict[str, Any]]:
        answers = score_isolated(serving[0], serving[1], requests)
        try:
            self._observe(answers)
        except Exception as e:  # counting must never fail an answer
            logger.error("metrics failed: %s", type(e).__name__)
        return [_wire(a) for a in answers]

    def _observe(self, answers: list[dict[str, Any]]) -> None:
        ok = [a for a in answers if "error" not in a]
        if not ok:
            return
        shadows = [a["shadow"] for a in ok if a.get("shadow") is not None]
        shadow = shadows[0] if shadows else None
        if shadow is not None and "error" not in shadow:
            counts = {c: sum(s["disagreements"].get(c, 0) for s in shadows) for c in shadow["disagreements"]}
            shadow = shadow | {"texts": sum(s["texts"] for s in shadows), "disagreements": counts}
        self._metrics.observe_batch(
            ok[0]["model_version"],
            ok[0]["categories"],
            np.concatenate([a["scores"] for a in ok]),
            np.concatenate([a["decisions"] for a in ok]),
            shadow,
        )

    async def classify(self, texts: list[str]) -> dict[str, Any]:
        """Score one request's texts (batched with concurrent requests); ``{"error": type}`` when it cannot be.

        Returns:
            ``body`` (the 200 response, JSON bytes), ``model_version``, ``thresholds_version``, ``categories``,
            ``scores`` and ``decisions`` (arrays), ``batch_texts`` and ``shadow``.
        """
        return await self.score_batch(texts)

    def info(self) -> dict[str, Any]:
        """What the replica serves now, and the last refusal with its message (the driver's; /readyz filters it)."""
        refusal = {"last_refusal": self._last_refusal, "refusal_type": self._refusal_type}
        if self._serving is None:
            return {"ready": False, **refusal, "refused_version": self._refused_version}
        champion, shadow = self._serving
        return {
            "ready": True,
            "policy": champion.spec.version.rpartition("/")[0],
            "model_version": champion.spec.version,
            "model_digest": champion.spec.model_digest,
            "thresholds_version": champion.spec.thresholds_version,
            "shadow_version": shadow.spec.version if shadow else None,
            **refusal,
            "refused_version": self._refused_version,
        }


# --- ingress -----------------------------------------------------------------------------------------------------

api = FastAPI(
    title="harmguard classifier",
    description="Per-category scores and decisions for Trust & Safety policies.",
    version="1",
)
_CLASSIFY_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ClassifyRequest.model_json_schema()}},
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": why}
    for code, why in (
        (400, "Body is not UTF-8 JSON."),
        (413, "A limit is exceeded (body bytes, texts per request, characters per text)."),
        (422, "Body does not match the schema (an empty or non-string texts list, a text that is not valid Unicode)."),
        (500, "The model could not score this request (the requests batched with it were scored)."),
        (503, "No model is loaded, or the model's queue is full (retry later)."),
        (504, "The model did not answer within the request timeout."),
    )
}


@serve.deployment(
    name=INGRESS_DEPLOYMENT, ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=INGRESS_MAX_ONGOING
)
@serve.ingress(api)
class ClassifierIngress:
    """HTTP front: enforces limits before anything reaches the model, counts, and answers typed JSON."""

    def __init__(self, model: DeploymentHandle, limits: dict[str, Any], traffic: dict[str, Any] | None = None) -> None:
        """Keep the model handle and the limits, and open the traffic record."""
        self._model = model
        self._limits = Limits.model_validate(limits)
        self._metrics = IngressMetrics()
        self._recorder = _open_recorder(traffic, self._metrics)

    def __del__(self) -> None:
        """Serve deletes a replica on shutdown or scale-down: write what the record still buffers."""
        recorder = getattr(self, "_recorder", None)
        if recorder is not None:
            recorder.close(timeout=10.0)

    async def _read_body(self, request: Request) -> bytes | JSONResponse:
        cap = self._limits.max_body_bytes
        declared = request.headers.get("content-length")
        too_big = _error(413, f"body exceeds {cap} bytes", limit="max_body_bytes", max=cap)
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return too_big
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                return too_big
        return bytes(body)

    def _parse(self, body: bytes) -> tuple[list[str], list[str] | None] | JSONResponse:
        try:  # one pass in pydantic-core; what it refuses (bad JSON, a lone surrogate...) the path below explains
            req = ClassifyRequest.model_validate_json(body)
        except ValidationError:
            return self._parse_slowly(body)
        return self._check(req)

    def _parse_slowly(self, body: bytes) -> tuple[list[str], list[str] | None] | JSONResponse:
        try:
            doc = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            return _error(400, "body is not valid UTF-8")
        except (ValueError, RecursionError):
            return _error(400, "body is not valid JSON")
        try:
            req = ClassifyRequest.model_validate(doc)
        except ValidationError as e:
            details = [{"loc": list(x["loc"]), "msg": x["msg"], "type": x["type"]} for x in e.errors()]
            return _error(422, 'expected {"texts": [string, ...]} with at least one text', details=details)
        return self._check(req)

    def _check(self, req: ClassifyRequest) -> tuple[list[str], list[str] | None] | JSONResponse:
        texts, ids = req.texts, req.ids
        if ids is not None and len(ids) != len(texts):
            return _error(422, f"{len(ids)} ids for {len(texts)} texts: give one id per text, or none")
        lim = self._limits
        if len(texts) > lim.max_texts_per_request:
            n = lim.max_texts_per_request
            return _error(413, f"{len(texts)} texts; at most {n}", limit="max_texts_per_request", max=n)
        for i, t in enumerate(texts):
            if len(t) > lim.max_chars_per_text:
                n = lim.max_chars_per_text
                return _error(413, f"text {i} has {len(t)} characters; at most {n}", limit="max_chars_per_text", max=n)
        for i, t in enumerate(texts):
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: tokenizers raise on it, and it is no text anyone wrote
                return _error(422, f"text {i} is not valid Unicode (a lone surrogate); it cannot be encoded as UTF-8")
        return texts, ids

    @api.post("/v1/classify", response_model=ClassifyResponse, responses=_ERRORS, openapi_extra=_CLASSIFY_BODY)
    async def classify(self, request: Request) -> Response:
        """Classify texts: a score and a decision per category, and ``flagged``, for each text."""
        start = time.perf_counter()
        response = await self._classify(request)
        self._metrics.observe_request(response.status_code, time.perf_counter() - start)
        return response

    async def _classify(self, request: Request) -> Response:
        body = await self._read_body(request)
        if isinstance(body, JSONResponse):
            self._metrics.rejected("max_body_bytes")
            return body
        parsed = self._parse(body)
        if isinstance(parsed, JSONResponse):
            self._metrics.rejected(json.loads(bytes(parsed.body)).get("limit", "schema"))
            return parsed
        texts, ids = parsed
        try:
            out = await asyncio.wait_for(self._model.classify.remote(texts), self._limits.request_timeout_s)
        except TimeoutError:
            t = self._limits.request_timeout_s
            return _error(504, f"the model did not answer within {t} s", limit="request_timeout_s", max=t)
        except BackPressureError:
            self._metrics.rejected("max_queued_requests")
            response = _error(503, "the model's queue is full; retry later", limit="max_queued_requests")
            response.headers["Retry-After"] = "1"
            return response
        except Exception as e:  # the exception may carry a traceback, never the texts: log only its type
            logger.error("classify failed: %s", type(e).__name__)
            return _error(503, "the model is not available")
        if "error" in out:  # this request alone failed to score (its batch neighbours were answered)
            return _error(500, f"the model could not score this request ({out['error']})")
        version = out["model_version"]
        self._metrics.serving(version)
        self._recorder.record(  # buffered: never waits for storage, never raises
            policy=version.rpartition("/")[0],
            version=version,
            thresholds_version=out["thresholds_version"],
            texts=texts,
            scores=out["scores"],
            decisions=out["decisions"],
            categories=out["categories"],
            ids=ids,
            source="serve",
        )
        return Response(content=out["body"], media_type="application/json")  # encoded once, by the model replica

    @api.get("/healthz")
    def healthz(self) -> dict[str, str]:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    @api.get("/readyz", responses={503: {"model": ErrorResponse}})
    async def readyz(self) -> Response:
        """Readiness: a model replica has a verified model loaded (versions and digests; no paths, no messages)."""
        try:
            info = await asyncio.wait_for(self._model.info.remote(), 5.0)
        except Exception as e:
            return _error(503, f"model deployment unavailable ({type(e).__name__})")
        public = {k: info.get(k) for k in _READY_FIELDS if k in info}
        if info.get("last_refusal"):  # the type only: its message names the model URI (a path or a bucket)
            public |= {"last_refusal": info["refusal_type"], "refused_version": info["refused_version"]}
        return JSONResponse(public, status_code=200 if info.get("ready") else 503)


def build_app(args: ServeArgs) -> Application:
    """Build the serving application (Serve converts a config's ``args`` dict to ``ServeArgs``).

    Args:
        args: Limits, batching and, optionally, the initial ``user_config`` (else the Serve config's
            ``deployments[name=Classifier].user_config`` gives it).

    Returns:
        The application: ``ClassifierIngress`` over ``Classifier``.
    """
    args = ServeArgs.model_validate(args)
    b = args.batching
    options: dict[str, Any] = {
        "num_replicas": b.num_replicas,
        "max_ongoing_requests": b.max_ongoing_requests,
        "max_queued_requests": b.queue_cap,
        "ray_actor_options": {"num_cpus": b.replica_cpus},
    }
    if args.user_config is not None:
        options["user_config"] = args.user_config.dump()
    # serve.deployment turns the classes into Deployments; the type checker still sees the classes.
    model = Classifier.options(**options).bind(b.model_dump())  # type: ignore[attr-defined]
    ingress = ClassifierIngress.options(  # type: ignore[attr-defined]
        num_replicas=args.ingress_replicas,
        max_queued_requests=args.ingress_max_queued_requests or INGRESS_MAX_ONGOING,
    )
    traffic = args.traffic.model_dump() if args.traffic is not None else None
    return ingress.bind(model, args.limits.model_dump(), traffic)
