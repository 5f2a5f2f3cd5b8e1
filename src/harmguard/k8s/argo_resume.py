"""Resume a retraining workflow waiting at ``await-approval`` with a decision, through the Argo Server (Hera).

The weekly CronWorkflow (``harmguard.k8s.argo``) suspends a blessed run at the step ``await-approval`` (template
``approval``: a suspend node whose outputs ``approve``, ``approver`` and ``reason`` are supplied when it resumes).
``harmguard approve VERSION --workflow NAME`` (and ``reject``) replace the three ``argo`` commands typed by hand:

1. :func:`find_approval` reads the workflow (``GET /api/v1/workflows/{namespace}/{name}``) and checks, before anything
   is recorded, that its ``await-approval`` node is suspended now and that the version it reviews (the input
   ``version`` of the enclosing ``review`` steps node) is VERSION: a decision never resumes a run waiting on another
   version;
2. the CLI records the audit event (``harmguard.promotion.approval``: rules of the registered policy, the
   authenticated principal, no self-approval);
3. :func:`resume_with_decision` sets the node's outputs (``PUT .../set`` with a ``WorkflowSetRequest``, the outputs
   as JSON in ``outputParameters``, the node selected by its id) and resumes it (``PUT .../resume``,
   ``WorkflowResumeRequest``). The workflow then records the decision from its own pod (``harmguard approve|reject
   --by APPROVER``) and on YES runs the promotion pipeline, whose first step verifies the approval.

Server, token and namespace come from the environment as the ``argo`` CLI reads them: ``ARGO_SERVER`` (``host:port``,
without a scheme), ``ARGO_SECURE`` (default true: https), ``ARGO_INSECURE_SKIP_VERIFY``, ``ARGO_BASE_HREF``,
``ARGO_TOKEN`` (``Bearer ...``; Hera prefixes a bare token) and ``ARGO_NAMESPACE`` (default: the CronWorkflow's).

The client is Hera's ``WorkflowsService``: Hera is Argo's recommended Python SDK (it writes the CronWorkflows too);
the generated ``argo-workflows`` client is deprecated.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from harmguard.exit_codes import ExitCode
from harmguard.k8s.argo import ArgoConfig

APPROVAL_STEP = "await-approval"  # the Step's name in build_retrain_cron_workflow (its nodes' displayName)
REVIEWED_INPUT = "version"  # input of the enclosing `review` steps template: the version under review
_WORKFLOW_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # a DNS-1123 subdomain, as Kubernetes names it
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}  # Go's strconv.ParseBool, which the argo CLI uses
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}
REQUEST_TIMEOUT_S = 30.0

T = TypeVar("T")


class ArgoResumeError(RuntimeError):
    """The workflow could not be read, checked, set or resumed; ``exit_code`` says which kind of failure."""

    exit_code = ExitCode.UNEXPECTED


class ArgoSetupError(ArgoResumeError):
    """``ARGO_*`` missing or malformed, a bad workflow name, or a token the server refuses (a usage error)."""

    exit_code = ExitCode.USAGE


class NotAwaitingApproval(ArgoResumeError):
    """The workflow does not exist, is not waiting at ``await-approval``, or reviews another version (refused)."""

    exit_code = ExitCode.REJECTED


class ArgoUnavailable(ArgoResumeError):
    """The Argo Server could not be reached or failed (worth retrying)."""

    exit_code = ExitCode.UNEXPECTED


class _TimeoutSession(requests.Session):
    """A session whose requests time out (Hera passes none: a dead server would hang the CLI)."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
        return super().request(*args, **kwargs)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip()
    if not value:
        return default
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ArgoSetupError(f"{name}={value!r} is not a boolean (true or false)")


@dataclass(frozen=True)
class ArgoServer:
    """Where the Argo Server is and how to authenticate (from the environment, :func:`argo_server`)."""

    host: str  # scheme://host:port/[base-href/]
    namespace: str
    token: str | None
    verify_ssl: bool

    def service(self) -> Any:
        """A Hera ``WorkflowsService`` for this server."""
        from hera.workflows import WorkflowsService  # hera: its import pulls the whole Argo model tree

        return WorkflowsService(
            host=self.host,
            token=self.token,
            namespace=self.namespace,
            verify_ssl=self.verify_ssl,
            session=_TimeoutSession(),
        )


def argo_server(environ: Mapping[str, str] | None = None, *, default_namespace: str | None = None) -> ArgoServer:
    """The Argo Server the ``argo`` CLI would talk to (``ARGO_SERVER``, ``ARGO_SECURE``, ``ARGO_TOKEN``, ...).

    Raises:
        ArgoSetupError: Without ``ARGO_SERVER``, or with a value that is not ``host:port``.
    """
    env = os.environ if environ is None else environ
    server = env.get("ARGO_SERVER", "").strip()
    if not server:
        raise ArgoSetupError(
            "ARGO_SERVER is not set: give the Argo Server as host:port, as for the argo CLI "
            "(e.g. ARGO_SERVER=argo-server.argo:2746, with ARGO_TOKEN='Bearer ...')"
        )
    scheme = "https" if _flag(env, "ARGO_SECURE", True) else "http"
    if "://" in server:  # the argo CLI wants host:port; a URL's scheme is taken as meant
        scheme, _, server = server.partition("://")
    parts = urlsplit(f"//{server}")
    if scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
        raise ArgoSetupError(f"ARGO_SERVER={env['ARGO_SERVER']!r} is not host:port (e.g. argo-server.argo:2746)")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as e:
        raise ArgoSetupError(f"ARGO_SERVER={env['ARGO_SERVER']!r}: the port is not a number") from e
    base = env.get("ARGO_BASE_HREF", "").strip().strip("/")
    return ArgoServer(
        host=f"{scheme}://{server.rstrip('/')}/" + (f"{base}/" if base else ""),
        namespace=env.get("ARGO_NAMESPACE", "").strip() or default_namespace or ArgoConfig().namespace,
        token=env.get("ARGO_TOKEN", "").strip() or None,
        verify_ssl=not _flag(env, "ARGO_INSECURE_SKIP_VERIFY", False),
    )


