"""Promotion step 2: the champion is still the one the blessing compared against."""

from kfp import dsl

from harmguard.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def check_champion(version: str, model_digest: str, run_id: str) -> str:
    """Refuse a stale comparison; returns the champion seen now ('' for none), the swap's expectation."""
    from harmguard.steps.promotion import check_champion_step

    return check_champion_step(version, run_id)
