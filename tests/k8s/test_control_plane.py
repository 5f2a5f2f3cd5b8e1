"""The Ray control plane is closed (issue 21, item 3): each test tries a way in and watches it fail.

- token auth on every Ray cluster, refused when missing, disabled, overridden or on a Ray without it;
- NetworkPolicies evaluated port by port: only the named peers reach each port (an attacker pod in the same
  namespace, a look-alike in another namespace, a training pod, reach nothing of serving);
- identities: serving pods mount no key (the traffic record's item-id key alone, read-only) and run as their own
  ServiceAccount; the IAM conditions let serving read models and the registry and write only traffic/ and review/
  (a tiny evaluator of the CEL they are written in);
- the training launcher authenticates to the dashboard.
"""

from __future__ import annotations

import copy
import http.server
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from harmguard.digests import thresholds_version
from harmguard.k8s import exposure, identity, kuberay, manifests, network
from harmguard.k8s.common import LAUNCHER, PART_OF, RAY_CLIENT_LABEL
from harmguard.k8s.network import PodRef, ingress_allowed
from harmguard.k8s.rayjob import build_training_rayjob, dashboard_logs, ray_auth_token
from harmguard.k8s.schemas import load_manifests, manifest_problems, validate_manifest
from harmguard.policy import load_policy
from harmguard.serving.config import ServeArgs, Traffic, UserConfig
from harmguard.settings import Settings

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
NS = "harmguard"


def _one(rel: str) -> dict[str, Any]:
    (doc,) = load_manifests(MANIFESTS / rel)
    return doc


def _service() -> dict[str, Any]:
    return _one("kuberay/ray-service.classifier.yaml")


def _job() -> dict[str, Any]:
    return _one("kuberay/ray-job.train.yaml")


def _clusters() -> list[tuple[str, dict[str, Any]]]:
    return [("RayService", _service()["spec"]["rayClusterConfig"]), ("RayJob", _job()["spec"]["rayClusterSpec"])]


def _user_config() -> UserConfig:
    thresholds = {"hate": 0.5, "offensive": 0.5}
    return UserConfig(
        policy="davidson2017", version="davidson2017/1", model_uri="gs://b/models/" + "a" * 64,
        model_digest="a" * 64, thresholds=thresholds, thresholds_version=thresholds_version(thresholds),
    )  # fmt: skip


def _ray_pods(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]


# --- token authentication -------------------------------------------------------------------------------------------


def test_every_committed_ray_cluster_runs_with_token_auth():
    for kind, cluster in _clusters():
        assert cluster["authOptions"]["mode"] == "token", kind
        # the dashboard listens beyond localhost only because the token (and the NetworkPolicies) close it
        assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
        assert kuberay.token_auth_ray_version(cluster["rayVersion"]) == cluster["rayVersion"]
        for pod in _ray_pods(cluster):  # nothing may set Ray's auth env itself (KubeRay injects it from the Secret)
            assert not {e["name"] for c in pod["spec"]["containers"] for e in c.get("env", [])} & set(
                exposure.AUTH_ENV
            ), kind
    assert _job()["spec"]["rayClusterSpec"]["authOptions"]["secretName"] == "harmguard-ray-training-token"
    assert "secretName" not in _service()["spec"]["rayClusterConfig"]["authOptions"]  # KubeRay's, per cluster
    assert all(exposure.exposure_problems(d) == [] for d in (_service(), _job()))


