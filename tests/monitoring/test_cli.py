"""The monitoring commands through the CLI: what a home without a champion answers, in text and under --json."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize(
    "args",
    [
        ["monitor", "--from", "2026-11-01T00:00:00Z", "--until", "2026-11-02T00:00:00Z"],
        ["review-queue", "export", "--output", "queue.jsonl", "--n", "10"],
        ["traffic", "purge", "--dry-run"],
    ],
    ids=["monitor", "review-queue-export", "traffic-purge"],
)
def test_without_a_champion_each_command_says_which_policy_to_choose(hg_env, args):
    proc = run_cli([*args, "--json"], hg_env)
    assert proc.returncode == 2, proc.stderr
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["exit_code"] == 2 and "policy" in doc["error"]
    assert "error" in proc.stderr
