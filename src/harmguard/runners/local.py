"""`harmguard run`: execute the KFP training pipeline locally through `kfp.local` and summarize it.

kfp.local's SubprocessRunner (no venvs) runs each component as a subprocess of this interpreter, so the steps see
the same installed harmguard. Its verbose logs go to ``runs/<run-id>/pipeline.log``; the terminal shows one
progress line per step (rich, on stderr) and the summary.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from harmguard.data.sources import LabelsCutError, labels_cut
from harmguard.pipelines.promotion import promotion_pipeline
from harmguard.pipelines.training import training_pipeline
from harmguard.policy import load_policy
from harmguard.promotion.promote import load_record
from harmguard.registry import read_alias
from harmguard.registry.runs import claim_run_id, new_run_id, read_record
from harmguard.runners import kfp_local
from harmguard.settings import Settings
from harmguard.steps import STEP_TITLES
from harmguard.steps.timing import STEP_TIME_PREFIX
from harmguard.storage import open_store
from harmguard.training.ray_train import format_progress

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_PROGRESS = re.compile(
    r"HGPROGRESS (\{.*\})"
)  # harmguard.training.ray_train.PROGRESS_PREFIX, echoed from the train step
_STEP_TIME = re.compile(re.escape(STEP_TIME_PREFIX) + r"(\{.*\})")  # a step's own work (harmguard.steps.timing)


class _ProgressLog(io.TextIOBase):
    """A stdout stand-in: keeps kfp.local's logs in a file and turns task start/end lines into progress lines."""

    def __init__(self, log: io.TextIOBase, console: Console) -> None:
        self.log, self.console = log, console
        self.started: dict[str, float] = {}
        self.status: dict[str, str] = {}
        self.timing: dict[str, dict[str, float | None]] = {}
        self._work: dict[str, float] = {}
        self._running: str | None = None
        self._buf = ""

    def write(self, s: str) -> int:
        self.log.write(s)
        self._buf += s
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            clean = _ANSI.sub("", line)
            if m := _PROGRESS.search(clean):
                self._progress(m.group(1))
            elif m := _STEP_TIME.search(clean):
                self._step_time(m.group(1))
            elif m := _START.search(clean):
                self.started[m.group(1)] = time.monotonic()
                self._running = m.group(1)
                self.console.print(f"[cyan]▶[/] {STEP_TITLES.get(m.group(1), m.group(1))} …")
            elif m := _END.search(clean):
                name, status = m.group(1), m.group(2)
                self.status[name] = status
                self._running = None
                took = time.monotonic() - self.started.get(name, time.monotonic())
                times = step_times(took, self._work.get(name))
                self.timing[name] = times
                mark = "[green]✔[/]" if status == "SUCCESS" else "[red]✘[/]"
                split = (
                    f": work {times['work_s']:.1f} s, overhead {times['overhead_s']:.1f} s" if "work_s" in times else ""
                )
                self.console.print(f"{mark} {STEP_TITLES.get(name, name)} ({took:.1f} s{split})")
        return len(s)

    def _step_time(self, doc: str) -> None:
        # kfp.local runs one task at a time: the line belongs to the task that started last
        try:
            work = float(json.loads(doc)["work_s"])
        except (ValueError, KeyError, TypeError):
            return
        if self._running is not None:
            self._work[self._running] = work

    def _progress(self, doc: str) -> None:
        try:
            self.console.print(f"  [dim]│[/] {format_progress(json.loads(doc))}", highlight=False)
        except (ValueError, KeyError):
            pass  # a garbled progress line stays in the log only

    def flush(self) -> None:
        self.log.flush()


def step_times(wall: float, work: float | None) -> dict[str, float | None]:
    """A step's wall time, its own work (as the step reported it) and the overhead: wall minus work.

    The overhead is what the step costs beyond its work: process start, the KFP executor, importing the step's
    module, writing outputs and exiting. A step that reported no work (it died first) has only its wall time.
    """
    if work is None:
        return {"wall_s": round(wall, 2)}
    return {"wall_s": round(wall, 2), "work_s": round(work, 2), "overhead_s": round(max(0.0, wall - work), 2)}


