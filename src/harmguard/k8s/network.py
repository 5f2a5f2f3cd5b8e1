"""NetworkPolicies that close the Ray control plane, and an evaluator that says what they let through.

A pod selected by an ingress NetworkPolicy accepts only what some policy selecting it allows. The harmguard Ray pods
(``harmguard.io/ray-node: "true"``, per role ``app.kubernetes.io/component: serving|training``) get:

| port | who may connect |
|---|---|
| every port (GCS 6379, raylets, object managers, workers) | the pods of the same role's Ray cluster |
| 8265 dashboard and Jobs API | the KubeRay operator; for training also the RayJob's submitter and the launcher step |
| 8000 Serve (serving only) | the ingress controller |
| 8080 metrics | the Prometheus scraper |

Peers are chosen by label (and namespace); a NetworkPolicy cannot tell one RayJob's pods from another's, so
concurrent training clusters trust each other (one identity, and the retrain CronWorkflow runs one at a time). Token
authentication (``authOptions``) is the second lock on every port. ``ingress_allowed`` evaluates a set of policies
the way the Kubernetes NetworkPolicy API defines them, so tests (and reviewers) can ask "can pod A reach port P of
pod B" instead of reading selectors.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harmguard.k8s.common import (
    DASHBOARD_PORT,
    LAUNCHER,
    METRICS_PORT,
    PART_OF,
    RAY_CLIENT_LABEL,
    RAY_NODE_LABEL,
    SERVE_PORT,
    SUBMITTER,
)

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace (Kubernetes >= 1.21)


class Peer(BaseModel):
    """Who may connect: pods by labels (in a namespace, or the policy's own), or addresses by CIDR."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str | None = Field(
        default=None, description="Namespace of the peer pods (None: the policy's own namespace)."
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels the peer pods carry (empty: every pod of ``namespace``)."
    )
    cidrs: tuple[str, ...] = Field(
        default=(), description="Source ranges instead of pods (e.g. a cloud load balancer's health-check ranges)."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Peer:
        if self.cidrs and (self.namespace or self.pod_labels):
            raise ValueError("a peer is either pods (namespace, pod_labels) or cidrs, not both")
        if not self.cidrs and not self.namespace and not self.pod_labels:
            raise ValueError("a peer needs a namespace, pod labels or cidrs (an empty peer would admit every pod)")
        for cidr in self.cidrs:
            ipaddress.ip_network(cidr)  # raises ValueError naming the bad range
        return self

    def rules(self) -> list[dict[str, Any]]:
        """The NetworkPolicy ``from`` entries for this peer."""
        if self.cidrs:
            return [{"ipBlock": {"cidr": c}} for c in self.cidrs]
        entry: dict[str, Any] = {}
        if self.namespace:
            entry["namespaceSelector"] = {"matchLabels": {NAMESPACE_NAME_LABEL: self.namespace}}
        if self.pod_labels:
            entry["podSelector"] = {"matchLabels": dict(self.pod_labels)}
        return [entry]


class NetworkConfig(BaseModel):
    """Where the peers of the Ray clusters live (defaults: KubeRay's Helm chart, ingress-nginx, a Prometheus)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(default="harmguard", description="Namespace of the Ray clusters and their policies.")
    operator: Peer = Field(
        default=Peer(namespace="ray-system", pod_labels={"app.kubernetes.io/name": "kuberay-operator"}),
        description="The KubeRay operator (reads job and Serve status, applies the Serve config, on port 8265).",
    )
    ingress: Peer = Field(
        default=Peer(namespace="ingress-nginx", pod_labels={"app.kubernetes.io/name": "ingress-nginx"}),
        description="What fronts POST /v1/classify (an in-cluster ingress controller, or a load balancer's CIDRs).",
    )
    scraper: Peer = Field(
        default=Peer(namespace="monitoring", pod_labels={"app.kubernetes.io/name": "prometheus"}),
        description="The Prometheus that scrapes the metrics port.",
    )
    launcher: Peer = Field(
        default=Peer(pod_labels={RAY_CLIENT_LABEL: LAUNCHER}),
        description="The pipeline step that creates a training RayJob and streams its driver logs (port 8265).",
    )


def ray_nodes(component: str) -> dict[str, str]:
    """Labels of the head and worker pods of a harmguard Ray cluster of one role (``serving`` or ``training``)."""
    return {**PART_OF, "app.kubernetes.io/component": component, RAY_NODE_LABEL: "true"}


def submitters() -> dict[str, str]:
    """Labels of a training RayJob's submitter pod."""
    return {**PART_OF, "app.kubernetes.io/component": "training", RAY_CLIENT_LABEL: SUBMITTER}


def _policy(
    name: str, namespace: str, component: str, sources: list[dict[str, Any]], port: int | None
) -> dict[str, Any]:
    rule: dict[str, Any] = {"from": sources}
    if port is not None:
        rule["ports"] = [{"protocol": "TCP", "port": port}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**PART_OF, "app.kubernetes.io/component": component},
        },
        "spec": {"podSelector": {"matchLabels": ray_nodes(component)}, "policyTypes": ["Ingress"], "ingress": [rule]},
    }


