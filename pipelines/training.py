"""The training pipeline: ingest -> validate -> (train -> evaluate -> gate -> register) or fail.

Only wiring lives here. The data version flows into every step as an explicit input (KFP's cache key once ignored
data locations); caching is off for ingest, which reads the outside world.
"""

from kfp import dsl

from components.evaluate import evaluate
from components.gate import gate
from components.ingest import ingest
from components.register import register
from components.train import train
from components.validate import fail_run, validate

PIPELINE_NAME = "harmguard-training"


@dsl.pipeline(name=PIPELINE_NAME, description="Train, validate, evaluate, gate and register a policy classifier.")
def training_pipeline(
    policy: str = "davidson2017",
    data_uri: str = "",
    columns: str = "",
    family: str = "baseline",
    train_config: str = "",
    sample: int = 0,
    seed: int = 0,
    run_id: str = "manual",
    started_by: str = "unknown",
):
    """Retrain a policy's classifier end to end."""
    ingest_task = ingest(policy=policy, data_uri=data_uri, columns=columns, sample=sample, run_id=run_id)
    ingest_task.set_display_name("Ingest and snapshot").set_caching_options(False)
    data_version = ingest_task.outputs["data_version"]

    validate_task = validate(
        policy=policy, snapshot=ingest_task.outputs["snapshot"], data_version=data_version, run_id=run_id
    )
    validate_task.set_display_name("Validate data")

    with dsl.If(validate_task.outputs["passed"] == True, name="data-valid"):  # noqa: E712 (KFP builds a condition)
        train_task = train(
            policy=policy,
            family=family,
            snapshot=ingest_task.outputs["snapshot"],
            data_version=data_version,
            seed=seed,
            run_id=run_id,
            train_config=train_config,
        )
        train_task.set_display_name("Train")
        evaluate_task = evaluate(
            policy=policy,
            snapshot=ingest_task.outputs["snapshot"],
            model=train_task.outputs["model"],
            data_version=data_version,
            model_digest=train_task.outputs["Output"],
            family=family,
            run_id=run_id,
        )
        evaluate_task.set_display_name("Evaluate")
        gate_task = gate(
            policy=policy,
            evaluation=evaluate_task.outputs["evaluation"],
            paired=evaluate_task.outputs["paired"],
            run_id=run_id,
            started_by=started_by,
        )
        gate_task.set_display_name("Gate")
        with dsl.If(gate_task.outputs["blessed"] == True, name="blessed"):  # noqa: E712
            register_task = register(
                policy=policy,
                model=train_task.outputs["model"],
                blessing=gate_task.outputs["blessing"],
                data_version=data_version,
                run_id=run_id,
                started_by=started_by,
                seed=seed,
                family=family,
            )
            register_task.set_display_name("Register challenger").set_caching_options(False)
    with dsl.Else(name="data-invalid"):
        fail_task = fail_run(summary=validate_task.outputs["summary"])
        fail_task.set_display_name("Stop: data validation failed")
