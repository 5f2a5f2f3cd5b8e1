"""The rendered cluster manifests: golden files, strict schema validation, Hera round trip, hardening, wiring.

Regenerate the committed files on purpose with `HARMGUARD_REGEN_GOLDEN=1 pytest tests/k8s/test_manifests.py` or
`make compile` (never in CI).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import pydantic
import pytest
import typer.main
import yaml
from hera.workflows import CronWorkflow

from harmguard.cli import app
from harmguard.k8s import argo, manifests
from harmguard.k8s.common import hardening_problems, iter_containers
from harmguard.k8s.schemas import ManifestError, load_manifests, validate_file
from harmguard.settings import DEFAULT_IMAGE, Settings
from harmguard.storage import LocalStore
from harmguard.training import job_entry

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
FIXTURES = Path(__file__).parent / "fixtures" / "manifests"
FILES = [f.path for f in manifests.FILES]
K8S_FILES = [f.path for f in manifests.FILES if f.kubernetes]
# Files of objects that run no containers (identities, policies, IAM fragments).
NO_PODS = {
    "argo/rbac.workflows.yaml",
    "kuberay/network-policy.ray.yaml",
    "kuberay/service-account.ray.yaml",
    "kuberay/rbac.deploy.yaml",
}
ARGO_FILES = [p for p in FILES if p.startswith("argo/cron-workflow.")]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("manifests")
    manifests.render_manifests(out, image=DEFAULT_IMAGE)
    return out


def _docs(rel: str) -> list[dict[str, Any]]:
    return load_manifests(MANIFESTS / rel)


def _cron(rel: str) -> dict[str, Any]:
    (doc,) = _docs(rel)
    return doc


def _templates(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in doc["spec"]["workflowSpec"]["templates"]}


# --- golden and validity -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", FILES)
def test_rendered_manifest_matches_golden(rendered: Path, rel: str):
    fresh = (rendered / rel).read_text()
    golden = MANIFESTS / rel
    if os.environ.get("HARMGUARD_REGEN_GOLDEN") == "1" and not os.environ.get("CI"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(fresh)
    assert golden.is_file(), f"{rel} is not committed: HARMGUARD_REGEN_GOLDEN=1 pytest {__file__}"
    assert fresh == golden.read_text(), f"manifests/{rel} is stale: HARMGUARD_REGEN_GOLDEN=1 pytest {__file__}"


def test_no_stray_manifests():
    committed = sorted(p.relative_to(MANIFESTS).as_posix() for p in MANIFESTS.rglob("*.yaml"))
    assert committed == sorted(FILES)
    for rel in K8S_FILES:  # <kind>.<purpose>.yaml
        kind = Path(rel).name.split(".")[0]
        kinds = {re.sub(r"(?<!^)(?=[A-Z])", "-", d["kind"]).lower() for d in _docs(rel)}
        assert kind in kinds or kind == "rbac", (rel, kinds)


@pytest.mark.parametrize("rel", K8S_FILES)
def test_committed_manifest_is_valid(schema_settings: Settings, rel: str):
    docs = validate_file(MANIFESTS / rel, settings=schema_settings)
    assert docs and all(d["metadata"]["namespace"] == "harmguard" for d in docs)
    assert (MANIFESTS / rel).read_text().startswith("# "), "every file starts with a header comment"


@pytest.mark.parametrize("rel", ARGO_FILES)
def test_argo_objects_round_trip_through_hera(rel: str):
    doc = _cron(rel)
    assert CronWorkflow.from_dict(doc).to_dict() == doc


@pytest.mark.parametrize("rel", ARGO_FILES)
def test_hera_round_trip_drops_what_argo_would_not_accept(rel: str):
    # Hera's models know only real fields: a typo or the v3 `schedule` does not survive the round trip.
    for mutate in (
        lambda d: d["spec"]["workflowSpec"]["templates"][0]["container"].update(imagee="x"),
        lambda d: d["spec"].update(schedule="0 3 * * *"),
    ):
        doc = _cron(rel)
        mutate(doc)
        assert CronWorkflow.from_dict(doc).to_dict() != doc


def test_v3_schedule_fixture_is_refused_by_hera_too():
    doc = yaml.safe_load((FIXTURES / "cron-workflow.v3-schedule.yaml").read_text())
    with pytest.raises(pydantic.ValidationError, match="spec.schedules"):
        CronWorkflow.from_dict(doc)


# --- hardening -----------------------------------------------------------------------------------------------------


def _pod_specs(obj: Any) -> list[dict[str, Any]]:
    """Every pod spec (a mapping with ``containers``) and Argo workflowSpec (pod-level settings for all steps)."""
    found = []
    if isinstance(obj, dict):
        if isinstance(obj.get("containers"), list) or "templates" in obj:
            found.append(obj)
        for value in obj.values():
            found += _pod_specs(value)
    elif isinstance(obj, list):
        for value in obj:
            found += _pod_specs(value)
    return found


@pytest.mark.parametrize("rel", K8S_FILES)
def test_every_container_is_pinned_sized_and_hardened(rel: str):
    docs = _docs(rel)
    containers = [c for d in docs for c in iter_containers(d)]
    if rel in NO_PODS:
        assert containers == []
        return
    assert containers
    # the walker finds every container: one `image:` line each (none hide in literal blocks here)
    assert len(containers) == (MANIFESTS / rel).read_text().count(" image: ")
    assert all(hardening_problems(d) == [] for d in docs)
    for where, c in containers:
        image = c["image"]
        assert re.fullmatch(r"[\w./-]+(:[\w.-]+|@sha256:[0-9a-f]{64})", image) and not image.endswith(":latest"), where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], where
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert not sc.get("privileged"), where
    pods = [p for d in docs for p in _pod_specs(d["spec"])]
    assert pods
    for pod in pods:
        psc = pod["securityContext"]
        assert (
            psc["runAsNonRoot"] is True and psc["runAsUser"] != 0 and psc["seccompProfile"]["type"] == "RuntimeDefault"
        )
        assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_a_floating_image_is_refused(tmp_path: Path):
    for image in ("ghcr.io/harmguard/harmguard:latest", "ghcr.io/harmguard/harmguard"):
        with pytest.raises(ValueError, match="pinned"):
            manifests.render_manifests(tmp_path, image=image)
    assert not list(tmp_path.rglob("*.yaml"))


def test_hardening_problems_name_each_weak_container():
    doc = _kuberay("kuberay/ray-job.train.yaml")
    head = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    del head["resources"]["limits"]["memory"]
    head["securityContext"]["allowPrivilegeEscalation"] = True
    doc["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["image"] = "ghcr.io/harmguard/harmguard:latest"
    problems = hardening_problems(doc)
    base = "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0]"
    assert problems == [
        f"{base}.resources.limits: no memory",
        f"{base}.securityContext.allowPrivilegeEscalation: True, expected False",
        "spec.submitterPodTemplate.spec.containers[0].image: 'ghcr.io/harmguard/harmguard:latest' is not pinned",
    ]


def test_image_setting_reaches_every_container(tmp_path: Path):
    image = "registry.example/harmguard:9.9.9"
    for path in manifests.render_manifests(tmp_path, image=image):
        for doc in load_manifests(path):
            assert {c["image"] for _, c in iter_containers(doc)} <= {image}
            assert DEFAULT_IMAGE not in path.read_text()


# --- what the workflows do -----------------------------------------------------------------------------------------


def _kuberay(rel: str) -> dict[str, Any]:
    (doc,) = _docs(rel)
    return doc


def test_cron_workflows_follow_the_schedule_rules():
    for rel in ARGO_FILES:
        spec = _cron(rel)["spec"]
        assert spec["schedules"] and "schedule" not in spec
        assert spec["concurrencyPolicy"] == "Forbid" and spec["timezone"]
        assert spec["startingDeadlineSeconds"] > 0
        assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
        workflow = spec["workflowSpec"]
        assert workflow["serviceAccountName"] == "harmguard-argo"
        templates = _templates(_cron(rel))
        handler = templates[workflow["onExit"]]
        (step,) = [s for group in handler["steps"] for s in group]
        assert step["when"] == "{{workflow.status}} != Succeeded"
        assert templates[step["template"]]["container"]["command"][-3:] == ["-m", "harmguard.k8s.argo", "notify"][-3:]
        for t in templates.values():  # every step that talks to a service retries with backoff
            if "container" in t:
                assert t["retryStrategy"]["limit"] >= 1 and t["retryStrategy"]["backoff"]["duration"]


def test_retrain_suspends_for_approval_and_times_out_into_a_rejection():
    doc = _cron("argo/cron-workflow.retrain.yaml")
    templates = _templates(doc)
    approval = templates["approval"]
    assert approval["suspend"]["duration"] == argo.ArgoConfig().approval_timeout
    outputs = {p["name"]: p["valueFrom"] for p in approval["outputs"]["parameters"]}
    # Argo uses valueFrom.default when a suspend node times out; without one the workflow would fail instead.
    assert outputs == {
        "approve": {"supplied": {}, "default": "NO"},
        "approver": {"supplied": {}, "default": argo.TIMEOUT_APPROVER},
        "reason": {"supplied": {}, "default": argo.TIMEOUT_REASON},
    }
    assert {p["name"]: p.get("enum") for p in approval["inputs"]["parameters"]}["approve"] == ["YES", "NO"]
    review = [s for group in templates["review"]["steps"] for s in group]
    by_name = {s["name"]: s for s in review}
    decision = "{{steps.await-approval.outputs.parameters.approve}}"
    assert by_name["approve"]["when"] == f"{decision} == YES" and by_name["promote"]["when"] == f"{decision} == YES"
    assert by_name["reject"]["when"] == f"{decision} != YES"
    assert templates[by_name["approve"]["template"]]["container"]["command"][:2] == ["harmguard", "approve"]
    assert templates[by_name["reject"]["template"]]["container"]["command"][:2] == ["harmguard", "reject"]
    # approve/reject run in one group after the wait, promotion after them
    groups = [[s["name"] for s in g] for g in templates["review"]["steps"]]
    assert groups == [["await-approval"], ["approve", "reject"], ["promote"]]
    retrain = [[s["name"] for s in g] for g in templates["retrain"]["steps"]]
    assert retrain == [["check"], ["train"], ["outcome"], ["review"]]
    due = "{{steps.check.outputs.parameters.due}} == true"
    check, train, outcome, review_step = (g[0] for g in templates["retrain"]["steps"])
    assert "when" not in check and train["when"] == due and outcome["when"] == due
    assert review_step["when"] == f"{due} && {{{{steps.outcome.outputs.parameters.blessed}}}} == true"
    # nothing due: the workflow ends after the check, successfully; otherwise the run takes the cut it counted
    assert templates[check["template"]]["container"]["command"][:4] == ["python", "-m", "harmguard.k8s.argo", "due"]
    passed = {p["name"]: p["value"] for p in train["arguments"]["parameters"]}
    assert passed == {n: f"{{{{steps.check.outputs.parameters.{n}}}}}" for n in ("labels_watermark", "labels_until")}
    submit = templates[train["template"]]["container"]["args"]
    assert "labels_watermark={{inputs.parameters.labels_watermark}}" in submit


_REF = re.compile(
    r"\{\{\s*(steps\.[\w-]+\.outputs\.parameters\.[\w-]+|inputs\.parameters\.[\w-]+|workflow\.[\w.-]+)\s*\}\}"
)
_WORKFLOW_VARS = {"workflow.name", "workflow.status", "workflow.failures"}


@pytest.mark.parametrize("rel", ARGO_FILES)
def test_every_template_reference_resolves(rel: str):
    doc = _cron(rel)
    templates = _templates(doc)
    arguments = {p["name"] for p in doc["spec"]["workflowSpec"]["arguments"]["parameters"]}
    outputs = {n: {p["name"] for p in t.get("outputs", {}).get("parameters", [])} for n, t in templates.items()}
    checked = 0
    for name, template in templates.items():
        inputs = {p["name"] for p in template.get("inputs", {}).get("parameters", [])}
        earlier: dict[str, str] = {}  # step name -> template, of the groups before the current one
        groups = template.get("steps") or [[{"_": template}]]
        for group in groups:
            for step in group:
                body = step.get("_", step)
                if "template" in step:
                    assert step["template"] in templates, step
                    given = {p["name"] for p in step.get("arguments", {}).get("parameters", [])}
                    wanted = {p["name"] for p in templates[step["template"]].get("inputs", {}).get("parameters", [])}
                    defaulted = {
                        p["name"]
                        for p in templates[step["template"]].get("inputs", {}).get("parameters", [])
                        if "default" in p
                    }
                    assert wanted - defaulted <= given <= wanted, (name, step["name"])
                for ref in _REF.findall(json.dumps(body)):
                    checked += 1
                    if ref.startswith("steps."):
                        _, step_name, _, _, param = ref.split(".")
                        assert param in outputs[earlier[step_name]], (name, ref)
                    elif ref.startswith("inputs."):
                        assert ref.split(".")[-1] in inputs, (name, ref)
                    elif ref.startswith("workflow.parameters."):
                        assert ref.split(".", 2)[-1] in arguments, (name, ref)
                    elif not ref.startswith("workflow.creationTimestamp."):
                        assert ref in _WORKFLOW_VARS, (name, ref)
            earlier.update({s["name"]: s["template"] for s in group if "template" in s})
    assert checked >= 6  # every workflow has references to check (the monitoring one has 6): the regex found them


def _cli_command(name: str) -> Any:
    group = typer.main.get_command(app)
    return group.commands[name]  # type: ignore[attr-defined]


def _options(command: Any) -> set[str]:
    return {opt for p in command.params for opt in getattr(p, "opts", [])}


@pytest.mark.parametrize("rel", ARGO_FILES)
def test_steps_call_real_cli_commands_with_real_options(rel: str):
    from harmguard.runners.compile import load_pipeline

    calls = 0
    for template in _templates(_cron(rel)).values():
        container = template.get("container")
        if not container or container["command"][0] != "harmguard":
            continue
        argv = container["command"][1:] + container.get("args", [])
        command = _cli_command(argv[0])
        while (
            hasattr(command, "commands") and len(argv) > 1 and argv[1] in command.commands
        ):  # a group: `traffic purge`
            command, argv = command.commands[argv[1]], [f"{argv[0]} {argv[1]}", *argv[2:]]
        flags = {a for a in argv[1:] if a.startswith("--")}
        assert flags <= _options(command), (argv[0], flags - _options(command))
        calls += 1
        if argv[0] == "submit":
            pipeline = argv[argv.index("--pipeline") + 1]
            params = {argv[i + 1].split("=", 1)[0] for i, a in enumerate(argv) if a == "--param"}
            spec = load_pipeline(pipeline).pipeline_spec
            declared = set(spec.root.input_definitions.parameters.keys())
            assert params <= declared, (pipeline, params - declared)
    assert calls


def test_rayjob_runs_the_training_entry_point_and_cleans_up():
    spec = _kuberay("kuberay/ray-job.train.yaml")["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 0
    entry = spec["entrypoint"].split()
    assert entry[:3] == ["python", "-m", "harmguard.training.job_entry"]
    assert entry[entry.index("--workdir") + 1].startswith("gs://")
    (group,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    worker = group["template"]["spec"]
    assert int(worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in worker["tolerations"]
    assert spec["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"
    assert spec["rayClusterSpec"]["rayVersion"] == __import__("importlib.metadata").metadata.version("ray")
    # the entry point's own argument parser accepts exactly these arguments
    source = Path(job_entry.__file__).read_text()
    assert all(f'"{flag}"' in source for flag in entry if flag.startswith("--"))


def test_rayservice_serves_the_library_app_with_a_checked_user_config():
    from ray.serve.schema import ServeDeploySchema

    from harmguard.serving.config import MODEL_DEPLOYMENT as SERVE_DEPLOYMENT
    from harmguard.serving.config import SERVE_IMPORT_PATH, ServeArgs, UserConfig

    spec = _kuberay("kuberay/ray-service.classifier.yaml")["spec"]
    serve = yaml.safe_load(spec["serveConfigV2"])
    ServeDeploySchema.model_validate(serve)  # Ray's own schema of a Serve config
    (application,) = serve["applications"]
    assert application["import_path"] == SERVE_IMPORT_PATH
    ServeArgs.model_validate(application["args"])
    deployment = next(d for d in application["deployments"] if d["name"] == SERVE_DEPLOYMENT)
    user_config = UserConfig.model_validate(deployment["user_config"])  # checks the thresholds version
    assert user_config.model_uri and user_config.model_digest and user_config.thresholds
    auto = deployment["autoscaling_config"]
    assert deployment["num_replicas"] == "auto" and 1 <= auto["min_replicas"] <= auto["max_replicas"]
    assert deployment["health_check_period_s"] > 0 and deployment["health_check_timeout_s"] > 0
    assert spec["rayClusterConfig"]["enableInTreeAutoscaling"] is True


def test_rbac_is_least_privilege():
    account, role, binding = _docs("argo/rbac.workflows.yaml")
    assert [account["kind"], role["kind"], binding["kind"]] == ["ServiceAccount", "Role", "RoleBinding"]
    assert role["rules"] == [
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]


# --- the step helpers ------------------------------------------------------------------------------------------------


def _record(store: LocalStore, run_id: str, name: str, doc: dict[str, Any]) -> None:
    store.write_atomic(f"runs/{run_id}/{name}.json", json.dumps(doc).encode())


def test_training_outcome_reads_the_runs_records(tmp_path: Path):
    store = LocalStore(tmp_path / "home")
    _record(store, "r1", "blessing", {"blessed": True, "reasons": []})
    _record(store, "r1", "registration", {"version": "davidson2017/4", "model_digest": "a" * 64})
    assert argo.training_outcome(store, "r1") == {
        "run_id": "r1",
        "blessed": True,
        "version": "davidson2017/4",
        "reasons": [],
    }
    _record(store, "r2", "blessing", {"blessed": False, "reasons": ["macro_f1 0.51 < 0.55"]})
    assert argo.training_outcome(store, "r2")["version"] == "" and not argo.training_outcome(store, "r2")["blessed"]
    _record(store, "r3", "blessing", {"blessed": True})
    with pytest.raises(LookupError, match="registered no version"):
        argo.training_outcome(store, "r3")
    with pytest.raises(LookupError, match="no blessing record"):
        argo.training_outcome(store, "missing")


def test_outcome_command_writes_the_output_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("HARMGUARD_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    store = LocalStore(home)
    _record(store, "wf-1", "blessing", {"blessed": True, "reasons": []})
    _record(store, "wf-1", "registration", {"version": "sms_spam/2"})
    assert argo.main(["outcome", "wf-1", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "blessed").read_text() == "true"
    assert (tmp_path / "out" / "version").read_text() == "sms_spam/2"
    assert argo.main(["outcome", "nope", str(tmp_path / "out2")]) == 2
    assert "no blessing record" in capsys.readouterr().err


def test_notify_posts_the_failed_steps(capsys):
    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        failures = json.dumps([{"displayName": "train", "message": "Error (exit code 2)"}])
        url = f"http://127.0.0.1:{server.server_port}/hook"
        assert argo.main(["notify", "harmguard-retrain-123", "Failed", failures, "--url", url]) == 0
    finally:
        server.shutdown()
    assert received == [{"text": "workflow harmguard-retrain-123 ended Failed: train: Error (exit code 2)"}]
    assert "harmguard-retrain-123 ended Failed" in capsys.readouterr().err
    assert argo.main(["notify", "wf", "Error", "not json", "--url", ""]) == 0  # no URL: log only


# --- the CLI -------------------------------------------------------------------------------------------------------


def test_compile_renders_the_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    monkeypatch.setenv("HARMGUARD_IMAGE", "registry.example/harmguard:1.2.3")
    monkeypatch.setattr("harmguard.runners.compile.compile_pipelines", lambda output_dir=None, image=None: [])
    result = CliRunner().invoke(app, ["compile", "--manifests-dir", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "m" / "argo" / "cron-workflow.retrain.yaml").read_text()
    assert "image: registry.example/harmguard:1.2.3" in text
    assert sorted(p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*.yaml")) == sorted(FILES)


def test_add_comments_never_touches_literal_blocks_and_reports_missing_keys():
    text = "a: 1\nb: |\n  a: inside\nc: 2\n"
    assert manifests.add_comments(text, [("a", "first"), ("c", "third")]) == (
        "a: 1  # first\nb: |\n  a: inside\nc: 2  # third\n"
    )
    with pytest.raises(ValueError, match="no line with key 'zz'"):
        manifests.add_comments(text, [("zz", "missing")])
    with pytest.raises(ValueError):
        manifests.add_comments("a: |\n  b: 1\n", [("b", "inside a block")])


def test_manifest_error_for_a_rendered_object_with_a_typo(schema_settings: Settings, tmp_path: Path):
    doc = _kuberay("kuberay/ray-service.classifier.yaml")
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "x"
    path = tmp_path / "bad.yaml"
    path.write_text(manifests.dump_yaml([doc]))
    with pytest.raises(ManifestError, match=r"RayService/harmguard-classifier: spec\.rayClusterConfig\.headGroupSpec"):
        validate_file(path, settings=schema_settings)


def test_the_monitoring_workflow_purges_then_checks_and_a_crossed_bound_fails_it_unretried():
    doc = _cron("argo/cron-workflow.monitor.yaml")
    names = [t["name"] for t in doc["spec"]["workflowSpec"]["templates"]]
    assert len(names) == len(set(names))  # Argo resolves templates by name
    templates = _templates(doc)
    [[purge], [check]] = templates["monitor"]["steps"]
    assert (purge["template"], check["template"]) == ("traffic-purge", "check-drift")
    args = templates["check-drift"]["container"]["args"]
    assert args[:2] == ["monitor", "--policy"] and "--since" in args
    assert templates["traffic-purge"]["container"]["args"][:2] == ["traffic", "purge"]
    # exit 3 (a crossed bound) is an answer, not a failure: the retry expression names only pod errors and 1/137/143
    expression = templates["check-drift"]["retryStrategy"]["expression"]
    assert "in [1, 137, 143]" in expression and "exitCode) in [1, 137, 143]" in expression
    assert doc["spec"]["workflowSpec"]["onExit"] == "exit-handler"
