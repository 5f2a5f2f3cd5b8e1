"""The built image under test (``make image``; ``HARMGUARD_TEST_IMAGE``, default ``harmguard:dev``) and a way to run
commands in it. These tests run only on purpose (``make test-container``, marker ``container``): a missing Docker
engine or image fails them, naming what to do, instead of skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("HARMGUARD_TEST_IMAGE", "harmguard:dev")
# What the image was built with (make passes its TORCH); cpu: the small test image.
TORCH = os.environ.get("HARMGUARD_TEST_TORCH", "cpu")


def docker(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Run the docker client; the caller checks the result."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def image() -> str:
    """The image's tag, once the engine answers and has it."""
    if shutil.which("docker") is None:
        pytest.fail("no docker client on PATH: install docker.io and start an engine (scripts/dockerd.sh start)")
    found = docker("image", "inspect", IMAGE)
    if found.returncode != 0:
        pytest.fail(f"image {IMAGE} is not in the Docker engine (make image builds it): {found.stderr.strip()[:500]}")
    return IMAGE


@pytest.fixture(scope="session")
def image_config(image: str) -> dict[str, Any]:
    """``docker image inspect`` of the image."""
    return json.loads(docker("image", "inspect", image).stdout)[0]


def run_in(
    image: str,
    *command: str,
    mounts: tuple[tuple[Path, str], ...] = (),
    env: dict[str, str] | None = None,
    user: str | None = None,
    timeout: int = 300,
) -> subprocess.CompletedProcess[str]:
    """``command`` in a fresh container of ``image``: as the image's user, from /tmp (no source tree), no network.

    ``mounts``: (host path, container path) pairs, read-only; ``user``: another user than the image's.
    """
    args = ["run", "--rm", "--network", "none", "--workdir", "/tmp", *(["--user", user] if user else [])]
    for host, inside in mounts:
        args += ["--mount", f"type=bind,source={host},target={inside},readonly"]
    for k, v in (env or {}).items():
        args += ["--env", f"{k}={v}"]
    return docker(*args, image, *command, timeout=timeout)
