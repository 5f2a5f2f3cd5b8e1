"""The lock files (`make lock`) read as pip reads them: one requirement per logical line, its options after it."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

DEV_LOCK = ROOT / "requirements.lock"
PROD_LOCK = ROOT / "requirements.prod.lock"
TORCH_CPU_LOCK = ROOT / "requirements-torch-cpu.lock"
TORCH_CUDA_LOCK = ROOT / "requirements-torch-cuda.lock"
MODELS = ROOT / "requirements-models.txt"
BUILD_LOCK = ROOT / "requirements-build.lock"  # the image's `project` stage only
# Every file an environment or the image installs with --require-hashes.
HASHED = (DEV_LOCK, PROD_LOCK, TORCH_CPU_LOCK, TORCH_CUDA_LOCK, MODELS, BUILD_LOCK)
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class Pin:
    name: str  # canonical (PEP 503)
    requirement: Requirement
    hashes: frozenset[str]
    line: str  # the logical line, continuations joined

    @property
    def version(self) -> str | None:
        """The ``==`` version when the requirement is exactly one ``==``, else None."""
        specs = list(self.requirement.specifier)
        return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


def logical_lines(text: str) -> list[str]:
    """Lines as pip joins them: a trailing backslash continues, comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(" ".join(current.split()))
        current = ""
    if current.strip():
        lines.append(" ".join(current.split()))
    return lines


def read_lock(path: Path) -> dict[str, Pin]:
    """The pins of one requirements file by canonical name; a name listed twice is an error."""
    pins: dict[str, Pin] = {}
    for line in logical_lines(path.read_text()):
        spec, _, options = line.partition(" --")
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{path.name}: {name} listed twice"
        pins[name] = Pin(name, requirement, frozenset(HASH.findall(line)), line)
    return pins


def dev_extra() -> set[str]:
    """The canonical names pyproject's ``dev`` extra requires: the tools the production lock must not hold."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["dev"]}


def runtime_dependencies() -> set[str]:
    """The canonical names of pyproject's ``dependencies``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
