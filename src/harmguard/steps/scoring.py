"""The scoring pipeline's step: batch-score a file with a registered model (``harmguard.batch.score``)."""

from __future__ import annotations

from typing import Any

from harmguard.batch.score import BatchConfig, score_registered
from harmguard.steps.context import step_context


def score_step(
    policy: str, input_uri: str, output_uri: str, version: str, id_column: str, text_column: str
) -> dict[str, Any]:
    """The KFP scoring step: settings from the environment, the champion unless ``version`` is given.

    Returns:
        The committed manifest (see ``score_file``).
    """
    cfg = BatchConfig(input_uri=input_uri, output_uri=output_uri, id_column=id_column, text_column=text_column)
    store = step_context().store
    return score_registered(store, cfg, policy=policy or None, version=version or None)
