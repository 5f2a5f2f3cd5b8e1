"""The RayJob launcher (harmguard.k8s.rayjob) against a stand-in of the Kubernetes API (tests/support/k8s_standin.py).

The stand-in validates the created RayJob against the pinned KubeRay v1.7 CRD and replays status sequences shaped
like KubeRay's (``jobDeploymentStatus`` / ``jobStatus`` / ``reason`` / ``message`` / ``succeeded`` / ``failed``, from
``ray-operator/apis/ray/v1/rayjob_types.go``), each checked against the CRD's status schema as it is served.
"""

import json

import pytest

from harmguard.k8s.kuberay import TRAIN_ENTRY_MODULE
from harmguard.k8s.rayjob import (
    RayJobDeadlineExceeded,
    RayJobError,
    RayJobLauncher,
    build_training_rayjob,
    custom_objects_api,
    rayjob_name,
)
from harmguard.k8s.schemas import validate_manifest
from harmguard.steps.train_rayjob import train_rayjob_step
from tests.support.k8s_standin import K8sStandIn, Step

IMAGE = "registry.example.com/harmguard/harmguard:9.9.9-test"
NS = "ml-training"
RUN_ID = "davidson2017-20261125-010203-abc123"
T0, T1 = "2026-11-25T01:02:03Z", "2026-11-25T01:12:03Z"
JOB_ID = "hg-train-davidson2017-xk2p9"
PROGRESS = 'HGPROGRESS {"epoch": 1, "step": 40, "loss": 0.41}\n'


def manifest(deadline_s: int = 3600) -> dict:
    return build_training_rayjob(
        run_id=RUN_ID,
        namespace=NS,
        image=IMAGE,
        workdir="gs://harmguard-prod/home/runs/r1/rayjob",
        workers=2,
        gpu_per_worker=1,
        deadline_s=deadline_s,
    )


def _base(dashboard: str) -> dict:
    cluster = f"{rayjob_name(RUN_ID)}-raycluster-7tq4m"
    return {
        "jobId": JOB_ID,
        "rayClusterName": cluster,
        "dashboardURL": dashboard,  # KubeRay: <cluster>-head-svc.<ns>.svc.cluster.local:8265; here the stand-in
        "startTime": T0,
        "observedGeneration": 1,
    }


