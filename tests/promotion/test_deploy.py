"""Promotion's deploy step on a cluster: the RayService rollout after the champion moved, and what `status` shows.

The Kubernetes API is the stand-in (tests/support/k8s_standin.py) holding the shipped RayService; every object it
stores or serves is validated against the pinned KubeRay CRD. The registry, the model and the promotion checks are
real.
"""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from harmguard.cli import app
from harmguard.k8s.rayjob import custom_objects_api
from harmguard.k8s.rayservice import RayServiceRollout
from harmguard.k8s.schemas import load_manifests, validate_manifest
from harmguard.promotion.approval import approve_version
from harmguard.promotion.deploy import NotDeployed, deployed_versions, model_user_config, render_rayservice_patch
from harmguard.promotion.promote import promote_version
from harmguard.registry import read_alias, read_audit
from harmguard.registry.models import publish_model
from harmguard.registry.runs import read_record
from harmguard.serving.config import ENDPOINT_KEY, RAYSERVICE_NAME, user_config_for
from harmguard.settings import Settings
from harmguard.steps.promotion import deploy_step
from harmguard.storage import LocalStore
from tests.conftest import mirror_dir
from tests.promotion.helpers import GOLDEN, golden_of, register, train_spam_model
from tests.support.k8s_standin import K8sStandIn, kuberay

ROOT = Path(__file__).resolve().parents[2]
NS = "harmguard"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("model")
    return train_spam_model(base / "export", base / "cache", mirror_dir())


@pytest.fixture
def settings(tmp_path: Path, mlflow_uri: str, mirror: Path) -> Settings:
    return Settings(
        home=str(tmp_path / "home"), cache=tmp_path / "cache", data_mirror=mirror, mlflow_tracking_uri=mlflow_uri
    )


@pytest.fixture
def approved(store: LocalStore, settings: Settings, model_dir: Path):
    """A registered, approved version of a fresh policy (not champion yet)."""
    policy = f"spam-{uuid.uuid4().hex[:8]}"
    digest = publish_model(store, model_dir)
    record = register(store, settings, policy, digest, golden=golden_of(model_dir))
    approve_version(store, record.version, by="reviewer", principal="test:reviewer", reason="report reviewed")
    return record


@pytest.fixture()
def strict(schema_settings):
    return lambda obj: validate_manifest(obj, settings=schema_settings)


def shipped() -> dict[str, Any]:
    (doc,) = load_manifests(ROOT / "manifests" / "kuberay" / "ray-service.classifier.yaml")
    return doc


def rollout(api: K8sStandIn, deadline_s: float = 10) -> RayServiceRollout:
    return RayServiceRollout(custom_objects_api(api.host), NS, deadline_s=deadline_s, poll_s=0.01, echo=lambda _: None)


def promote(store, settings, version, cluster) -> dict[str, Any]:
    return promote_version(
        store, settings, version, by="releaser", run_id=f"p-{uuid.uuid4().hex[:6]}", golden_path=GOLDEN, cluster=cluster
    )


def test_promotion_deploys_to_the_shipped_rayservice(store, settings, approved, strict):
    with K8sStandIn(validate=strict, operator=kuberay(after=1)) as api:
        api.add_rayservice(shipped())
        result = promote(store, settings, approved.version, rollout(api))
        live = api.rayservices[(NS, RAYSERVICE_NAME)]
    deployed = result["deploy"]["rayservice"]
    assert deployed["rayservice"] == f"RayService {NS}/{RAYSERVICE_NAME}" and deployed["patched"]
    model = next(d for d in yaml.safe_load(live["spec"]["serveConfigV2"])["applications"][0]["deployments"])
    # the one Serve-config builder's user_config: version, model URI and digest, thresholds
    assert model["user_config"] == model_user_config(approved) == user_config_for(approved).dump()
    assert model["user_config"]["model_digest"] == approved.model_digest
    assert f"RayService {NS}/{RAYSERVICE_NAME} runs {approved.version}" in result["deploy"]["note"]
    # the patch file for kubectl names the shipped RayService too (it named harmguard-<policy> before)
    assert yaml.safe_load(render_rayservice_patch(approved))["metadata"]["name"] == RAYSERVICE_NAME
    pointer, _ = read_alias(store, approved.policy, "champion")
    assert pointer is not None and pointer.version == approved.version


@pytest.mark.parametrize(
    ("operator", "seed", "why"),
    [
        (kuberay(after=1, stuck=True), True, "did not report generation 2 running within 0.3 s"),
        (kuberay(), False, f"RayService {NS}/{RAYSERVICE_NAME} does not exist"),
    ],
    ids=["never-ready", "missing"],
)
def test_moved_not_deployed_keeps_the_champion_pointer(store, settings, approved, strict, operator, seed, why):
    with K8sStandIn(validate=strict, operator=operator) as api:
        if seed:
            api.add_rayservice(shipped())
        with pytest.raises(NotDeployed) as info:
            promote(store, settings, approved.version, rollout(api, deadline_s=0.3))
    message = str(info.value)
    assert message.startswith(f"moved, not deployed: {approved.version} is now the champion") and why in message
    pointer, _ = read_alias(store, approved.policy, "champion")
    assert pointer is not None and pointer.version == approved.version  # not rolled back silently
    assert [e["event"] for e in read_audit(store, approved.policy)][-1] == "promote"