def _open_service(how: str) -> dict[str, Any]:
    doc = _service()
    cluster = doc["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
    if how == "no authOptions":  # the RayService as it was before this change
        del cluster["authOptions"]
    elif how == "auth disabled":
        cluster["authOptions"] = {"mode": "disabled"}
    elif how == "env override":
        worker["containers"][0]["env"] = [{"name": "RAY_AUTH_MODE", "value": "disabled"}]
    elif how == "old ray":
        cluster["rayVersion"] = "2.49.1"
    elif how == "gcs key":  # the read-write key mount every Ray pod had
        head["volumes"] = [{"name": "gcs-key", "secret": {"secretName": "harmguard-gcs", "defaultMode": 288}}]
        head["containers"][0]["env"] = [
            {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/google/key.json"}
        ]
    elif how == "secret env":
        worker["containers"][0]["envFrom"].append({"secretRef": {"name": "harmguard-gcs"}})
    elif how == "shared identity":
        del worker["serviceAccountName"]
    elif how == "item key writable":  # the item-id key mounted read-write into a worker
        worker["containers"][0]["volumeMounts"][0]["readOnly"] = False
    elif how == "item key, every key":  # the whole Secret, whatever else it holds
        del worker["volumes"][0]["secret"]["items"]
    elif how == "item key, readable":
        head["volumes"][0]["secret"]["defaultMode"] = 0o444
    elif how == "another secret as the item key":
        worker["volumes"][0]["secret"]["secretName"] = "harmguard-gcs"
    return doc


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("no authOptions", [r"authOptions\.mode: None, expected 'token'"]),
        ("auth disabled", [r"authOptions\.mode: 'disabled'"]),
        ("env override", [r"workerGroupSpecs\[0\]\.template\.spec\.containers\[0\]\.env: sets RAY_AUTH_MODE"]),
        ("old ray", [r"rayVersion: '2\.49\.1' has no token auth"]),
        ("gcs key", [r"headGroupSpec.*volumes\[0\]: mounts Secret 'harmguard-gcs'", "GOOGLE_APPLICATION_CREDENTIALS"]),
        ("secret env", [r"envFrom: reads Secret 'harmguard-gcs'"]),
        ("shared identity", [r"workerGroupSpecs\[0\]\.template\.spec\.serviceAccountName: serving pods need"]),
        ("item key writable", [r"workerGroupSpecs\[0\].*volumes\[0\]: mounts Secret 'harmguard-item-key'"]),
        ("item key, every key", [r"workerGroupSpecs\[0\].*volumes\[0\]: mounts Secret 'harmguard-item-key'"]),
        ("item key, readable", [r"headGroupSpec.*volumes\[0\]: mounts Secret 'harmguard-item-key'"]),
        ("another secret as the item key", [r"workerGroupSpecs\[0\].*volumes\[0\]: mounts Secret 'harmguard-gcs'"]),
    ],
)
def test_an_open_rayservice_is_named_and_never_rendered(monkeypatch: pytest.MonkeyPatch, how: str, expected):
    doc = _open_service(how)
    problems = exposure.exposure_problems(doc)
    assert len(problems) == len(expected), problems
    for pattern, problem in zip(expected, problems, strict=True):
        assert re.search(pattern, problem), (pattern, problem)
    file = manifests.ManifestFile("kuberay/ray-service.open.yaml", "an open cluster", lambda image: [doc])
    with pytest.raises(ValueError, match="Ray control plane open"):
        manifests.render(file)


