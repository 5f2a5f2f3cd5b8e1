"""Compile the KFP pipelines to YAML, deterministically (the golden test compares the output byte for byte)."""

from __future__ import annotations

from pathlib import Path


def compile_pipelines(output_dir: Path | None = None) -> list[Path]:
    """Write `training.yaml` (and later pipelines) next to their sources or into ``output_dir``."""
    from kfp import compiler

    import pipelines
    from pipelines.training import training_pipeline

    out = Path(output_dir) if output_dir else Path(pipelines.__file__).parent
    out.mkdir(parents=True, exist_ok=True)
    path = out / "training.yaml"
    compiler.Compiler().compile(training_pipeline, str(path))
    from pipelines.promotion import promotion_pipeline

    promotion = out / "promotion.yaml"
    compiler.Compiler().compile(promotion_pipeline, str(promotion))
    return [path, promotion]
