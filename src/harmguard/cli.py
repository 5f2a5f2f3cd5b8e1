"""The `harmguard` command line: thin commands over the library."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="harmguard: retrain, gate, approve and serve Trust & Safety classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
EXIT_REFUSED = 2


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(EXIT_REFUSED)


def _settings():
    from harmguard.settings import load_settings

    try:
        return load_settings()
    except ValueError as e:
        raise _fail(str(e)) from e


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
    family: Annotated[str, typer.Option(help="Model family: baseline (transformer arrives with #3).")] = "baseline",
    sample: Annotated[int, typer.Option(help="Use a stable sample of this many rows (0: all).", min=0)] = 0,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    by: Annotated[str | None, typer.Option(help="Who starts the run (default: the OS user).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line of stdout.")] = False,
) -> None:
    """Run the training pipeline locally (kfp.local): ingest, validate, train, evaluate, gate, register."""
    from harmguard.policy import PolicyError
    from harmguard.runner import run_training

    if columns:
        try:
            json.loads(columns)
        except json.JSONDecodeError as e:
            raise _fail(f"--columns is not valid JSON: {e}") from e
    settings = _settings()
    try:
        summary = run_training(
            settings,
            policy=policy,
            data_uri=data,
            columns=columns,
            family=family,
            sample=sample,
            seed=seed,
            started_by=by or _user(),
        )
    except PolicyError as e:
        raise _fail(str(e)) from e
    _print_run(summary)
    if as_json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
    if not summary["ok"] or not summary["blessed"]:
        raise typer.Exit(EXIT_REFUSED)


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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show champion, challenger, blessed-but-unapproved versions and registry/MLflow mismatches per policy."""
    from harmguard.registry import registry_status
    from harmguard.storage import open_store

    settings = _settings()
    doc = registry_status(open_store(settings.home), settings)
    if policy:
        if policy not in doc["policies"]:
            raise _fail(f"no registered versions for policy {policy!r}; known: {sorted(doc['policies'])}")
        doc = {"policies": {policy: doc["policies"][policy]}}
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    if not doc["policies"]:
        err.print(f"No policies registered under {settings.home}")
        return
    table = Table(title=f"harmguard registry · {settings.home}")
    for col in ("policy", "champion", "challenger", "pending approval", "mismatches"):
        table.add_column(col)
    for name, p in sorted(doc["policies"].items()):
        fmt = lambda a: f"{a['version']} ({a['model_digest'][:10]})" if a else "–"  # noqa: E731
        table.add_row(
            name,
            fmt(p["champion"]),
            fmt(p["challenger"]),
            ", ".join(p["pending"]) or "–",
            "\n".join(p["mismatches"]) or "–",
        )
    Console().print(table)


@app.command("compile")
def compile_(
    output_dir: Annotated[
        Path | None, typer.Option(help="Where to write the YAML (default: the pipelines folder).")
    ] = None,
) -> None:
    """Compile the KFP pipelines to YAML (the files the KFP UI uploads)."""
    from harmguard.compile import compile_pipelines

    for path in compile_pipelines(output_dir):
        err.print(f"wrote {path}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
