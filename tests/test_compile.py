"""Golden test: the compiled pipeline equals the committed YAML and loads back with the KFP SDK.

Regenerate on purpose with `make compile` (never in CI).
"""

from pathlib import Path

from kfp import components

from harmguard.compile import compile_pipelines
from harmguard.settings import DEFAULT_IMAGE  # the goldens name the default tag, whatever HARMGUARD_IMAGE says

ROOT = Path(__file__).resolve().parents[1]


def test_training_pipeline_matches_golden(tmp_path):
    path = next(p for p in compile_pipelines(tmp_path, image=DEFAULT_IMAGE) if p.name == "training.yaml")
    golden = ROOT / "pipelines" / "training.yaml"
    assert path.read_text() == golden.read_text(), "pipelines/training.yaml is stale: run `make compile`"


def test_compiled_pipeline_loads_and_names_the_image():
    spec = components.load_component_from_file(str(ROOT / "pipelines" / "training.yaml"))
    assert spec.name == "harmguard-training"
    text = (ROOT / "pipelines" / "training.yaml").read_text()
    assert "image: ghcr.io/harmguard/harmguard:" in text
    assert "pip install" not in text  # nothing installed at run time
    assert "dsl.Condition" not in text


def test_promotion_pipeline_matches_golden(tmp_path):
    path = next(p for p in compile_pipelines(tmp_path, image=DEFAULT_IMAGE) if p.name == "promotion.yaml")
    golden = ROOT / "pipelines" / "promotion.yaml"
    assert path.read_text() == golden.read_text(), "pipelines/promotion.yaml is stale: run `make compile`"
    spec = components.load_component_from_file(str(golden))
    assert spec.name == "harmguard-promotion"
    text = golden.read_text()
    assert "pip install" not in text and "image: ghcr.io/harmguard/harmguard:" in text
    for task in ("verify-approval", "check-champion", "validate-infra", "move-champion", "deploy"):
        assert f"  {task}:" in text


def test_scoring_pipeline_matches_golden(tmp_path):
    path = next(p for p in compile_pipelines(tmp_path, image=DEFAULT_IMAGE) if p.name == "scoring.yaml")
    golden = ROOT / "pipelines" / "scoring.yaml"
    assert path.read_text() == golden.read_text(), "pipelines/scoring.yaml is stale: run `make compile`"
    spec = components.load_component_from_file(str(golden))
    assert spec.name == "harmguard-scoring"
    text = golden.read_text()
    assert "pip install" not in text and "  score:" in text


def test_training_rayjob_pipeline_matches_golden(tmp_path):
    path = next(p for p in compile_pipelines(tmp_path, image=DEFAULT_IMAGE) if p.name == "training_rayjob.yaml")
    golden = ROOT / "pipelines" / "training_rayjob.yaml"
    assert path.read_text() == golden.read_text(), "pipelines/training_rayjob.yaml is stale: run `make compile`"
    spec = components.load_component_from_file(str(golden))
    assert spec.name == "harmguard-training-rayjob"
    text = golden.read_text()
    assert "pip install" not in text and "  train-rayjob:" in text and "  train:" not in text


def test_compiled_yaml_does_not_depend_on_what_was_imported_before(tmp_path):
    import hera.workflows  # noqa: F401  # replaces PyYAML's global str representer (block style for multi-line)

    for path in compile_pipelines(tmp_path, image=DEFAULT_IMAGE):
        assert path.read_text() == (ROOT / "pipelines" / path.name).read_text(), path.name
