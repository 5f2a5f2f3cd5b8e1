"""Golden test: the compiled pipeline equals the committed YAML and loads back with the KFP SDK.

Regenerate on purpose with `make compile` (never in CI).
"""

from pathlib import Path

from kfp import components

from harmguard.compile import compile_pipelines

ROOT = Path(__file__).resolve().parents[1]


def test_training_pipeline_matches_golden(tmp_path):
    (path,) = compile_pipelines(tmp_path)
    golden = ROOT / "pipelines" / "training.yaml"
    assert path.read_text() == golden.read_text(), "pipelines/training.yaml is stale: run `make compile`"


def test_compiled_pipeline_loads_and_names_the_image():
    spec = components.load_component_from_file(str(ROOT / "pipelines" / "training.yaml"))
    assert spec.name == "harmguard-training"
    text = (ROOT / "pipelines" / "training.yaml").read_text()
    assert "image: ghcr.io/harmguard/harmguard:" in text
    assert "pip install" not in text  # nothing installed at run time
    assert "dsl.Condition" not in text
