"""`harmguard submit`: run a compiled pipeline on a Kubeflow Pipelines cluster through ``kfp.Client``.

The pipeline is compiled here, with the configured image (``harmguard.runners.compile``), its parameters are checked
against the compiled signature before anything is sent, and the run is created from the package
(``create_run_from_pipeline_package``). With ``wait`` the run is polled until it reaches a terminal state; a run that
does not succeed is an error. Scheduling is Argo's job (CronWorkflows call this command with ``--wait``).
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from harmguard.registry.runs import new_run_id
from harmguard.runners.compile import compile_pipeline

# KFP v2beta1 run states (kfp_server_api.V2beta1RuntimeState); the first three end a run.
SUCCEEDED = "SUCCEEDED"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}
PIPELINE_CHOICES = ("training", "promotion", "scoring")
BACKENDS = ("inline", "rayjob")
EXPERIMENT = "harmguard"


class SubmitError(RuntimeError):
    """The run could not be created, or (when waiting) did not succeed; the message says why."""


class SubmitInputError(ValueError):
    """Bad input to submit (unknown pipeline or parameter, a value of the wrong type)."""


@dataclass
class SubmitResult:
    """What ``harmguard submit`` reports (``--json`` prints it)."""

    pipeline: str
    host: str
    run_id: str
    run_name: str
    state: str
    image: str
    parameters: dict[str, Any]
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True unless the run failed (a run not waited for is ok once created)."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return asdict(self) | {"ok": self.ok}


def pipeline_name(pipeline: str, backend: str = "inline") -> str:
    """The compiled pipeline (``harmguard.runners.compile.PIPELINES`` key) for ``--pipeline`` and ``--backend``."""
    if pipeline not in PIPELINE_CHOICES:
        raise SubmitInputError(f"--pipeline {pipeline!r}: choose one of {', '.join(PIPELINE_CHOICES)}")
    if backend not in BACKENDS:
        raise SubmitInputError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend != "inline" and pipeline != "training":
        raise SubmitInputError(f"--backend {backend} applies to the training pipeline only, not {pipeline!r}")
    return "training_rayjob" if (pipeline, backend) == ("training", "rayjob") else pipeline


def parse_params(pairs: Iterable[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{k: v}``; a pair without ``=`` or a repeated key is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SubmitInputError(f"--param {pair!r}: expected NAME=VALUE")
        if key in out:
            raise SubmitInputError(f"--param {key} given twice")
        out[key.strip()] = value
    return out


def _coerce(name: str, value: str, kind: str) -> Any:
    try:
        if kind == "NUMBER_INTEGER":
            return int(value)
        if kind == "NUMBER_DOUBLE":
            return float(value)
        if kind == "BOOLEAN":
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            return value.lower() in ("true", "1")
        if kind in ("LIST", "STRUCT"):
            parsed = json.loads(value)
            if not isinstance(parsed, list if kind == "LIST" else dict):
                raise ValueError(f"expected a JSON {'list' if kind == 'LIST' else 'object'}")
            return parsed
    except ValueError as e:
        raise SubmitInputError(f"--param {name}={value!r}: not a valid {kind.lower()} ({e})") from e
    return value


def pipeline_parameters(package: Path) -> dict[str, dict[str, Any]]:
    """The root parameters of a compiled pipeline: ``{name: {"parameterType", "defaultValue"?}}``."""
    with open(package) as f:
        doc = next(yaml.safe_load_all(f))
    return dict(doc.get("root", {}).get("inputDefinitions", {}).get("parameters", {}))


def resolve_arguments(package: Path, params: Mapping[str, str], *, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Typed arguments for the run: ``params`` checked against the compiled signature, plus ``defaults``.

    ``defaults`` fill parameters the pipeline has and the caller did not give (e.g. a fresh ``run_id``).
    """
    declared = pipeline_parameters(package)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise SubmitInputError(f"unknown parameter(s) {unknown}; this pipeline takes {sorted(declared)}")
    args = {k: _coerce(k, v, declared[k].get("parameterType", "STRING")) for k, v in params.items()}
    for key, value in defaults.items():
        if key in declared and key not in args:
            args[key] = value
    missing = sorted(
        k for k, d in declared.items() if k not in args and "defaultValue" not in d and not d.get("isOptional")
    )
    if missing:
        raise SubmitInputError(f"missing required parameter(s) {missing}: pass --param NAME=VALUE")
    return args


def _run_error(run: Any) -> str | None:
    error = getattr(run, "error", None)
    if error is None:
        return None
    return getattr(error, "message", None) or str(error)


