"""The `harmguard` command line: thin commands over the library."""

from __future__ import annotations

import getpass
import json
import os
import sys
import traceback
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from harmguard import __version__
from harmguard.exit_codes import ExitCode

app = typer.Typer(
    help="harmguard: retrain, gate, approve and serve Trust & Safety classifiers.",
    no_args_is_help=True,
    # `harmguard --install-completion` / `--show-completion` (bash, zsh, fish, PowerShell)
    add_completion=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
_TF = "Transformer family"
PROG = "harmguard"


class Family(StrEnum):
    """``run --family``: the model families (``harmguard.training.dispatch.FAMILIES``)."""

    baseline = "baseline"
    transformer = "transformer"


class Pipeline(StrEnum):
    """``submit --pipeline``: the compiled pipelines (``harmguard.runners.submit.PIPELINE_CHOICES``)."""

    training = "training"
    promotion = "promotion"
    scoring = "scoring"


class Backend(StrEnum):
    """``submit --backend``: where the training pipeline trains (``harmguard.runners.submit.BACKENDS``)."""

    inline = "inline"
    rayjob = "rayjob"


def _json_error(message: str, code: int) -> None:
    """Under --json, an error is one JSON object on stdout too: ``{"error", "exit_code"}``."""
    sys.stdout.write(json.dumps({"error": message, "exit_code": int(code)}) + "\n")


def _plain(message: str) -> str:
    """A message as the terminal shows it: rich markup and escapes resolved (the JSON error carries this text)."""
    try:
        return Text.from_markup(message).plain
    except MarkupError:
        return message


# Whether the command running now was given --json (set by the option's callback as each command is parsed).
_json_output = {"on": False}


def _note_json(value: bool) -> bool:
    _json_output["on"] = bool(value)
    return value


# Every command's --json: one JSON object as the last line of stdout, an error included (``_fail``).
JsonFlag = Annotated[
    bool,
    typer.Option("--json", callback=_note_json, help="Print one JSON object as the last line of stdout (errors too)."),
]


def _fail(message: str, code: ExitCode) -> typer.Exit:
    """Print the error (under --json also as a JSON object) and return the exit to raise (harmguard.exit_codes)."""
    if _json_output["on"]:
        _json_error(_plain(message), code)
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(int(code))


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"{PROG} {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print harmguard's version and exit."),
    ] = False,
) -> None:
    """harmguard: retrain, gate, approve and serve Trust & Safety classifiers."""
    _json_output["on"] = False  # runs before the subcommand's options are parsed: no --json carried over


def _settings():
    from harmguard.settings import load_settings

    try:
        return load_settings()
    except ValueError as e:  # the environment is not set up (e.g. a gs:// home without MLFLOW_TRACKING_URI)
        raise _fail(str(e), ExitCode.USAGE) from e


def _policy_exit(e: Exception) -> ExitCode:
    """A name that names no policy is a usage error; a policy file that does not validate is invalid input."""
    from harmguard.policy import UnknownPolicyError

    return ExitCode.USAGE if isinstance(e, UnknownPolicyError) else ExitCode.INVALID_INPUT


