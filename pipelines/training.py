"""The training pipeline: ingest -> validate -> (train -> evaluate -> gate -> register) or fail.

Only wiring lives here. The data version flows into every step as an explicit input (KFP's cache key once ignored data
locations); caching is off for the steps that read the outside world (ingest; evaluate, gate and register read the
registry). Two variants share the wiring and differ in who trains: ``training_pipeline`` trains inside its own step on a
GPU node (backend ``inline``); ``training_rayjob_pipeline`` has a CPU step launch a KubeRay RayJob running
``ray/train_entry.py`` (backend ``rayjob``). Cluster settings come from ``harmguard.k8s.cluster``; kfp.local ignores
them.
"""

from collections.abc import Callable

from kfp import dsl

from harmguard.components.evaluate import evaluate
from harmguard.components.gate import gate
from harmguard.components.ingest import ingest
from harmguard.components.register import register
from harmguard.components.train import train
from harmguard.components.train_rayjob import train_rayjob
from harmguard.components.validate import fail_run, validate
from harmguard.k8s.cluster import configure_step
from harmguard.steps import STEP_TITLES

PIPELINE_NAME = "harmguard-training"
RAYJOB_PIPELINE_NAME = "harmguard-training-rayjob"


def _wire(
    train_step: Callable[..., dsl.PipelineTask],
    *,
    policy: str,
    data_uri: str,
    columns: str,
    family: str,
    train_config: str,
    sample: int,
    seed: int,
    run_id: str,
    started_by: str,
    labels_watermark: int,
    labels_until: str,
) -> None:
    """The steps both variants share; ``train_step(snapshot, data_version)`` adds the training task."""
    ingest_task = ingest(
        policy=policy, data_uri=data_uri, columns=columns, sample=sample, run_id=run_id,
        labels_watermark=labels_watermark, labels_until=labels_until,
    )  # fmt: skip
    configure_step(ingest_task.set_display_name(STEP_TITLES["ingest"]), network=True, cache=False)
    data_version = ingest_task.outputs["data_version"]

    validate_task = validate(
        policy=policy, snapshot=ingest_task.outputs["snapshot"], data_version=data_version, run_id=run_id
    )
    configure_step(validate_task.set_display_name(STEP_TITLES["validate"]))

    with dsl.If(validate_task.outputs["passed"] == True, name="data-valid"):  # noqa: E712 (KFP builds a condition)
        train_task = train_step(ingest_task.outputs["snapshot"], data_version)
        evaluate_task = evaluate(
            policy=policy,
            snapshot=ingest_task.outputs["snapshot"],
            model=train_task.outputs["model"],
            data_version=data_version,
            model_digest=train_task.outputs["Output"],
            family=family,
            run_id=run_id,
        )
        configure_step(evaluate_task.set_display_name(STEP_TITLES["evaluate"]), network=True, cache=False)
        gate_task = gate(
            policy=policy,
            evaluation=evaluate_task.outputs["evaluation"],
            paired=evaluate_task.outputs["paired"],
            run_id=run_id,
            started_by=started_by,
            data_version=data_version,
        )
        configure_step(gate_task.set_display_name(STEP_TITLES["gate"]), cache=False)
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
            # No retry: registration moves `challenger` by compare-and-swap, which a blind rerun must not repeat.
            configure_step(register_task.set_display_name(STEP_TITLES["register"]), cache=False)
    with dsl.Else(name="data-invalid"):
        fail_task = fail_run(summary=validate_task.outputs["summary"], data_version=data_version)
        configure_step(fail_task.set_display_name(STEP_TITLES["fail-run"]))


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
    labels_watermark: int = -1,
    labels_until: str = "",
):
    """Retrain a policy's classifier end to end; the train step itself trains, on a GPU node."""

    def train_inline(snapshot, data_version):
        train_task = train(
            policy=policy,
            family=family,
            snapshot=snapshot,
            data_version=data_version,
            seed=seed,
            run_id=run_id,
            train_config=train_config,
        )
        return configure_step(train_task.set_display_name(STEP_TITLES["train"]), gpu=True)

    _wire(
        train_inline,
        policy=policy,
        data_uri=data_uri,
        columns=columns,
        family=family,
        train_config=train_config,
        sample=sample,
        seed=seed,
        run_id=run_id,
        started_by=started_by,
        labels_watermark=labels_watermark,
        labels_until=labels_until,
    )


@dsl.pipeline(
    name=RAYJOB_PIPELINE_NAME, description="Retrain a policy's transformer on a Ray cluster (KubeRay RayJob)."
)
def training_rayjob_pipeline(
    policy: str = "davidson2017",
    data_uri: str = "",
    columns: str = "",
    family: str = "transformer",
    train_config: str = "",
    sample: int = 0,
    seed: int = 0,
    run_id: str = "manual",
    started_by: str = "unknown",
    labels_watermark: int = -1,
    labels_until: str = "",
    rayjob_workers: int = 2,
    rayjob_deadline_s: int = 21600,
):
    """Retrain a policy's classifier end to end; a CPU step launches the training as a RayJob and waits for it."""

    def train_on_ray(snapshot, data_version):
        launch_task = train_rayjob(
            policy=policy,
            family=family,
            snapshot=snapshot,
            data_version=data_version,
            seed=seed,
            run_id=run_id,
            train_config=train_config,
            workers=rayjob_workers,
            deadline_s=rayjob_deadline_s,
        )
        # Retried: the launcher attaches to the RayJob of the same run if it already exists.
        return configure_step(launch_task.set_display_name(STEP_TITLES["train-rayjob"]), network=True, ray_client=True)

    _wire(
        train_on_ray,
        policy=policy,
        data_uri=data_uri,
        columns=columns,
        family=family,
        train_config=train_config,
        sample=sample,
        seed=seed,
        run_id=run_id,
        started_by=started_by,
        labels_watermark=labels_watermark,
        labels_until=labels_until,
    )
