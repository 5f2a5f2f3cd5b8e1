"""CLI habits: --version, shell completion, enum choices, KF_PIPELINES_ENDPOINT, and --json on every command.

Commands run in this process through ``harmguard.cli.main`` (the console script's entry point), so what is checked is
what a user's shell gets: exit codes, stdout and stderr.
"""

from __future__ import annotations

import json
import uuid
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import pytest
import typer

import harmguard
from harmguard.cli import Backend, Family, Pipeline, app, main
from harmguard.exit_codes import ExitCode
from harmguard.registry.models import publish_model
from harmguard.runners.submit import BACKENDS, PIPELINE_CHOICES
from harmguard.settings import Settings
from harmguard.storage import LocalStore
from harmguard.training.dispatch import FAMILIES
from tests.promotion.helpers import register
from tests.support.kfp_standin import KfpStandIn

# Commands whose result no machine reads: `serve` runs in the foreground until stopped (a machine reads its endpoint
# file and /readyz). Every other command takes --json.
WITHOUT_JSON = {("serve",)}


def call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `harmguard ARGS` as the console script does; (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), out.out, out.err


def last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


def command_paths() -> list[tuple[tuple[str, ...], Any]]:
    """Every leaf command of the CLI with its path (``("labels", "import")``...)."""
    found = []

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        subcommands = getattr(cmd, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, (*path, name))
        else:
            found.append((path, cmd))

    walk(typer.main.get_command(app), ())
    return sorted(found, key=lambda item: item[0])


@pytest.fixture
def env(settings: Settings, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The CLI's environment: the test's home, the session's migrated MLflow database, no network."""
    for name, value in {
        "HARMGUARD_HOME": settings.home,
        "HARMGUARD_CACHE": str(settings.cache),
        "HARMGUARD_DATA_MIRROR": str(settings.data_mirror),
        "MLFLOW_TRACKING_URI": mlflow_uri,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    return settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri})


@pytest.fixture
def version(env: Settings, tmp_path: Path) -> str:
    """A blessed version registered by another principal than this process's (so this login may approve it)."""
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.json").write_text('{"family": "baseline"}')
    (folder / "weights.npy").write_bytes(b"\x93NUMPY weights")
    store = LocalStore(env.home)
    return register(store, env, f"cli-{uuid.uuid4().hex[:8]}", publish_model(store, folder)).version


# --- --version and completion -----------------------------------------------------------------------------------


def test_version_prints_the_package_version(capsys):
    code, out, _ = call(capsys, "--version")
    assert code == 0 and out == f"harmguard {harmguard.__version__}\n"
    assert harmguard.__version__ == dist_version("harmguard")  # the code's and the installed distribution's agree


def test_completion_script_and_completions(capsys, monkeypatch):
    code, script, _ = call(capsys, "--show-completion", "bash")
    assert code == 0 and "_HARMGUARD_COMPLETE=complete_bash" in script and "complete -o" in script
    # what the installed script asks for at a TAB: subcommands, then an enum option's choices
    monkeypatch.setenv("_HARMGUARD_COMPLETE", "complete_bash")
    for words, cword, expected in [
        ("harmguard sub", "1", ["submit"]),
        ("harmguard submit --pipeline ", "3", ["training", "promotion", "scoring"]),
        ("harmguard run --family ", "3", ["baseline", "transformer"]),
    ]:
        monkeypatch.setenv("COMP_WORDS", words)
        monkeypatch.setenv("COMP_CWORD", cword)
        code, out, _ = call(capsys)
        assert code == 0 and out.split() == expected, words


# --- enum options -----------------------------------------------------------------------------------------------


def test_the_enums_are_the_librarys_choices():
    assert tuple(Family) == FAMILIES
    assert tuple(Pipeline) == PIPELINE_CHOICES
    assert tuple(Backend) == BACKENDS


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--family", "gpt"],
        ["submit", "--host", "http://127.0.0.1:9", "--pipeline", "nightly"],
        ["submit", "--host", "http://127.0.0.1:9", "--backend", "spark"],
    ],
)
def test_an_enum_option_refuses_a_bad_value_with_exit_2(capsys, env, args):
    code, out, err = call(capsys, *args)
    assert code == ExitCode.USAGE == 2 and out == "" and "is not one of" in err
    code, out, _ = call(capsys, *args, "--json")
    doc = last_json(out)
    assert code == doc["exit_code"] == 2 and "is not one of" in doc["error"] and args[-1] in doc["error"]


# --- --host from KF_PIPELINES_ENDPOINT --------------------------------------------------------------------------


def test_submit_reads_the_host_from_kf_pipelines_endpoint(capsys, env, monkeypatch):
    code, _, err = call(capsys, "submit")
    assert code == 2 and "--host" in err  # neither the option nor the variable: a usage error
    with KfpStandIn() as kfp_api:
        monkeypatch.setenv("KF_PIPELINES_ENDPOINT", kfp_api.host)
        code, out, err = call(capsys, "submit", "--param", "policy=sms_spam", "--json")
        assert code == 0, err
        assert last_json(out)["host"] == kfp_api.host and len(kfp_api.created_runs()) == 1


