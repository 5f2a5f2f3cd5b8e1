"""Promotion step 4: compare-and-swap `champion` from the champion the check step saw (previous kept)."""

from kfp import dsl

from harmguard.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def move_champion(version: str, expected_champion: str, promoted_by: str, run_id: str) -> str:
    """Re-check approval and digest, then swap; returns the previous champion ('' for none)."""
    from harmguard.steps.promotion import move_champion_step

    return move_champion_step(version, expected_champion, promoted_by, run_id)
