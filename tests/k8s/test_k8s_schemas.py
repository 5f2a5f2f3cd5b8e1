"""Offline manifest validation: pinned CRDs fetched and verified, strict checks, clear errors with JSON paths."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from harmguard.k8s import common as k8s_common
from harmguard.k8s import kuberay
from harmguard.k8s.schemas import (
    CRDS,
    ManifestError,
    SchemaUnavailableError,
    crd_path,
    manifest_problems,
    validate_file,
    validate_manifest,
)
from harmguard.models.decide import thresholds_version
from harmguard.serving.config import Autoscaling, UserConfig
from harmguard.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "manifests"
IMAGE = "ghcr.io/harmguard/harmguard:0.1.0"


def _rayjob(**overrides):
    kwargs = dict(
        name="harmguard-train",
        namespace="harmguard",
        image=IMAGE,
        entrypoint=kuberay.train_entrypoint("gs://bucket/harmguard/runs/r1/ray"),
        runtime_env_vars={"HARMGUARD_RUN_ID": "r1"},
        gpu_workers=2,
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        settings_config_map="harmguard-settings",
        gcs_secret="harmguard-gcs",
    )
    return kuberay.rayjob_manifest(kuberay.RayJobSpec(**{**kwargs, **overrides}))


def _rayservice():
    thresholds = {"hate": 0.4, "offensive": 0.6}
    user_config = UserConfig(
        policy="davidson2017",
        version="davidson2017/3",
        model_uri="gs://bucket/harmguard/models/" + "a" * 64,
        model_digest="a" * 64,
        thresholds=thresholds,
        thresholds_version=thresholds_version(thresholds),
    )
    spec = kuberay.RayServiceSpec(
        name="harmguard-classifier", namespace="harmguard", image=IMAGE, user_config=user_config
    )
    return kuberay.rayservice_manifest(spec)


def _cron(**spec):
    base = {
        "schedules": ["0 3 * * 1"],
        "timezone": "Etc/UTC",
        "concurrencyPolicy": "Forbid",
        "workflowSpec": {
            "entrypoint": "main",
            "templates": [{"name": "main", "container": {"image": IMAGE, "command": ["harmguard", "status"]}}],
        },
    }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {"name": "retrain"},
        "spec": {**base, **spec},
    }


def _problems(obj, settings):
    return manifest_problems(obj, settings=settings)


def test_pins_match_the_mirror_provenance(schema_settings: Settings):
    provenance = json.loads((schema_settings.schema_mirror / "PROVENANCE.json").read_text())
    for crd in CRDS.values():
        record = provenance[crd.project]
        entry = record["files"][f"{crd.project}/{crd.filename}"]
        assert (crd.sha256, crd.size, crd.source_path, crd.kind) == (
            entry["sha256"],
            entry["bytes"],
            entry["source_path"],
            entry["kind"],
        )
        assert crd.commit == record["commit"] and crd.repo == record["repo"]
        assert crd.file.url.startswith(f"https://raw.githubusercontent.com/{crd.repo}/{crd.commit}/")


def test_tampered_mirror_is_refused_and_nothing_cached(tmp_path: Path, schema_settings: Settings):
    crd = CRDS[("ray.io/v1", "RayCluster")]
    mirror = tmp_path / "mirror"
    (mirror / crd.project).mkdir(parents=True)
    data = bytearray((schema_settings.schema_mirror / crd.project / crd.filename).read_bytes())
    data[-2] ^= 0x20
    (mirror / crd.project / crd.filename).write_bytes(bytes(data))
    settings = schema_settings.model_copy(update={"schema_mirror": mirror, "cache": tmp_path / "cache"})
    with pytest.raises(SchemaUnavailableError, match="sha256 digest mismatch"):
        crd_path(crd, settings)
    assert not (tmp_path / "cache" / "schemas" / crd.project / crd.filename).exists()


def test_missing_mirror_file_names_the_setting(tmp_path: Path, schema_settings: Settings):
    settings = schema_settings.model_copy(update={"schema_mirror": tmp_path, "cache": tmp_path / "cache"})
    with pytest.raises(SchemaUnavailableError, match="HARMGUARD_SCHEMA_MIRROR"):
        crd_path(CRDS[("ray.io/v1", "RayJob")], settings)


def test_cached_copy_is_reverified(tmp_path: Path, schema_settings: Settings):
    crd = CRDS[("ray.io/v1", "RayCluster")]
    settings = schema_settings.model_copy(update={"cache": tmp_path / "cache"})
    path = crd_path(crd, settings)
    path.write_bytes(path.read_bytes()[:-10])  # a torn or edited cache file is replaced, never used
    assert crd_path(crd, settings).stat().st_size == crd.size


def test_builders_produce_valid_manifests(schema_settings: Settings):
    for obj in (_rayjob(), _rayjob(gpu_per_worker=0, gcs_secret=None), _rayservice()):
        validate_manifest(obj, settings=schema_settings)


def test_error_names_kind_name_and_every_path(schema_settings: Settings):
    obj = _rayjob()
    obj["spec"]["entrypointt"] = obj["spec"].pop("entrypoint")
    obj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "two"
    with pytest.raises(ManifestError) as exc:
        validate_manifest(obj, settings=schema_settings)
    assert isinstance(exc.value, ValueError)
    message = str(exc.value)
    assert message.startswith("RayJob/harmguard-train: 2 problem(s)")
    assert "spec.entrypointt: unknown field 'entrypointt'" in message
    assert "spec.rayClusterSpec.workerGroupSpecs[0].replicas: 'two'" in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda o: o["spec"].update(schedules=[]), "spec.schedules: [] should be non-empty"),
        (lambda o: o["spec"].update(schedules="0 3 * * 1"), "spec.schedules: '0 3 * * 1' is not of type 'array'"),
        (lambda o: o["spec"].update(schedules=["every minute"]), "spec.schedules[0]: 'every minute' does not match"),
        (lambda o: o["spec"].update(concurrencyPolicy="forbid"), "spec.concurrencyPolicy: 'forbid' is not one of"),
        (lambda o: o["spec"].update(startingDeadlineSeconds="0"), "spec.startingDeadlineSeconds: '0' is not of type"),
        (
            lambda o: o["spec"]["workflowSpec"]["templates"][0]["container"].update(imagee=IMAGE),
            "spec.workflowSpec.templates[0].container.imagee: unknown field",
        ),
        (
            lambda o: o["spec"]["workflowSpec"]["templates"][0]["container"].update(
                resources={"limits": {"cpu": "1 core"}}
            ),
            "resources.limits.cpu: '1 core' is not a Kubernetes quantity",
        ),
        (lambda o: o["metadata"].update(name="x" * 53), "longer than 52 characters for a CronWorkflow"),
        (lambda o: o["metadata"].update(labels={"team": "t&s"}), "metadata.labels['team']: invalid value"),
    ],
)
def test_cron_workflow_mistakes_are_rejected(schema_settings: Settings, mutate, expected):
    obj = _cron()
    assert _problems(obj, schema_settings) == []
    mutate(obj)
    problems = _problems(obj, schema_settings)
    assert any(expected in p for p in problems), problems


def test_int_or_string_defaults_and_nulls_follow_the_api_server(schema_settings: Settings):
    obj = _rayjob()
    head = obj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["resources"] = {"requests": {"cpu": 1, "memory": "4Gi"}, "limits": {"cpu": "1500m", "memory": 4294967296}}
    head["ports"] = [{"containerPort": 8265, "name": "dashboard"}]
    head["readinessProbe"] = {"httpGet": {"port": 8265, "path": "/"}}  # int-or-string given as an integer
    group = obj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    del group["minReplicas"], group["maxReplicas"]  # required by the CRD but defaulted by the server
    obj["metadata"]["annotations"] = None  # a bare `annotations:` in YAML; the server prunes it
    assert _problems(obj, schema_settings) == []
    head["ports"][0]["containerPort"] = "8265"
    assert any("containerPort: '8265' is not of type 'integer'" in p for p in _problems(obj, schema_settings))


def test_rayservice_serve_config_must_be_a_string(schema_settings: Settings):
    obj = _rayservice()
    obj["spec"]["serveConfigV2"] = yaml.safe_load(obj["spec"]["serveConfigV2"])
    assert any(p.startswith("spec.serveConfigV2:") for p in _problems(obj, schema_settings))


def test_ray_names_must_be_dns_1035_labels(schema_settings: Settings):
    problems = _problems(_rayjob(name="1-train"), schema_settings)
    assert any("metadata.name: '1-train' is not a DNS-1035 label" in p for p in problems)


def test_core_kinds_are_validated_strictly(schema_settings: Settings):
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "harmguard-argo"}}
    assert _problems(account, schema_settings) == []
    assert _problems({**account, "automountServiceAccountToken": "no"}, schema_settings)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "b", "namespace": "harmguard"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "harmguard-argo", "namespace": "harmguard"}],
    }
    assert _problems(binding, schema_settings) == []
    settings_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "harmguard-settings"}}
    assert _problems({**settings_map, "data": {"HARMGUARD_HOME": "gs://b/h"}}, schema_settings) == []
    problems = _problems({**settings_map, "data": {"RETRIES": 3}}, schema_settings)
    assert any(p.startswith("data.RETRIES: 3 is not of type 'string'") for p in problems), problems
    broken = copy.deepcopy(binding)
    del broken["roleRef"]["name"]
    assert any(
        p.startswith("roleRef:") and "'name' is a required property" in p for p in _problems(broken, schema_settings)
    )


def test_unknown_kinds_and_non_mappings_are_reported(schema_settings: Settings):
    assert (
        "no schema for ray.io/v1 RayThing"
        in _problems({"apiVersion": "ray.io/v1", "kind": "RayThing"}, schema_settings)[0]
    )
    assert (
        "no schema"
        in _problems({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}, schema_settings)[0]
    )
    assert "must be a mapping" in _problems(["not", "a", "manifest"], schema_settings)[0]
    with pytest.raises(ManifestError, match="apiVersion and kind"):
        validate_manifest({"kind": "RayJob"}, settings=schema_settings)


def _expectations(path: Path) -> list[str]:
    return re.findall(r"^# expect: (.+)$", path.read_text(), flags=re.M)


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.yaml")), ids=lambda p: p.name)
def test_negative_fixtures_are_rejected(schema_settings: Settings, fixture: Path):
    expected = _expectations(fixture)
    assert expected, f"{fixture.name} states no '# expect:' line"
    with pytest.raises(ManifestError) as exc:
        validate_file(fixture, settings=schema_settings)
    message = str(exc.value)
    assert message.startswith(str(fixture))
    for line in expected:
        assert line in message, message


def test_validate_file_reads_every_document(tmp_path: Path, schema_settings: Settings):
    good = _cron()
    bad = copy.deepcopy(good)
    bad["metadata"]["name"] = "second"
    bad["spec"]["timezonee"] = "UTC"
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([good, None, bad]))
    with pytest.raises(ManifestError) as exc:
        validate_file(path, settings=schema_settings)
    assert "document 1 CronWorkflow/second: spec.timezonee: unknown field" in str(exc.value)
    path.write_text(yaml.safe_dump_all([good, good]))
    assert len(validate_file(path, settings=schema_settings)) == 2
    path.write_text("a: [unclosed\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        validate_file(path, settings=schema_settings)


def test_builders_refuse_bad_input():
    with pytest.raises(ValueError, match="cpu: '1 core' is not a Kubernetes quantity"):
        k8s_common.resources("1 core", "4Gi")
    with pytest.raises(ValueError, match="gs://"):
        kuberay.train_entrypoint("/tmp/work")
    with pytest.raises(ValueError, match="gpu_workers"):
        _rayjob(gpu_workers=0)
    with pytest.raises(ValueError, match="not the declared"):
        UserConfig(
            policy="p",
            version="p/1",
            model_uri="/m",
            model_digest="a" * 64,
            thresholds={"hate": 0.5},
            thresholds_version="0" * 64,
        )
    with pytest.raises(ValueError, match="min_replicas"):
        Autoscaling(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match="extra"):
        kuberay.RayJobSpec(name="a", namespace="b", image=IMAGE, entrypoint="python -m x", gpu_worker=2)  # a typo


def test_places_come_from_the_environment_when_not_given(
    tmp_path: Path, schema_settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HARMGUARD_SCHEMA_MIRROR", str(schema_settings.schema_mirror))
    monkeypatch.setenv("HARMGUARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARMGUARD_HOME", "gs://bucket/harmguard")  # remote home, no MLFLOW_TRACKING_URI: still fine
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    crd = CRDS[("ray.io/v1", "RayCluster")]
    assert crd_path(crd) == tmp_path / "cache" / "schemas" / crd.project / crd.filename
