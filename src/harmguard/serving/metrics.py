"""The app's Prometheus metrics, through ``ray.serve.metrics``: exported by each node's Ray metrics agent.

Every replica records into its node's metrics agent, which the Prometheus scraper reads on the node's
``metrics-export-port`` (8080 on a cluster, the only port the Ray NetworkPolicy opens to it). Serve adds the
``deployment``, ``replica`` and ``application`` tags; harmguard adds ``policy`` and ``model_version``. Ray prefixes
every name with ``ray_`` and gives counters the ``_total`` suffix, so a scrape reads e.g.
``ray_harmguard_flagged_total{policy, model_version, category, deployment, replica, ...}``.

Two sides record, each what it knows best:

- the model deployment (``ModelMetrics``), once per scored batch: texts scored, texts per model call, a score
  histogram per category, flags per category and overall, and the shadow model's texts, disagreements and errors;
- the ingress (``IngressMetrics``), once per request: requests by HTTP status, latency, rejections by limit, and
  the records the traffic recorder dropped because its buffer was full.

Rates are ratios of counters, as Prometheus computes them: flagged rate of a category =
``ray_harmguard_flagged_total{category}`` / ``ray_harmguard_texts_total``; shadow disagreement rate =
``ray_harmguard_shadow_disagreements_total{category}`` / ``ray_harmguard_shadow_texts_total``.

There is no ``/metrics`` route on the serving port: behind the load-balanced HTTP route a scrape reached one random
ingress replica, and the model replicas' counts were not there at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.serve.metrics import Counter, Histogram

_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
_BATCH_BUCKETS = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0]
# Scores in [0, 1]: fine near both ends, where thresholds usually sit.
SCORE_BUCKETS = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
# The ingress's tags before its first answer tells it what the model deployment serves.
UNKNOWN = "unknown"


def _keys(*names: str) -> Any:
    """Tag keys (Ray annotates ``tag_keys`` as ``Tuple[str]``, a one-element tuple, though it takes any length)."""
    return names


_VERSION = ("policy", "model_version")


class ModelMetrics:
    """What the model deployment counts, per scored batch (tags: policy, model version; category; shadow)."""

    def __init__(self) -> None:
        """Create the metrics (in a replica: Serve adds its deployment and replica tags)."""
        self.texts = Counter("harmguard_texts", "Texts scored.", tag_keys=_keys(*_VERSION))
        self.batch = Histogram(
            "harmguard_batch_size_texts", "Texts per model call.", boundaries=_BATCH_BUCKETS, tag_keys=_keys(*_VERSION)
        )
        self.scores = Histogram(
            "harmguard_score",
            "Scores of the texts scored, per category.",
            boundaries=SCORE_BUCKETS,
            tag_keys=_keys(*_VERSION, "category"),
        )
        self.flagged = Counter(
            "harmguard_flagged", "Texts decided positive, per category.", tag_keys=_keys(*_VERSION, "category")
        )
        self.flagged_any = Counter(
            "harmguard_flagged_texts", "Texts flagged (any category).", tag_keys=_keys(*_VERSION)
        )
        shadow = (*_VERSION, "shadow_version")
        self.shadow_texts = Counter(
            "harmguard_shadow_texts", "Texts scored by the shadow model.", tag_keys=_keys(*shadow)
        )
        self.shadow_disagreements = Counter(
            "harmguard_shadow_disagreements",
            "Texts where the shadow's decision differs from the champion's, per category.",
            tag_keys=_keys(*shadow, "category"),
        )
        self.shadow_errors = Counter(
            "harmguard_shadow_errors", "Batches the shadow model failed to score.", tag_keys=_keys(*shadow)
        )

    def observe_batch(
        self,
        version: str,
        categories: list[str],
        scores: np.ndarray,
        decisions: np.ndarray,
        shadow: dict[str, Any] | None = None,
    ) -> None:
        """Count one scored batch: ``scores`` and ``decisions`` are (n_texts, n_categories) in ``categories`` order.

        Args:
            version: The model version that scored (``<policy>/<n>``).
            categories: Column order of ``scores`` and ``decisions``.
            scores: The champion's scores.
            decisions: The champion's decisions.
            shadow: ``None``; or the shadow's ``version`` with ``texts`` and ``disagreements`` (category -> count),
                or with ``error`` when it failed.
        """
        tags = {"policy": version.rpartition("/")[0], "model_version": version}
        n = len(scores)
        if n == 0:
            return
        self.texts.inc(n, tags)
        self.batch.observe(n, tags)
        flagged = np.asarray(decisions).sum(axis=0)
        for j, category in enumerate(categories):
            cat_tags = tags | {"category": category}
            observe = self.scores.observe
            for value in np.asarray(scores)[:, j].tolist():
                observe(value, cat_tags)
            if flagged[j]:
                self.flagged.inc(int(flagged[j]), cat_tags)
        any_flag = int(np.asarray(decisions).any(axis=1).sum())
        if any_flag:
            self.flagged_any.inc(any_flag, tags)
        if shadow is None:
            return
        shadow_tags = tags | {"shadow_version": shadow["version"]}
        if "error" in shadow:
            self.shadow_errors.inc(1, shadow_tags)
            return
        self.shadow_texts.inc(shadow["texts"], shadow_tags)
        for category, count in shadow["disagreements"].items():
            if count:
                self.shadow_disagreements.inc(count, shadow_tags | {"category": category})


class IngressMetrics:
    """What the ingress counts, per request (tags: policy and model version of the deployment's last answer)."""

    def __init__(self) -> None:
        """Create the metrics (in a replica: Serve adds its deployment and replica tags)."""
        self.requests = Counter(
            "harmguard_requests", "Classify requests by HTTP status.", tag_keys=_keys(*_VERSION, "status")
        )
        self.latency = Histogram(
            "harmguard_request_latency_seconds",
            "Classify latency in the ingress (s).",
            boundaries=_LATENCY_BUCKETS,
            tag_keys=_keys(*_VERSION),
        )
        self.rejections = Counter(
            "harmguard_rejections", "Requests refused by a limit or schema.", tag_keys=_keys(*_VERSION, "limit")
        )
        self.dropped_records = Counter(
            "harmguard_traffic_dropped_records",
            "Traffic records dropped because the recorder's buffer was full or a write failed.",
            tag_keys=_keys(*_VERSION),
        )
        self._tags = {"policy": UNKNOWN, "model_version": UNKNOWN}

    def serving(self, version: str) -> None:
        """The model version the model deployment answered with (tags what the ingress counts from now)."""
        if version != self._tags["model_version"]:
            self._tags = {"policy": version.rpartition("/")[0], "model_version": version}

    def observe_request(self, status: int, seconds: float) -> None:
        """Count a request and its latency."""
        self.requests.inc(1, self._tags | {"status": str(status)})
        self.latency.observe(seconds, self._tags)

    def rejected(self, limit: str) -> None:
        """Count a request refused before scoring."""
        self.rejections.inc(1, self._tags | {"limit": limit})

    def dropped(self, n: int) -> None:
        """Count traffic records dropped (the recorder's ``on_drop`` hook; called from its flusher thread too)."""
        self.dropped_records.inc(n, self._tags)
