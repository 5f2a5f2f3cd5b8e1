"""The suite cannot pass by accident: without the mirrors neither CI nor pytest starts, and says which folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _env(**overrides: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}, **overrides}


@pytest.mark.parametrize("var", ["HARMGUARD_DATA_MIRROR", "HARMGUARD_SCHEMA_MIRROR"])
def test_pytest_refuses_to_start_without_a_mirror(var: str, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for value, says in ((str(tmp_path / "nowhere"), "does not exist"), (str(empty), "is empty")):
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/kernel/test_exit_codes.py"],
            cwd=ROOT,
            env=_env(**{var: value}),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout[-2000:]
        assert f"{var}: {Path(value).resolve()} {says}" in proc.stdout + proc.stderr
        assert " passed" not in proc.stdout  # not one test ran


def test_ci_fails_in_its_first_seconds_naming_the_missing_mirror(tmp_path: Path):
    project = tmp_path / "project"
    (project / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", project / ".ci" / "run")
    (project / "Makefile").write_text("lint typecheck check-image test:\n\ttouch $(CURDIR)/made-$@\n")
    proc = subprocess.run(
        ["bash", ".ci/run"],
        cwd=project,
        env=_env(HARMGUARD_DATA_MIRROR=str(tmp_path / "gone")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and f"HARMGUARD_DATA_MIRROR={tmp_path / 'gone'} is missing or empty" in proc.stderr
    assert not list(project.glob("made-*"))  # it stopped before building or testing anything
