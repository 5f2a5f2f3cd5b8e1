"""Exit codes (CONTRACTS.md): one enum, the run summary's mapping, and Argo retrying only what may pass again."""

from __future__ import annotations

import re

import pytest
import yaml

from harmguard.cli import run_exit_code
from harmguard.exit_codes import RETRYABLE_EXPRESSION, ExitCode
from harmguard.k8s import manifests


def test_codes_are_the_contract():
    assert [(c.name, int(c)) for c in ExitCode] == [
        ("OK", 0),
        ("UNEXPECTED", 1),
        ("USAGE", 2),
        ("REJECTED", 3),
        ("INVALID_INPUT", 4),
    ]


def _summary(ok=True, blessed=True, validation=None, steps=None):
    return {"ok": ok, "blessed": blessed, "validation": validation, "steps": steps or {}}


@pytest.mark.parametrize(
    ("summary", "code"),
    [
        (_summary(), ExitCode.OK),
        (_summary(blessed=False), ExitCode.REJECTED),
        (_summary(ok=False, blessed=False, validation={"passed": False, "failed": []}), ExitCode.INVALID_INPUT),
        (_summary(ok=False, blessed=False, steps={"ingest": "FAILURE"}), ExitCode.INVALID_INPUT),
        (
            _summary(ok=False, blessed=False, validation={"passed": True}, steps={"train": "FAILURE"}),
            ExitCode.UNEXPECTED,
        ),
    ],
)
def test_run_summary_maps_to_one_code(summary, code):
    assert run_exit_code(summary) == code


def _retries(exit_code: int | None, status: str) -> bool:
    """Evaluate the expression as Argo's expr would, for one last attempt (only the operators it uses)."""
    expr = RETRYABLE_EXPRESSION.replace("||", " or ").replace("asInt(lastRetry.exitCode)", str(exit_code))
    expr = expr.replace("lastRetry.status", repr(status))
    assert re.fullmatch(r"[\w\s=\"'\[\],.]+", expr), expr  # nothing but comparisons left
    return bool(eval(expr))  # noqa: S307 - a fixed expression of this module, not input


@pytest.mark.parametrize(
    ("code", "status", "retried"),
    [
        (1, "Failed", True),  # unexpected: a bug or an outage
        (137, "Failed", True),  # OOM-killed
        (143, "Failed", True),  # preempted, node drained
        (0, "Error", True),  # pod-level error (evicted before the container ran)
        (2, "Failed", False),
        (3, "Failed", False),
        (4, "Failed", False),
    ],
)
def test_argo_retries_exit_1_and_pod_errors_never_2_3_4(code, status, retried):
    assert _retries(code, status) is retried


def test_every_always_retry_in_the_rendered_workflows_carries_the_expression():
    seen = 0
    for file in manifests.FILES:
        for doc in yaml.safe_load_all(manifests.render(file)):
            for template in (doc or {}).get("spec", {}).get("workflowSpec", {}).get("templates", []):
                strategy = template.get("retryStrategy")
                if not strategy:
                    continue
                seen += 1
                if strategy["retryPolicy"] == "Always":
                    assert strategy["expression"] == RETRYABLE_EXPRESSION, template["name"]
                else:  # OnError: steps that create runs retry pod errors alone, never a resubmission
                    assert strategy["retryPolicy"] == "OnError" and "expression" not in strategy
    assert seen >= 4
