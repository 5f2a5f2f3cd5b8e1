"""The promotion pipeline: verify approval -> check champion -> infra validation -> move champion -> deploy.

Only wiring lives here (logic: ``harmguard.promotion.promote``). Every step reads the registry, so caching is off for
all of them (``harmguard.k8s.cluster.configure_step(..., cache=False)``); the reads are retried with backoff, the swap
is not. The champion seen by the check step is the compare-and-swap expectation of the move step: if another promotion
moves the champion in between, the swap loses and the run fails.
"""

from kfp import dsl

from harmguard.components.promote_champion import check_champion
from harmguard.components.promote_deploy import deploy
from harmguard.components.promote_infra import validate_infra
from harmguard.components.promote_move import move_champion
from harmguard.components.promote_verify import verify_approval
from harmguard.k8s.cluster import configure_step
from harmguard.steps import STEP_TITLES

PIPELINE_NAME = "harmguard-promotion"


@dsl.pipeline(name=PIPELINE_NAME, description="Promote an approved model version to champion and roll it out.")
def promotion_pipeline(version: str = "", promoted_by: str = "unknown", run_id: str = "manual"):
    """Promote ``version`` (``<policy>/<n>``) under the approval rules of the policy recorded at its registration."""
    verify_task = verify_approval(version=version, run_id=run_id)
    configure_step(verify_task.set_display_name(STEP_TITLES["verify-approval"]), network=True, cache=False)
    model_digest = verify_task.output

    champion_task = check_champion(version=version, model_digest=model_digest, run_id=run_id)
    configure_step(champion_task.set_display_name(STEP_TITLES["check-champion"]), network=True, cache=False)

    infra_task = validate_infra(version=version, model_digest=model_digest, run_id=run_id)
    configure_step(infra_task.set_display_name(STEP_TITLES["validate-infra"]), network=True, cache=False)

    move_task = move_champion(
        version=version,
        expected_champion=champion_task.output,
        promoted_by=promoted_by,
        run_id=run_id,
    ).after(infra_task)
    # No retry: a blind rerun of a compare-and-swap would act on a champion it did not check.
    configure_step(move_task.set_display_name(STEP_TITLES["move-champion"]), cache=False)

    deploy_task = deploy(version=version, previous_champion=move_task.output, run_id=run_id)
    configure_step(deploy_task.set_display_name(STEP_TITLES["deploy"]), network=True, cache=False)
