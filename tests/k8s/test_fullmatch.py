"""Name checks match whole strings: a trailing newline (which `$` accepts before it) is refused everywhere."""

from __future__ import annotations

import pytest

from harmguard.k8s.common import quantity
from harmguard.k8s.identity import IdentityConfig
from harmguard.k8s.schemas import _metadata_problems


@pytest.mark.parametrize(
    "meta",
    [
        {"name": "harmguard-classifier\n"},
        {"name": "harmguard-classifier", "namespace": "harmguard\n"},
        {"name": "harmguard-classifier", "labels": {"app\n": "x"}},
        {"name": "harmguard-classifier", "labels": {"app": "x\n"}},
    ],
)
def test_kubernetes_names_with_a_trailing_newline_are_refused(meta):
    obj = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": meta}
    assert _metadata_problems(obj), meta
    clean = {
        k: (v.strip() if isinstance(v, str) else {a.strip(): b.strip() for a, b in v.items()}) for k, v in meta.items()
    }
    assert not _metadata_problems({**obj, "metadata": clean})


def test_a_quantity_with_a_trailing_newline_is_refused():
    assert quantity("2Gi", "memory") == "2Gi"
    with pytest.raises(ValueError):
        quantity("2Gi\n", "memory")


@pytest.mark.parametrize(
    "home", ["gs://bucket-a\n/harmguard", "gs://bucket-a/harm\nguard", "gs://bucket-a/harmguard\n"]
)
def test_a_home_that_would_break_out_of_the_iam_condition_is_refused(home):
    """The prefix is written inside a CEL string literal: a newline must never reach it."""
    with pytest.raises(ValueError):
        IdentityConfig(home=home)