def test_the_deploy_step_finds_the_cluster_from_the_environment(store, approved, hg_env, monkeypatch, strict):
    """The step entry point reads HARMGUARD_KUBE_API / HARMGUARD_NAMESPACE; a refusal is recorded for the CLI."""
    live = shipped()
    live["metadata"]["namespace"] = "serving-prod"
    with K8sStandIn(validate=strict, operator=kuberay(after=0)) as api:
        monkeypatch.setenv("HARMGUARD_KUBE_API", api.host)
        monkeypatch.setenv("HARMGUARD_NAMESPACE", "serving-prod")
        with pytest.raises(NotDeployed, match="does not exist"):
            deploy_step(approved.version, "run-missing")
        api.add_rayservice(live)
        note = deploy_step(approved.version, "run-ok")
    refusal = read_record(store, "run-missing", "refusal")
    assert refusal is not None and refusal["step"] == "deploy" and refusal["kind"] == "NotDeployed"
    assert refusal["reason"].startswith("moved, not deployed")
    assert f"RayService serving-prod/{RAYSERVICE_NAME} runs {approved.version}" in note
    assert read_record(store, "run-ok", "promotion-deploy")["rayservice"]["patched"] is True


def _readyz_server(answer: dict[str, Any], status: int = 200):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = json.dumps(answer).encode() if self.path == "/readyz" else b"{}"
            self.send_response(status if self.path == "/readyz" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_deployed_versions_ask_the_local_server_and_the_rayservice(store, approved, strict):
    ready = {
        "ready": True,
        "policy": approved.policy,
        "model_version": approved.version,
        "model_digest": approved.model_digest,
        "thresholds_version": approved.thresholds_version,
        "shadow_version": None,
    }
    server = _readyz_server(ready)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        store.write_atomic(ENDPOINT_KEY, json.dumps({"url": url, "user_config_url": f"{url}/admin"}).encode())
        with K8sStandIn(validate=strict, operator=kuberay(after=0)) as api:
            api.add_rayservice(shipped())
            rollout(api).apply(model_user_config(approved))
            found, problems = deployed_versions(store, rollout(api))
    finally:
        server.shutdown()
    assert problems == []
    local, cluster = found[approved.policy]
    assert local["where"] == f"local server {url}" and local["running"]
    assert (local["version"], local["model_digest"]) == (approved.version, approved.model_digest)
    assert cluster["where"] == f"RayService {NS}/{RAYSERVICE_NAME}" and cluster["running"]
    assert (cluster["version"], cluster["model_digest"]) == (approved.version, approved.model_digest)


def test_deployed_versions_report_an_unreachable_source_without_failing(store, strict):
    store.write_atomic(ENDPOINT_KEY, json.dumps({"url": "http://127.0.0.1:9", "user_config_url": "x"}).encode())
    with K8sStandIn(validate=strict) as api:
        found, problems = deployed_versions(store, rollout(api))
    assert found == {}
    assert any("does not answer" in p for p in problems) and any("does not exist" in p for p in problems)


def test_status_shows_what_is_deployed_beside_the_champion(store, settings, approved, hg_env, strict):
    """`harmguard status` reads the RayService (HARMGUARD_KUBE_API): moved, not deployed is visible."""
    with K8sStandIn(validate=strict, operator=kuberay(after=1, stuck=True)) as api:
        api.add_rayservice(shipped())
        with pytest.raises(NotDeployed):
            promote(store, settings, approved.version, rollout(api, deadline_s=0.2))
        env = {"HARMGUARD_KUBE_API": api.host, "HARMGUARD_NAMESPACE": NS}
        runner = CliRunner()  # in-process: a subprocess would import everything again (seconds)
        as_json = runner.invoke(app, ["status", "--policy", approved.policy, "--json"], env=env)
        table = runner.invoke(app, ["status", "--policy", approved.policy], env={**env, "COLUMNS": "250"})
    assert as_json.exit_code == 0, as_json.output[-2000:]
    entry = json.loads(as_json.stdout.strip().splitlines()[-1])["policies"][approved.policy]
    assert entry["champion"]["version"] == approved.version
    [deployed] = entry["deployed"]
    assert deployed["version"] == approved.version and deployed["running"] is False
    assert "DEPLOYING" in deployed["state"]
    assert table.exit_code == 0 and "deployed" in table.stdout and "not running" in table.stdout


def test_a_rollback_from_the_cli_deploys_the_restored_version_to_the_rayservice(
    store, settings, approved, model_dir, hg_env, strict
):
    """`harmguard rollback` on a cluster (HARMGUARD_KUBE_API) patches the RayService back, as promotion patches it."""
    second = register(store, settings, approved.policy, publish_model(store, model_dir), champion=approved)
    approve_version(store, second.version, by="reviewer", principal="test:reviewer", reason="report reviewed")
    with K8sStandIn(validate=strict, operator=kuberay(after=0)) as api:
        api.add_rayservice(shipped())
        promote(store, settings, approved.version, rollout(api))
        promote(store, settings, second.version, rollout(api))
        env = {"HARMGUARD_KUBE_API": api.host, "HARMGUARD_NAMESPACE": NS}
        result = CliRunner().invoke(
            app, ["rollback", "--policy", approved.policy, "--reason", "second one misfires", "--json"], env=env
        )
        live = api.rayservices[(NS, RAYSERVICE_NAME)]
    assert result.exit_code == 0, result.output[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["version"] == approved.version
    model = next(d for d in yaml.safe_load(live["spec"]["serveConfigV2"])["applications"][0]["deployments"])
    assert model["user_config"] == model_user_config(approved)  # the cluster runs the restored version again
    assert f"RayService {NS}/{RAYSERVICE_NAME} runs {approved.version}" in result.output
