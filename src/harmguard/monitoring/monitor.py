"""``harmguard monitor``: read a window of the traffic record, check it against the reference, write the verdict.

The version checked is the one that scored most records in the window (every version seen is listed with its
count). Its thresholds are the registered ones whose thresholds version the records carry.

Statuses: ``ok``; ``drift`` (a bound crossed: exit 3); ``no_reference`` (the version's reference cannot be found or
built: the checks cannot run, which fails closed with exit 3); ``insufficient_data`` (fewer than
``monitoring.min_records`` records of the version: no verdict on drift, exit 0); ``no_traffic`` (exit 0).

Where the verdict goes, and its format (``retrain-needed`` reads these files itself, ``harmguard.labels.due``, since
``labels`` sits below ``monitoring``; the path and ``kind`` are defined there, once):

- ``monitoring/<policy>/verdicts/<stamp>/verdict.json``, create-only, its HTML ``report.html`` beside it. ``<stamp>``
  is the UTC time of writing, ``YYYYMMDDTHHMMSSffffffZ-<8 hex>``, so the newest verdict sorts last.
- Canonical JSON (sorted keys, UTF-8). The fields ``retrain-needed`` relies on: ``kind`` (``harmguard.drift_verdict/1``;
  a change of meaning gets a new kind), ``policy``, ``generated_at`` (RFC 3339, UTC), ``version`` (the version
  judged, ``<policy>/<n>``, or null when there was no traffic), ``status`` (above), ``crossed`` (names of the crossed
  checks: ``<check>:<category>`` or ``length_ks``), ``reasons`` and ``window`` (``from``, ``until``). Also:
  ``records``, ``versions``, ``sources``, ``daily``, ``reference``, ``checks``, ``drift``, ``bounds``,
  ``categories``, ``exit_code``, ``report``, ``verdict``.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from harmguard.digests import canonical_json
from harmguard.exit_codes import ExitCode
from harmguard.labels.due import VERDICT_KIND, VERDICT_NAME, verdicts_prefix
from harmguard.labels.resolve import resolve_latest
from harmguard.labels.store import load_events
from harmguard.monitoring.drift import daily, measure_drift, value_counts
from harmguard.monitoring.parts import categories_of, read_traffic
from harmguard.monitoring.reference import reference_for_version, reference_summary
from harmguard.monitoring.report import render_monitor_html
from harmguard.policy import Policy
from harmguard.registry import VersionNotFound, get_version, list_versions
from harmguard.storage import ArtifactStore


def latest_verdict(store: ArtifactStore, policy: str) -> dict[str, Any] | None:
    """The newest verdict of a policy (by the time it was written), or None."""
    keys = [k for k in store.list(verdicts_prefix(policy)) if k.endswith(f"/{VERDICT_NAME}")]
    return json.loads(store.read_bytes(max(keys))) if keys else None


def resolve_thresholds(store: ArtifactStore, policy: str, version: str, thresholds_version: str) -> dict[str, float]:
    """The thresholds a version's records were decided at: its own, or another registered set with that version."""
    record = get_version(store, version)
    if record.thresholds_version == thresholds_version:
        return dict(record.thresholds)
    for other in list_versions(store, policy):
        if other.thresholds_version == thresholds_version:
            return dict(other.thresholds)
    return dict(record.thresholds)  # unknown set: the registered one (the verdict names both versions)


def labels_by_item(store: ArtifactStore, policy: Policy, item_ids: pa.ChunkedArray) -> dict[str, dict[str, bool]]:
    """The latest imported decision of every item the window's traffic saw."""
    events = load_events(store, policy.name)
    if events.empty:
        return {}
    seen = pc.unique(item_ids.combine_chunks()).cast(pa.string())
    events = events[pc.is_in(pa.array(events["item_id"].astype(str), pa.string()), seen).to_numpy(zero_copy_only=False)]
    latest = resolve_latest(events, policy.categories)
    return dict(zip(latest["item_id"], latest["labels"], strict=True))