# --- --json everywhere ------------------------------------------------------------------------------------------


def test_every_command_a_machine_reads_takes_json():
    missing = [path for path, cmd in command_paths() if "as_json" not in {p.name for p in cmd.params}]
    assert set(missing) == WITHOUT_JSON, f"add --json (JsonFlag) to {sorted(set(missing) - WITHOUT_JSON)}"


@pytest.mark.parametrize("path", [p for p, _ in command_paths() if p not in WITHOUT_JSON], ids=" ".join)
def test_a_usage_error_under_json_is_a_json_object(capsys, env, path):
    code, out, err = call(capsys, *path, "--json", "--no-such-option")
    doc = last_json(out)
    assert code == doc["exit_code"] == ExitCode.USAGE and "No such option: --no-such-option" in doc["error"]
    assert "No such option" in err  # the person at the terminal still reads it on stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["status", "--policy", "nope"], ExitCode.USAGE, "no registered versions for policy 'nope'"),
        (["approve", "nope/1", "--reason", "r"], ExitCode.USAGE, "no version nope/1"),
        (["reject", "nope/1", "--reason", "r"], ExitCode.USAGE, "no version nope/1"),
        (["rollback", "--policy", "nope", "--reason", "r"], ExitCode.REJECTED, "nope has no champion to roll back"),
        (["run", "--columns", "{"], ExitCode.USAGE, "--columns is not valid JSON"),
        (["submit", "--host", "http://127.0.0.1:9", "--param", "sample"], ExitCode.USAGE, "expected NAME=VALUE"),
        (["score", "--input", "in.csv", "--output", "out"], ExitCode.USAGE, "choose a policy with --policy"),
        (["labels", "import", "nowhere.jsonl", "--policy", "sms_spam"], ExitCode.INVALID_INPUT, "file not found"),
        (["labels", "status", "--policy", "nope"], ExitCode.USAGE, "unknown policy 'nope'"),
        (["labels", "erase", "--policy", "nope", "--item-id", "i", "--reason", "r"], ExitCode.USAGE, "unknown policy"),
        (["retrain-needed", "--policy", "nope"], ExitCode.USAGE, "unknown policy 'nope'"),
        (["compile", "--output-dir", "/proc/harmguard-nowhere"], ExitCode.UNEXPECTED, "unexpected error"),
    ],
    ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else "",
)
def test_a_refusal_under_json_is_a_json_object_with_its_exit_code(capsys, env, args, code, message):
    got, out, _ = call(capsys, *args, "--json")
    doc = last_json(out)
    assert got == doc["exit_code"] == code and message in doc["error"] and set(doc) == {"error", "exit_code"}


def test_json_does_not_carry_over_to_the_next_command_in_the_same_process(capsys, env):
    code, out, _ = call(capsys, "status", "--policy", "nope", "--json")
    assert code == 2 and last_json(out)["exit_code"] == 2
    code, out, err = call(capsys, "serve", "--policy", "nope")  # no --json: the refusal is for the terminal only
    assert code == 2 and out == "" and "nope" in err


def test_approve_and_reject_print_the_recorded_event(capsys, env, version):
    code, out, err = call(capsys, "approve", version, "--reason", "report read", "--json")
    assert code == 0, err
    approved = last_json(out)
    assert approved["event"] == "approve" and approved["version"] == version and approved["expires_at"]
    code, out, err = call(capsys, "reject", version, "--reason", "bias slice", "--json")
    assert code == 0, err
    rejected = last_json(out)
    assert rejected["event"] == "reject" and rejected["why"] == "bias slice"
    code, out, _ = call(capsys, "status", "--json")
    assert code == 0 and version in json.dumps(last_json(out)["policies"])


def test_the_other_commands_json_parses(capsys, env, tmp_path):
    code, out, err = call(capsys, "status", "--json")
    assert code == 0 and last_json(out) == {"policies": {}}, err
    code, out, err = call(capsys, "labels", "erase", "--policy", "sms_spam", "--item-id", "i-1", "--reason", "gone",
                          "--json")  # fmt: skip
    assert code == 0 and last_json(out)["new"] is True, err
    code, out, err = call(capsys, "labels", "status", "--policy", "sms_spam", "--json")
    assert code == 0 and last_json(out)["events"] == 0, err
    code, out, err = call(capsys, "retrain-needed", "--policy", "sms_spam", "--json")
    assert code == 0 and last_json(out)["due"] is True, err  # no champion yet
    code, out, err = call(capsys, "compile", "--output-dir", str(tmp_path / "p"), "--manifests-dir",
                          str(tmp_path / "m"), "--json")  # fmt: skip
    doc = last_json(out)
    assert code == 0 and doc["pipelines"] and doc["manifests"], err
    assert all(Path(p).is_file() for p in doc["pipelines"] + doc["manifests"])
