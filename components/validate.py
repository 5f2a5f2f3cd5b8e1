"""Validate: the Great Expectations suite on the snapshot; the pipeline branches on `passed`."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Output

from harmguard.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate(policy: str, snapshot: Input[Dataset], data_version: str, run_id: str, report: Output[HTML]) -> NamedTuple(
    "ValidateOutputs", [("passed", bool), ("summary", str)]
):
    """Run the data checks and write the HTML report either way."""
    from collections import namedtuple

    from harmguard.steps.training import validate_step

    passed, summary = validate_step(policy, snapshot.path, data_version, run_id, report.path)
    return namedtuple("ValidateOutputs", ["passed", "summary"])(passed, summary)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def fail_run(summary: str, data_version: str = ""):
    """Fail the run: the Else branch of the data gate, so an invalid dataset never shows as a green run."""
    from harmguard.steps.training import fail_step

    fail_step(summary)
