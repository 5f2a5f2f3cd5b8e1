"""`harmguard submit` against a local stand-in of the KFP v2beta1 API (tests/support/kfp_standin.py).

What reaches the stand-in is what a real server would get: the compiled pipeline spec (loaded back with the kfp
SDK by the stand-in), the platform spec, typed runtime parameters and the run's service account.
"""

import json

import pytest
from typer.testing import CliRunner

from harmguard.cli import app
from harmguard.runners.compile import available_pipelines
from harmguard.runners.submit import SubmitError, submit
from tests.support.kfp_standin import KfpStandIn

IMAGE = "registry.example.com/harmguard/harmguard:9.9.9-test"


@pytest.fixture()
def kfp_api():
    with KfpStandIn() as standin:
        yield standin


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env={"HARMGUARD_IMAGE": IMAGE, **(env or {})})


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def executor_images(body: dict) -> set[str]:
    spec = body["pipeline_spec"].get("pipeline_spec", body["pipeline_spec"])
    return {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}


def test_submit_training_creates_a_run_with_the_configured_image(kfp_api):
    result = invoke("submit", "--host", kfp_api.host, "--param", "policy=sms_spam", "--param", "sample=200", "--json")
    assert result.exit_code == 0, result.output
    doc = last_json(result.stdout)
    [body] = kfp_api.created_runs()
    assert doc["run_id"] == kfp_api.runs[doc["run_id"]]["run_id"] and doc["ok"] is True
    assert kfp_api.loaded_specs[0].name == "harmguard-training"
    assert executor_images(body) == {IMAGE}  # the setting, read at submit time, reaches every step
    platform = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert platform["exec-train"]["tolerations"] and platform["exec-train"]["nodeSelector"]
    params = body["runtime_config"]["parameters"]
    assert params["sample"] == 200 and params["policy"] == "sms_spam"  # typed by the compiled signature
    assert params["run_id"].startswith("sms_spam-")  # a fresh run id, never the "manual" default
    exp = kfp_api.experiments[body["experiment_id"]]
    assert exp["display_name"] == "harmguard"


def test_submit_reuses_the_experiment(kfp_api):
    for _ in range(2):
        assert invoke("submit", "--host", kfp_api.host).exit_code == 0
    assert len(kfp_api.experiments) == 1 and len(kfp_api.created_runs()) == 2


def test_rayjob_backend_submits_the_launcher_variant(kfp_api):
    result = invoke("submit", "--host", kfp_api.host, "--backend", "rayjob", "--param", "rayjob_workers=4", "--json")
    assert result.exit_code == 0, result.output
    [body] = kfp_api.created_runs()
    assert kfp_api.loaded_specs[0].name == "harmguard-training-rayjob"
    executors = body["pipeline_spec"]["pipeline_spec"]["deploymentSpec"]["executors"]
    assert "exec-train-rayjob" in executors and "exec-train" not in executors
    assert body["runtime_config"]["parameters"]["rayjob_workers"] == 4


def test_backend_only_applies_to_training(kfp_api):
    result = invoke("submit", "--host", kfp_api.host, "--pipeline", "promotion", "--backend", "rayjob")
    assert result.exit_code == 2 and "training pipeline only" in result.output
    assert kfp_api.created_runs() == []


@pytest.mark.parametrize("name", [p for p in ("promotion", "scoring") if p in available_pipelines()])
def test_other_pipelines_submit(kfp_api, name):
    result = invoke("submit", "--host", kfp_api.host, "--pipeline", name, "--service-account", "harmguard-runner")
    assert result.exit_code == 0, result.output
    [body] = kfp_api.created_runs()
    assert body["service_account"] == "harmguard-runner"
    assert executor_images(body) == {IMAGE}


def test_wait_succeeds_and_reports_each_state(kfp_api):
    result = invoke("submit", "--host", kfp_api.host, "--wait", "--poll", "0.01", "--json")
    assert result.exit_code == 0, result.output
    doc = last_json(result.stdout)
    assert doc["state"] == "SUCCEEDED" and doc["error"] is None
    for state in ("PENDING", "RUNNING", "SUCCEEDED"):
        assert f"state {state}" in result.stderr
    polls = [r for r in kfp_api.requests if r.method == "GET" and r.path.endswith(doc["run_id"])]
    assert len(polls) == 3


@pytest.mark.parametrize("final", ["FAILED", "CANCELED"])
def test_wait_exits_3_when_the_run_does_not_succeed(final):
    with KfpStandIn(states=["RUNNING", final], failure_message="task 'train' failed: OOMKilled") as kfp_api:
        result = invoke("submit", "--host", kfp_api.host, "--wait", "--poll", "0.01", "--json")
    assert result.exit_code == 3
    doc = last_json(result.stdout)
    assert doc["state"] == final and doc["ok"] is False and doc["run_id"]
    if final == "FAILED":
        assert "OOMKilled" in doc["error"]  # the server's reason reaches the caller


def test_wait_gives_up_after_the_timeout(kfp_api):
    kfp_api.states = ["RUNNING"]
    with pytest.raises(SubmitError, match="still RUNNING"):
        submit(kfp_api.host, "training", image=IMAGE, wait=True, timeout_s=0.05, poll_s=0.01)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "epochs=3"], "unknown parameter"),
        (["--param", "sample=many"], "not a valid number_integer"),
        (["--param", "sample"], "expected NAME=VALUE"),
        (["--pipeline", "nightly"], "is not one of"),  # enums: Click refuses the value before submit() runs
        (["--backend", "spark"], "is not one of"),
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(kfp_api, args, message):
    result = invoke("submit", "--host", kfp_api.host, *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert kfp_api.created_runs() == []


def test_a_refusal_of_the_api_is_reported():
    with KfpStandIn(reject_runs="admission webhook denied the request: quota exceeded") as kfp_api:
        result = invoke("submit", "--host", kfp_api.host)
    assert result.exit_code == 1  # the cluster said no for now (quota): worth a later try
    assert "HTTP 400" in result.output and "quota exceeded" in result.output
