"""The RayService rollout (harmguard.k8s.rayservice) against the Kubernetes API stand-in (tests/support/k8s_standin.py).

The stand-in holds the shipped RayService (manifests/kuberay/ray-service.classifier.yaml), validates every object it
stores or serves against the pinned KubeRay v1.7 CRD, applies merge patches with resourceVersion preconditions, and
plays the operator with statuses shaped like KubeRay's (``rayservice_types.go``: ``observedGeneration``,
``activeServiceStatus.applicationStatuses``, ``pendingServiceStatus``, the ``Ready`` and ``UpgradeInProgress``
conditions, ``serviceStatus``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.rest import ApiException

from harmguard.digests import thresholds_version
from harmguard.k8s.cluster import ClusterConfig
from harmguard.k8s.rayjob import custom_objects_api
from harmguard.k8s.rayservice import (
    DEPLOY_ROLE,
    FAILED,
    RUNNING,
    WAITING,
    RayServiceRollout,
    RollOutError,
    deploy_rbac,
    in_cluster,
    rayservice_rollout,
    rollout_state,
    served_user_config,
)
from harmguard.k8s.schemas import load_manifests, validate_manifest
from harmguard.serving.config import RAYSERVICE_NAME, UserConfig
from harmguard.settings import Settings
from tests.support.k8s_standin import INTERFERER, MERGE_PATCH, K8sStandIn, kuberay, kuberay_status

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "manifests" / "kuberay" / "ray-service.classifier.yaml"
NS = "harmguard"


def user_config(policy: str = "davidson2017", n: int = 2, digest: str = "a" * 64) -> dict[str, Any]:
    thresholds = {"hate": 0.31, "offensive": 0.62}
    return UserConfig(
        policy=policy,
        version=f"{policy}/{n}",
        model_uri=f"gs://harmguard-prod/models/{digest}",
        model_digest=digest,
        thresholds=thresholds,
        thresholds_version=thresholds_version(thresholds),
    ).dump()


@pytest.fixture()
def strict(schema_settings):
    return lambda obj: validate_manifest(obj, settings=schema_settings)


def shipped() -> dict[str, Any]:
    (doc,) = load_manifests(SHIPPED)
    return doc


def rollout(api: K8sStandIn, *, deadline_s: float = 10, **kw: Any) -> tuple[RayServiceRollout, list[str]]:
    lines: list[str] = []
    out = RayServiceRollout(
        custom_objects_api(api.host), NS, deadline_s=deadline_s, poll_s=0.01, echo=lines.append, **kw
    )
    return out, lines


def test_success_patches_only_the_user_config_and_waits_until_kuberay_runs_it(strict):
    live = shipped()
    serve = yaml.safe_load(live["spec"]["serveConfigV2"])
    serve["applications"][0]["deployments"][0]["autoscaling_config"]["max_replicas"] = 9  # tuned on the cluster
    live["spec"]["serveConfigV2"] = yaml.safe_dump(serve, sort_keys=False)
    live["metadata"]["annotations"] = {"team.example.com/owner": "trust-and-safety"}
    with K8sStandIn(validate=strict, operator=kuberay(after=2)) as api:
        seeded = copy.deepcopy(api.add_rayservice(live))
        roll, lines = rollout(api)
        result = roll.apply(user_config())
        stored = api.rayservices[(NS, RAYSERVICE_NAME)]
    assert result["patched"] and result["generation"] == 2 and result["conflicts"] == 0
    assert "RUNNING" in result["state"]
    [patch] = api.patches()
    assert patch.headers["content-type"] == MERGE_PATCH
    # the patch names the version it read (the operator's first status write made it 2: no lost update) and
    # touches spec.serveConfigV2 alone
    assert patch.body == {
        "metadata": {"resourceVersion": "2"},
        "spec": {"serveConfigV2": stored["spec"]["serveConfigV2"]},
    }
    after = yaml.safe_load(stored["spec"]["serveConfigV2"])
    expected = copy.deepcopy(serve)
    expected["applications"][0]["deployments"][0]["user_config"] = user_config()
    assert after == expected  # every other field of the Serve config as it was live (max_replicas 9 kept)
    assert after["applications"][0]["args"]["traffic"] == {"sample_rate": 0.01}  # the traffic record stays on
    assert {k: v for k, v in stored["spec"].items() if k != "serveConfigV2"} == {
        k: v for k, v in seeded["spec"].items() if k != "serveConfigV2"
    }
    assert stored["metadata"]["annotations"] == {"team.example.com/owner": "trust-and-safety"}
    assert served_user_config(stored) == user_config()
    assert any("DEPLOYING" in line for line in lines) and any("RUNNING" in line for line in lines)


def test_a_rayservice_that_never_becomes_ready_fails_at_the_deadline(strict):
    with K8sStandIn(validate=strict, operator=kuberay(after=1, stuck=True)) as api:
        api.add_rayservice(shipped())
        roll, _ = rollout(api, deadline_s=0.5)
        with pytest.raises(RollOutError, match="did not report generation 2 running within 0.5 s") as info:
            roll.apply(user_config())
    assert "DEPLOYING" in str(info.value) and "UPDATING" in str(info.value)
    assert len(api.patches()) == 1  # patched once, then waited: no second write


def test_deploy_failed_ends_the_wait_at_once(strict):
    with K8sStandIn(validate=strict, operator=kuberay(after=0, failed="ValueError: model digest mismatch")) as api:
        api.add_rayservice(shipped())
        roll, _ = rollout(api, deadline_s=60)
        with pytest.raises(RollOutError, match="failed to deploy generation 2: .*DEPLOY_FAILED.*digest mismatch"):
            roll.apply(user_config())


def test_a_missing_rayservice_is_named_and_nothing_is_patched(strict):
    with K8sStandIn(validate=strict, operator=kuberay()) as api:
        roll, _ = rollout(api)
        with pytest.raises(RollOutError, match=f"RayService {NS}/{RAYSERVICE_NAME} does not exist: apply manifests"):
            roll.apply(user_config())
    assert api.patches() == []


def test_a_conflict_is_retried_with_the_new_resource_version(strict):
    with K8sStandIn(validate=strict, operator=kuberay(after=1), interfere=2) as api:
        api.add_rayservice(shipped())
        roll, lines = rollout(api)
        result = roll.apply(user_config())
        stored = api.rayservices[(NS, RAYSERVICE_NAME)]
    versions = [p.body["metadata"]["resourceVersion"] for p in api.patches()]
    assert versions == ["2", "3", "4"]  # each retry carries the resourceVersion read again after the 409
    assert result["conflicts"] == 2 and result["generation"] == 2
    assert stored["metadata"]["annotations"][INTERFERER] == "writer-0"  # the other writer's change survived
    assert served_user_config(stored) == user_config()
    assert sum("409 Conflict" in line for line in lines) == 2


def test_endless_conflicts_give_up(strict):
    with K8sStandIn(validate=strict, operator=kuberay(), interfere=10) as api:
        api.add_rayservice(shipped())
        roll, _ = rollout(api, max_conflicts=2)
        with pytest.raises(RollOutError, match="HTTP 409 .*has been modified"):
            roll.apply(user_config())
    assert len(api.patches()) == 3


def test_one_rayservice_serves_one_policy(strict):
    with K8sStandIn(validate=strict, operator=kuberay(after=0)) as api:
        api.add_rayservice(shipped())  # davidson2017's placeholder: nothing deployed yet, any policy may take it
        roll, _ = rollout(api)
        roll.apply(user_config("sms_spam", 1))
        with pytest.raises(RollOutError, match="serves policy 'sms_spam' .*not 'davidson2017'"):
            roll.apply(user_config("davidson2017", 2))
    assert len(api.patches()) == 1


def test_a_retried_step_does_not_patch_again(strict):
    with K8sStandIn(validate=strict, operator=kuberay(after=0)) as api:
        api.add_rayservice(shipped())
        roll, _ = rollout(api)
        first = roll.apply(user_config())
        again = roll.apply(user_config())
    assert first["patched"] and not again["patched"] and again["generation"] == first["generation"]
    assert len(api.patches()) == 1


def test_an_invalid_patch_is_refused_by_the_api(strict):
    live = shipped()
    with K8sStandIn(validate=strict, operator=kuberay()) as api:
        api.add_rayservice(live)
        roll, _ = rollout(api)
        body = {"spec": {"serveConfigV2": 42}}  # the CRD types it as a string
        with pytest.raises(ApiException) as info:
            roll.api.patch_namespaced_custom_object("ray.io", "v1", NS, "rayservices", RAYSERVICE_NAME, body)
    assert info.value.status == 422 and "serveConfigV2" in info.value.body


@pytest.mark.parametrize(
    ("status", "state", "fragment"),
    [
        ({}, WAITING, "not reconciled generation 2"),
        (kuberay_status(1), WAITING, "observed: 1"),
        (kuberay_status(2, "DEPLOYING", "UPDATING"), WAITING, "DEPLOYING"),
        (kuberay_status(2, pending="harmguard-classifier-raycluster-n3w"), WAITING, "being brought up"),
        (kuberay_status(2, ready=False), WAITING, "Ready is False (ZeroServeEndpoints)"),
        (kuberay_status(2, ready=False, legacy=True), WAITING, "serviceStatus WaitForServeDeploymentReady"),
        (kuberay_status(2, "DEPLOY_FAILED", message="boom"), FAILED, "DEPLOY_FAILED"),
        (kuberay_status(2), RUNNING, "RUNNING, Classifier HEALTHY"),
        (kuberay_status(3, legacy=True), RUNNING, "RUNNING"),
    ],
)
def test_rollout_state_reads_kuberays_status(strict, status, state, fragment):
    obj = {**shipped(), "status": status}
    strict(obj)  # every status in this table is one the CRD stores
    got, line = rollout_state(obj, 2)
    assert got == state and fragment in line


def test_a_rollout_exists_only_with_a_kubernetes_api(tmp_path: Path):
    settings = Settings(home=str(tmp_path), cache=tmp_path, mlflow_tracking_uri="sqlite:///x.db")
    assert rayservice_rollout(settings, environ={}) is None  # a workstation, kfp.local
    token = tmp_path / "token"
    assert not in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, token)  # no token mounted: not a pod
    token.write_text("t")
    assert in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, token)
    proxied = settings.model_copy(update={"kube_api": "http://127.0.0.1:8001"})
    roll = rayservice_rollout(
        proxied, environ={}, config=ClusterConfig(serving_namespace="serving", deploy_deadline_s=7)
    )
    assert roll is not None and (roll.namespace, roll.name, roll.deadline_s) == ("serving", RAYSERVICE_NAME, 7.0)
    moved = rayservice_rollout(proxied.model_copy(update={"namespace": "ml"}), environ={})
    assert moved is not None and moved.namespace == "ml"  # HARMGUARD_NAMESPACE wins


def test_the_deploy_role_may_get_and_patch_that_rayservice_only(strict):
    role, binding = deploy_rbac()
    for doc in (role, binding):
        validate_manifest(doc)  # Kubernetes' own schemas for Role and RoleBinding
    assert role["rules"] == [
        {
            "apiGroups": ["ray.io"],
            "resources": ["rayservices"],
            "resourceNames": [RAYSERVICE_NAME],
            "verbs": ["get", "patch"],
        }
    ]
    assert role["metadata"]["namespace"] == shipped()["metadata"]["namespace"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": DEPLOY_ROLE}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]
    assert load_manifests(ROOT / "manifests" / "kuberay" / "rbac.deploy.yaml") == [role, binding]
