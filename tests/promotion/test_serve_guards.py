"""`harmguard serve` serves only what was approved unless told otherwise, and `--stop` signals only its own server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harmguard.cli import app
from harmguard.registry import move_alias
from harmguard.registry.models import publish_model
from harmguard.serving.config import ENDPOINT_KEY
from harmguard.settings import Settings
from harmguard.storage import LocalStore
from tests.promotion.helpers import register


@pytest.fixture
def settings(tmp_path: Path, mlflow_uri: str) -> Settings:
    return Settings(home=str(tmp_path / "home"), cache=tmp_path / "cache", mlflow_tracking_uri=mlflow_uri)


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def flat(text: str) -> str:
    return " ".join(text.split())


def test_serve_refuses_an_unapproved_challenger_without_the_flag(store, settings, hg_env, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.json").write_text("{}")
    policy = f"srv-{uuid.uuid4().hex[:8]}"
    rec = register(store, settings, policy, publish_model(store, folder))
    move_alias(store, settings, policy=policy, alias="challenger", to_version=rec.version, expected_version=None,
               by="trainer", reason="blessed")  # fmt: skip
    result = cli("serve", "--policy", policy)
    assert result.exit_code == 3, result.output
    assert "--allow-unapproved" in flat(result.output) and f"{rec.version} is its challenger" in flat(result.output)


def start_process(*argv: str) -> subprocess.Popen[bytes]:
    """A live process with this argv tail; reaped in the background so a signalled one does not linger."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *argv])
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc


def announce(store: LocalStore, pid: int, started_at: datetime) -> None:
    doc = {
        "pid": pid,
        "version": "p/1",
        "user_config_url": "http://127.0.0.1:1/x",
        "started_at": started_at.isoformat(),
    }
    store.write_atomic(ENDPOINT_KEY, json.dumps(doc).encode())


@pytest.mark.parametrize("case", ["not-harmguard", "recycled-pid"])
def test_serve_stop_does_not_signal_a_process_that_is_not_its_server(store, hg_env, case):
    if case == "not-harmguard":  # the endpoint file names some other process of the user's
        proc, started_at = start_process("--something-else"), datetime.now(UTC) + timedelta(seconds=5)
    else:  # the server died, and its pid went to a process started afterwards
        proc, started_at = start_process("harmguard", "serve"), datetime.now(UTC) - timedelta(hours=1)
    try:
        time.sleep(0.2)
        announce(store, proc.pid, started_at)
        result = cli("serve", "--stop")
        assert result.exit_code == 3, result.output
        why = "not `harmguard serve`" if case == "not-harmguard" else "the pid was reused"
        assert "nothing was signalled" in flat(result.output) and why in flat(result.output)
        time.sleep(0.2)
        assert proc.poll() is None  # still running
        assert store.exists(ENDPOINT_KEY)
    finally:
        proc.kill()


def test_serve_stop_signals_its_own_server(store, hg_env):
    proc = start_process("harmguard", "serve", "--port", "8123")
    time.sleep(0.2)
    announce(store, proc.pid, datetime.now(UTC) + timedelta(seconds=1))  # announced after it started
    try:
        result = cli("serve", "--stop")
        assert result.exit_code == 0, result.output
        assert f"pid {proc.pid}" in result.output
        proc.wait(10)
        assert proc.returncode == -15 and not store.exists(ENDPOINT_KEY)  # SIGTERM
    finally:
        proc.kill()
