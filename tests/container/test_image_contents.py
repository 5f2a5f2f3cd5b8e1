"""The built image by itself: its CLI as user 1000, what it must not contain, and the entry points the cluster names
(the Ray Jobs entry point, the Serve config) resolved from the installed package, with no source tree around."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.container.conftest import ROOT, TORCH, docker, run_in

pytestmark = pytest.mark.container

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# CONTRACTS.md: the commands of the one entry point.
COMMANDS = "run status compile approve reject promote rollback serve score submit labels".split()


def test_the_cli_answers_as_user_1000(image: str, image_config: dict[str, Any]):
    assert image_config["Config"]["User"] == "1000:1000"  # numeric: Kubernetes' runAsNonRoot can verify it
    done = run_in(image, "sh", "-c", "id -u && id -g && harmguard --help")
    assert done.returncode == 0, done.stderr[-2000:]
    uid, gid, *help_lines = done.stdout.splitlines()
    assert (uid, gid) == ("1000", "1000")
    listed = {m.group(1) for line in help_lines if (m := re.match(r"^│ (\S+)\s", line))}
    assert set(COMMANDS) <= listed, listed
    explicit = run_in(image, "harmguard", "status", "--help")  # a subcommand loads its own imports
    assert explicit.returncode == 0 and "--json" in explicit.stdout, explicit.stderr[-2000:]


def test_the_installed_version_is_the_project_version(image: str):
    code = "import harmguard, importlib.metadata as m; print(harmguard.__version__, m.version('harmguard'))"
    done = run_in(image, "python", "-c", code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [VERSION, VERSION]


def test_harmguard_version_as_user_1000(image: str):
    done = run_in(image, "harmguard", "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"harmguard {VERSION}", done.stdout + done.stderr


def test_the_package_is_the_installed_one_and_torch_is_the_requested_build(image: str):
    code = "import harmguard, torch; print(harmguard.__file__); print(torch.version.cuda)"
    done = run_in(image, "python", "-c", code)
    assert done.returncode == 0, done.stderr[-2000:]
    where, cuda = done.stdout.split()
    assert where == "/opt/venv/lib/python3.11/site-packages/harmguard/__init__.py"
    assert (cuda == "None") == (TORCH == "cpu"), f"TORCH={TORCH} but torch.version.cuda is {cuda}"


def test_nothing_can_be_installed_and_the_host_pip_settings_stay_out(image: str, image_config: dict[str, Any]):
    done = run_in(image, "python", "-m", "pip", "--version")
    assert done.returncode != 0 and "No module named pip" in done.stderr  # no pip left to install anything
    env = dict(e.split("=", 1) for e in image_config["Config"]["Env"])
    assert not {"PIP_INDEX_URL", "PIP_CERT", "PIP_FIND_LINKS"} & set(env), env
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    if os.environ.get("PIP_INDEX_URL"):  # it may carry credentials: a secret, never an argument or layer
        assert os.environ["PIP_INDEX_URL"] not in history + json.dumps(image_config)
    wheels = sorted(
        f.name
        for folder in os.environ.get("PIP_FIND_LINKS", "").split()
        if Path(folder.removeprefix("file://")).is_dir()
        for f in Path(folder.removeprefix("file://")).iterdir()
        if f.suffix == ".whl"
    )
    if wheels:  # bind-mounted into pip's step, never copied: no layer holds them
        names = sum((["-name", w, "-o"] for w in wheels), [])[:-1]
        found = run_in(image, "find", "/", "-xdev", "(", *names, ")", user="0")  # root: every folder is searched
        assert found.returncode == 0 and found.stdout == "", found.stdout + found.stderr
    assert "/run/secrets/" not in json.dumps(image_config["Config"])


def test_the_entry_points_the_cluster_names_resolve_in_the_image(image: str):
    # scripts/check_image_imports.py collects them from this checkout's compiled pipelines and manifests (mounted
    # read-only); it imports each from the image's installed package, from /tmp.
    mounts = tuple((ROOT / d, f"/checkout/{d}") for d in ("scripts", "pipelines", "manifests", "ray"))
    done = run_in(image, "python", "/checkout/scripts/check_image_imports.py", "--json", mounts=mounts)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    named = {(m, a) for _, m, a in doc["targets"]}
    assert ("harmguard.training.job_entry", "main") in named and ("harmguard.serving.app", "build_app") in named
    assert doc["problems"] == []


def test_the_ray_jobs_entry_point_resolves_from_the_package(image: str):
    for command in (
        ["python", "-m", "harmguard.training.job_entry", "--help"],
        ["python", "/app/ray/train_entry.py", "--help"],
    ):
        done = run_in(image, *command)
        assert done.returncode == 0 and "--workdir" in done.stdout, (command, done.stderr[-2000:])


SERVE_CHECK = """
import importlib, json, yaml
from ray.serve.schema import ServeDeploySchema
from harmguard.k8s.manifests import FILES, render

rayservice = yaml.safe_load(render(next(f for f in FILES if f.path == "kuberay/ray-service.classifier.yaml")))
configs = {
    "RayService serveConfigV2 (rendered from the package)": yaml.safe_load(rayservice["spec"]["serveConfigV2"]),
    "/app/ray/serve_config.yaml": yaml.safe_load(open("/app/ray/serve_config.yaml")),
}
built = {}
for origin, config in configs.items():
    schema = ServeDeploySchema.model_validate(config)
    for app in schema.applications:
        module, attr = app.import_path.split(":")
        application = getattr(importlib.import_module(module), attr)(app.args)
        built[origin] = [app.import_path, type(application).__name__]
print(json.dumps(built))
"""


def test_the_serve_config_resolves_and_builds_its_application_in_the_image(image: str):
    done = run_in(image, "python", "-c", SERVE_CHECK)
    assert done.returncode == 0, done.stderr[-3000:]
    built = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(built) == 2
    assert all(v == ["harmguard.serving.app:build_app", "Application"] for v in built.values()), built
