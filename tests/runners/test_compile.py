"""Golden test: each compiled pipeline equals the committed YAML, loads back with the KFP SDK and runs our image.

Regenerate on purpose with `make compile` (never in CI).
"""

from pathlib import Path

import pytest
from kfp import components

from harmguard.runners.compile import compile_pipelines
from harmguard.settings import DEFAULT_IMAGE  # the goldens name the default tag, whatever HARMGUARD_IMAGE says

ROOT = Path(__file__).resolve().parents[2]

# file -> (KFP pipeline name, tasks it must have, tasks it must not have)
PIPELINES = {
    "training.yaml": ("harmguard-training", ["ingest", "validate", "train", "evaluate", "gate", "register"], []),
    "training_rayjob.yaml": ("harmguard-training-rayjob", ["train-rayjob", "evaluate", "gate"], ["train"]),
    "promotion.yaml": (
        "harmguard-promotion",
        ["verify-approval", "check-champion", "validate-infra", "move-champion", "deploy"],
        [],
    ),
    "scoring.yaml": ("harmguard-scoring", ["score"], []),
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every pipeline compiled once, fresh, with the default image."""
    return {p.name: p for p in compile_pipelines(tmp_path_factory.mktemp("compiled"), image=DEFAULT_IMAGE)}


def test_every_pipeline_has_a_golden(compiled):
    assert sorted(compiled) == sorted(PIPELINES)


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipeline_matches_golden_and_loads_back(compiled, name):
    golden = ROOT / "pipelines" / name
    text = golden.read_text()
    assert compiled[name].read_text() == text, f"pipelines/{name} is stale: run `make compile`"
    kfp_name, present, absent = PIPELINES[name]
    assert components.load_component_from_file(str(golden)).name == kfp_name
    assert f"image: {DEFAULT_IMAGE}" in text
    assert "pip install" not in text  # nothing installed at run time
    assert "dsl.Condition" not in text
    for task in present:
        assert f"  {task}:" in text, task
    for task in absent:
        assert f"  {task}:" not in text, task


def test_compiled_yaml_does_not_depend_on_what_was_imported_before(tmp_path):
    import hera.workflows  # noqa: F401  # replaces PyYAML's global str representer (block style for multi-line)

    for path in compile_pipelines(tmp_path, image=DEFAULT_IMAGE):
        assert path.read_text() == (ROOT / "pipelines" / path.name).read_text(), path.name