def running(dashboard: str, logs: str = "") -> list[Step]:
    b = _base(dashboard)
    return [
        Step({}),  # created, not reconciled yet
        Step({**b, "jobDeploymentStatus": "Initializing", "rayClusterStatus": {"desiredWorkerReplicas": 2}}),
        Step({**b, "jobDeploymentStatus": "Running", "jobStatus": "PENDING"}),
        Step({**b, "jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, logs=logs),
    ]


def succeeded(dashboard: str) -> list[Step]:
    done = {**_base(dashboard), "jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "endTime": T1}
    done.update(succeeded=1, failed=0, rayJobInfo={"startTime": T0, "endTime": T1})
    return [*running(dashboard, PROGRESS), Step(done, logs=PROGRESS + "training done\n")]


def app_failed(dashboard: str) -> list[Step]:
    logs = PROGRESS + "Traceback (most recent call last):\ntorch.OutOfMemoryError: CUDA out of memory\n"
    message = (
        "Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\n"
        "torch.OutOfMemoryError: CUDA out of memory"
    )
    failed = {**_base(dashboard), "jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "endTime": T1}
    failed.update(reason="AppFailed", message=message, failed=1, succeeded=0)
    return [*running(dashboard, PROGRESS), Step(failed, logs=logs)]


def kuberay_deadline(dashboard: str) -> list[Step]:
    message = f"The RayJob has passed the activeDeadlineSeconds. StartTime: {T0}. ActiveDeadlineSeconds: 3600"
    failed = {**_base(dashboard), "jobDeploymentStatus": "Failed", "jobStatus": "RUNNING", "endTime": T1}
    failed.update(reason="DeadlineExceeded", message=message, failed=1, succeeded=0)
    return [*running(dashboard), Step(failed)]


def submission_failed(dashboard: str) -> list[Step]:
    b = {k: v for k, v in _base(dashboard).items() if k != "dashboardURL"}
    message = "Job submission has failed. Reason: BackoffLimitExceeded. Message: Job has reached the specified backoff"
    message += " limit"
    return [
        Step({}),
        Step({**b, "jobDeploymentStatus": "Initializing"}),
        Step({**b, "jobDeploymentStatus": "Failed", "reason": "SubmissionFailed", "message": message, "failed": 1}),
    ]


def retried_then_succeeded(dashboard: str) -> list[Step]:
    b = _base(dashboard)
    retry = Step({**b, "jobDeploymentStatus": "Retrying", "jobStatus": "FAILED", "failed": 1, "succeeded": 0})
    again = Step({**b, "jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "failed": 1}, logs=PROGRESS)
    done = {**b, "jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "failed": 1, "succeeded": 1}
    return [*running(dashboard), retry, again, Step(done, logs=PROGRESS)]


def never_ends(dashboard: str) -> list[Step]:
    return running(dashboard, PROGRESS)  # the last step (RUNNING) repeats


@pytest.fixture()
def strict(schema_settings):
    return lambda obj: validate_manifest(obj, settings=schema_settings)


def launch(standin: K8sStandIn, *, deadline_s: float = 60, obj: dict | None = None):
    lines: list[str] = []
    launcher = RayJobLauncher(custom_objects_api(standin.host), NS, poll_s=0.005, echo=lines.append)
    return launcher, lines, (lambda: launcher.run(obj or manifest(), deadline_s=deadline_s))


def test_success_creates_a_valid_rayjob_and_streams_driver_logs(strict):
    with K8sStandIn(succeeded, validate=strict) as api:
        _, lines, run = launch(api)
        final = run()
    assert final["jobStatus"] == "SUCCEEDED" and final["succeeded"] == 1
    [created] = api.created()
    spec = created["spec"]
    assert created["metadata"]["namespace"] == NS and created["metadata"]["name"] == rayjob_name(RUN_ID)
    assert spec["entrypoint"].startswith(f"python -m {TRAIN_ENTRY_MODULE} --workdir gs://")
    assert spec["activeDeadlineSeconds"] == 3600 and spec["shutdownAfterJobFinishes"] is True
    pods = [spec["rayClusterSpec"]["headGroupSpec"]["template"], spec["submitterPodTemplate"]]
    pods += [g["template"] for g in spec["rayClusterSpec"]["workerGroupSpecs"]]
    assert {c["image"] for p in pods for c in p["spec"]["containers"]} == {IMAGE}  # one image everywhere
    worker = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    limits = worker["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert worker["replicas"] == 2 and limits["nvidia.com/gpu"]
    assert worker["template"]["spec"]["nodeSelector"] and worker["template"]["spec"]["tolerations"]
    assert any("HGPROGRESS" in line for line in lines)  # progress reached the step's log while it ran
    assert api.deleted == []  # a finished job is left to KubeRay's TTL


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (app_failed, ["AppFailed", "exit code 1", "CUDA out of memory", "driver log lines", "Traceback (most recent"]),
        (kuberay_deadline, ["DeadlineExceeded", "passed the activeDeadlineSeconds"]),
        (submission_failed, ["SubmissionFailed", "BackoffLimitExceeded", "driver logs unavailable", "kubectl logs"]),
    ],
)
def test_failures_surface_reason_message_and_logs(strict, script, expected):
    with K8sStandIn(script, validate=strict) as api:
        _, _, run = launch(api)
        with pytest.raises(RayJobError) as info:
            run()
    text = str(info.value)
    for fragment in expected:
        assert fragment in text
    assert not isinstance(info.value, RayJobDeadlineExceeded)


def test_retrying_is_not_the_end(strict):
    with K8sStandIn(retried_then_succeeded, validate=strict) as api:
        _, lines, run = launch(api)
        final = run()
    assert final["failed"] == 1 and final["succeeded"] == 1
    assert any("Retrying" in line for line in lines)


def test_deadline_overrun_deletes_the_rayjob(strict):
    with K8sStandIn(never_ends, validate=strict) as api:
        _, _, run = launch(api, deadline_s=1.0)  # long enough to reach RUNNING under load
        with pytest.raises(RayJobDeadlineExceeded, match="deadline; deleted it") as info:
            run()
    assert api.deleted == [(NS, rayjob_name(RUN_ID))]
    assert [r.query for r in api.requests if r.method == "DELETE"] == ["propagationPolicy=Foreground"]
    assert "HGPROGRESS" in str(info.value)  # what the driver printed before it was stopped


def test_a_retried_launcher_attaches_to_its_rayjob(strict):
    with K8sStandIn(succeeded, validate=strict) as api:
        _, _, run = launch(api)
        run()
        _, lines, again = launch(api)
        assert again()["jobStatus"] == "SUCCEEDED"
    assert len(api.objects) == 1 and any("exists already" in line for line in lines)


def test_an_invalid_object_is_refused_by_the_api(strict):
    bad = manifest()
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "two"
    with K8sStandIn(succeeded, validate=strict) as api:
        _, _, run = launch(api, obj=bad)
        with pytest.raises(RayJobError, match="HTTP 422") as info:
            run()
    assert "replicas" in str(info.value)


def test_rayjob_names_are_stable_dns_labels():
    name = rayjob_name("Davidson2017_20261125-010203-ABC123" * 3)
    assert name == rayjob_name("Davidson2017_20261125-010203-ABC123" * 3)
    assert len(name) <= 47 and name.replace("-", "").isalnum() and name == name.lower()  # KubeRay's RayJob limit
    assert rayjob_name("a") != rayjob_name("b")


@pytest.mark.parametrize(
    ("family", "home", "message"),
    [("baseline", "gs://bucket/home", "transformer family"), ("transformer", None, "gs:// only")],
)
def test_train_step_refuses_what_a_rayjob_cannot_run(hg_env, monkeypatch, family, home, message):
    if home:
        monkeypatch.setenv("HARMGUARD_HOME", home)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/never-used.db")
    with pytest.raises(ValueError, match=message):
        train_rayjob_step("sms_spam", family, "/nonexistent.parquet", 0, RUN_ID, "/tmp/model", json.dumps({}))