def test_a_rayjob_submitter_with_the_key_or_without_auth_is_named():
    doc = _job()
    doc["spec"]["submitterPodTemplate"]["spec"]["volumes"] = [{"name": "k", "secret": {"secretName": "harmguard-gcs"}}]
    doc["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "disabled"
    problems = exposure.exposure_problems(doc)
    assert [p.split(":")[0] for p in problems] == [
        "spec.rayClusterSpec.authOptions.mode",
        "spec.submitterPodTemplate.spec.volumes[0]",
    ]


@pytest.mark.parametrize("version", ["2.51.9", "2.9.3", "1.13.0", "nightly"])
def test_a_ray_without_token_auth_is_refused_by_the_builders(monkeypatch: pytest.MonkeyPatch, version: str):
    monkeypatch.setattr(kuberay, "ray_version", lambda: version)
    with pytest.raises(ValueError, match="no token authentication"):
        build_training_rayjob(
            run_id="r1",
            namespace=NS,
            image="r.example/h:1",
            workdir="gs://b/w",
            workers=1,
            gpu_per_worker=0,
            deadline_s=60,
        )
    assert kuberay.token_auth_ray_version("2.52.0") == "2.52.0"


def test_the_launchers_rayjob_is_closed_like_the_committed_one(schema_settings: Settings):
    doc = build_training_rayjob(
        run_id="r1",
        namespace="ml",
        image="r.example/h:1",
        workdir="gs://b/w",
        workers=2,
        gpu_per_worker=1,
        deadline_s=60,
    )
    validate_manifest(doc, settings=schema_settings)  # authOptions etc. against the pinned KubeRay v1.7 CRD
    assert exposure.exposure_problems(doc) == []
    assert doc["spec"]["rayClusterSpec"]["authOptions"] == {
        "mode": "token",
        "secretName": "harmguard-ray-training-token",
    }
    submitter = doc["spec"]["submitterPodTemplate"]
    assert submitter["metadata"]["labels"][RAY_CLIENT_LABEL] == "submitter"
    assert submitter["spec"]["automountServiceAccountToken"] is False and "volumes" not in submitter["spec"]
    assert "serviceAccountName" not in submitter["spec"]  # no harmguard identity: it needs none


# --- identities -----------------------------------------------------------------------------------------------------


def test_serving_pods_mount_no_key_and_run_as_the_serving_account():
    accounts = {a["metadata"]["name"]: a for a in load_manifests(MANIFESTS / "kuberay/service-account.ray.yaml")}
    for pod in _ray_pods(_service()["spec"]["rayClusterConfig"]):
        spec = pod["spec"]
        assert spec["serviceAccountName"] == "harmguard-serving"
        assert [v["name"] for v in spec["volumes"]] == [kuberay.ITEM_KEY_VOLUME]  # the item-id key, nothing else
        for c in spec["containers"]:
            assert [m["name"] for m in c["volumeMounts"]] == [kuberay.ITEM_KEY_VOLUME], c["name"]
            assert [e["name"] for e in c["env"]] == ["HARMGUARD_ITEM_KEY_FILE"], c["name"]
            assert all("secretRef" not in f for f in c.get("envFrom", []))
    gcp = accounts["harmguard-serving"]["metadata"]["annotations"][identity.WORKLOAD_IDENTITY_ANNOTATION]
    assert gcp == "harmguard-serving@PROJECT_ID.iam.gserviceaccount.com"
    # training keeps write access: its own account (Workload Identity) and, where configured, the key
    for pod in _ray_pods(_job()["spec"]["rayClusterSpec"]):
        assert pod["spec"]["serviceAccountName"] == "harmguard-training"
    train_gcp = accounts["harmguard-training"]["metadata"]["annotations"][identity.WORKLOAD_IDENTITY_ANNOTATION]
    assert train_gcp.startswith("harmguard-pipelines@")
    assert "volumes" not in _job()["spec"]["submitterPodTemplate"]["spec"]


def test_the_item_key_secret_is_mounted_read_only_into_the_serving_containers_only():
    service = _service()
    cluster = service["spec"]["rayClusterConfig"]
    for pod in _ray_pods(cluster):
        (volume,) = pod["spec"]["volumes"]
        assert volume["secret"] == {
            "secretName": "harmguard-item-key",
            "items": [{"key": "item-id.key", "path": "item-id.key"}],  # that key only, whatever else it holds
            "defaultMode": 0o400,
            "optional": True,  # no Secret: the pods still start; the ingress records nothing and says so once
        }
        for c in pod["spec"]["containers"]:
            (mount,) = c["volumeMounts"]
            assert mount["readOnly"] is True and mount["name"] == volume["name"]
            (env,) = c["env"]  # the loader's file is the Secret's one key, where it is mounted
            assert env == {"name": "HARMGUARD_ITEM_KEY_FILE", "value": f"{mount['mountPath']}/item-id.key"}
    assert "volumeMounts" not in cluster["autoscalerOptions"] and "env" not in cluster["autoscalerOptions"]
    # the serve config turns the record on (ServeArgs.traffic), at the placeholder policy's sample rate
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    args = ServeArgs.model_validate(app["args"])
    assert args.traffic is not None and args.traffic.sample_rate == load_policy("davidson2017").monitoring.sample_rate
    # training pods (head, workers, submitter) never see the item-id key
    job = _job()
    pods = [*_ray_pods(job["spec"]["rayClusterSpec"]), job["spec"]["submitterPodTemplate"]]
    text = yaml.safe_dump(pods)
    assert "harmguard-item-key" not in text and "HARMGUARD_ITEM_KEY" not in text and kuberay.ITEM_KEY_MOUNT not in text


def test_without_the_record_the_rayservice_mounts_nothing():
    spec = kuberay.RayServiceSpec(
        name="c", namespace=NS, image="r.example/h:1", user_config=_user_config(), traffic=None
    )
    doc = kuberay.rayservice_manifest(spec)
    text = yaml.safe_dump(doc)
    assert "harmguard-item-key" not in text and "HARMGUARD_ITEM_KEY_FILE" not in text and "traffic" not in text
    on = kuberay.rayservice_manifest(spec.model_copy(update={"traffic": Traffic(sample_rate=0.5)}))
    assert exposure.exposure_problems(on) == [] and "harmguard-item-key" in yaml.safe_dump(on)


# --- a CEL evaluator for the IAM conditions harmguard writes (and nothing else) ------------------------------------

_TOKEN = re.compile(
    r'\s*(?:(?P<op>\|\||&&|==|\(|\)|,|\.)|(?P<str>"[^"\\]*")|(?P<name>[A-Za-z_][A-Za-z0-9_]*))', re.DOTALL
)


def _tokens(text: str) -> list[str]:
    out, i = [], 0
    while i < len(text.rstrip()):
        m = _TOKEN.match(text, i)
        assert m, f"unexpected CEL at {text[i : i + 20]!r}"
        out.append(m.group(m.lastgroup or ""))
        i = m.end()
    return out


class _Cel:
    """Just the grammar identity.prefix_condition writes: ||, &&, parentheses, ==, startsWith, getAttribute."""

    def __init__(self, expression: str, attrs: dict[str, Any]) -> None:
        self.t, self.i, self.attrs = _tokens(expression), 0, attrs

    def take(self, want: str | None = None) -> str:
        tok = self.t[self.i]
        assert want is None or tok == want, (want, tok, self.t)
        self.i += 1
        return tok

    def value(self) -> bool:
        v = self.disjunction()
        assert self.i == len(self.t), self.t[self.i :]
        return v

    def disjunction(self) -> bool:
        v = self.conjunction()
        while self.i < len(self.t) and self.t[self.i] == "||":
            self.take()
            v = self.conjunction() or v
        return v

    def conjunction(self) -> bool:
        v = self.atom()
        while self.i < len(self.t) and self.t[self.i] == "&&":
            self.take()
            v = self.atom() and v
        return v

    def atom(self) -> bool:
        if self.t[self.i] == "(":
            self.take("(")
            v = self.disjunction()
            self.take(")")
            return v
        subject = self.operand()
        op = self.take()
        if op == "==":
            return subject == self.literal()
        assert op == "." and self.take() == "startsWith", "only == and startsWith"
        self.take("(")
        prefix = self.literal()
        self.take(")")
        return str(subject).startswith(prefix)

    def literal(self) -> str:
        tok = self.take()
        assert tok.startswith('"'), tok
        return tok[1:-1]

    def operand(self) -> str:
        root = self.take()
        if root == "resource":
            self.take(".")
            return str(self.attrs[f"resource.{self.take()}"])
        assert root == "api", root
        self.take(".")
        self.take("getAttribute")
        self.take("(")
        name = self.literal()
        self.take(",")
        default = self.literal()
        self.take(")")
        return str(self.attrs.get(name, default))


ROLE_PERMISSIONS = {
    identity.READ_ROLE: {"get", "list"},
    identity.WRITE_ROLE: {"get", "list", "create", "delete"},
    identity.PIPELINES_ROLE: {"get", "list", "create", "delete"},
}
BUCKET = "projects/_/buckets/harmguard-data"


def _may(member: str, permission: str, path: str) -> bool:
    """Whether the committed bucket policy lets ``member`` do ``permission`` on an object (or list under a prefix)."""
    policy = load_manifests(MANIFESTS / "gcp/iam-policy.storage.yaml")[0]
    assert policy["resource"] == BUCKET and policy["version"] == 3
    if permission == "list":
        attrs = {"resource.name": BUCKET, "resource.type": "storage.googleapis.com/Bucket"}
        attrs["storage.googleapis.com/objectListPrefix"] = path
    else:
        attrs = {"resource.name": f"{BUCKET}/objects/{path}", "resource.type": "storage.googleapis.com/Object"}
    for binding in policy["bindings"]:
        if member not in binding["members"] or permission not in ROLE_PERMISSIONS[binding["role"]]:
            continue
        condition = binding.get("condition")
        if condition is None or _Cel(condition["expression"], attrs).value():
            return True
    return False


SERVING = "serviceAccount:harmguard-serving@PROJECT_ID.iam.gserviceaccount.com"
PIPELINES = "serviceAccount:harmguard-pipelines@PROJECT_ID.iam.gserviceaccount.com"
GRANTED = [
    ("get", "models/" + "a" * 64 + "/model.safetensors"),
    ("list", "models/" + "a" * 64 + "/"),
    ("get", "registry/davidson2017/champion.json"),
    ("list", "registry/davidson2017/"),
    ("create", "traffic/davidson2017/dt=2026-11-25/part-0001.jsonl"),
    ("delete", "traffic/davidson2017/dt=2026-11-25/manifest.json"),  # an overwrite needs delete
    ("create", "review/davidson2017/2026-11-25/sample.jsonl"),
]
REFUSED = [
    ("create", "registry/davidson2017/champion.json"),  # moving the champion pointer
    ("delete", "registry/davidson2017/champion.json"),
    ("create", "registry/davidson2017/audit/0001-promote.json"),  # forging an audit event
    ("create", "models/" + "b" * 64 + "/model.safetensors"),  # planting a model
    ("delete", "models/" + "a" * 64 + "/model.safetensors"),
    ("create", "runs/r1/blessing.json"),
    ("get", "snapshots/v1/train.parquet"),  # the datasets' texts are not serving's to read
    ("get", "labels/davidson2017/part-1.jsonl"),
    ("list", ""),  # the whole bucket
    ("list", "models"),  # a prefix that would also list models-old/...
    ("get", "modelsx/evil"),
    ("create", "trafficking/x"),
]


@pytest.mark.parametrize(("permission", "path"), GRANTED)
def test_serving_may_read_models_and_registry_and_write_traffic_and_review(permission: str, path: str):
    assert _may(SERVING, permission, path)


@pytest.mark.parametrize(("permission", "path"), REFUSED)
def test_serving_may_not_touch_anything_else(permission: str, path: str):
    assert not _may(SERVING, permission, path)
    assert _may(PIPELINES, permission, path)  # training and promotion keep write access


def test_workload_identity_lets_one_kubernetes_account_act_as_each_gcp_account():
    docs = load_manifests(MANIFESTS / "gcp/iam-policy.storage.yaml")[1:]
    members = {d["resource"].rsplit("/", 1)[-1]: d["bindings"] for d in docs}
    assert members == {
        "harmguard-serving@PROJECT_ID.iam.gserviceaccount.com": [
            {
                "role": identity.WORKLOAD_IDENTITY_ROLE,
                "members": ["serviceAccount:PROJECT_ID.svc.id.goog[harmguard/harmguard-serving]"],
            }
        ],
        "harmguard-pipelines@PROJECT_ID.iam.gserviceaccount.com": [
            {
                "role": identity.WORKLOAD_IDENTITY_ROLE,
                "members": ["serviceAccount:PROJECT_ID.svc.id.goog[harmguard/harmguard-training]"],
            }
        ],
    }


def test_a_home_under_a_prefix_scopes_the_conditions_to_it():
    cfg = identity.IdentityConfig(home="gs://shared-bucket/teams/ts/")
    bindings = identity.storage_bindings(cfg)["bindings"]
    writes = bindings[1]["condition"]["expression"]
    obj = {"resource.type": "storage.googleapis.com/Object"}
    assert _Cel(writes, {**obj, "resource.name": "projects/_/buckets/shared-bucket/objects/teams/ts/traffic/x"}).value()
    assert not _Cel(writes, {**obj, "resource.name": "projects/_/buckets/shared-bucket/objects/traffic/x"}).value()
    assert not _Cel(writes, {**obj, "resource.name": "projects/_/buckets/other/objects/teams/ts/traffic/x"}).value()


@pytest.mark.parametrize(
    "home",
    ['gs://b/a") || true || ("', "gs://b/a\\", "s3://bucket/x", "gs://UPPER", 'gs://bucket/x"y'],
)
def test_a_home_that_would_inject_into_the_condition_is_refused(home: str):
    with pytest.raises(ValueError, match="home"):
        identity.IdentityConfig(home=home)


# --- NetworkPolicies ------------------------------------------------------------------------------------------------

KUBERAY_EXTRAS = {"ray.io/is-ray-node": "yes", "ray.io/node-type": "head"}  # KubeRay adds these; they change nothing
PODS = {
    "serving": PodRef(NS, {**network.ray_nodes("serving"), **KUBERAY_EXTRAS}),
    "training": PodRef(NS, {**network.ray_nodes("training"), **KUBERAY_EXTRAS}),
    "submitter": PodRef(NS, {**network.submitters(), "batch.kubernetes.io/job-name": "hg-train-x"}),
    "launcher": PodRef(NS, {RAY_CLIENT_LABEL: LAUNCHER, "pipelines.kubeflow.org/v2_component": "true"}),
    "operator": PodRef("ray-system", {"app.kubernetes.io/name": "kuberay-operator"}),
    "ingress": PodRef("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    "prometheus": PodRef("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    # would-be attackers
    "argo-step": PodRef(NS, {**PART_OF, "workflows.argoproj.io/workflow": "harmguard-retrain-1"}),
    "any-pod": PodRef(NS, {"app": "debug"}),
    "fake-operator": PodRef("default", {"app.kubernetes.io/name": "kuberay-operator"}),
    "fake-scraper": PodRef(NS, {"app.kubernetes.io/name": "prometheus"}),
    "fake-launcher": PodRef("other", {RAY_CLIENT_LABEL: LAUNCHER}),
    "outside": PodRef("default", {}, ip="203.0.113.7"),
}
RAY_INTERNAL = {"serving": {"serving"}, "training": {"training"}}
EXPECTED = {
    # (target, port): who reaches it; 10001 (Ray client) and 52365 (dashboard agent) stand for Ray's other ports
    ("serving", 8000): {"ingress", "serving"},
    ("serving", 8265): {"operator", "serving"},
    ("serving", 8080): {"prometheus", "serving"},
    ("serving", 6379): {"serving"},
    ("serving", 10001): {"serving"},
    ("serving", 52365): {"serving"},
    ("training", 8265): {"operator", "submitter", "launcher", "training"},
    ("training", 8080): {"prometheus", "training"},
    ("training", 6379): {"training"},
    ("training", 8000): {"training"},
    ("training", 10001): {"training"},
}


@pytest.fixture(scope="module")
def policies() -> list[dict[str, Any]]:
    return load_manifests(MANIFESTS / "kuberay/network-policy.ray.yaml")


@pytest.mark.parametrize(("target", "port"), list(EXPECTED))
def test_each_port_admits_only_its_named_peers(policies, target: str, port: int):
    allowed = {name for name, pod in PODS.items() if ingress_allowed(policies, pod, PODS[target], port)}
    assert allowed == EXPECTED[(target, port)]


def test_without_the_policies_every_pod_would_reach_the_gcs(policies):
    # the evaluator is not vacuous: the same question against no policies (the old manifests) lets everyone in
    assert all(ingress_allowed([], pod, PODS["serving"], 6379) for pod in PODS.values())
    assert not ingress_allowed(policies, PODS["argo-step"], PODS["serving"], 6379)


def test_network_policies_validate_strictly(policies, schema_settings: Settings):
    for policy in policies:
        validate_manifest(policy, settings=schema_settings)  # kubernetes-validate's strict NetworkPolicy schema
    bad = copy.deepcopy(policies[1])
    bad["spec"]["ingress"][0]["fromm"] = bad["spec"]["ingress"][0].pop("from")
    bad["spec"]["ingress"][0]["ports"][0]["port"] = [8265]
    problems = manifest_problems(bad, settings=schema_settings)
    assert any("fromm" in p for p in problems) and any("spec.ingress[0].ports[0].port" in p for p in problems)


def test_a_peer_that_would_admit_everyone_is_refused():
    with pytest.raises(ValueError, match="empty peer"):
        network.Peer()
    with pytest.raises(ValueError, match="not both"):
        network.Peer(namespace="x", cidrs=("10.0.0.0/8",))
    with pytest.raises(ValueError):
        network.Peer(cidrs=("10.0.0.0/33",))


def test_a_load_balancer_ingress_is_admitted_by_cidr_only():
    cfg = network.NetworkConfig(ingress=network.Peer(cidrs=("35.191.0.0/16", "130.211.0.0/22")))
    policies = network.network_policies(cfg)
    gfe = PodRef("", {}, ip="35.191.10.2")
    assert ingress_allowed(policies, gfe, PODS["serving"], 8000)
    assert not ingress_allowed(policies, gfe, PODS["serving"], 8265)
    assert not ingress_allowed(policies, PODS["outside"], PODS["serving"], 8000)
    assert not ingress_allowed(policies, PODS["ingress"], PODS["serving"], 8000)  # the controller is no peer now


@pytest.mark.parametrize(
    ("peer", "source", "expected"),
    [
        ({"podSelector": {}}, PodRef("a", {"x": "1"}), True),  # every pod of the policy's namespace
        ({"podSelector": {}}, PodRef("b", {"x": "1"}), False),  # ... not of another
        ({"namespaceSelector": {}}, PodRef("b", {}), True),  # every pod of every namespace
        (
            {"podSelector": {"matchExpressions": [{"key": "x", "operator": "In", "values": ["1", "2"]}]}},
            PodRef("a", {"x": "2"}),
            True,
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["1"]}]}},
            PodRef("a", {"x": "1"}),
            False,
        ),
        ({"podSelector": {"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}}, PodRef("a", {}), True),
        ({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}, PodRef("z", {}, ip="10.1.2.3"), False),
        ({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}, PodRef("z", {}, ip="10.2.2.3"), True),
    ],
)
def test_the_evaluator_follows_the_networkpolicy_semantics(peer, source, expected):
    policy = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "a"},
        "spec": {"podSelector": {"matchLabels": {"role": "t"}}, "ingress": [{"from": [peer], "ports": [{"port": 80}]}]},
    }
    target = PodRef("a", {"role": "t"})
    assert ingress_allowed([policy], source, target, 80) is expected
    assert ingress_allowed([policy], source, target, 81) is False  # a listed port closes the others
    assert ingress_allowed([policy], source, PodRef("a", {"role": "other"}), 81) is True  # unselected: open