@dataclass(frozen=True)
class PendingApproval:
    """A workflow found suspended at ``await-approval``, reviewing ``version``."""

    server: ArgoServer
    workflow: str
    node_id: str
    version: str

    @property
    def ref(self) -> str:
        """``<namespace>/<workflow>``."""
        return f"{self.server.namespace}/{self.workflow}"


def _call(server: ArgoServer, what: str, call: Callable[[], T], not_found: str | None = None) -> T:
    """Run one Hera call, turning its failures into the three kinds above."""
    from hera.exceptions import BadRequest, Forbidden, HeraException, NotFound, Unauthorized

    try:
        return call()
    except (Unauthorized, Forbidden) as e:
        raise ArgoSetupError(
            f"{what}: the Argo Server at {server.host} refused the credentials (HTTP {e.status_code}); set ARGO_TOKEN "
            f"('Bearer ...') to a token that may get, set and resume workflows in {server.namespace}"
        ) from e
    except NotFound as e:
        raise NotAwaitingApproval(not_found or f"{what}: {e}") from e
    except BadRequest as e:
        raise NotAwaitingApproval(f"{what}: the Argo Server refused it: {e}") from e
    except HeraException as e:
        raise ArgoUnavailable(f"{what}: the Argo Server failed: {e}") from e
    except (requests.RequestException, KeyError, ValueError) as e:  # no answer, or not the answer Hera expects
        raise ArgoUnavailable(f"{what}: no usable answer from the Argo Server at {server.host} ({e})") from e


def find_approval(server: ArgoServer, workflow: str, version: str) -> PendingApproval:
    """The workflow's ``await-approval`` node, when it is suspended now and reviews ``version``.

    Raises:
        ArgoSetupError: A workflow name that is not a Kubernetes name; credentials refused.
        NotAwaitingApproval: No such workflow, no suspended approval, or one that reviews another version.
        ArgoUnavailable: The server cannot be reached.
    """
    if len(workflow) > 253 or not _WORKFLOW_NAME.fullmatch(workflow):
        raise ArgoSetupError(f"--workflow {workflow!r} is not a workflow name (lowercase letters, digits, '-', '.')")
    ref = f"{server.namespace}/{workflow}"
    with server.service() as service:
        wf = _call(
            server,
            f"reading workflow {ref}",
            lambda: service.get_workflow(workflow, namespace=server.namespace),
            not_found=f"workflow {ref} does not exist (check --workflow and ARGO_NAMESPACE)",
        )
    nodes = dict((wf.status.nodes if wf.status else None) or {})
    steps = [n for n in nodes.values() if n.display_name == APPROVAL_STEP and n.type == "Suspend"]
    phase = wf.status.phase if wf.status else None
    if not steps:
        raise NotAwaitingApproval(
            f"workflow {ref} has no {APPROVAL_STEP} step (phase {phase}): it has not reached the approval, or it is "
            "not a harmguard retraining run"
        )
    waiting = [n for n in steps if n.phase == "Running"]
    if len(waiting) != 1:
        states = ", ".join(sorted(str(n.phase) for n in steps))
        raise NotAwaitingApproval(f"workflow {ref} is not waiting for a decision: its {APPROVAL_STEP} is {states}")
    node = waiting[0]
    review = nodes.get(node.boundary_id or "")
    params = (review.inputs.parameters if review and review.inputs else None) or []
    reviewed = next((str(p.value) for p in params if p.name == REVIEWED_INPUT and p.value is not None), None)
    if reviewed != version:
        raise NotAwaitingApproval(
            f"workflow {ref} awaits a decision on {reviewed or 'an unknown version'}, not {version}: nothing was "
            "recorded or resumed"
        )
    return PendingApproval(server, workflow, str(node.id), version)


def resume_with_decision(pending: PendingApproval, *, approve: bool, approver: str, reason: str) -> dict[str, Any]:
    """Set the ``approve``, ``approver`` and ``reason`` outputs of the suspended node, then resume it.

    Returns:
        ``{"workflow", "node", "approve", "approver"}``.

    Raises:
        ArgoResumeError: When the server refuses or fails either call (after a failed resume the outputs may be set
            already: ``argo resume`` finishes it).
    """
    from hera.workflows.models import WorkflowResumeRequest, WorkflowSetRequest

    server, name = pending.server, pending.workflow
    selector = f"id={pending.node_id}"  # exactly the node that was checked (node ids hold no ',' '=' or '\\')
    outputs = {"approve": "YES" if approve else "NO", "approver": approver, "reason": reason}
    with server.service() as service:
        _call(
            server,
            f"setting the decision on {pending.ref}",
            lambda: service.set_workflow(
                name,
                WorkflowSetRequest(
                    name=name,
                    namespace=server.namespace,
                    node_field_selector=selector,
                    output_parameters=json.dumps(outputs),  # what `argo node set --output-parameter` sends
                ),
                namespace=server.namespace,
            ),
        )
        _call(
            server,
            f"resuming {pending.ref}",
            lambda: service.resume_workflow(
                name,
                WorkflowResumeRequest(name=name, namespace=server.namespace, node_field_selector=selector),
                namespace=server.namespace,
            ),
        )
    return {"workflow": pending.ref, "node": pending.node_id, "approve": outputs["approve"], "approver": approver}
