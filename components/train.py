"""Train: fit the chosen model family on the train split and export it."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from harmguard.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(
    policy: str,
    family: str,
    snapshot: Input[Dataset],
    data_version: str,
    seed: int,
    run_id: str,
    model: Output[Model],
    train_config: str = "",
) -> str:
    """Train and export; returns the model digest. ``train_config``: JSON run options (transformer overrides)."""
    from harmguard.steps.training import train_step

    digest = train_step(policy, family, snapshot.path, seed, run_id, model.path, train_config)
    model.metadata.update({"model_digest": digest, "family": family, "data_version": data_version})
    return digest