def run_exit_code(summary: dict[str, Any]) -> ExitCode:
    """The exit code of `harmguard run` from its summary: blessed 0, invalid data 4, rejected 3, a crash 1."""
    if summary["ok"] and summary["blessed"]:
        return ExitCode.OK
    validation = summary.get("validation")
    if (validation and not validation["passed"]) or summary["steps"].get("ingest") == "FAILURE":
        return ExitCode.INVALID_INPUT  # the data failed validation, or could not be read as the policy maps it
    if summary["ok"]:
        return ExitCode.REJECTED  # the pipeline ran to its end and the gate said no
    return ExitCode.UNEXPECTED


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@app.command()
def run(
    policy: Annotated[str, typer.Option(help="Shipped policy name or path to a policy YAML.")] = "davidson2017",
    data: Annotated[
        str, typer.Option("--data", help="Data path/URI (CSV, Parquet, JSONL) instead of the policy's.")
    ] = "",
    columns: Annotated[str, typer.Option(help='Column mapping override as JSON, e.g. \'{"text": "body"}\'.')] = "",
    family_choice: Annotated[
        Family, typer.Option("--family", help="Model family (transformer: Ray Train).")
    ] = Family.baseline,
    sample: Annotated[int, typer.Option(help="Use a stable sample of this many rows (0: all).", min=0)] = 0,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    by: Annotated[str | None, typer.Option(help="Who starts the run (default: the OS user).")] = None,
    as_json: JsonFlag = False,
    labels_watermark: Annotated[
        int | None,
        typer.Option(help="Imported labels: take the imports up to this watermark (default: the current one).", min=0),
    ] = None,
    labels_until: Annotated[
        str,
        typer.Option(help="Imported labels: take decisions up to this RFC 3339 time (default: the newest decision)."),
    ] = "",
    backbone: Annotated[
        str | None, typer.Option(help="Transformer: Hugging Face encoder (folder or hub name).", rich_help_panel=_TF)
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Transformer: Ray Train workers.", min=1, rich_help_panel=_TF)
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Transformer: most epochs.", min=1, rich_help_panel=_TF)] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Transformer: longest tokenized input.", min=8, rich_help_panel=_TF)
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Transformer: examples per worker per micro-batch.", min=1, rich_help_panel=_TF)
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Transformer: peak learning rate.", min=0, rich_help_panel=_TF)
    ] = None,
    max_train_rows: Annotated[
        int | None,
        typer.Option(help="Transformer on CPU: train on at most this many rows (0: all).", min=0, rich_help_panel=_TF),
    ] = None,
    use_gpu: Annotated[
        bool | None, typer.Option("--use-gpu/--no-gpu", help="Transformer: one GPU per worker.", rich_help_panel=_TF)
    ] = None,
    cpus_per_worker: Annotated[
        float | None, typer.Option(help="Transformer: CPUs per Ray Train worker.", min=0, rich_help_panel=_TF)
    ] = None,
    ray_address: Annotated[
        str,
        typer.Option(
            envvar="RAY_ADDRESS",
            help="Transformer: Ray cluster to train on (http://HOST:8265 submits a Ray job); empty: a local cluster.",
            rich_help_panel=_TF,
        ),
    ] = "",
) -> None:
    """Run the training pipeline locally (kfp.local): ingest, validate, train, evaluate, gate, register."""
    from harmguard.data.sources import LabelsCutError
    from harmguard.policy import PolicyError
    from harmguard.runners.local import run_training

    family = family_choice.value

    if columns:
        try:
            json.loads(columns)
        except json.JSONDecodeError as e:
            raise _fail(f"--columns is not valid JSON: {e}", ExitCode.USAGE) from e
    options = {
        "backbone": backbone,
        "num_workers": workers,
        "epochs": epochs,
        "max_length": max_length,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "cpu_max_train_rows": max_train_rows,
        "use_gpu": use_gpu,
        "resources_per_worker": {"CPU": cpus_per_worker} if cpus_per_worker else None,
        # RAY_ADDRESS in the environment must not make a baseline run fail, so the address counts for transformers only
        "ray_address": (ray_address or None) if family == "transformer" else None,
    }
    train_config = {k: v for k, v in options.items() if v is not None}
    if train_config and family != "transformer":
        raise _fail(f"{', '.join(sorted(train_config))}: transformer options need --family transformer", ExitCode.USAGE)
    settings = _settings()
    try:
        summary = run_training(
            settings,
            policy=policy,
            data_uri=data,
            columns=columns,
            family=family,
            train_config=json.dumps(train_config) if train_config else "",
            sample=sample,
            seed=seed,
            started_by=by or _user(),
            labels_watermark=labels_watermark,
            labels_until=labels_until,
        )
    except PolicyError as e:
        raise _fail(str(e), _policy_exit(e)) from e
    except LabelsCutError as e:
        raise _fail(str(e), ExitCode.INVALID_INPUT) from e
    _print_run(summary)
    if as_json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
    code = run_exit_code(summary)
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


def _print_run(s: dict[str, Any]) -> None:
    v = s.get("validation")
    if v and not v["passed"]:
        err.print("[bold red]Data validation failed[/]; each failed expectation with up to 5 offending rows:")
        for c in v["failed"]:
            err.print(f"  [red]✘ {c['name']}[/]: {c['intent']} (observed: {c['observed']})")
            for x in c["examples"]:
                err.print(f"      row {x['row_id']} [{x['split']}/{x['label']}]: {x['text']!r}")
    elif s.get("error"):
        err.print(f"[bold red]Run failed:[/] {s['error']}")
    ref = s["metrics"]["reference"].get("test")
    if ref:
        table = Table(title=f"{s['policy']} · test split · reference (argmax) and operating-point metrics")
        for col in ("class", "precision", "recall", "F1", "op. threshold", "op. recall", "op. FPR"):
            table.add_column(col)
        op = s["metrics"]["operating"]["test"]["per_category"]
        for c, m in ref["per_class"].items():
            o = op.get(c)
            table.add_row(
                c,
                f"{m['precision']:.3f}",
                f"{m['recall']:.3f}",
                f"{m['f1']:.3f}",
                *(f"{o['threshold']:.3f}", f"{o['recall']:.3f}", f"{o['fpr']:.4f}") if o else ("", "", ""),
            )
        err.print(table)
        err.print(f"weighted F1 [bold]{ref['weighted_f1']:.4f}[/] · macro F1 [bold]{ref['macro_f1']:.4f}[/]")
    if s.get("checks"):
        err.print(f"Gate: {'[green]BLESSED[/]' if s['blessed'] else '[red]REJECTED[/]'}")
        for c in s["checks"]:
            err.print(f"  {'[green]✔[/]' if c['passed'] else '[red]✘[/]'} {c['reason']}")
    if s.get("version"):
        err.print(f"Registered [bold]{s['version']}[/] (model {s['model_digest'][:12]}) as challenger")
    err.print(f"data version {s.get('data_version')} · run {s['run_id']} · {s.get('wall_seconds')} s")
    if s.get("report"):
        err.print(f"Report: {s['report']}")
    err.print(f"Log: {s.get('log')}")


