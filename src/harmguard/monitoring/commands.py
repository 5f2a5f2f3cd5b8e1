"""The monitoring commands as plain functions: ``monitor``, ``review-queue export``, ``traffic purge``.

Each resolves settings and the policy, calls the library and returns a JSON-ready dict; a problem the user must fix
raises ``CommandError`` with its exit code (CONTRACTS.md). The CLI wraps them in a few lines each::

    try:
        doc = monitor_command(policy, since=since, from_=from_, until=until)
    except CommandError as e:
        raise _fail(escape(str(e)), e.exit_code) from e
    print(json.dumps(doc)); raise typer.Exit(doc["exit_code"])

Without a policy, a command acts on the only policy that has a champion, or says which to choose.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import yaml

from harmguard.exit_codes import ExitCode
from harmguard.monitoring.monitor import run_monitor
from harmguard.monitoring.purge import purge_review
from harmguard.monitoring.review_queue import ReviewQueueError, export_review_queue
from harmguard.policy import Policy, PolicyError, UnknownPolicyError, load_policy, shipped_policies
from harmguard.registry import get_version, list_policies, read_alias, read_policy_file
from harmguard.registry.principal import principal_for
from harmguard.settings import Settings, load_settings
from harmguard.storage import ArtifactStore, open_store

_DURATION = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


class CommandError(Exception):
    """A command cannot do what was asked; ``exit_code`` says which kind of failure (CONTRACTS.md)."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        """Keep the message and the exit code."""
        super().__init__(message)
        self.exit_code = exit_code


def parse_duration(text: str) -> timedelta:
    """``7d``, ``24h`` or ``90m`` as a timedelta."""
    m = _DURATION.match(text)
    if not m or int(m.group(1)) == 0:
        raise CommandError(f"--since {text!r}: give a positive duration such as 7d, 24h or 90m", ExitCode.USAGE)
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def parse_time(text: str, option: str) -> datetime:
    """An RFC 3339 time (a zone is required) or a date (midnight UTC)."""
    try:
        if len(text.strip()) == 10:
            return datetime.combine(date.fromisoformat(text.strip()), datetime.min.time(), UTC)
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        raise CommandError(
            f"{option} {text!r}: give an RFC 3339 time with a zone, or a date YYYY-MM-DD", ExitCode.USAGE
        )
    return t.astimezone(UTC)


def parse_window(
    since: str | None, from_: str | None, until: str | None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The window ``[from, until)``: ``--from``/``--until`` when given, else the ``--since`` before until (or now)."""
    end = parse_time(until, "--until") if until else (now or datetime.now(UTC)).astimezone(UTC)
    start = parse_time(from_, "--from") if from_ else end - parse_duration(since or "7d")
    if start >= end:
        raise CommandError(
            f"the window is empty: --from {start.isoformat()} is not before {end.isoformat()}", ExitCode.USAGE
        )
    return start, end


def _policy_of_registry(store: ArtifactStore, name: str, version: str) -> Policy:
    """A policy by name: shipped, else the file registered with its champion."""
    if name in shipped_policies():
        return load_policy(name)
    digest = get_version(store, version).lineage.get("policy_digest")
    if not digest:
        raise CommandError(
            f"policy {name} is not shipped and its champion records no policy file: give --policy", ExitCode.USAGE
        )
    return Policy.model_validate(yaml.safe_load(read_policy_file(store, digest)))


def resolve_policy(store: ArtifactStore, ref: str | None) -> Policy:
    """The policy named by ``ref`` (a shipped name or a path), or the only policy with a champion."""
    if ref:
        try:
            return load_policy(ref)
        except UnknownPolicyError as e:
            raise CommandError(str(e), ExitCode.USAGE) from None
        except PolicyError as e:
            raise CommandError(str(e), ExitCode.INVALID_INPUT) from None
    champions = {}
    for name in list_policies(store):
        pointer, _ = read_alias(store, name, "champion")
        if pointer is not None and pointer.version:
            champions[name] = pointer.version
    if len(champions) != 1:
        which = ", ".join(sorted(champions)) or "none has a champion"
        raise CommandError(f"give --policy: {len(champions)} policies have a champion ({which})", ExitCode.USAGE)
    name, version = next(iter(champions.items()))
    return _policy_of_registry(store, name, version)


def _context(settings: Settings | None) -> tuple[Settings, ArtifactStore]:
    try:
        settings = settings or load_settings()
    except ValueError as e:
        raise CommandError(str(e), ExitCode.USAGE) from None
    return settings, open_store(settings.home)


def monitor_command(
    policy: str | None,
    *,
    since: str | None = "7d",
    from_: str | None = None,
    until: str | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """``harmguard monitor``: check a window of traffic against the reference; writes the verdict and report.

    Returns:
        The verdict: ``status`` (ok, drift, no_reference, insufficient_data, no_traffic), ``crossed``, ``checks``,
        ``reasons``, ``records``, ``versions``, ``daily``, ``report``, ``verdict`` and ``exit_code`` (3 when a bound
        is crossed or there is no reference to check against, else 0).
    """
    _, store = _context(settings)
    start, end = parse_window(since, from_, until, now=now)
    return run_monitor(store, resolve_policy(store, policy), start, end)


def review_queue_export_command(
    policy: str | None,
    *,
    output: str,
    n: int = 500,
    random_share: float = 0.2,
    seed: int | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """``harmguard review-queue export``: write ``n`` picks as label events without decisions.

    Returns:
        ``{"policy", "export_id", "output", "manifest", "pool", "picked", "random", "uncertainty", "picks"}``.
    """
    settings, store = _context(settings)
    p = resolve_policy(store, policy)
    by = str(principal_for(store.uri))
    try:
        return export_review_queue(store, p, n=n, output=output, random_share=random_share, seed=seed, by=by)
    except ReviewQueueError as e:
        raise CommandError(str(e), ExitCode.USAGE) from None


def traffic_purge_command(
    policy: str | None, *, dry_run: bool = False, settings: Settings | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """``harmguard traffic purge``: delete sampled review texts past ``monitoring.retention_days``.

    Returns:
        ``{"policy", "retention_days", "oldest_kept", "deleted", "dry_run"}``.
    """
    _, store = _context(settings)
    return purge_review(store, resolve_policy(store, policy), now=now, dry_run=dry_run)