def _base(policy: Policy, start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "kind": VERDICT_KIND,
        "policy": policy.name,
        "window": {"from": start.astimezone(UTC).isoformat(), "until": end.astimezone(UTC).isoformat()},
        "generated_at": datetime.now(UTC).isoformat(),
        "categories": list(policy.categories),
        "bounds": policy.monitoring.model_dump(),
        "records": 0,
        "versions": {},
        "sources": {},
        "daily": [],
        "version": None,
        "reference": None,
        "drift": None,
        "checks": [],
        "crossed": [],
        "reasons": [],
    }


def measure_window(store: ArtifactStore, policy: Policy, start: datetime, end: datetime) -> dict[str, Any]:
    """The verdict of one window (not written): status, checks, per-day volume and flag rate, versions seen."""
    verdict = _base(policy, start, end)
    table = read_traffic(store, policy.name, start, end)
    if table is None:
        verdict |= {"status": "no_traffic", "reasons": [f"no traffic recorded for {policy.name} in the window"]}
        return verdict
    cats = [c for c in policy.categories if c in categories_of(table.schema)]
    versions = value_counts(table, "version")
    version = max(versions, key=lambda v: (versions[v], v))
    verdict |= {
        "records": table.num_rows,
        "versions": versions,
        "sources": value_counts(table, "source"),
        "daily": daily(table, cats),
        "version": version,
    }
    mine = table.filter(pc.equal(table.column("version").cast(pa.string()), version))
    tv_counts = value_counts(mine, "thresholds_version")
    tv = max(tv_counts, key=lambda v: (tv_counts[v], v))
    try:
        record = get_version(store, version)
        ref = reference_for_version(store, policy, record)
        thresholds = resolve_thresholds(store, policy.name, version, tv)
    except (VersionNotFound, FileNotFoundError, ValueError) as e:
        verdict |= {"status": "no_reference", "reasons": [f"{version}: no reference to check against ({e})"]}
        return verdict
    verdict["reference"] = reference_summary(ref) | {"thresholds_version_traffic": tv}
    spec = policy.monitoring
    if mine.num_rows < spec.min_records:
        verdict |= {
            "status": "insufficient_data",
            "reasons": [
                f"{mine.num_rows} records of {version} in the window; {spec.min_records} needed to judge drift"
            ],
        }
        return verdict
    drift = measure_drift(
        mine, ref, spec, thresholds=thresholds, labels=labels_by_item(store, policy, mine.column("item_id"))
    )
    crossed = [c for c in drift["checks"] if c["crossed"]]
    verdict |= {
        "drift": drift,
        "checks": drift["checks"],
        "crossed": drift["crossed"],
        "status": "drift" if crossed else "ok",
        "reasons": [f"{c['check']}{':' + c['category'] if c['category'] else ''}: {c['detail']}" for c in crossed]
        or [f"{len(drift['checks'])} checks within their bounds over {mine.num_rows} records of {version}"],
    }
    return verdict


def exit_code_of(verdict: dict[str, Any]) -> ExitCode:
    """3 when a bound is crossed or the checks cannot run against a reference; 0 otherwise."""
    return ExitCode.REJECTED if verdict["status"] in ("drift", "no_reference") else ExitCode.OK


def run_monitor(
    store: ArtifactStore, policy: Policy, start: datetime, end: datetime, *, write: bool = True
) -> dict[str, Any]:
    """Measure a window and (``write``) store its verdict and HTML report, create-only; returns the verdict."""
    verdict = measure_window(store, policy, start, end)
    verdict["exit_code"] = int(exit_code_of(verdict))
    if write:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]
        prefix = f"{verdicts_prefix(policy.name)}/{stamp}"
        verdict["report"] = store.uri_for(f"{prefix}/report.html")
        verdict["verdict"] = store.uri_for(f"{prefix}/{VERDICT_NAME}")
        store.create_only(f"{prefix}/report.html", render_monitor_html(verdict).encode())
        store.create_only(f"{prefix}/{VERDICT_NAME}", canonical_json(verdict))
    return verdict
