"""The wheel the image installs: built from the repository, installed into a fresh virtual environment, it runs what
the compiled pipelines, the manifests and ray/ name, with no file of the source checkout.

The fresh environment gets harmguard from the wheel alone; its dependencies come from this environment's
site-packages through a path entry (the same lock the image installs), whose ``.pth`` files, the editable install's
among them, are not processed. Every command runs from a temporary folder, so nothing imports from ``src/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from harmguard.settings import DEFAULT_IMAGE

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HARMGUARD_IMAGE")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)]
    built = _run(cmd, cwd=out)
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = out.glob("harmguard-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(root)], cwd=root)
    assert made.returncode == 0, made.stderr
    python = root / "bin" / "python"
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root).stdout.strip()
    )
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # dependencies only, .pth not processed
    installed = _run(
        [sys.executable, "-m", "uv", "pip", "install", "--python", str(python), "--no-deps", str(wheel)], root
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return root


def test_the_wheel_holds_the_package_and_its_pipeline_layer_not_generic_top_level_packages(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("harmguard-")}
    assert tops == {"harmguard"}  # no top-level `components` or `pipelines` in site-packages
    for required in (
        "harmguard/pipelines/training.py",
        "harmguard/components/train.py",
        "harmguard/training/job_entry.py",
        "harmguard/reports/templates/review.html.j2",
        "harmguard/golden/davidson2017.jsonl",
        "harmguard/policies/davidson2017.yaml",
    ):
        assert required in names, required


def test_the_installed_wheel_imports_every_entry_point_the_cluster_names(venv: Path, tmp_path: Path):
    python = str(venv / "bin" / "python")
    where = _run([python, "-c", "import harmguard, harmguard.pipelines; print(harmguard.__file__)"], tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # the wheel's copy, not src/
    checked = _run([python, str(ROOT / "scripts" / "check_image_imports.py"), "--json"], tmp_path)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    doc = json.loads(checked.stdout.strip().splitlines()[-1])
    named = {(m, a) for _, m, a in doc["targets"]}
    assert ("harmguard.training.job_entry", "main") in named and ("harmguard.serving.app", "build_app") in named
    assert doc["problems"] == []


def test_the_ray_jobs_entry_point_and_serve_config_resolve_from_the_package(venv: Path, tmp_path: Path):
    python = str(venv / "bin" / "python")
    entry = _run([python, "-m", "harmguard.training.job_entry", "--help"], tmp_path)
    assert entry.returncode == 0 and "--workdir" in entry.stdout, entry.stderr
    code = (
        "from harmguard.k8s.manifests import FILES, render; "
        "from harmguard.promotion.golden import golden_bytes; "
        "from harmguard.reports.render import TEMPLATES; "
        "assert golden_bytes('davidson2017'); TEMPLATES.get_template('review.html.j2'); "
        "print(sum(1 for f in FILES if render(f)))"
    )
    rendered = _run([python, "-c", code], tmp_path)
    assert rendered.returncode == 0 and int(rendered.stdout) >= 5, rendered.stderr[-2000:]


def test_the_installed_cli_compiles_the_same_pipelines_from_the_package(venv: Path, tmp_path: Path):
    out = tmp_path / "compiled"
    done = _run([str(venv / "bin" / "harmguard"), "compile", "--output-dir", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for golden in sorted((ROOT / "pipelines").glob("*.yaml")):
        assert (out / golden.name).read_text() == golden.read_text(), golden.name
    for golden in sorted((ROOT / "manifests").rglob("*.yaml")):
        assert (out / "manifests" / golden.relative_to(ROOT / "manifests")).read_text() == golden.read_text()
    assert DEFAULT_IMAGE in (out / "training.yaml").read_text()
