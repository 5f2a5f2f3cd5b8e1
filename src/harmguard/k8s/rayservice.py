"""Roll a champion out on a cluster: patch the classifier RayService's ``user_config``, wait until KubeRay runs it.

Promotion's deploy step (``harmguard.steps.promotion``) calls :meth:`RayServiceRollout.apply` after ``champion`` has
moved. Through the Kubernetes API (the ``kubernetes`` client's ``CustomObjectsApi``) it:

1. reads the RayService (``ray.io/v1``, named ``serving.config.RAYSERVICE_NAME``, in ``HARMGUARD_NAMESPACE`` or else
   ``ClusterConfig.serving_namespace``);
2. replaces ``deployments[name=Classifier].user_config`` of the ``harmguard`` application inside ``spec.serveConfigV2``
   (a YAML string) and nothing else: every other field of the Serve config and of the object stays as it is live
   (replicas someone tuned, a new image);
3. sends a JSON merge patch of ``spec.serveConfigV2`` carrying the ``metadata.resourceVersion`` it read, so a write in
   between (the operator's status, another promotion) is a 409 Conflict rather than a lost update; on a conflict it
   reads the object again and retries with the new resourceVersion;
4. polls until KubeRay reports the patched generation running: ``status.observedGeneration`` at least the new
   ``metadata.generation``, the application ``RUNNING`` (and the model deployment ``HEALTHY``) in
   ``status.activeServiceStatus``, no zero-downtime upgrade under way (``pendingServiceStatus``, the
   ``UpgradeInProgress`` condition), the ``Ready`` condition true and ``serviceStatus`` ``Running`` where KubeRay sets
   them (field names from KubeRay v1.7's ``rayservice_types.go`` and the pinned CRD). ``DEPLOY_FAILED`` ends the wait
   at once, otherwise the deadline does.

Anything short of that raises :class:`RollOutError`; the deploy step reports it as "moved, not deployed" (exit 3)
and leaves the champion pointer where it is. Serve applies a changed ``user_config`` with ``reconfigure`` on the
running replicas. A replica that refuses the new model (say, a digest mismatch) keeps serving the old one while Serve
still reports RUNNING: its ``/readyz`` names the refused version (the deploy step cannot reach port 8000, which the
NetworkPolicy opens to the ingress only).

One RayService serves one policy: a version of another policy is refused, unless the RayService still holds the
placeholder model of the shipped manifest (digest ``PLACEHOLDER_DIGEST``: nothing was ever deployed there).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harmguard.k8s.cluster import CLUSTER, ClusterConfig
from harmguard.k8s.common import PART_OF
from harmguard.k8s.rayjob import custom_objects_api
from harmguard.registry.principal import SA_TOKEN
from harmguard.serving.config import MODEL_DEPLOYMENT, RAYSERVICE_NAME, SERVE_APP
from harmguard.settings import Settings

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayservices"
# The model of the shipped manifest before any promotion (manifests.EXAMPLE_DIGEST): no policy is served yet.
PLACEHOLDER_DIGEST = "0" * 64
DEPLOY_ROLE = "harmguard-deploy"
RUNNING, WAITING, FAILED = "running", "waiting", "failed"
REQUEST_TIMEOUT_S = 30.0
MESSAGE_CHARS = 300  # of KubeRay's and Serve's messages quoted in an error (tracebacks can be long)


class RollOutError(RuntimeError):
    """The RayService did not take the new ``user_config``, or KubeRay did not report it running in time."""


def in_cluster(environ: Mapping[str, str] | None = None, token: Path = SA_TOKEN) -> bool:
    """True inside a Kubernetes pod with an API token (what the client's in-cluster config needs)."""
    env = os.environ if environ is None else environ
    return bool(env.get("KUBERNETES_SERVICE_HOST")) and token.is_file()


def _serve_config(text: Any, ref: str) -> dict[str, Any]:
    try:
        config = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError as e:
        raise RollOutError(f"{ref}: spec.serveConfigV2 is not YAML ({e})") from e
    if not isinstance(config, dict) or not isinstance(config.get("applications"), list):
        raise RollOutError(f"{ref}: spec.serveConfigV2 has no applications list: not a Serve config")
    return config


def _model_deployment(config: dict[str, Any], ref: str, *, create: bool) -> dict[str, Any] | None:
    app = next((a for a in config["applications"] if isinstance(a, dict) and a.get("name") == SERVE_APP), None)
    if app is None:
        names = [a.get("name") for a in config["applications"] if isinstance(a, dict)]
        raise RollOutError(
            f"{ref} has no Serve application {SERVE_APP!r} (it has {names}): not the harmguard classifier; "
            "apply manifests/kuberay/ray-service.classifier.yaml"
        )
    deployments = app.setdefault("deployments", [])
    found = next((d for d in deployments if isinstance(d, dict) and d.get("name") == MODEL_DEPLOYMENT), None)
    if found is None and create:
        found = {"name": MODEL_DEPLOYMENT}
        deployments.append(found)
    return found


def served_user_config(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The model deployment's ``user_config`` in a RayService's ``spec.serveConfigV2`` (None when it has none).

    Raises:
        RollOutError: When the Serve config is not YAML or has no ``harmguard`` application.
    """
    ref = _ref(obj)
    config = _serve_config((obj.get("spec") or {}).get("serveConfigV2"), ref)
    deployment = _model_deployment(config, ref, create=False)
    user_config = (deployment or {}).get("user_config")
    return user_config if isinstance(user_config, dict) else None


def swap_user_config(serve_config_v2: str, user_config: dict[str, Any], ref: str = "RayService") -> str:
    """``serve_config_v2`` with the model deployment's ``user_config`` replaced; every other field kept.

    Raises:
        RollOutError: When the text is not a Serve config with the ``harmguard`` application.
    """
    config = _serve_config(serve_config_v2, ref)
    deployment = _model_deployment(config, ref, create=True)
    assert deployment is not None  # create=True
    deployment["user_config"] = user_config
    return yaml.safe_dump(config, sort_keys=False)


def rollout_state(obj: dict[str, Any], generation: int) -> tuple[str, str]:
    """``(RUNNING | WAITING | FAILED, one line saying why)`` of a RayService for its spec ``generation``."""
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    if not isinstance(observed, int) or observed < generation:
        return WAITING, f"KubeRay has not reconciled generation {generation} yet (observed: {observed})"
    active = status.get("activeServiceStatus") or {}
    app = (active.get("applicationStatuses") or {}).get(SERVE_APP) or {}
    app_status = app.get("status") or "no status"
    model = ((app.get("serveDeploymentStatuses") or {}).get(MODEL_DEPLOYMENT) or {}).get("status")
    line = f"application {SERVE_APP} {app_status}, {MODEL_DEPLOYMENT} {model or 'no status'}"
    if app.get("message"):
        line += f": {str(app['message'])[:MESSAGE_CHARS]}"
    if app_status == "DEPLOY_FAILED":
        return FAILED, line
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    pending = (status.get("pendingServiceStatus") or {}).get("rayClusterName")
    if pending or (conditions.get("UpgradeInProgress") or {}).get("status") == "True":
        return WAITING, f"a new Ray cluster is being brought up ({pending or 'UpgradeInProgress'}); {line}"
    if app_status != "RUNNING" or (model is not None and model != "HEALTHY"):
        return WAITING, line
    ready = conditions.get("Ready")
    if ready is not None and ready.get("status") != "True":
        return WAITING, f"Ready is {ready.get('status')} ({ready.get('reason')}); {line}"
    service = status.get("serviceStatus")
    if service and service != "Running":
        return WAITING, f"serviceStatus {service}; {line}"
    return RUNNING, line


def _ref(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"RayService {meta.get('namespace', '?')}/{meta.get('name', '?')}"


def _api_message(e: Any) -> str:
    try:
        message = json.loads(e.body).get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return str(message or e.reason)[:MESSAGE_CHARS]


@dataclass
class RayServiceRollout:
    """Patch one RayService's model ``user_config`` and follow KubeRay until it runs (see the module docstring).

    Args:
        api: A ``kubernetes.client.CustomObjectsApi``.
        namespace: The RayService's namespace.
        name: The RayService.
        deadline_s: How long :meth:`apply` waits for KubeRay to report the new config running.
        poll_s: Seconds between status reads.
        max_conflicts: 409 Conflicts retried (each with the resourceVersion read again) before giving up.
        echo: Where progress lines go (the step's log).
    """

    api: Any
    namespace: str
    name: str = RAYSERVICE_NAME
    deadline_s: float = 600.0
    poll_s: float = 5.0
    max_conflicts: int = 5
    echo: Callable[[str], None] = field(default=lambda line: print(line, flush=True))

    @property
    def ref(self) -> str:
        """``RayService <namespace>/<name>``."""
        return f"RayService {self.namespace}/{self.name}"

    def _problem(self, e: Exception, action: str) -> str:
        status = getattr(e, "status", None)
        if status == 404:
            return (
                f"{self.ref} does not exist: apply manifests/kuberay/ray-service.classifier.yaml there "
                "(or point HARMGUARD_NAMESPACE at the namespace that has it)"
            )
        if status in (401, 403):
            return (
                f"{action} {self.ref} was refused (HTTP {status}: {_api_message(e)}): the step's ServiceAccount "
                f"needs get and patch on it (Role {DEPLOY_ROLE}, manifests/kuberay/rbac.deploy.yaml)"
            )
        if status is not None:
            return f"{action} {self.ref} failed: HTTP {status} {_api_message(e)}"
        return f"{action} {self.ref} failed: cannot reach the Kubernetes API ({type(e).__name__}: {e})"

    def read(self) -> dict[str, Any]:
        """The RayService as the API server has it.

        Raises:
            RollOutError: When it does not exist, may not be read, or the API cannot be reached.
        """
        try:
            obj = self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, _request_timeout=REQUEST_TIMEOUT_S
            )
        except Exception as e:  # ApiException (HTTP), urllib3 errors (network): all mean "not read"
            raise RollOutError(self._problem(e, "reading")) from e
        return dict(obj)

    def apply(self, user_config: dict[str, Any]) -> dict[str, Any]:
        """Serve ``user_config`` (a ``UserConfig.dump()``) and wait until KubeRay reports it running.

        A RayService that already holds exactly this ``user_config`` (a retried step) is not patched again; the
        wait is the same.

        Returns:
            ``{"rayservice", "generation", "patched", "conflicts", "state"}``.

        Raises:
            RollOutError: Missing or unreadable RayService, another policy on it, refused patch, more than
                ``max_conflicts`` conflicts, ``DEPLOY_FAILED``, or no RUNNING report before the deadline.
        """
        conflicts = 0
        while True:
            obj = self.read()
            live = served_user_config(obj)
            self._check_policy(live, user_config)
            meta = obj.get("metadata") or {}
            if live == user_config:
                generation, patched = int(meta.get("generation") or 0), False
                self.echo(f"{self.ref} holds {user_config.get('version')} already (generation {generation})")
                break
            body = {
                "metadata": {"resourceVersion": meta.get("resourceVersion")},  # the precondition: no lost update
                "spec": {"serveConfigV2": swap_user_config(obj["spec"]["serveConfigV2"], user_config, self.ref)},
            }
            try:
                out = self.api.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, self.name, body, _request_timeout=REQUEST_TIMEOUT_S
                )
            except Exception as e:
                if getattr(e, "status", None) == 409 and conflicts < self.max_conflicts:
                    conflicts += 1
                    self.echo(f"{self.ref} changed since it was read (409 Conflict): reading it again")
                    continue
                raise RollOutError(self._problem(e, "patching")) from e
            generation, patched = int(out["metadata"]["generation"]), True
            self.echo(f"{self.ref} patched: {user_config.get('version')} (generation {generation})")
            break
        state = self.wait(generation)
        return {
            "rayservice": self.ref,
            "generation": generation,
            "patched": patched,
            "conflicts": conflicts,
            "state": state,
        }

    def _check_policy(self, live: dict[str, Any] | None, new: dict[str, Any]) -> None:
        if not live or live.get("policy") == new.get("policy") or live.get("model_digest") == PLACEHOLDER_DIGEST:
            return
        raise RollOutError(
            f"{self.ref} serves policy {live.get('policy')!r} ({live.get('version')}), not {new.get('policy')!r}: "
            "one RayService serves one policy; deploy this policy's own RayService"
        )

    def wait(self, generation: int) -> str:
        """Poll until KubeRay reports ``generation`` running; returns the last status line.

        Raises:
            RollOutError: On ``DEPLOY_FAILED`` or when the deadline passes first.
        """
        deadline = time.monotonic() + self.deadline_s
        last = None
        while True:
            state, line = rollout_state(self.read(), generation)
            if line != last:
                self.echo(f"{self.ref}: {line}")
                last = line
            if state == RUNNING:
                return line
            if state == FAILED:
                raise RollOutError(f"{self.ref} failed to deploy generation {generation}: {line}")
            if time.monotonic() >= deadline:
                raise RollOutError(
                    f"{self.ref} did not report generation {generation} running within {self.deadline_s:g} s: {line}"
                )
            time.sleep(self.poll_s)

    def deployed(self) -> dict[str, Any]:
        """What the RayService is configured to serve, and whether KubeRay reports that configuration running.

        Returns:
            ``{"where", "policy", "version", "model_digest", "thresholds_version", "running", "state"}``.

        Raises:
            RollOutError: When the RayService cannot be read or holds no harmguard Serve config.
        """
        obj = self.read()
        config = served_user_config(obj) or {}
        state, line = rollout_state(obj, int((obj.get("metadata") or {}).get("generation") or 0))
        keys = ("policy", "version", "model_digest", "thresholds_version")
        return {"where": self.ref, **{k: config.get(k) for k in keys}, "running": state == RUNNING, "state": line}


def rayservice_rollout(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    config: ClusterConfig = CLUSTER,
    echo: Callable[[str], None] | None = None,
) -> RayServiceRollout | None:
    """The rollout to the classifier RayService, when this process has a Kubernetes API; None otherwise.

    A Kubernetes API is ``settings.kube_api`` (``HARMGUARD_KUBE_API``: ``kubectl proxy``, a stand-in) or, inside a
    pod, the in-cluster config. Elsewhere (a workstation, ``harmguard promote`` on kfp.local) there is no cluster to
    deploy to and the deploy step only pushes to a local server.
    """
    if not settings.kube_api and not in_cluster(environ):
        return None
    rollout = RayServiceRollout(
        custom_objects_api(settings.kube_api),
        settings.namespace or config.serving_namespace,
        deadline_s=float(config.deploy_deadline_s),
    )
    if echo is not None:
        rollout.echo = echo
    return rollout


def deploy_rbac(config: ClusterConfig = CLUSTER) -> list[dict[str, Any]]:
    """Role and RoleBinding that let the KFP steps' ServiceAccount read and patch the classifier RayService only."""
    labels = {**PART_OF, "app.kubernetes.io/component": "promotion"}
    meta = {"name": DEPLOY_ROLE, "namespace": config.serving_namespace, "labels": labels}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "resources": [PLURAL],
                    "resourceNames": [RAYSERVICE_NAME],
                    "verbs": ["get", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": DEPLOY_ROLE},
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": config.pipelines_service_account,
                    "namespace": config.pipelines_namespace,
                }
            ],
        },
    ]
