"""What every KFP step starts from: settings resolved from its process's environment, and the artifact store."""

from __future__ import annotations

from typing import NamedTuple

from harmguard.settings import Settings, load_settings
from harmguard.storage import ArtifactStore, open_store


class StepContext(NamedTuple):
    """Settings and store of one step process (each KFP step is the entry point of its own process)."""

    settings: Settings
    store: ArtifactStore


def step_context() -> StepContext:
    """Resolve settings from the environment once, at the step's entry, and open the home's store."""
    settings = load_settings()
    return StepContext(settings, open_store(settings.home))