# --- the launcher authenticates -------------------------------------------------------------------------------------


def test_the_launcher_sends_the_ray_token_to_the_dashboard(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            ok = self.headers.get("Authorization") == "Bearer s3cret"
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(b'{"logs": "step 1\\n"}' if ok else b"{}")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"127.0.0.1:{server.server_port}"
    try:
        monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
        monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        with pytest.raises(Exception, match="401"):
            dashboard_logs(url, "job-1")
        (tmp_path / "token").write_text("s3cret\n")
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
        assert dashboard_logs(url, "job-1") == "step 1\n"
        monkeypatch.setenv("RAY_AUTH_TOKEN", "s3cret")  # the variable wins over the file, as in Ray
        (tmp_path / "token").write_text("stale\n")
        assert dashboard_logs(url, "job-1") == "step 1\n"
    finally:
        server.shutdown()
    assert seen == [None, "Bearer s3cret", "Bearer s3cret"]
    assert ray_auth_token({}) is None


def test_the_launcher_step_can_carry_its_label_and_token():
    from kfp import compiler, dsl

    from harmguard.k8s.cluster import configure_step

    @dsl.component(base_image="python:3.11")
    def noop():  # no annotations: this module's `from __future__ import annotations` would make them strings
        pass

    @dsl.pipeline(name="p")
    def pipeline():
        configure_step(noop(), ray_client=True)

    out = Path(__import__("tempfile").mkdtemp()) / "p.yaml"
    compiler.Compiler().compile(pipeline, str(out))
    platform = load_manifests(out)[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-noop"]
    assert platform["podMetadata"]["labels"] == {RAY_CLIENT_LABEL: LAUNCHER}
    assert {
        "secretName": "harmguard-ray-training-token",
        "keyToEnv": [{"secretKey": "auth_token", "envVar": "RAY_AUTH_TOKEN"}],
    } in [{k: v for k, v in e.items() if k in ("secretName", "keyToEnv")} for e in platform["secretAsEnv"]]
