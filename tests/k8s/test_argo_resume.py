"""`harmguard approve|reject VERSION --workflow NAME` against an Argo Server stand-in (tests/support/argo_standin.py).

The stand-in holds a run of the shipped retraining CronWorkflow suspended at ``await-approval`` (its spec rendered by
``harmguard.k8s.argo``, validated against the pinned Workflow CRD), checks the bearer token of every request and
validates every body against Hera's pydantic models. The registry and the approval rules are real: the audit event
is recorded under the caller's principal first, then the node's outputs are set and it is resumed.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harmguard.cli import app
from harmguard.exit_codes import ExitCode
from harmguard.k8s.argo_resume import ArgoSetupError, argo_server
from harmguard.k8s.schemas import validate_manifest
from harmguard.registry import read_audit
from harmguard.registry.models import publish_model
from harmguard.registry.principal import current_principal
from harmguard.settings import Settings
from harmguard.storage import LocalStore
from tests.promotion.helpers import register
from tests.support.argo_standin import ArgoStandIn, retrain_workflow

NS = "harmguard"
WF = "harmguard-retrain-1764032400"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.argo-test-token"


@pytest.fixture
def settings(tmp_path: Path, mlflow_uri: str) -> Settings:
    return Settings(home=str(tmp_path / "home"), cache=tmp_path / "cache", mlflow_tracking_uri=mlflow_uri)


@pytest.fixture
def strict(schema_settings):
    return lambda obj: validate_manifest(obj, settings=schema_settings)


def registered(store: LocalStore, settings: Settings, tmp_path: Path, principal: str = "test:trainer") -> str:
    model = tmp_path / f"model-{uuid.uuid4().hex[:6]}"
    model.mkdir()
    (model / "weights.json").write_text(json.dumps({"w": uuid.uuid4().hex}))
    digest = publish_model(store, model)
    return register(store, settings, f"spam-{uuid.uuid4().hex[:8]}", digest, principal=principal).version


def cli(args: list[str], argo: ArgoStandIn | None, hg_env: dict[str, str], **env: str) -> Any:
    base = {"ARGO_SERVER": argo.address, "ARGO_SECURE": "false", "ARGO_TOKEN": f"Bearer {TOKEN}"} if argo else {}
    return CliRunner().invoke(app, args, env={**base, **env})


def events(store: LocalStore, version: str) -> list[str]:
    """The decisions recorded on ``version`` (its registration aside)."""
    audit = read_audit(store, version.split("/")[0])
    return [e["event"] for e in audit if e.get("version") == version and e["event"] in ("approve", "reject")]


def test_approve_records_then_sets_the_outputs_and_resumes_the_node(store, settings, tmp_path, hg_env, strict):
    version = registered(store, settings, tmp_path)
    with ArgoStandIn(TOKEN, validate=strict) as argo:
        argo.add(retrain_workflow(WF, version))
        out = cli(["approve", version, "--reason", "report reviewed", "--by", "Ada", "--workflow", WF], argo, hg_env)
    assert out.exit_code == 0, out.output
    assert events(store, version) == ["approve"]
    [approval] = [e for e in read_audit(store, version.split("/")[0]) if e["event"] == "approve"]
    assert approval["principal"] == current_principal().id  # the caller's login, not the --by text
    assert argo.actions() == [f"GET {WF}", "PUT set", "PUT resume"]
    assert {c.headers["authorization"] for c in argo.calls} == {f"Bearer {TOKEN}"}
    node = argo.node(NS, WF, "await-approval")
    put_set, put_resume = argo.calls[1].body, argo.calls[2].body
    assert put_set["nodeFieldSelector"] == put_resume["nodeFieldSelector"] == f"id={node['id']}"
    assert json.loads(put_set["outputParameters"]) == {"approve": "YES", "approver": "Ada", "reason": "report reviewed"}
    assert node["phase"] == "Succeeded"
    assert {p["name"]: p["value"] for p in node["outputs"]["parameters"]} == {
        "approve": "YES",
        "approver": "Ada",
        "reason": "report reviewed",
    }
    assert f"resumed workflow {NS}/{WF}" in out.stderr


def test_reject_resumes_with_no(store, settings, tmp_path, hg_env, strict):
    version = registered(store, settings, tmp_path)
    with ArgoStandIn(TOKEN, validate=strict) as argo:
        argo.add(retrain_workflow(WF, version))
        out = cli(["reject", version, "--reason", "FPR on dialect slice", "--workflow", WF], argo, hg_env)
    assert out.exit_code == 0, out.output
    assert events(store, version) == ["reject"]
    outputs = {p["name"]: p["value"] for p in argo.node(NS, WF, "await-approval")["outputs"]["parameters"]}
    assert outputs["approve"] == "NO" and outputs["reason"] == "FPR on dialect slice"


@pytest.mark.parametrize(
    ("workflow", "args", "code", "message"),
    [
        ("other", [], ExitCode.REJECTED, "awaits a decision on spam-"),  # reviews another version
        ("decided", [], ExitCode.REJECTED, "is not waiting for a decision: its await-approval is Succeeded"),
        ("missing", [], ExitCode.REJECTED, f"workflow {NS}/{WF}-x does not exist"),
        ("ok", ["--token", "Bearer stolen"], ExitCode.USAGE, "refused the credentials (HTTP 401)"),
        ("ok", ["--no-server"], ExitCode.USAGE, "ARGO_SERVER is not set"),
        ("ok", ["--bad-name"], ExitCode.USAGE, "is not a workflow name"),
    ],
)
def test_nothing_is_recorded_or_resumed_unless_the_workflow_awaits_this_version(
    store, settings, tmp_path, hg_env, strict, workflow, args, code, message
):
    version = registered(store, settings, tmp_path)
    other = registered(store, settings, tmp_path)
    reviewed = {"other": other}.get(workflow, version)
    name = f"{WF}-x" if workflow == "missing" else WF
    with ArgoStandIn(TOKEN, validate=strict) as argo:
        argo.add(retrain_workflow(WF, reviewed, phase="Succeeded" if workflow == "decided" else "Running"))
        env = {}
        if "--token" in args:
            env["ARGO_TOKEN"] = args[1]
        target = "Bad_Name" if "--bad-name" in args else name
        out = cli(
            ["approve", version, "--reason", "ok", "--workflow", target], None if "--no-server" in args else argo,
            hg_env, **env,
        )  # fmt: skip
    assert out.exit_code == code, out.output
    assert message in " ".join(out.stderr.split())
    assert events(store, version) == []  # no audit event
    assert not [c for c in argo.calls if c.method == "PUT"]  # nothing set, nothing resumed


def test_self_approval_is_refused_before_the_workflow_moves(store, settings, tmp_path, hg_env, strict):
    version = registered(store, settings, tmp_path, principal=current_principal().id)  # this login trained it
    with ArgoStandIn(TOKEN, validate=strict) as argo:
        argo.add(retrain_workflow(WF, version))
        out = cli(["approve", version, "--reason", "lgtm", "--by", "someone-else", "--workflow", WF], argo, hg_env)
    assert out.exit_code == ExitCode.REJECTED and "cannot approve it" in " ".join(out.stderr.split())
    assert events(store, version) == []
    assert argo.actions() == [f"GET {WF}"]
    assert argo.node(NS, WF, "await-approval")["phase"] == "Running"


def test_a_failed_resume_says_the_decision_is_recorded(store, settings, tmp_path, hg_env, strict):
    version = registered(store, settings, tmp_path)
    with ArgoStandIn(TOKEN, validate=strict, fail={"resume": 503}) as argo:
        argo.add(retrain_workflow(WF, version))
        out = cli(["approve", version, "--reason", "ok", "--workflow", WF], argo, hg_env)
    assert out.exit_code == ExitCode.UNEXPECTED  # an outage: worth retrying the resume
    text = " ".join(out.stderr.split())
    assert "the decision is recorded, but workflow" in text and "argo resume" in text
    assert events(store, version) == ["approve"]


@pytest.mark.parametrize(
    ("env", "host", "namespace", "token", "verify"),
    [
        ({"ARGO_SERVER": "argo.example.com:2746"}, "https://argo.example.com:2746/", "harmguard", None, True),
        (
            {"ARGO_SERVER": "localhost:2746", "ARGO_SECURE": "false", "ARGO_NAMESPACE": "ml", "ARGO_TOKEN": "Bearer t"},
            "http://localhost:2746/",
            "ml",
            "Bearer t",
            True,
        ),
        (
            {"ARGO_SERVER": "gw:443", "ARGO_BASE_HREF": "/argo/", "ARGO_INSECURE_SKIP_VERIFY": "true"},
            "https://gw:443/argo/",
            "harmguard",
            None,
            False,
        ),
    ],
)
def test_argo_server_reads_the_environment_as_the_argo_cli(env, host, namespace, token, verify):
    server = argo_server(env)
    assert (server.host, server.namespace, server.token, server.verify_ssl) == (host, namespace, token, verify)
    assert server.service().token == (token or None)


@pytest.mark.parametrize(
    "env", [{}, {"ARGO_SERVER": "host:port"}, {"ARGO_SERVER": "h:1/x"}, {"ARGO_SERVER": "h:1", "ARGO_SECURE": "yes"}]
)
def test_a_bad_argo_environment_is_a_usage_error(env):
    with pytest.raises(ArgoSetupError):
        argo_server(env)


def test_hera_prefixes_a_bare_token():
    assert argo_server({"ARGO_SERVER": "h:1", "ARGO_TOKEN": "abc"}).service().token == "Bearer abc"
