"""Batch scoring: a file of texts scored with the champion (or a given version) into a committed Parquet folder."""

from kfp import dsl
from kfp.dsl import Metrics, Output

from harmguard.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def score(
    policy: str,
    input_uri: str,
    output_uri: str,
    version: str,
    id_column: str,
    text_column: str,
    metrics: Output[Metrics],
) -> str:
    """Returns the model version that scored; ``metrics`` holds row, skipped and flagged counts and rows/s."""
    from harmguard.steps.scoring import score_step

    manifest = score_step(policy, input_uri, output_uri, version, id_column, text_column)
    for name in ("rows", "scored", "flagged", "rows_per_s"):
        metrics.log_metric(name, manifest[name])
    metrics.log_metric("skipped", sum(manifest["skipped"].values()))
    return manifest["model_version"]
