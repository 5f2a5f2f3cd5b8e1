"""Gate: value and change thresholds (against the champion, with significance); outputs the decision."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Output

from harmguard.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def gate(
    policy: str,
    evaluation: Input[Artifact],
    paired: Input[Artifact],
    run_id: str,
    started_by: str,
    blessing: Output[Artifact],
    report: Output[HTML],
    summary: Output[Markdown],
    data_version: str = "",
) -> NamedTuple("GateOutputs", [("blessed", bool), ("reasons", str)]):
    """Bless or reject with reasons; writes the blessing and the reviewer report."""
    from collections import namedtuple

    from harmguard.steps.training import gate_step

    doc = gate_step(
        policy, evaluation.path, run_id, started_by, blessing.path, report.path, summary.path, paired_path=paired.path
    )
    blessing.metadata["data_version"] = data_version  # an explicit input so KFP's cache key includes the data
    return namedtuple("GateOutputs", ["blessed", "reasons"])(doc["blessed"], "\n".join(doc["reasons"]))
