"""``harmguard retrain-needed``: is there something new to learn from since the champion's data?

A run is due when the events imported after the champion's labels watermark reach a number (the policy's
``data.labels.min_new_labels``, or the caller's), when the policy has no champion yet, or when drift monitoring's
latest verdict on the champion found drift. The answer carries the cut a run should take (the current watermark and
the newest decision), so the scheduled workflow trains on exactly what was counted.

The verdict is read here from its file, not through ``harmguard.monitoring`` (which sits above ``labels`` in the
layers): ``monitoring/<policy>/verdicts/<stamp>/verdict.json``, the format ``harmguard.monitoring.monitor`` documents
(``kind`` ``harmguard.drift_verdict/1``; ``generated_at``, ``version``, ``status``, ``crossed``). The newest verdict
that counts is the newest one written after the champion's promotion (its alias' ``updated_at``) about the champion's
own version: a verdict on the version it replaced, or one written before this champion was promoted (a rollback to
a version judged long ago), says nothing about what serves now. A ``drift`` verdict makes a run due, its crossed
checks named in the reason; ``ok`` and the statuses that judge nothing (``insufficient_data``, ``no_traffic``,
``no_reference``) do not. A verdict file that cannot be read as one raises ``VerdictError`` naming the file.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from harmguard.labels.store import load_events, manifests, read_watermark
from harmguard.policy import Policy
from harmguard.registry import AliasPointer, get_version, read_alias
from harmguard.storage import ArtifactStore

VERDICT_KIND = "harmguard.drift_verdict/1"  # harmguard.monitoring.monitor writes verdicts with these names
VERDICT_NAME = "verdict.json"
STATUSES = ("ok", "drift", "no_reference", "insufficient_data", "no_traffic")


class VerdictError(ValueError):
    """A drift verdict file is not what ``harmguard monitor`` writes; the message names the file and the problem."""


def verdicts_prefix(policy: str) -> str:
    """Where ``harmguard monitor`` writes a policy's verdicts (one folder per run, named by its UTC time)."""
    return f"monitoring/{policy}/verdicts"


def _when(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{what} is {type(value).__name__}, not an ISO 8601 time")
    t = datetime.fromisoformat(value)
    if t.tzinfo is None:
        raise ValueError(f"{what} {value!r} has no time zone")
    return t


def read_verdict(store: ArtifactStore, key: str) -> dict[str, Any]:
    """One verdict file, checked for the fields retrain-needed reads.

    Raises:
        VerdictError: Not JSON, not a verdict (``kind``), or a field of the wrong type.
    """
    where = store.uri_for(key)
    try:
        doc = json.loads(store.read_bytes(key))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VerdictError(
            f"drift verdict {where} is not JSON ({e.__class__.__name__}): remove or rewrite it"
        ) from None
    if not isinstance(doc, dict) or doc.get("kind") != VERDICT_KIND:
        raise VerdictError(f"{where} is not a drift verdict (its kind is not {VERDICT_KIND})")
    problems = []
    if doc.get("status") not in STATUSES:
        problems.append(f"status must be one of {', '.join(STATUSES)}")
    if not isinstance(doc.get("version"), str | None):
        problems.append("version must be a string or null")
    crossed = doc.get("crossed")
    if not isinstance(crossed, list) or not all(isinstance(c, str) for c in crossed):
        problems.append("crossed must be a list of check names")
    try:
        _when(doc.get("generated_at"), "generated_at")
    except ValueError as e:
        problems.append(str(e))
    if problems:
        raise VerdictError(f"drift verdict {where} is malformed: {'; '.join(problems)}")
    return doc


def champion_verdict(store: ArtifactStore, policy: str, champion: AliasPointer) -> dict[str, Any] | None:
    """The newest verdict about the champion's version written since its promotion (with its ``uri``), or None.

    Raises:
        VerdictError: A verdict read on the way is malformed.
    """
    promoted = _when(champion.updated_at, "the champion's updated_at")
    keys = sorted((k for k in store.list(verdicts_prefix(policy)) if k.endswith(f"/{VERDICT_NAME}")), reverse=True)
    for key in keys:  # newest first: each folder is named by the UTC time it was written
        doc = read_verdict(store, key)
        if _when(doc["generated_at"], "generated_at") < promoted:
            return None  # this one and every older one predate the champion
        if doc["version"] == champion.version:
            return doc | {"uri": store.uri_for(key)}
    return None


def retrain_needed(store: ArtifactStore, policy: Policy, *, min_new_labels: int | None = None) -> dict[str, Any]:
    """Whether a retraining run is due, and why.

    Returns:
        ``{"policy", "due", "reasons", "new_labels", "min_new_labels", "champion", "champion_watermark",
        "labels_watermark", "labels_until", "drift"}``: ``labels_watermark`` and ``labels_until`` are the cut a run
        should take (until: the newest decision imported up to that watermark, None when there are no events);
        ``drift`` is the verdict that counted (``uri``, ``status``, ``crossed``, ``window``) or None.

    Raises:
        VerdictError: The newest verdict files cannot be read as verdicts.
    """
    spec = policy.data.labels
    needed = min_new_labels if min_new_labels is not None else (spec.min_new_labels if spec else 0)
    current, _ = read_watermark(store, policy.name)
    pointer, _ = read_alias(store, policy.name, "champion")
    champion = pointer.version if pointer is not None else None  # None too once the alias was cleared
    champion_watermark = 0
    verdict = None
    if champion is not None and pointer is not None:
        champion_watermark = int(get_version(store, champion).lineage.get("labels_watermark") or 0)
        verdict = champion_verdict(store, policy.name, pointer)
    new = sum(int(m["new"]) for m in manifests(store, policy.name) if int(m["watermark"]) > champion_watermark)
    reasons = []
    if champion is None:
        reasons.append(f"{policy.name} has no champion yet: a first run is due")
    if spec is None:
        reasons.append(f"{policy.name} takes no imported labels: only a missing champion makes a run due")
    elif new >= needed:
        reasons.append(
            f"{new} new decision(s) imported since the champion's data (watermark {champion_watermark} -> "
            f"{current}), at least {needed} make a run due"
        )
    else:
        reasons.append(
            f"only {new} new decision(s) imported since the champion's data (watermark {champion_watermark} -> "
            f"{current}); {needed} make a run due"
        )
    drifted = verdict is not None and verdict["status"] == "drift"
    if verdict is not None:
        window = verdict.get("window") or {}
        said = f"monitoring's latest verdict on {champion} ({window.get('from')} to {window.get('until')})"
        if drifted:
            reasons.append(f"{said} found drift: {', '.join(verdict['crossed']) or 'no check named'}")
        else:
            reasons.append(f"{said} is {verdict['status']}: not a reason to retrain")
    due = champion is None or (spec is not None and new >= needed) or drifted
    until = None
    if spec is not None and current:
        events = load_events(store, policy.name, watermark=current)
        until = str(events["decided_at"].max()) if len(events) else None
    return {
        "policy": policy.name,
        "due": bool(due),
        "reasons": reasons,
        "new_labels": new,
        "min_new_labels": needed,
        "champion": champion,
        "champion_watermark": champion_watermark,
        "labels_watermark": current,
        "labels_until": until,
        "drift": None
        if verdict is None
        else {k: verdict.get(k) for k in ("uri", "status", "crossed", "window", "generated_at", "version")},
    }
