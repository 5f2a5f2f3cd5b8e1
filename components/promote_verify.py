"""Promotion step 1: a valid approval of exactly this version, and its model digest recomputed from the files."""

from kfp import dsl

from harmguard.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def verify_approval(version: str, run_id: str) -> str:
    """Refuse an unapproved, expired, rejected or tampered version; returns the verified model digest."""
    from harmguard.steps.promotion import verify_approval_step

    return verify_approval_step(version, run_id)
