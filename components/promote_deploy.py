"""Promotion step 5: render the RayService patch and push the new user_config to a running local server."""

from kfp import dsl

from harmguard.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy(version: str, previous_champion: str, run_id: str) -> str:
    """Returns a one-line note of what was rendered and pushed."""
    from harmguard.steps.promotion import deploy_step

    return deploy_step(version, run_id)
