"""Evaluate: calibrate thresholds on validation; score challenger and champion on the same frozen sets."""

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from harmguard.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    policy: str,
    snapshot: Input[Dataset],
    model: Input[Model],
    data_version: str,
    model_digest: str,
    family: str,
    run_id: str,
    evaluation: Output[Artifact],
    paired: Output[Artifact],
    thresholds: Output[Artifact],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
) -> str:
    """Write the evaluation document, the paired decisions, thresholds.json and the UI metrics.

    Returns the thresholds version.
    """
    from harmguard.steps.training import evaluate_step

    doc = evaluate_step(
        policy, snapshot.path, model.path, data_version, model_digest, run_id, family, evaluation.path,
        paired_path=paired.path, thresholds_path=thresholds.path,
    )  # fmt: skip
    # after the step, which already imported it (scikit-learn): imported first, it counted as the step's overhead
    from harmguard.evaluation.metrics import flatten, ui_metric_keys

    thresholds.metadata["thresholds_version"] = doc["thresholds_version"]
    paired.metadata["champion"] = (doc.get("champion") or {}).get("version") or ""
    flat = flatten(doc, "test")
    for key in ui_metric_keys(flat):
        metrics.log_metric(key.replace("/", "."), round(flat[key], 6))
    cm = doc["reference"]["test"].get("confusion_matrix")
    if cm:
        classification_metrics.log_confusion_matrix(cm["labels"], cm["matrix"])
    first = doc["curves"][doc["categories"][0]].get("roc")
    if first:  # KFP shows one ROC curve per artifact: the first category's
        classification_metrics.log_roc_curve(first["fpr"], first["tpr"], first["threshold"])
    return doc["thresholds_version"]
