"""Prometheus metrics of one ingress replica (its own registry, served at ``GET /metrics``).

Rates are ratios of counters, as Prometheus computes them:
flagged rate of a category = ``harmguard_flagged_total{category}`` / ``harmguard_texts_total``;
shadow disagreement rate = ``harmguard_shadow_disagreements_total{category}`` / ``harmguard_shadow_texts_total``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServingMetrics:
    """Counters and histograms for requests, latency, batch size, flags and shadow disagreement."""

    def __init__(self) -> None:
        """Create the metrics in a fresh registry (never the process-global one)."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("harmguard_requests", "Classify requests by HTTP status.", ["status"], registry=r)
        self.latency = Histogram(
            "harmguard_request_latency_seconds", "Classify latency (s).", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.rejections = Counter(
            "harmguard_rejections", "Requests refused by a limit or schema.", ["limit"], registry=r
        )
        self.texts = Counter("harmguard_texts", "Texts classified.", ["model_version"], registry=r)
        self.batch = Histogram(
            "harmguard_batch_size_texts",
            "Texts in the model batch that scored a request.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.flagged = Counter("harmguard_flagged", "Texts decided positive, per category.", ["category"], registry=r)
        self.flagged_any = Counter("harmguard_flagged_texts", "Texts flagged (any category).", registry=r)
        self.shadow_texts = Counter("harmguard_shadow_texts", "Texts scored by the shadow model.", registry=r)
        self.shadow_disagreements = Counter(
            "harmguard_shadow_disagreements",
            "Texts where the shadow's decision differs from the champion's, per category.",
            ["category"],
            registry=r,
        )
        self.dropped_records = Counter(
            "harmguard_traffic_dropped_records", "Traffic records dropped because the buffer was full.", registry=r
        )
        self.shadow_errors = Counter("harmguard_shadow_errors", "Batches the shadow model failed to score.", registry=r)

    def observe_request(self, status: int, seconds: float) -> None:
        """Count a request and its latency."""
        self.requests.labels(status=str(status)).inc()
        self.latency.observe(seconds)

    def rejected(self, limit: str) -> None:
        """Count a request refused before scoring."""
        self.rejections.labels(limit=limit).inc()

    def observe_answer(self, out: dict[str, Any]) -> None:
        """Count texts, flags and shadow disagreement of one answered request."""
        results = out["results"]
        self.texts.labels(model_version=out["model_version"]).inc(len(results))
        self.batch.observe(out["batch_texts"])
        for row in results:
            for category, hit in row["decisions"].items():
                if hit:
                    self.flagged.labels(category=category).inc()
            if row["flagged"]:
                self.flagged_any.inc()
        shadow = out.get("shadow")
        if shadow is None:
            return
        if "error" in shadow:
            self.shadow_errors.inc()
            return
        self.shadow_texts.inc(shadow["texts"])
        for category, n in shadow["disagreements"].items():
            self.shadow_disagreements.labels(category=category).inc(n)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
