"""Moderation events (CONTRACTS.md): read a file of them, check every event, normalize the valid ones.

An event is one decision on one content item: ``event_id``, ``item_id``, ``text``, ``labels`` (category -> bool,
possibly only some of a policy's categories), ``source``, ``decided_at`` (RFC 3339), ``reviewer`` and
``overturns`` (an earlier event id or null). JSONL is parsed line by line with the standard library, so a label
written as ``"true"`` or a time without a zone is reported, not coerced; CSV carries ``labels`` as a JSON string;
Parquet carries the same columns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from harmguard.digests import canonical_json, sha256_bytes
from harmguard.storage.readers import DataReadError, infer_format, read_bytes, read_table

REQUIRED = ("event_id", "item_id", "text", "labels", "source", "decided_at", "reviewer")
COLUMNS = (*REQUIRED, "overturns")
MAX_EXAMPLES = 5  # rows shown per problem
TEXT_CHARS = 80  # texts in problem reports are cut to this many characters


class LabelFileError(ValueError):
    """A label file that cannot be imported; the message names every problem (exit code 4)."""


@dataclass
class Problems:
    """What is wrong with a file's events: problem -> rows (1-based), with a few examples each."""

    rows: dict[str, list[int]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, problem: str, row: int, example: str) -> None:
        """Record one row with one problem."""
        self.rows.setdefault(problem, []).append(row)
        if len(self.examples.setdefault(problem, [])) < MAX_EXAMPLES:
            self.examples[problem].append(f"row {row}: {example}")

    def __bool__(self) -> bool:
        return bool(self.rows)

    @property
    def bad_rows(self) -> set[int]:
        """Every row with at least one problem."""
        return {r for rows in self.rows.values() for r in rows}

    def report(self) -> str:
        """Every problem with its count and up to ``MAX_EXAMPLES`` rows."""
        lines = []
        for problem, rows in self.rows.items():
            lines.append(f"{problem}: {len(rows)} event(s)")
            lines += [f"    {x}" for x in self.examples[problem]]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Counts and examples, for ``--json``."""
        return {p: {"events": len(r), "examples": self.examples[p]} for p, r in self.rows.items()}


def _cut(text: Any) -> str:
    s = str(text)
    return json.dumps(s[:TEXT_CHARS] + ("…" if len(s) > TEXT_CHARS else ""), ensure_ascii=False)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _records(uri: str) -> Iterator[tuple[int, Any]]:
    """(row number, raw record) for every line/row of the file; a line that is not JSON yields its error text."""
    fmt = infer_format(uri)
    if fmt == "jsonl":
        for n, line in enumerate(read_bytes(uri).decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                yield n, f"not JSON: {e.msg}"
        return
    if fmt not in ("csv", "parquet"):
        raise LabelFileError(f"{uri}: label files are JSONL, CSV or Parquet, not {fmt}")
    frame = read_table(uri, fmt, string_columns=COLUMNS)
    for n, rec in enumerate(frame.to_dict(orient="records"), start=1):
        labels = rec.get("labels")
        if isinstance(labels, str):  # CSV: a JSON object in a string
            try:
                rec["labels"] = json.loads(labels)
            except json.JSONDecodeError:
                rec["labels"] = labels  # reported as "labels is not an object"
        elif labels is not None and not isinstance(labels, dict) and hasattr(labels, "items"):
            rec["labels"] = dict(labels.items())
        if fmt == "csv" and rec.get("overturns") == "":
            rec["overturns"] = None
        yield n, rec


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time with its zone, in UTC; None when ``value`` is not one."""
    if not isinstance(value, str) or "T" not in value.upper():
        return None
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo is not None else None


def _check(rec: dict[str, Any], categories: list[str], row: int, problems: Problems) -> dict[str, Any] | None:
    """The normalized event, or None after recording each of its problems."""
    ok = True
    for name in REQUIRED:
        if name not in rec or _missing(rec[name]):
            problems.add(f"missing field {name}", row, f"event {rec.get('event_id')!r}")
            ok = False
    if not ok:
        return None
    for name in ("event_id", "item_id", "source", "reviewer"):
        if not isinstance(rec[name], str) or not rec[name].strip():
            problems.add(f"{name} is not a non-empty string", row, repr(rec[name])[:TEXT_CHARS])
            ok = False
    if not isinstance(rec["text"], str) or not rec["text"].strip():
        problems.add("text is empty", row, f"event {rec['event_id']!r}")
        ok = False
    labels = rec["labels"]
    if not isinstance(labels, dict) or not labels:
        problems.add("labels is not a non-empty object", row, f"event {rec['event_id']!r}: {_cut(labels)}")
        ok = False
    else:
        unknown = sorted(set(labels) - set(categories))
        if unknown:
            problems.add(f"categories the policy does not know ({categories})", row, f"{unknown}")
            ok = False
        not_bool = sorted(k for k, v in labels.items() if not isinstance(v, bool))
        if not_bool:
            problems.add("labels that are not true/false", row, f"{ {k: labels[k] for k in not_bool} }")
            ok = False
    decided = parse_time(rec["decided_at"])
    if decided is None:
        problems.add("decided_at is not an RFC 3339 time with a zone", row, _cut(rec["decided_at"]))
        ok = False
    overturns = rec.get("overturns")
    if not _missing(overturns) and (not isinstance(overturns, str) or not overturns.strip()):
        problems.add("overturns is neither null nor an event id", row, _cut(overturns))
        ok = False
    if not ok:
        return None
    assert decided is not None
    event = {
        "event_id": rec["event_id"],
        "item_id": rec["item_id"],
        "text": rec["text"],
        "labels": {k: bool(labels[k]) for k in sorted(labels)},
        "source": rec["source"],
        "decided_at": decided.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reviewer": rec["reviewer"],
        "overturns": None if _missing(overturns) else overturns,
    }
    event["digest"] = sha256_bytes(canonical_json(event))  # identity of the content: same id + digest = redelivery
    return event


def read_events(uri: str, categories: list[str]) -> tuple[pd.DataFrame, Problems, pd.DataFrame]:
    """Read and check a label file.

    Args:
        uri: A local path or ``gs://`` URI (``.jsonl``, ``.csv``, ``.parquet``; gzip is detected).
        categories: The policy's categories; labels of any other category are a problem.

    Returns:
        The valid events (normalized, one ``digest`` per event, ``row`` = line or row number), the problems, and the
        invalid records (``row``, ``problem``, raw fields) for a rejects file.

    Raises:
        LabelFileError: When the file cannot be read at all.
    """
    problems = Problems()
    valid: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    try:
        records = list(_records(uri))
    except DataReadError as e:
        raise LabelFileError(str(e)) from None
    for row, rec in records:
        if not isinstance(rec, dict):
            problems.add("not a JSON object", row, rec if isinstance(rec, str) else _cut(rec))
            event = None
        else:
            event = _check(rec, categories, row, problems)
        if event is None:
            why = sorted(p for p, rows in problems.rows.items() if row in rows)
            invalid.append({"row": row, "problems": why, "record": json.dumps(rec, default=str, ensure_ascii=False)})
        else:
            valid.append(event | {"row": row})
    columns = [*COLUMNS, "digest", "row"]
    return pd.DataFrame(valid, columns=columns), problems, pd.DataFrame(invalid, columns=["row", "problems", "record"])