@app.command()
def status(
    policy: Annotated[str | None, typer.Option(help="Only this policy.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show champion, what is deployed, challenger, pending approvals, mismatches, unfinished moves, audit problems."""
    from harmguard.k8s.rayservice import rayservice_rollout
    from harmguard.promotion.approval import approval_overview
    from harmguard.promotion.deploy import deployed_versions
    from harmguard.registry import registry_status
    from harmguard.storage import open_store

    settings = _settings()
    store = open_store(settings.home)
    doc = registry_status(store, settings)
    # what the local server's /readyz and (given a Kubernetes API) the RayService report they run
    deployed, unreachable = deployed_versions(store, rayservice_rollout(settings, echo=lambda _: None))
    for name, entry in doc["policies"].items():
        entry.update(approval_overview(store, name))  # approved, overrides, last_events (beyond CONTRACTS.md)
        entry["deployed"] = deployed.get(name, [])
    if policy:
        if policy not in doc["policies"]:
            known = sorted(doc["policies"])
            raise _fail(f"no registered versions for policy {escape(repr(policy))}; known: {known}", ExitCode.USAGE)
        doc = {"policies": {policy: doc["policies"][policy]}}
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    if not doc["policies"]:
        err.print(f"No policies registered under {escape(settings.home)}")
        return
    table = Table(title=f"harmguard registry · {escape(settings.home)}")
    for col in ("policy", "champion", "deployed", "challenger", "pending approval", "mismatches"):
        table.add_column(col)
    for name, p in sorted(doc["policies"].items()):
        fmt = lambda a: f"{a['version']} ({(a['model_digest'] or '')[:10]})" if a else "–"  # noqa: E731
        runs = [f"{fmt(d)} {d['where']}{'' if d['running'] else ' · not running'}" for d in p["deployed"]]
        cells = (name, fmt(p["champion"]), "\n".join(runs) or "–", fmt(p["challenger"]), ", ".join(p["pending"]) or "–")
        # registry texts are data, never rich markup
        table.add_row(*(Text(c) for c in (*cells, "\n".join(p["mismatches"]) or "–")))
    Console().print(table)
    for problem in unreachable:
        err.print(f"[yellow]deployed version unknown[/] {escape(problem)}")
    for name, p in sorted(doc["policies"].items()):
        for problem in p["audit"]:
            err.print(f"[bold red]audit log broken[/] {escape(name)}: {escape(problem)}")
        for move in p["unfinished"]:
            err.print(f"[bold red]unfinished[/] {escape(name)}: {escape(move)}")
        for o in p["overrides"]:
            who = _who(o["by"], o.get("principal"))
            err.print(
                f"[yellow]override[/] {escape(str(o['version']))} by {who} at {escape(o['when'])}: {escape(o['why'])}"
            )
        for e in p["last_events"]:
            moved = f" {e['from'] or '–'} → {e['to']}" if e.get("to") else ""
            line = f"{name} · {e['when']} · {e['event']} {e['version'] or ''}{moved} by {e['who']}"
            principal = f" ({e['principal']})" if e.get("principal") and e["principal"] != e["who"] else ""
            err.print(escape(f"{line}{principal}: {e['why']}"))


def _who(display: Any, principal: Any) -> str:
    """A display name with the principal beside it, escaped for rich."""
    shown = str(display)
    if principal and str(principal) != shown:
        shown += f" ({principal})"
    return escape(shown)


def _principal(store: Any) -> Any:
    from harmguard.registry.principal import principal_for

    return principal_for(store.uri)


_WORKFLOW_HELP = (
    "Then resume this Argo workflow waiting at await-approval for VERSION with the decision "
    "(ARGO_SERVER, ARGO_TOKEN, ARGO_NAMESPACE, as the argo CLI reads them)."
)


def _awaiting_approval(workflow: str, version: str) -> Any:
    """The workflow's suspended approval of ``version`` (Argo Server, through Hera), or exit saying why not."""
    from harmguard.k8s.argo_resume import ArgoResumeError, argo_server, find_approval

    try:
        return find_approval(argo_server(), workflow, version)
    except ArgoResumeError as e:
        raise _fail(escape(str(e)), e.exit_code) from e


def _resume_workflow(pending: Any, event: dict[str, Any], *, approve: bool) -> None:
    """Set the decision as the approval node's outputs and resume it; the audit event is already recorded."""
    from harmguard.k8s.argo_resume import ArgoResumeError, resume_with_decision

    try:
        resume_with_decision(pending, approve=approve, approver=str(event["who"]), reason=str(event["why"]))
    except ArgoResumeError as e:
        message = (
            f"the decision is recorded, but workflow {pending.ref} was not resumed: {e}. Finish it by hand: argo node "
            f"set {pending.workflow} --node-field-selector id={pending.node_id} --output-parameter approve=... && "
            f"argo resume {pending.workflow} --node-field-selector id={pending.node_id}"
        )
        raise _fail(escape(message), e.exit_code) from e
    err.print(f"resumed workflow {escape(pending.ref)} with approve={'YES' if approve else 'NO'}")


@app.command()
def approve(
    version: Annotated[str, typer.Argument(help="The version '<policy>/<n>' to approve.")],
    reason: Annotated[str, typer.Option(help="Why; kept in the audit log.")],
    by: Annotated[
        str | None, typer.Option(help="Your display name (default: your account). Who approves is your login.")
    ] = None,
    override_gate: Annotated[bool, typer.Option(help="Approve a version the gate did not bless (recorded).")] = False,
    workflow: Annotated[str | None, typer.Option(help=_WORKFLOW_HELP)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Approve exactly this version's model, blessing and thresholds for promotion (expires after the policy's TTL).

    The approver is the authenticated principal (Kubeflow/Argo user or service account in a cluster, the Google
    account of a gs:// home, else the OS account); it must differ from the principal that registered the version
    unless the policy recorded at registration sets allow_self_approval.
    """
    from harmguard.promotion.approval import ApprovalError, approve_version
    from harmguard.registry import VersionNotFound
    from harmguard.storage import open_store

    store = open_store(_settings().home)
    principal = _principal(store)
    pending = _awaiting_approval(workflow, version) if workflow else None  # checked before anything is recorded
    try:
        event = approve_version(store, version, by=by, principal=principal, reason=reason, override_gate=override_gate)
    except ApprovalError as e:
        raise _fail(escape(str(e)), ExitCode.REJECTED) from e
    except (VersionNotFound, ValueError) as e:
        raise _fail(escape(str(e)), ExitCode.USAGE) from e
    note = " [yellow](gate overridden)[/]" if override_gate else ""
    who = _who(event["who"], event["principal"])
    err.print(f"[green]approved[/] {escape(version)}{note} by {who}; valid until {event['expires_at']}")
    if pending is not None:
        _resume_workflow(pending, event, approve=True)
    if as_json:
        sys.stdout.write(json.dumps(event, default=str) + "\n")  # the audit event as recorded


@app.command()
def reject(
    version: Annotated[str, typer.Argument(help="The version '<policy>/<n>' to reject.")],
    reason: Annotated[str, typer.Option(help="Why; kept in the audit log.")],
    by: Annotated[str | None, typer.Option(help="Your display name (default: your account).")] = None,
    workflow: Annotated[str | None, typer.Option(help=_WORKFLOW_HELP)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Reject a version: it cannot be promoted or rolled back to (an earlier approval is withdrawn)."""
    from harmguard.promotion.approval import ApprovalError, reject_version
    from harmguard.registry import VersionNotFound
    from harmguard.storage import open_store

    store = open_store(_settings().home)
    pending = _awaiting_approval(workflow, version) if workflow else None  # checked before anything is recorded
    try:
        event = reject_version(store, version, by=by, principal=_principal(store), reason=reason)
    except ApprovalError as e:
        raise _fail(escape(str(e)), ExitCode.REJECTED) from e
    except (VersionNotFound, ValueError) as e:
        raise _fail(escape(str(e)), ExitCode.USAGE) from e
    err.print(f"[red]rejected[/] {escape(version)} by {_who(event['who'], event['principal'])}")
    if pending is not None:
        _resume_workflow(pending, event, approve=False)
    if as_json:
        sys.stdout.write(json.dumps(event, default=str) + "\n")  # the audit event as recorded


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="The approved version '<policy>/<n>' to make champion.")],
    by: Annotated[str | None, typer.Option(help="Who promotes (default: the OS user).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the promotion pipeline locally (kfp.local): approval, digest, champion, golden file, swap, deploy.

    The approval rules are those of the policy file recorded when the version was registered.
    """
    from harmguard.promotion.promote import PromotionRefused
    from harmguard.runners.local import run_promotion

    try:
        summary = run_promotion(_settings(), version=version, promoted_by=by or _user())
    except PromotionRefused as e:
        raise _fail(escape(str(e)), ExitCode.REJECTED) from e
    if as_json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
    if not summary["ok"]:
        # a step that refused (approval, digest, champion moved, golden file) is a refusal; anything else a crash
        code = ExitCode.REJECTED if summary["refused_at"] else ExitCode.UNEXPECTED
        message = f"promotion of {version} refused at {summary['refused_at'] or 'a step'}: {summary['error']}"
        raise _fail(escape(message), code)
    infra, deploy = summary.get("infra") or {}, summary.get("deploy") or {}
    if infra.get("agreement") is not None:
        needs = f"needs {infra['required']:.3f}, {infra['required_from']}"
        err.print(f"golden agreement {infra['agreement']:.3f} ({needs})")
    err.print(f"[green]champion[/] of {summary['policy']} is now {version} (was {summary['champion']['previous']})")
    err.print(
        escape(f"{deploy.get('note', '')}; RayService patch: {deploy.get('patch')} · {summary['wall_seconds']} s")
    )


@app.command()
def rollback(
    policy: Annotated[str, typer.Option(help="The policy whose champion goes back to the previous version.")],
    reason: Annotated[str, typer.Option(help="Why; kept in the audit log.")],
    by: Annotated[str | None, typer.Option(help="Your display name (default: your account).")] = None,
    override: Annotated[
        bool,
        typer.Option(help="Restore the previous version although its approval expired or it was rejected (audited)."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Move `champion` back to the version it replaced (compare-and-swap, audited as rollback) and deploy it.

    The version restored needs a valid approval (not expired, no reject since), as a promotion would; `--override`
    with a reason restores it without one and is written to the audit log as an override.
    """
    from harmguard.k8s.rayservice import rayservice_rollout
    from harmguard.promotion.deploy import NotDeployed
    from harmguard.promotion.promote import PromotionRefused, rollback_champion
    from harmguard.registry.runs import RunIdTaken, claim_run_id, new_run_id
    from harmguard.storage import open_store

    settings = _settings()
    store = open_store(settings.home)
    display = by or _principal(store).name
    # On a cluster (HARMGUARD_KUBE_API or in a pod) the restored version goes to the RayService, as a promotion's does.
    cluster = rayservice_rollout(settings, echo=lambda line: err.print(escape(line)))
    try:
        run_id = new_run_id(f"{policy}-rollback")
        claim_run_id(store, run_id, kind="rollback", by=display)
        result = rollback_champion(
            store, settings, policy, by=display, reason=reason, run_id=run_id, override=override, cluster=cluster
        )
    except (PromotionRefused, RunIdTaken, NotDeployed) as e:
        raise _fail(escape(str(e)), ExitCode.REJECTED) from e
    except ValueError as e:
        raise _fail(escape(str(e)), ExitCode.USAGE) from e
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    forced = " [yellow](override)[/]" if result.get("override") else ""
    err.print(
        f"[green]champion[/] of {escape(policy)} rolled back to {result['version']} (from {result['previous']}){forced}"
    )
    err.print(escape(f"{result['deploy']['note']}; RayService patch: {result['deploy']['patch']}"))


@app.command("compile")
def compile_(
    output_dir: Annotated[
        Path | None, typer.Option(help="Where to write the YAML (default: the pipelines folder).")
    ] = None,
    manifests_dir: Annotated[
        Path | None,
        typer.Option(help="Where to render the Argo and KubeRay manifests (default: manifests/ of the checkout)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Compile the KFP pipelines and render the cluster manifests; every container runs HARMGUARD_IMAGE."""
    from harmguard.k8s.manifests import default_manifests_dir, render_manifests
    from harmguard.runners.compile import compile_pipelines

    image = _settings().image
    written: dict[str, Any] = {"image": image, "pipelines": [], "manifests": []}
    for path in compile_pipelines(output_dir, image=image):
        err.print(f"wrote {path}")
        written["pipelines"].append(str(path))
    target = manifests_dir or (output_dir / "manifests" if output_dir else default_manifests_dir())
    if target is None:
        err.print("no source checkout here: pass --manifests-dir to render the manifests")
    else:
        for path in render_manifests(target, image=image):
            err.print(f"wrote {path}")
            written["manifests"].append(str(path))
    if as_json:
        sys.stdout.write(json.dumps(written) + "\n")


@app.command("submit")
def submit_(
    host: Annotated[
        str,
        typer.Option(envvar="KF_PIPELINES_ENDPOINT", help="KFP API endpoint, e.g. http://ml-pipeline.kubeflow:8888."),
    ],
    pipeline: Annotated[Pipeline, typer.Option(help="Pipeline to run.")] = Pipeline.training,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Pipeline parameter NAME=VALUE (repeatable).")
    ] = None,
    backend: Annotated[
        Backend, typer.Option(help="Training backend: inline (the step trains on a GPU node) or rayjob (KubeRay).")
    ] = Backend.inline,
    image: Annotated[str | None, typer.Option(help="Image of every step (default: HARMGUARD_IMAGE).")] = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment (created when missing).")] = "harmguard",
    namespace: Annotated[str | None, typer.Option(help="Namespace of a multi-user KFP.")] = None,
    service_account: Annotated[
        str | None, typer.Option(help="ServiceAccount of the run's pods (GCS through Workload Identity).")
    ] = None,
    by: Annotated[str | None, typer.Option(help="Who starts the run (default: the OS user).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to end; exit 3 unless it succeeded.")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: seconds to wait at most.", min=1)] = 86400,
    poll: Annotated[float, typer.Option(help="With --wait: seconds between status checks.", min=0.01)] = 10,
    as_json: JsonFlag = False,
) -> None:
    """Create a run of a compiled pipeline on a Kubeflow Pipelines cluster (kfp.Client); --wait follows it."""
    from harmguard.runners.submit import SubmitError, SubmitInputError, parse_params, submit

    try:
        result = submit(
            host,
            pipeline.value,
            parse_params(param or []),
            backend=backend.value,
            image=image or _settings().image,
            experiment=experiment,
            namespace=namespace,
            service_account=service_account,
            started_by=by or _user(),
            wait=wait,
            timeout_s=timeout,
            poll_s=poll,
            on_state=lambda state: err.print(f"state {state}"),
        )
    except (SubmitInputError, ValueError) as e:
        raise _fail(str(e), ExitCode.USAGE) from e
    except SubmitError as e:  # the cluster refused or could not be reached: may pass on a later try
        raise _fail(str(e), ExitCode.UNEXPECTED) from e
    err.print(f"run {result.run_id} ({result.run_name}) of {result.pipeline} on {host}: {result.state}")
    if result.error:
        err.print(f"[bold red]run failed:[/] {result.error}")
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), default=str) + "\n")
    else:
        sys.stdout.write(f"{result.run_id} {result.state}\n")
    if not result.ok:
        raise typer.Exit(int(ExitCode.REJECTED))  # the run ended without succeeding: resubmitting repeats it


@app.command("serve")
def serve_(
    policy: Annotated[str | None, typer.Option(help="Policy to serve (default: the only one with a champion).")] = None,
    version: Annotated[str | None, typer.Option(help="Serve this version '<policy>/<n>' instead.")] = None,
    port: Annotated[int, typer.Option(help="HTTP port on 127.0.0.1.", min=1, max=65535)] = 8000,
    shadow: Annotated[bool, typer.Option(help="Score the challenger beside it (never changes answers).")] = False,
    allow_unapproved: Annotated[
        bool, typer.Option(help="With no champion yet, serve the challenger (never approved) instead of refusing.")
    ] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the running local server.")] = False,
) -> None:
    """Serve a version over HTTP on this machine (Ray Serve) until stopped; `--stop` stops it.

    Without --version it serves the champion; a policy without one is refused unless --allow-unapproved.
    """
    from harmguard.registry import get_version, read_alias
    from harmguard.serving import local
    from harmguard.serving.config import ServeArgs, user_config_for
    from harmguard.storage import open_store

    store = open_store(_settings().home)
    if stop:
        _stop_own_server(store)
        return
    try:
        record, note = local.resolve_version(store, policy, version)
        champion, _ = read_alias(store, record.policy, "champion")
        if not version and (champion is None or champion.version != record.version) and not allow_unapproved:
            raise _fail(
                f"{record.policy} has no champion: {record.version} is its challenger, never approved for serving. "
                "Promote a version, pass --version, or --allow-unapproved to serve the challenger",
                ExitCode.REJECTED,
            )
        challenger, _ = read_alias(store, record.policy, "challenger")
        other = get_version(store, challenger.version) if shadow and challenger and challenger.version else None
        args = ServeArgs(user_config=user_config_for(record, other), traffic=local.recorded_traffic(store, record))
    except (LookupError, ValueError, local.ServeError) as e:
        raise _fail(escape(str(e)), ExitCode.USAGE) from e
    err.print(escape(note))
    local.run_local_server(store, args, port=port, on_ready=lambda e: err.print(escape(f"serving at {e['url']} · {e}")))


def _stop_own_server(store: Any) -> None:
    """`serve --stop`: signal the announced pid only when it is this home's `harmguard serve` process."""
    from harmguard.serving import local
    from harmguard.serving.config import ENDPOINT_KEY

    try:
        announced = json.loads(store.read_bytes(ENDPOINT_KEY))
    except FileNotFoundError:
        err.print("no server was running")
        return
    except ValueError as e:
        raise _fail(
            f"{escape(store.uri_for(ENDPOINT_KEY))} is not JSON: {escape(str(e))}", ExitCode.INVALID_INPUT
        ) from e
    pid = announced.get("pid") if isinstance(announced, dict) else None
    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
        problem = _not_our_server(pid, announced.get("started_at"))
        if problem:
            raise _fail(
                escape(
                    f"pid {pid} named in {store.uri_for(ENDPOINT_KEY)} is not the harmguard server that wrote it "
                    f"({problem}); nothing was signalled. Remove the file if that server is gone"
                ),
                ExitCode.REJECTED,
            )
    doc = local.stop_local_server(store)
    err.print(
        f"stopped the server of {escape(str(doc['version']))} (pid {doc['pid']})" if doc else "no server was running"
    )


def _process_facts(pid: int) -> tuple[list[str], float] | None:
    """``(argv, start time as a Unix timestamp)`` of a live process; None when it is gone (Linux /proc, else ps)."""
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self/stat").exists():
        try:
            argv = proc.joinpath("cmdline").read_bytes().rstrip(b"\0").decode(errors="replace").split("\0")
            ticks = int(proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
            boot = next(
                int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
            )
        except (OSError, ValueError, IndexError, StopIteration):
            return None
        return argv, boot + ticks / os.sysconf("SC_CLK_TCK")
    import subprocess
    from datetime import datetime

    out = subprocess.run(["ps", "-p", str(pid), "-o", "lstart=,command="], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    line = out.stdout.strip()  # "Mon Jan  6 10:00:00 2025 /path/python -m harmguard.cli serve"
    parts = line.split()
    try:
        started = datetime.strptime(" ".join(parts[:5]), "%a %b %d %H:%M:%S %Y").timestamp()
    except ValueError:
        return None
    return parts[5:], started


def _not_our_server(pid: int, started_at: Any) -> str | None:
    """Why ``pid`` is not the `harmguard serve` process that announced itself at ``started_at`` (None: it is).

    Its command line must be `harmguard serve` (console script or `python -m harmguard.cli`), and it must have
    started before the announcement: a process started later holds a recycled pid.
    """
    from datetime import datetime

    facts = _process_facts(pid)
    if facts is None:
        return "no such process"
    argv, started = facts
    names = [Path(a).name for a in argv]
    entry = next((i for i, n in enumerate(names) if n in ("harmguard", "harmguard.cli")), None)
    if entry is None or "serve" not in argv[entry + 1 :] or "--stop" in argv:
        return "its command line is not `harmguard serve`"
    try:
        announced = datetime.fromisoformat(str(started_at)).timestamp()
    except ValueError:
        return "the endpoint file has no valid started_at"
    if started > announced + 2:  # started_at is truncated to seconds; /proc's clock ticks add a little jitter
        return "it started after the server announced itself: the pid was reused"
    return None


@app.command("score")
def score(
    input_uri: Annotated[str, typer.Option("--input", help="CSV, Parquet or JSONL to score (local or gs://).")],
    output_uri: Annotated[str, typer.Option("--output", help="Output folder (local or gs://): Parquet + _SUCCESS.")],
    policy: Annotated[str | None, typer.Option(help="Policy (default: the only one with a champion).")] = None,
    version: Annotated[str | None, typer.Option(help="Use this version '<policy>/<n>' (default: champion).")] = None,
    id_column: Annotated[str, typer.Option(help="Input column passed through as the join key.")] = "id",
    text_column: Annotated[str, typer.Option(help="Input column holding the texts.")] = "text",
    max_chars: Annotated[int, typer.Option(help="Longer texts are not scored (skipped=too_long).", min=1)] = 10_000,
    batch_size: Annotated[int, typer.Option(help="Texts per model call.", min=1)] = 256,
    rows_per_part: Annotated[int, typer.Option(help="Input rows per output Parquet part.", min=1)] = 100_000,
    actors: Annotated[int, typer.Option(help="Scoring actors (1 CPU each, capped at the cluster's CPUs).", min=1)] = 2,
    overwrite: Annotated[bool, typer.Option(help="Replace an already committed output folder.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Score a file with the serving model and thresholds (Ray Data); commit Parquet parts with a _SUCCESS manifest."""
    from harmguard.batch.output import AlreadyCommitted
    from harmguard.batch.score import BatchConfig, ScoringError, ScoringFailed, score_registered
    from harmguard.storage import StoreError, open_store

    try:
        cfg = BatchConfig(
            input_uri=input_uri, output_uri=output_uri, id_column=id_column, text_column=text_column,
            max_chars=max_chars, batch_size=batch_size, rows_per_part=rows_per_part, actors=actors,
            overwrite=overwrite,
        )  # fmt: skip
        manifest = score_registered(open_store(_settings().home), cfg, policy=policy, version=version, console=err)
    except (ScoringError, AlreadyCommitted) as e:  # no model to score with; an output that --overwrite would replace
        raise _fail(str(e), ExitCode.USAGE) from e
    except (ValueError, FileNotFoundError) as e:  # an input that cannot be read or scored as asked
        raise _fail(str(e), ExitCode.INVALID_INPUT) from e
    except (ScoringFailed, StoreError) as e:
        raise _fail(str(e), ExitCode.UNEXPECTED) from e
    if as_json:
        sys.stdout.write(json.dumps(manifest, default=str) + "\n")


labels_app = typer.Typer(help="Moderation decisions and appeals coming back as labels.", no_args_is_help=True)
app.add_typer(labels_app, name="labels")


def _policy(ref: str):
    from harmguard.policy import PolicyError, load_policy

    try:
        return load_policy(ref)
    except PolicyError as e:
        raise _fail(str(e), _policy_exit(e)) from e


@labels_app.command("import")
def labels_import(
    path: Annotated[str, typer.Argument(help="A JSONL, CSV or Parquet file of moderation events (local or gs://).")],
    policy: Annotated[str, typer.Option(help="Shipped policy name or path: whose labels these are.")],
    skip_invalid: Annotated[
        bool, typer.Option(help="Import the valid events; write the invalid ones to a rejects file beside them.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Import moderation events: validated, idempotent (redeliveries counted), create-only, one watermark step."""
    from harmguard.labels.events import LabelFileError
    from harmguard.labels.store import import_events
    from harmguard.storage import open_store

    p = _policy(policy)
    try:
        result = import_events(open_store(_settings().home), p.name, p.categories, path, by=_user(),
                               skip_invalid=skip_invalid)  # fmt: skip
    except LabelFileError as e:
        raise _fail(escape(str(e)), ExitCode.INVALID_INPUT) from e
    err.print(
        f"imported {result.new} new event(s) of {result.read} read into {p.name} (watermark {result.watermark}); "
        f"{result.duplicates} redelivered, {result.rejected} rejected, {result.unseen_overturns} overturning "
        "events not seen yet" + (f"; rejects: {result.rejects}" if result.rejects else "")
    )
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")


@labels_app.command("status")
def labels_status_(
    policy: Annotated[str, typer.Option(help="Shipped policy name or path.")],
    as_json: JsonFlag = False,
) -> None:
    """Events, items, redeliveries, per source and week; label, appeal and overturn rates; the watermark."""
    from harmguard.labels.status import labels_status
    from harmguard.storage import open_store

    p = _policy(policy)
    doc = labels_status(open_store(_settings().home), p.name, p.categories)
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    table = Table(title=f"labels of {p.name} · watermark {doc['watermark']} · newest decision {doc['newest_decision']}")
    for col in ("events", "items", "redelivered", "rejected", "erased", "appeal rate", "overturn rate"):
        table.add_column(col)
    table.add_row(*(str(doc[k]) for k in ("events", "items", "duplicates", "rejected", "erased_items",
                                           "appeal_rate", "overturn_rate")))  # fmt: skip
    Console().print(table)
    for c, r in doc.get("label_rate", {}).items():
        err.print(f"label rate of {escape(c)}: {r['rate']} over {r['items']} items")
    for week, w in doc.get("per_week", {}).items():
        err.print(f"{week}: {w['events']} events, {w['new_items']} new items")


@app.command("retrain-needed")
def retrain_needed_(
    policy: Annotated[str, typer.Option(help="Shipped policy name or path.")],
    min_new_labels: Annotated[
        int | None,
        typer.Option(help="New imported decisions that make a run due (default: the policy's).", min=1),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Whether a retraining run is due (new labels since the champion's data, or drift), with the labels cut.

    Exits 0 either way: read `due` (the scheduled workflow does); 4 when a drift verdict file is malformed.
    """
    from harmguard.labels.due import VerdictError, retrain_needed
    from harmguard.storage import open_store

    p = _policy(policy)
    try:
        doc = retrain_needed(open_store(_settings().home), p, min_new_labels=min_new_labels)
    except VerdictError as e:  # a drift verdict in the home that is not one: say which file, never guess
        raise _fail(escape(str(e)), ExitCode.INVALID_INPUT) from e
    for reason in doc["reasons"]:
        err.print(("[bold]due:[/] " if doc["due"] else "not due: ") + escape(reason))
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")


@labels_app.command("erase")
def labels_erase(
    policy: Annotated[str, typer.Option(help="Shipped policy name or path.")],
    item_id: Annotated[str, typer.Option(help="The content item taken down.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")],
    as_json: JsonFlag = False,
) -> None:
    """Take an item down: a tombstone, after which no snapshot contains its text."""
    from harmguard.labels.store import erase_item
    from harmguard.storage import open_store

    p = _policy(policy)
    try:
        tomb = erase_item(open_store(_settings().home), p.name, item_id, reason=reason, by=_user())
    except ValueError as e:
        raise _fail(str(e), ExitCode.USAGE) from e
    err.print(f"erased item {escape(item_id)} of {p.name}" + ("" if tomb["new"] else " (it was already erased)"))
    if as_json:
        sys.stdout.write(json.dumps(tomb, default=str) + "\n")


review_app = typer.Typer(help="The review queue: what moderators should look at next.", no_args_is_help=True)
app.add_typer(review_app, name="review-queue")
traffic_app = typer.Typer(help="The traffic record serving and batch scoring keep.", no_args_is_help=True)
app.add_typer(traffic_app, name="traffic")
PolicyOption = Annotated[str | None, typer.Option(help="Policy name (default: the only policy with a champion).")]


def _monitoring(call: Any) -> dict[str, Any]:
    from harmguard.monitoring.commands import CommandError

    try:
        return dict(call())
    except CommandError as e:
        raise _fail(escape(str(e)), e.exit_code) from e


@app.command("monitor")
def monitor_(
    policy: PolicyOption = None,
    since: Annotated[str, typer.Option(help="Window ending now (or at --until): e.g. 7d, 24h.")] = "7d",
    from_: Annotated[str | None, typer.Option("--from", help="Window start (RFC 3339); wins over --since.")] = None,
    until: Annotated[str | None, typer.Option(help="Window end (RFC 3339); default now.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Compare the traffic record with the model's validation scores: PSI, KS, flag rate, length, volume, precision.

    Writes an HTML report and a JSON verdict under HARMGUARD_HOME/monitoring/<policy>/; exits 3 when a bound is
    crossed (or there is no reference to compare with).
    """
    from harmguard.monitoring.commands import monitor_command

    doc = _monitoring(lambda: monitor_command(policy, since=since, from_=from_, until=until, settings=_settings()))
    err.print(
        f"{escape(str(doc.get('status')))} · {doc.get('records', 0)} records · report {escape(str(doc.get('report')))}"
    )
    for reason in doc.get("reasons", []):
        err.print(f"  {escape(str(reason))}")
    if as_json:
        sys.stdout.write(json.dumps(doc, default=str) + "\n")
    raise typer.Exit(int(doc.get("exit_code", 0)))


@review_app.command("export")
def review_queue_export(
    output: Annotated[str, typer.Option(help="File to write (.jsonl or .csv); never overwritten.")],
    policy: PolicyOption = None,
    n: Annotated[int, typer.Option(help="Items to pick.", min=1)] = 500,
    random_share: Annotated[float, typer.Option(help="Share picked at random (quality checks).", min=0, max=1)] = 0.2,
    seed: Annotated[int | None, typer.Option(help="Seed of the random share (default: from the export id).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Pick sampled texts nearest each threshold plus a random share, as label events for reviewers to fill in."""
    from harmguard.monitoring.commands import review_queue_export_command

    doc = _monitoring(
        lambda: review_queue_export_command(
            policy, output=output, n=n, random_share=random_share, seed=seed, settings=_settings()
        )
    )
    err.print(f"{doc.get('picked')} items to {escape(str(doc.get('output')))} ({doc.get('random')} at random)")
    if as_json:
        sys.stdout.write(json.dumps({k: v for k, v in doc.items() if k != "picks"}, default=str) + "\n")


@traffic_app.command("purge")
def traffic_purge(
    policy: PolicyOption = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would be deleted; delete nothing.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete sampled review texts older than the policy's monitoring.retention_days; compact finished days."""
    from harmguard.monitoring.commands import traffic_purge_command

    doc = _monitoring(lambda: traffic_purge_command(policy, dry_run=dry_run, settings=_settings()))
    err.print(f"{len(doc.get('deleted') or [])} review days past retention {'would be ' if dry_run else ''}deleted")
    if as_json:
        sys.stdout.write(json.dumps(doc, default=str) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: the process-wide defaults a library must not set, then the command.

    Under --json every error is a JSON object on stdout too, Click's usage errors (exit 2) and crashes (exit 1)
    included; the commands' own refusals come from ``_fail``.
    """
    # Never phone home: Great Expectations and MLflow read these when first imported (an explicit value wins).
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in (args[: args.index("--")] if "--" in args else args)
    try:
        # prog_name: usage lines and the completion variable (_HARMGUARD_COMPLETE) say `harmguard`, also under -m
        code = typer.main.get_command(app).main(args=args, prog_name=PROG, standalone_mode=False)
    except typer.TyperException as e:  # Click's usage errors (typer vendors Click): exit 2
        if as_json:
            _json_error(e.format_message(), e.exit_code)
        from typer import rich_utils  # typer's error panel, what its standalone mode prints

        rich_utils.rich_format_error(e)  # type: ignore[arg-type]  # Click's exceptions are TyperExceptions
        sys.exit(e.exit_code)
    except typer.Abort:
        if as_json:
            _json_error("aborted", ExitCode.UNEXPECTED)
        err.print("aborted")
        sys.exit(int(ExitCode.UNEXPECTED))
    except Exception as e:
        if as_json:
            _json_error(f"unexpected error: {type(e).__name__}: {e}", ExitCode.UNEXPECTED)
        traceback.print_exc()  # what Python prints for an uncaught exception, with its exit code (1)
        sys.exit(int(ExitCode.UNEXPECTED))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