@contextlib.contextmanager
def step_environment(settings: Settings) -> Iterator[None]:
    """The resolved settings as the environment of the pipeline's step processes, for one run; restored after.

    kfp.local starts each step as a subprocess of this one and gives it this process's environment: that is the only
    way to hand the steps the settings the entry point resolved.
    """
    values = {
        "HARMGUARD_HOME": settings.home,
        "HARMGUARD_CACHE": str(settings.cache),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        **({"HARMGUARD_DATA_MIRROR": str(settings.data_mirror)} if settings.data_mirror else {}),
    }
    defaults = {
        "GX_ANALYTICS_ENABLED": "False",
        # Steps write through a pipe to kfp.local; unbuffered, their progress lines reach the terminal as they happen.
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_ENABLE_TELEMETRY": "false",
    }
    saved = {k: os.environ.get(k) for k in (*values, *defaults)}
    os.environ.update(values)
    for k, v in defaults.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


@dataclass
class LocalRun:
    """What one local pipeline execution left behind."""

    run_id: str
    error: str | None
    steps: dict[str, str]
    log: Path
    wall_seconds: float
    timing: dict[str, dict[str, float | None]] = field(default_factory=dict)


def execute_locally(
    settings: Settings, run_id: str, pipeline: Any, arguments: dict[str, Any], *, console: Console, title: str
) -> LocalRun:
    """Run a compiled-able KFP pipeline function through kfp.local in this environment, with progress lines.

    kfp.local's pipeline root and the log are local files; with a gs:// home they go to the local cache, while the
    steps write their records and reports to the store (``runs/<run-id>/`` under the home).
    """
    from kfp import local

    run_dir = (settings.home_path if settings.home_is_local else settings.cache) / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "pipeline.log"
    console.print(f"[bold]{title}[/] run={run_id}")
    t0 = time.monotonic()
    error = None
    with (
        open(log_path, "w") as log,
        kfp_local.control_flow_fix(),  # make kfp.local honour dsl.If / dsl.Else (see harmguard.runners.kfp_local)
        step_environment(settings),
        warnings.catch_warnings(),
    ):
        # Our image is not named "python*", which makes kfp.local warn on every step; the steps run here by design.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
        sink = _ProgressLog(log, console)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir / "kfp"))
        with contextlib.redirect_stdout(sink):
            try:
                pipeline(**arguments)
            except RuntimeError as e:
                error = _ANSI.sub("", str(e))
    return LocalRun(run_id, error, sink.status, log_path, round(time.monotonic() - t0, 1), sink.timing)


def run_training(
    settings: Settings,
    *,
    policy: str,
    data_uri: str = "",
    columns: str = "",
    family: str = "baseline",
    train_config: str = "",
    sample: int = 0,
    seed: int = 0,
    started_by: str = "unknown",
    console: Console | None = None,
    labels_watermark: int | None = None,
    labels_until: str = "",
) -> dict[str, Any]:
    """Run the training pipeline locally; returns the summary of CONTRACTS.md (``ok`` says if it finished).

    A policy that takes imported labels has its cut pinned before any step runs (default: the current watermark and
    the newest decision), so the pipeline's arguments say exactly which events the run reads.

    Raises:
        PolicyError: The policy is unknown or invalid.
        LabelsCutError: The labels watermark or cutoff cannot be used.
    """
    pol = load_policy(policy)  # a bad policy fails here, before any step runs
    if pol.data.labels is not None:
        cut, _ = labels_cut(open_store(settings.home), pol, watermark=labels_watermark, until=labels_until or None)
        labels_watermark, labels_until = cut.watermark, cut.until or ""
    elif labels_until or labels_watermark is not None:
        raise LabelsCutError(f"policy {pol.name} takes no imported labels: --labels-* options do not apply")
    run_id = new_run_id(pol.name)
    claim_run_id(open_store(settings.home), run_id, kind="training", by=started_by)
    arguments = {
        "policy": policy,
        "data_uri": data_uri,
        "columns": columns,
        "family": family,
        "train_config": train_config,
        "sample": sample,
        "seed": seed,
        "run_id": run_id,
        "started_by": started_by,
        "labels_watermark": -1 if labels_watermark is None else labels_watermark,
        "labels_until": labels_until,
    }
    done = execute_locally(
        settings,
        run_id,
        training_pipeline,
        arguments,
        console=console or Console(stderr=True),
        title=f"harmguard run policy={pol.name} family={family}",
    )
    summary = summarize(open_store(settings.home), run_id, pol.name, error=done.error, steps=done.steps)
    summary["wall_seconds"] = done.wall_seconds
    summary["timing"] = done.timing
    summary["log"] = str(done.log)
    return summary


