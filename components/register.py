"""Register: publish the blessed model create-only, register its version, move `challenger` by CAS."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from harmguard.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(
    policy: str,
    model: Input[Model],
    blessing: Input[Artifact],
    data_version: str,
    run_id: str,
    started_by: str,
    seed: int,
    family: str,
) -> str:
    """Returns the registered version `<policy>/<n>`."""
    from harmguard.steps.training import register_step

    return register_step(policy, model.path, blessing.path, run_id, started_by, seed, family)