def wait_for_run(
    client: Any, run_id: str, *, timeout_s: float, poll_s: float, on_state: Callable[[str], None] | None = None
) -> Any:
    """Poll ``GET /runs/{id}`` until a terminal state (``kfp.Client.wait_for_run_completion`` misses CANCELED)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        run = client.get_run(run_id)
        state = str(run.state or "RUNTIME_STATE_UNSPECIFIED")
        if state != last and on_state:
            on_state(state)
        last = state
        if state in TERMINAL:
            return run
        if time.monotonic() >= deadline:
            raise SubmitError(f"run {run_id} still {state} after {timeout_s:.0f} s (--timeout); it goes on running")
        time.sleep(poll_s)


def submit(
    host: str,
    pipeline: str,
    params: Mapping[str, str] | None = None,
    *,
    backend: str = "inline",
    image: str,
    experiment: str = EXPERIMENT,
    namespace: str | None = None,
    service_account: str | None = None,
    started_by: str = "unknown",
    wait: bool = False,
    timeout_s: float = 24 * 3600,
    poll_s: float = 10.0,
    on_state: Callable[[str], None] | None = None,
    client: Any = None,
) -> SubmitResult:
    """Compile ``pipeline`` with ``image``, create a run on the KFP API at ``host``, optionally wait for it.

    Args:
        host: KFP API endpoint (``http://ml-pipeline.kubeflow:8888`` in-cluster, or a port-forward).
        pipeline: ``training``, ``promotion`` or ``scoring``.
        params: Pipeline parameters as strings, typed by the compiled signature.
        backend: Training backend: ``inline`` (the step trains on a GPU node) or ``rayjob``.
        image: The image every step runs.
        experiment: KFP experiment the run goes into (created when missing).
        namespace: Namespace of a multi-user KFP.
        service_account: Kubernetes ServiceAccount of the run's pods (Workload Identity for GCS).
        started_by: Who starts it (filled into ``started_by`` / ``promoted_by`` when the pipeline has them).
        wait: Wait for a terminal state; a run that does not succeed is returned with ``error`` set.
        timeout_s: How long to wait.
        poll_s: Seconds between polls.
        on_state: Called with each new state while waiting.
        client: A ``kfp.Client`` (built for ``host`` when omitted).

    Raises:
        SubmitInputError: For a bad pipeline, backend or parameter.
        SubmitError: When the KFP API refuses the run or waiting times out.
    """
    name = pipeline_name(pipeline, backend)
    params = dict(params or {})
    with tempfile.TemporaryDirectory(prefix="harmguard-submit-") as tmp:
        package = compile_pipeline(name, Path(tmp) / f"{name}.yaml", image)
        run_id = params.get("run_id") or new_run_id(params.get("policy") or pipeline)
        defaults = {"run_id": run_id, "started_by": started_by, "promoted_by": started_by}
        args = resolve_arguments(package, params, defaults=defaults)
        run_name = f"{pipeline}-{args.get('run_id', run_id)}"
        try:
            if client is None:
                import kfp

                client = kfp.Client(host=host, namespace=namespace or "kubeflow")
            # kfp.Client prints its UI links; stdout is for the result (``--json`` for machines)
            with contextlib.redirect_stdout(sys.stderr):
                created = client.create_run_from_pipeline_package(
                    str(package),
                    arguments=args,
                    run_name=run_name,
                    experiment_name=experiment,
                    namespace=namespace,
                    service_account=service_account,
                )
        except Exception as e:  # kfp_server_api.ApiException, connection errors: all mean "not created"
            raise SubmitError(f"KFP at {host} did not create the run: {_describe(e)}") from e
    kfp_run_id = created.run_id
    result = SubmitResult(name, host, kfp_run_id, run_name, "PENDING", image, args)
    if not wait:
        result.state = str(getattr(created.run_info, "state", None) or "PENDING")
        return result
    try:
        run = wait_for_run(client, kfp_run_id, timeout_s=timeout_s, poll_s=poll_s, on_state=on_state)
    except SubmitError:
        raise
    except Exception as e:
        raise SubmitError(f"lost track of run {kfp_run_id} at {host}: {_describe(e)}") from e
    result.state = str(run.state)
    if result.state != SUCCEEDED:
        result.error = _run_error(run) or f"run ended {result.state}"
    return result


def _describe(e: Exception) -> str:
    status = getattr(e, "status", None)
    body = getattr(e, "body", None)
    if status is not None:
        return f"HTTP {status} {getattr(e, 'reason', '')}: {body}".strip()
    return f"{type(e).__name__}: {e}"
