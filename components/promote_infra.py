"""Promotion step 3: infra validation, the model loaded as the server loads it answering the golden file."""

from kfp import dsl
from kfp.dsl import Metrics, Output

from harmguard.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate_infra(version: str, model_digest: str, run_id: str, metrics: Output[Metrics]) -> float:
    """Refuse a model that agrees less than the blessing measured; returns the golden agreement."""
    from harmguard.steps.promotion import validate_infra_step

    agreement = validate_infra_step(version, run_id)
    metrics.log_metric("golden_agreement", agreement)
    return agreement
