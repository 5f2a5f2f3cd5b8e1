"""The scoring pipeline: one batch-scoring step, the shape a scheduled job submits.

Only wiring lives here (logic: ``harmguard.batch.score``). The step reads the outside world (the input file, the
registry's champion), so caching is off. An empty ``version`` scores with the policy's champion; an empty ``policy``
means the only policy that has one.
"""

from kfp import dsl

from harmguard.components.score import score
from harmguard.k8s.cluster import configure_step
from harmguard.steps import STEP_TITLES

PIPELINE_NAME = "harmguard-scoring"


@dsl.pipeline(name=PIPELINE_NAME, description="Score a file of texts with the serving model and thresholds.")
def scoring_pipeline(
    policy: str = "",
    input_uri: str = "",
    output_uri: str = "",
    version: str = "",
    id_column: str = "id",
    text_column: str = "text",
):
    """Score ``input_uri`` (CSV, Parquet, JSONL) into the committed Parquet folder ``output_uri``."""
    score_task = score(
        policy=policy,
        input_uri=input_uri,
        output_uri=output_uri,
        version=version,
        id_column=id_column,
        text_column=text_column,
    )
    # Retried with backoff: reads and writes object storage; the output folder is committed only when complete.
    configure_step(score_task.set_display_name(STEP_TITLES["score"]), network=True, cache=False)
