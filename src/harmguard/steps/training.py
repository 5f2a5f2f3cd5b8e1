"""The pipeline's steps as library functions: each KFP component parses its inputs and calls one of these.

Every step resolves settings from the environment (it is the entry point of its own process), reads and writes
plain files at the paths KFP gives it, and records a small JSON of what it did under ``runs/<run-id>/`` in the
artifact store, from which ``harmguard run`` builds its summary.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from harmguard.registry.runs import read_record, record
from harmguard.steps.context import step_context
from harmguard.steps.timing import timed_step

# Each step imports what only it uses inside its function: a step process imports this module, and a step that
# never validates, plots or tracks should not pay for Great Expectations, matplotlib, MLflow or scikit-learn
# (tests/runners/test_step_imports.py keeps it so).


class ValidationFailed(RuntimeError):
    """The data failed validation; the run stops."""


@timed_step("ingest")
def ingest_step(
    policy_ref: str,
    data_uri: str,
    columns: str,
    sample: int,
    run_id: str,
    snapshot_path: str,
    labels_watermark: int = -1,
    labels_until: str = "",
):
    """Load every source (datasets or ``data_uri``, and the imported labels up to the cut), snapshot them.

    ``labels_watermark`` < 0 and an empty ``labels_until`` mean the current watermark and the newest decision; the
    values used are recorded. Returns the ingest record.
    """
    from harmguard.data.snapshot import assemble_snapshot, write_snapshot
    from harmguard.data.sources import load_sources
    from harmguard.policy import ColumnMap, load_policy, policy_digest

    settings, store = step_context()
    policy = load_policy(policy_ref)
    cols = ColumnMap.model_validate({**policy.data.columns.model_dump(), **json.loads(columns)}) if columns else None
    parts, cut = load_sources(
        policy, settings, store, data_uri=data_uri, columns=cols,
        labels_watermark=labels_watermark, labels_until=labels_until or None,
    )  # fmt: skip
    frame, lineage = assemble_snapshot(parts, policy, sample=sample, cut=cut)
    if cut is not None:
        lineage["labels"] = cut.to_dict()
    source = " + ".join(p.description for p in parts)
    info = write_snapshot(store, frame, policy=policy, source=source, lineage=lineage)
    Path(snapshot_path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(snapshot_path, index=False)
    doc = {
        "data_version": info.data_version,
        "rows": info.rows,
        "counts": info.counts,
        "source": source,
        "snapshot_uri": store.uri_for(info.key),
        "policy": policy.name,
        "policy_digest": policy_digest(policy_ref),
        "sample": sample,
        "lineage": lineage,
    }
    record(store, run_id, "ingest", doc)
    return doc


@timed_step("validate")
def validate_step(policy_ref: str, snapshot_path: str, data_version: str, run_id: str, report_path: str):
    """Run the data validation suite; write the HTML report either way. Returns (passed, summary)."""
    from harmguard.data.snapshot import read_snapshot_file
    from harmguard.data.validation import validate_snapshot
    from harmguard.policy import load_policy
    from harmguard.reports.render import render_validation_html

    _, store = step_context()
    policy = load_policy(policy_ref)
    result = validate_snapshot(read_snapshot_file(snapshot_path), policy)
    doc = result.to_dict() | {"data_version": data_version, "summary": result.summary()}
    html = render_validation_html(doc, policy=policy.name, data_version=data_version)
    Path(report_path).write_text(html)
    store.write_atomic(f"runs/{run_id}/validation.html", html.encode())
    record(store, run_id, "validation", doc)
    return result.success, result.summary()


@timed_step("fail-run")
def fail_step(summary: str) -> None:
    """The Else branch of the data gate: fail the run with the validation summary."""
    raise ValidationFailed(f"data validation failed: {summary}")


@timed_step("train")
def train_step(
    policy_ref: str, family: str, snapshot_path: str, seed: int, run_id: str, model_dir: str, train_config: str = ""
) -> str:
    """Train a model on the train split and export it. Returns the model digest.

    ``train_config`` is a JSON object of run options (for the transformer: TransformerSpec overrides and
    ``ray_address``); its checkpoints go under ``runs/<run-id>/checkpoints``. The record keeps the training
    history (per epoch) and resumes, which the gate logs to MLflow.
    """
    from harmguard.data.snapshot import read_snapshot_file
    from harmguard.digests import model_digest
    from harmguard.policy import load_policy
    from harmguard.training.dispatch import train_model

    _, store = step_context()
    policy = load_policy(policy_ref)

    options = json.loads(train_config) if train_config else {}
    workdir = store.uri_for(f"runs/{run_id}/checkpoints")
    frame = read_snapshot_file(snapshot_path)
    model = train_model(frame, policy, family=family, seed=seed, options=options, workdir=workdir)
    out = Path(model_dir)
    if out.exists():
        shutil.rmtree(out)
    model.save(out)
    digest = model_digest(out)
    info = getattr(model, "train_info", {})  # transformer: params, per-epoch history, resumes, best epoch
    record(store, run_id, "train", {"family": family, "model_digest": digest, "seed": seed, "options": options, **info})
    return digest


@timed_step("evaluate")
def evaluate_step(
    policy_ref: str,
    snapshot_path: str,
    model_dir: str,
    data_version: str,
    model_digest: str,
    run_id: str,
    family: str,
    evaluation_path: str,
    paired_path: str = "",
    thresholds_path: str = "",
) -> dict[str, Any]:
    """Calibrate thresholds, score challenger and champion on the same frozen sets, compute every metric.

    Writes the evaluation document, the paired per-row decisions (for the gate) and the thresholds artifact.
    Returns the evaluation document.
    """
    from harmguard.data.snapshot import read_snapshot_file
    from harmguard.evaluation.evaluate import evaluate_against_champion, thresholds_artifact
    from harmguard.models.loading import load_model
    from harmguard.policy import load_policy

    settings, store = step_context()
    policy = load_policy(policy_ref)
    frame = read_snapshot_file(snapshot_path)
    evaluation, paired = evaluate_against_champion(load_model(model_dir), model_digest, frame, policy, settings, store)
    evaluation.update(model_digest=model_digest, data_version=data_version, run_id=run_id, family=family)
    Path(evaluation_path).write_text(json.dumps(evaluation, default=_jsonable))
    if paired_path:
        paired.save(paired_path)
    thresholds = thresholds_artifact(evaluation, policy=policy.name)
    if thresholds_path:
        Path(thresholds_path).write_text(json.dumps(thresholds, indent=2, default=_jsonable))
    record(store, run_id, "thresholds", thresholds)
    record(store, run_id, "evaluation", json.loads(json.dumps(evaluation, default=_jsonable)))
    return evaluation


@timed_step("gate")
def gate_step(
    policy_ref: str,
    evaluation_path: str,
    run_id: str,
    started_by: str,
    blessing_path: str,
    report_path: str,
    markdown_path: str,
    paired_path: str = "",
) -> dict[str, Any]:
    """Apply the gate, write the blessing and the reviewer report, log the MLflow run. Returns the blessing."""
    from harmguard.evaluation.frozen import PairedDecisions
    from harmguard.evaluation.gate import run_gate
    from harmguard.evaluation.metrics import flatten
    from harmguard.lineage import git_commit, lock_digest
    from harmguard.policy import load_policy, policy_digest
    from harmguard.registry.experiment import SnapshotInput, log_run, training_params
    from harmguard.reports.review_page import render_review_html, render_review_markdown

    settings, store = step_context()
    policy = load_policy(policy_ref)
    evaluation = json.loads(Path(evaluation_path).read_text())
    blessing = run_gate(
        evaluation,
        policy,
        model_digest=evaluation["model_digest"],
        data_version=evaluation["data_version"],
        run_id=run_id,
        paired=PairedDecisions.load(paired_path) if paired_path else None,
    )
    context = {
        "policy": policy.name,
        "run_id": run_id,
        "model_digest": evaluation["model_digest"],
        "data_version": evaluation["data_version"],
        "family": evaluation["family"],
    }
    html = render_review_html(evaluation, blessing, context=context)
    markdown = render_review_markdown(evaluation, blessing)
    Path(report_path).write_text(html)
    Path(markdown_path).write_text(markdown)
    store.write_atomic(f"runs/{run_id}/report.html", html.encode())
    lineage = {
        "data_version": evaluation["data_version"],
        "policy_digest": policy_digest(policy_ref),
        "git_commit": git_commit(settings),
        "lock_digest": lock_digest(settings),
        "image": settings.image,
        "parent_run": run_id,
    }
    ingest = read_record(store, run_id, "ingest") or {}
    ingested = ingest.get("lineage") or {}
    if ingested.get("sources"):
        lineage["sources"] = ingested["sources"]  # each with its digest and rows
    if ingested.get("labels"):  # the labels cut: what `retrain-needed` counts new events from
        lineage["labels_watermark"] = ingested["labels"]["watermark"]
        lineage["labels_until"] = ingested["labels"]["until"]
    blessing["lineage"] = lineage
    mlflow_run_id = log_run(
        settings,
        experiment=policy.name,
        run_name=run_id,
        params={
            "policy": policy.name,
            "family": evaluation["family"],
            "thresholds": json.dumps(evaluation["thresholds"]),
            "started_by": started_by,
            **{f"lineage.{k}": v for k, v in lineage.items()},
            **training_params(read_record(store, run_id, "train") or {}),
        },
        metrics=flatten(evaluation, "test"),
        tags={
            "harmguard.run_id": run_id,
            "harmguard.model_digest": evaluation["model_digest"],
            "harmguard.blessed": str(blessing["blessed"]).lower(),
            "harmguard.data_version": evaluation["data_version"],
        },
        files={
            "report.html": html.encode(),
            "blessing.json": json.dumps(blessing, indent=2).encode(),
            "summary.md": markdown.encode(),
        },
        history=(read_record(store, run_id, "train") or {}).get("history"),
        snapshot=SnapshotInput(
            name=f"{policy.name}-snapshot",
            uri=ingest.get("snapshot_uri") or store.uri_for(f"snapshots/{evaluation['data_version']}"),
            data_version=evaluation["data_version"],
        ),
    )
    blessing["mlflow_run_id"] = mlflow_run_id
    Path(blessing_path).write_text(json.dumps(blessing, indent=2))
    record(store, run_id, "blessing", blessing)
    return blessing


@timed_step("register")
def register_step(
    policy_ref: str, model_dir: str, blessing_path: str, run_id: str, started_by: str, seed: int, family: str
) -> str:
    """Publish the model create-only, register the version, move `challenger` by CAS, audit. Returns the version."""
    from harmguard.models.loading import load_model
    from harmguard.monitoring.reference import write_score_reference
    from harmguard.policy import load_policy, read_policy_bytes
    from harmguard.promotion.golden import measure_golden
    from harmguard.registry import append_audit, move_alias, read_alias, register_version
    from harmguard.registry.models import publish_model

    settings, store = step_context()
    policy = load_policy(policy_ref)
    blessing = json.loads(Path(blessing_path).read_text())
    if not blessing["blessed"]:
        raise RuntimeError("refusing to register a model the gate did not bless")
    digest = publish_model(store, Path(model_dir))
    if digest != blessing["model_digest"]:
        raise RuntimeError(f"model digest {digest} differs from the evaluated one {blessing['model_digest']}")
    # drift monitoring's reference: the model's validation scores (from the score cache), create-only
    write_score_reference(
        store, policy, model_dir=model_dir, model_digest=digest, thresholds=blessing["thresholds"],
        data_version=blessing["lineage"]["data_version"],
    )  # fmt: skip
    evaluation = read_record(store, run_id, "evaluation") or {}
    rec = register_version(
        store,
        settings,
        policy=policy.name,
        model_digest=digest,
        thresholds=blessing["thresholds"],
        blessing=blessing,
        metrics={
            "reference": evaluation.get("reference", {}).get("test"),
            "operating": evaluation.get("operating", {}).get("test"),
            # golden-file agreement of the evaluated artifact: what promotion's infra validation must reach again
            "golden": measure_golden(load_model(model_dir), policy.name, blessing["thresholds"]),
        },
        lineage=blessing["lineage"] | {"seeds": {"train": seed}},
        run_id=run_id,
        mlflow_run_id=blessing.get("mlflow_run_id"),
        family=family,
        by=started_by,
        policy_file=read_policy_bytes(policy_ref)[0],  # kept by digest: approvals read their rules from it
    )
    append_audit(
        store,
        policy.name,
        {
            "event": "bless",
            "who": "gate",
            "why": "; ".join(blessing["reasons"]),
            "version": rec.version,
            "model_digest": digest,
            "thresholds_version": blessing["thresholds_version"],
        },
    )
    current, _ = read_alias(store, policy.name, "challenger")
    move_alias(
        store,
        settings,
        policy=policy.name,
        alias="challenger",
        to_version=rec.version,
        expected_version=current.version if current else None,
        by=started_by,
        reason=f"blessed by run {run_id}",
    )
    record(store, run_id, "registration", {"version": rec.version, "model_digest": digest})
    return rec.version


def _jsonable(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serializable: {type(v)}")
