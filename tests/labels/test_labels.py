"""Moderation events in: validation, idempotent import, watermark, resolution, status and takedowns.

The real stream (``stormfront_moderation``, weeks 1-2) is imported through the library and the CLI; malformed files
of each kind are refused whole, with the problem named and nothing written.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest

from harmguard.exit_codes import ExitCode
from harmguard.labels.events import LabelFileError, read_events
from harmguard.labels.resolve import resolve_latest
from harmguard.labels.status import labels_status
from harmguard.labels.store import claim_watermark, erase_item, import_events, load_events, read_watermark
from harmguard.registry import read_audit
from harmguard.storage import LocalStore
from tests.conftest import run_cli

CATS = ["hate", "offensive"]  # davidson2017's categories: the stream labels only `hate`


def _event(event_id: str, item_id: str, hate: bool, when: str, **extra) -> dict:
    return {"event_id": event_id, "item_id": item_id, "text": f"text of {item_id}", "labels": {"hate": hate},
            "source": "moderator", "decided_at": when, "reviewer": "mod-1", "overturns": None} | extra  # fmt: skip


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _nothing_written(store: LocalStore) -> bool:
    return not (store.root / "labels").exists()


def test_two_weeks_of_the_real_stream_import_idempotently(store, mirror):
    weeks = mirror / "stormfront_moderation"
    one = import_events(store, "davidson2017", CATS, str(weeks / "week-01.jsonl"), by="alice")
    assert (one.watermark, one.new, one.duplicates, one.rejected) == (1, 1345, 0, 0)
    two = import_events(store, "davidson2017", CATS, str(weeks / "week-02.jsonl"), by="alice")
    assert two.watermark == 2 and two.duplicates == 25  # at-least-once delivery: 25 repeats of week 1
    assert two.new == 1426 - 25
    again = import_events(store, "davidson2017", CATS, str(weeks / "week-02.jsonl"), by="alice")
    assert (again.new, again.duplicates, again.watermark) == (0, 1426, None)  # nothing new: no watermark step
    assert read_watermark(store, "davidson2017")[0] == 2
    events = load_events(store, "davidson2017")
    assert len(events) == 1345 + 1401 and events["event_id"].is_unique
    assert len(load_events(store, "davidson2017", watermark=1)) == 1345  # a snapshot pins its watermark
    parts = sorted(p.relative_to(store.root).as_posix() for p in (store.root / "labels").rglob("*.parquet"))
    assert parts and all(p.startswith("labels/davidson2017/events/dt=2026-") for p in parts)
    audit = [e for e in read_audit(store, "davidson2017") if e["event"] == "labels_import"]
    assert len(audit) == 3 and audit[0]["who"] == "alice" and len(audit[0]["file_digest"]) == 64
    assert audit[1]["counts"] == {"new": 1401, "duplicates": 25, "rejected": 0}


BAD = {
    "missing field": (_event("e1", "i1", True, "2026-10-01T00:00:00Z") | {"reviewer": None}, "missing field reviewer"),
    "unknown category": (
        _event("e1", "i1", True, "2026-10-01T00:00:00Z", labels={"spam": True}),
        "policy does not know",
    ),
    "label not boolean": (_event("e1", "i1", True, "2026-10-01T00:00:00Z", labels={"hate": "true"}), "not true/false"),
    "time without zone": (_event("e1", "i1", True, "2026-10-01T00:00:00"), "RFC 3339"),
    "not a time": (_event("e1", "i1", True, "yesterday"), "RFC 3339"),
    "empty text": (_event("e1", "i1", True, "2026-10-01T00:00:00Z", text="  "), "text is empty"),
    "empty labels": (_event("e1", "i1", True, "2026-10-01T00:00:00Z", labels={}), "labels is not a non-empty object"),
    "not json": ("{event_id: e1", "not a JSON object"),
    "bad overturns": (_event("e1", "i1", True, "2026-10-01T00:00:00Z", overturns=7), "overturns is neither"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_file_with_an_invalid_event_is_refused_whole(kind, store, tmp_path):
    bad, says = BAD[kind]
    good = [_event(f"g{i}", f"gi{i}", i % 2 == 0, "2026-10-02T10:00:00+02:00") for i in range(6)]
    path = _write(tmp_path / "events.jsonl", [*good[:3], bad, *good[3:]])
    with pytest.raises(LabelFileError) as e:
        import_events(store, "davidson2017", CATS, str(path), by="alice")
    assert says in str(e.value) and "row 4" in str(e.value) and "nothing imported" in str(e.value)
    assert _nothing_written(store) and read_watermark(store, "davidson2017")[0] == 0


def test_a_conflicting_redelivery_refuses_the_file(store, tmp_path):
    first = _write(tmp_path / "a.jsonl", [_event("e1", "i1", True, "2026-10-01T00:00:00Z")])
    import_events(store, "davidson2017", CATS, str(first), by="alice")
    changed = _write(tmp_path / "b.jsonl", [_event("e2", "i2", False, "2026-10-02T00:00:00Z"),
                                            _event("e1", "i1", False, "2026-10-01T00:00:00Z")])  # fmt: skip
    with pytest.raises(LabelFileError, match="row 2: event 'e1' was imported before with other content"):
        import_events(store, "davidson2017", CATS, str(changed), by="alice")
    assert read_watermark(store, "davidson2017")[0] == 1 and len(load_events(store, "davidson2017")) == 1


def test_skip_invalid_writes_the_valid_events_and_a_rejects_file(store, tmp_path):
    rows = [_event("e1", "i1", True, "2026-10-01T00:00:00Z"), BAD["time without zone"][0] | {"event_id": "e9"},
            _event("e2", "i2", False, "2026-10-03T00:00:00Z", overturns="e0")]  # fmt: skip
    result = import_events(store, "davidson2017", CATS, str(_write(tmp_path / "e.jsonl", rows)), by="a",
                           skip_invalid=True)  # fmt: skip
    assert (result.new, result.rejected, result.unseen_overturns) == (2, 1, 1)  # `e0` not seen yet: accepted
    rejects = [json.loads(x) for x in store.read_bytes(result.rejects).decode().splitlines()]
    assert [r["row"] for r in rejects] == [2] and "RFC 3339" in rejects[0]["problems"][0]


def test_csv_and_parquet_carry_the_same_events(store, tmp_path):
    rows = [_event("e1", "i1", True, "2026-10-01T00:00:00Z"), _event("e2", "i2", False, "2026-10-01T05:00:00Z")]
    frame = pd.DataFrame(rows)
    csv = frame.assign(labels=frame["labels"].map(json.dumps))
    csv.to_csv(tmp_path / "e.csv", index=False)
    from_csv, problems, _ = read_events(str(tmp_path / "e.csv"), CATS)
    assert not problems and from_csv["labels"].tolist() == [{"hate": True}, {"hate": False}]
    csv.to_parquet(tmp_path / "e.parquet")
    from_parquet, problems, _ = read_events(str(tmp_path / "e.parquet"), CATS)
    assert not problems and from_parquet["digest"].tolist() == from_csv["digest"].tolist()


def test_the_latest_decision_counts_and_appeals_overturn(store, tmp_path):
    rows = [
        _event("a1", "x", True, "2026-10-01T00:00:00Z"),
        _event("a2", "x", False, "2026-10-05T00:00:00Z", source="appeal", reviewer="senior", overturns="a1"),
        _event("b2", "y", True, "2026-10-02T00:00:00Z"),
        _event("b1", "y", False, "2026-10-02T00:00:00Z"),  # same time: the event id decides (b2 after b1)
        _event("c1", "z", False, "2026-10-03T00:00:00Z", labels={"hate": False, "offensive": True}),
    ]
    import_events(store, "davidson2017", CATS, str(_write(tmp_path / "e.jsonl", rows)), by="alice")
    latest = resolve_latest(load_events(store, "davidson2017"), CATS).set_index("item_id")
    assert latest.loc["x", "event_id"] == "a2" and latest.loc["x", "labels"] == {"hate": False}
    assert latest.loc["x", "overturned"] and latest.loc["x", "decisions"] == 2
    assert latest.loc["y", "event_id"] == "b2" and not latest.loc["y", "overturned"]
    assert latest["covers_all"].to_dict() == {"x": False, "y": False, "z": True}
    status = labels_status(store, "davidson2017", CATS)
    assert (status["events"], status["items"], status["partial_items"]) == (5, 3, 2)
    assert status["appeal_rate"] == pytest.approx(1 / 3) and status["overturn_rate"] == pytest.approx(1 / 5)
    assert status["reviewers"]["mod-1"] == {"decisions": 4, "overturned": 1, "overturn_rate": 0.25}
    assert status["label_rate"]["hate"] == {"items": 3, "rate": pytest.approx(1 / 3)}  # y only
    assert status["newest_decision"].startswith("2026-10-05")


def test_a_takedown_removes_the_text_from_every_later_read(store, tmp_path):
    rows = [_event("a1", "x", True, "2026-10-01T00:00:00Z"), _event("b1", "y", False, "2026-10-02T00:00:00Z")]
    import_events(store, "davidson2017", CATS, str(_write(tmp_path / "e.jsonl", rows)), by="alice")
    erase_item(store, "davidson2017", "x", reason="user request", by="dpo")
    events = load_events(store, "davidson2017")
    assert events["item_id"].tolist() == ["y"] and "text of x" not in events["text"].tolist()
    assert labels_status(store, "davidson2017", CATS)["erased_items"] == 1
    assert any(e["event"] == "labels_erase" and e["item_id"] == "x" for e in read_audit(store, "davidson2017"))
    with pytest.raises(ValueError, match="reason"):
        erase_item(store, "davidson2017", "y", reason=" ", by="dpo")


def test_a_changed_part_is_refused(store, tmp_path):
    result = import_events(store, "davidson2017", CATS,
                           str(_write(tmp_path / "e.jsonl", [_event("a1", "x", True, "2026-10-01T00:00:00Z")])),
                           by="alice")  # fmt: skip
    part = store.path(result.parts[0])
    part.chmod(0o644)
    part.write_bytes(part.read_bytes() + b"\0")
    with pytest.raises(LabelFileError, match="does not match its manifest"):
        load_events(store, "davidson2017")


def test_concurrent_imports_claim_distinct_watermarks(store):
    claimed: list[int] = []
    threads = [threading.Thread(target=lambda: claimed.append(claim_watermark(store, "p"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claimed) == list(range(1, 9))


def test_cli_imports_reports_and_refuses_with_exit_4(hg_env, mirror, tmp_path):
    week = str(mirror / "stormfront_moderation" / "week-01.jsonl")
    proc = run_cli(["labels", "import", week, "--policy", "davidson2017", "--json"], hg_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["new"] == 1345
    status = run_cli(["labels", "status", "--policy", "davidson2017", "--json"], hg_env)
    doc = json.loads(status.stdout.splitlines()[-1])
    assert doc["watermark"] == 1 and doc["events"] == 1345 and doc["per_source"] == {"appeal": 12, "moderator": 1333}
    missing = run_cli(["labels", "import", str(tmp_path / "nowhere.jsonl"), "--policy", "davidson2017"], hg_env)
    assert missing.returncode == ExitCode.INVALID_INPUT and "file not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = _write(tmp_path / "bad.jsonl", [BAD["unknown category"][0]])
    refused = run_cli(["labels", "import", str(bad), "--policy", "davidson2017", "--json"], hg_env)
    assert refused.returncode == ExitCode.INVALID_INPUT
    assert "policy does not know" in json.loads(refused.stdout.splitlines()[-1])["error"]