def network_policies(cfg: NetworkConfig | None = None) -> list[dict[str, Any]]:
    """The ingress NetworkPolicies of the serving and training Ray clusters (one per role and port)."""
    cfg = cfg or NetworkConfig()
    ns = cfg.namespace
    out = []
    for role in ("serving", "training"):
        own = [{"podSelector": {"matchLabels": ray_nodes(role)}}]
        out.append(_policy(f"harmguard-{role}-ray-internal", ns, role, own, None))
        dashboard = cfg.operator.rules()
        if role == "training":
            dashboard += [{"podSelector": {"matchLabels": submitters()}}, *cfg.launcher.rules()]
        out.append(_policy(f"harmguard-{role}-ray-dashboard", ns, role, dashboard, DASHBOARD_PORT))
        if role == "serving":
            out.append(_policy(f"harmguard-{role}-ray-serve", ns, role, cfg.ingress.rules(), SERVE_PORT))
        out.append(_policy(f"harmguard-{role}-ray-metrics", ns, role, cfg.scraper.rules(), METRICS_PORT))
    return out


# --- evaluation ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodRef:
    """A pod as a NetworkPolicy sees it: namespace (and its labels), pod labels, address."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: str | None = None
    namespace_labels: Mapping[str, str] | None = None  # default: just kubernetes.io/metadata.name

    def ns_labels(self) -> Mapping[str, str]:
        """The labels of the pod's namespace."""
        return self.namespace_labels or {NAMESPACE_NAME_LABEL: self.namespace}


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics (``matchLabels`` and ``matchExpressions``); ``{}`` matches everything.

    Raises:
        ValueError: For an operator other than In, NotIn, Exists, DoesNotExist.
    """
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"label selector operator {op!r} is not one of In, NotIn, Exists, DoesNotExist")
    return True


def _peer_matches(peer: Mapping[str, Any], policy_ns: str, source: PodRef) -> bool:
    if "ipBlock" in peer:
        if source.ip is None:
            return False
        ip = ipaddress.ip_address(source.ip)
        block = peer["ipBlock"]
        inside = ip in ipaddress.ip_network(block["cidr"])
        return inside and not any(ip in ipaddress.ip_network(e) for e in block.get("except") or [])
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    if namespaces is None:  # podSelector alone: pods of the policy's own namespace
        return source.namespace == policy_ns and selector_matches(pods, source.labels)
    return selector_matches(namespaces, source.ns_labels()) and selector_matches(pods, source.labels)


def _port_matches(entry: Mapping[str, Any], port: int, protocol: str) -> bool:
    if entry.get("protocol", "TCP") != protocol:
        return False
    if "port" not in entry:
        return True
    if not isinstance(entry["port"], int):
        raise ValueError(f"named port {entry['port']!r}: the evaluator checks numeric ports only")
    return entry["port"] <= port <= entry.get("endPort", entry["port"])


def ingress_allowed(
    policies: Iterable[Mapping[str, Any]], source: PodRef, target: PodRef, port: int, protocol: str = "TCP"
) -> bool:
    """Whether ``source`` may open a connection to ``port`` of ``target`` under these NetworkPolicies.

    A target no ingress policy selects accepts everything; a selected one accepts only what a rule of one of the
    policies selecting it allows (rules add up; there is no deny rule).
    """
    selecting = [
        p
        for p in policies
        if p.get("kind") == "NetworkPolicy"
        and p["metadata"].get("namespace", "default") == target.namespace
        and selector_matches(p["spec"].get("podSelector"), target.labels)
        and "Ingress" in _policy_types(p["spec"])
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers: Sequence[Mapping[str, Any]] = rule.get("from") or []
            ports: Sequence[Mapping[str, Any]] = rule.get("ports") or []
            peer_ok = not peers or any(_peer_matches(p, policy["metadata"]["namespace"], source) for p in peers)
            port_ok = not ports or any(_port_matches(e, port, protocol) for e in ports)
            if peer_ok and port_ok:
                return True
    return False


def _policy_types(spec: Mapping[str, Any]) -> list[str]:
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]
