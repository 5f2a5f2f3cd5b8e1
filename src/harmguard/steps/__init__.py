"""The KFP steps as library functions: each component in ``harmguard.components`` calls one of these."""

# The title of each pipeline task: the pipelines' display names (the KFP UI) and the local runner's progress lines.
STEP_TITLES = {
    "ingest": "Ingest and snapshot",
    "validate": "Validate data",
    "train": "Train",
    "train-rayjob": "Train (RayJob)",
    "evaluate": "Evaluate",
    "gate": "Gate",
    "register": "Register challenger",
    "fail-run": "Stop: data validation failed",
    "verify-approval": "Verify approval and model digest",
    "check-champion": "Check champion",
    "validate-infra": "Infra validation (golden file)",
    "move-champion": "Move champion (compare-and-swap)",
    "deploy": "Deploy",
    "score": "Batch score",
}