def summarize(store: Any, run_id: str, policy: str, *, error: str | None, steps: dict[str, str]) -> dict[str, Any]:
    """Build the run summary from the step records under ``runs/<run-id>/``."""
    ingest = read_record(store, run_id, "ingest") or {}
    validation = read_record(store, run_id, "validation")
    evaluation = read_record(store, run_id, "evaluation")
    blessing = read_record(store, run_id, "blessing")
    registration = read_record(store, run_id, "registration")
    metrics: dict[str, Any] = {"reference": {}, "operating": {}}
    if evaluation:
        for split in ("validation", "test"):
            ref = evaluation["reference"][split]
            metrics["reference"][split] = {k: ref[k] for k in ("weighted_f1", "macro_f1", "accuracy", "per_class")}
            metrics["reference"][split]["per_class"] = {
                c: {k: m.get(k) for k in ("precision", "recall", "f1", "fpr", "pr_auc", "roc_auc", "support")}
                for c, m in ref["per_class"].items()
            }
            metrics["operating"][split] = evaluation["operating"][split]
    report = store.uri_for(f"runs/{run_id}/report.html") if blessing else None
    if report is None and validation is not None:
        report = store.uri_for(f"runs/{run_id}/validation.html")
    failed_checks = [c for c in (validation or {}).get("checks", []) if not c["success"]]
    return {
        "policy": policy,
        "run_id": run_id,
        "ok": error is None,
        "error": error,
        "data_version": ingest.get("data_version"),
        "rows": ingest.get("rows"),
        "validation": {"passed": validation["success"], "failed": failed_checks} if validation else None,
        "version": (registration or {}).get("version"),
        "model_digest": (blessing or {}).get("model_digest"),
        "thresholds": (blessing or {}).get("thresholds"),
        "thresholds_version": (blessing or {}).get("thresholds_version"),
        "blessed": bool(blessing and blessing["blessed"]),
        "reasons": (blessing or {}).get("reasons") or ([error] if error else []),
        "checks": (blessing or {}).get("checks", []),
        "champion": (blessing or {}).get("champion"),
        "evaluation_sets": (blessing or {}).get("evaluation_sets", {}),
        # the sources with their digests and rows, and the labels cut (watermark, until) the snapshot took
        "lineage": ingest.get("lineage") or {},
        "metrics": metrics,
        "report": report,
        "steps": steps,
    }


def run_promotion(
    settings: Settings, *, version: str, promoted_by: str, console: Console | None = None
) -> dict[str, Any]:
    """Run the promotion pipeline locally through kfp.local (as ``harmguard.runners.local`` runs training).

    The approval rules are those of the policy recorded when the version was registered.
    """
    store = open_store(settings.home)
    rec = load_record(store, version)  # an unknown version fails here, before any step
    run_id = new_run_id(f"{rec.policy}-promote")
    claim_run_id(store, run_id, kind="promotion", by=promoted_by)
    arguments = {"version": version, "promoted_by": promoted_by, "run_id": run_id}
    done = execute_locally(
        settings,
        run_id,
        promotion_pipeline,
        arguments,
        console=console or Console(stderr=True),
        title=f"harmguard promote {version}",
    )
    error = done.error
    refusal = read_record(store, run_id, "refusal")
    champion, _ = read_alias(store, rec.policy, "champion")
    return {
        "version": version,
        "policy": rec.policy,
        "run_id": run_id,
        "ok": error is None and refusal is None,
        "error": refusal["reason"] if refusal else error,
        "refused_at": refusal["step"] if refusal else None,
        "steps": done.steps,
        "champion": champion.model_dump() if champion else None,
        "infra": read_record(store, run_id, "promotion-infra"),
        "deploy": read_record(store, run_id, "promotion-deploy"),
        "wall_seconds": done.wall_seconds,
        "timing": done.timing,
        "log": str(done.log),
    }
