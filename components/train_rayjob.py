"""Train on a Ray cluster: a CPU step that creates a KubeRay RayJob running `ray/train_entry.py` and waits for it."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from harmguard.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_rayjob(
    policy: str,
    family: str,
    snapshot: Input[Dataset],
    data_version: str,
    seed: int,
    run_id: str,
    model: Output[Model],
    train_config: str = "",
    workers: int = 2,
    deadline_s: int = 21600,
) -> str:
    """Launch the RayJob, wait up to ``deadline_s`` seconds, export its best checkpoint; returns the model digest."""
    from harmguard.steps.train_rayjob import train_rayjob_step

    digest = train_rayjob_step(
        policy, family, snapshot.path, seed, run_id, model.path, train_config, workers=workers, deadline_s=deadline_s
    )
    model.metadata.update({"model_digest": digest, "family": family, "data_version": data_version})
    return digest
