"""The review queue: uncertainty and random picks from the sampled texts, and the file going back through import."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from harmguard.data.snapshot import split_frame
from harmguard.labels.events import LabelFileError
from harmguard.labels.store import erase_item, import_events
from harmguard.monitoring.keys import item_id_for_text
from harmguard.monitoring.review_queue import RANDOM, UNCERTAINTY, ReviewQueueError, export_review_queue
from tests.monitoring.helpers import KEY, recorder_for, serve_texts


@pytest.fixture
def sampled(champion):
    """Every text of the test split and of 2,000 unseen train rows served once, all kept for review (rate 1.0)."""
    snap = champion["snapshot"]
    rows = pd.concat([split_frame(snap, "test"), split_frame(snap, "train").iloc[1500:3500]], ignore_index=True)
    texts = rows["text"].tolist()
    recorder = recorder_for(champion["store"], sample_rate=1.0)
    earlier = datetime.now(UTC) - timedelta(hours=2)
    serve_texts(recorder, champion, texts[:300], at=earlier)  # served twice: one item, deduplicated
    scores = serve_texts(recorder, champion, texts)
    recorder.flush()
    ids = [item_id_for_text(KEY, t) for t in texts]
    return {
        "ids": ids,
        "gold": dict(zip(ids, rows["label"] == "spam", strict=True)),
        "score": dict(zip(ids, scores[:, 0], strict=True)),
        "text": dict(zip(ids, texts, strict=True)),
    }


def _fill(path, gold) -> None:
    """What reviewers do: a decision, a time and their id on every row."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r |= {"labels": {"spam": bool(gold[r["item_id"]])}, "decided_at": "2024-05-01T10:00:00Z", "reviewer": "rev-7"}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_picks_are_uncertain_or_random_and_the_filled_file_imports_unchanged(champion, sampled, tmp_path):
    store, policy = champion["store"], champion["policy"]
    threshold = champion["thresholds"]["spam"]
    decided = sorted(sampled["ids"], key=lambda i: abs(sampled["score"][i] - threshold))[:15]  # the most uncertain
    events = [
        {"event_id": f"d-{i}", "item_id": i, "text": sampled["text"][i], "labels": {"spam": True},
         "source": "moderator", "decided_at": "2024-04-01T00:00:00Z", "reviewer": "r0"}
        for i in decided
    ]  # fmt: skip
    (tmp_path / "decided.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    import_events(store, "sms_spam", ["spam"], str(tmp_path / "decided.jsonl"), by="test")
    erased = sorted(sampled["ids"], key=lambda i: abs(sampled["score"][i] - threshold))[15]
    erase_item(store, "sms_spam", erased, reason="takedown request", by="test")

    out = tmp_path / "queue.jsonl"
    doc = export_review_queue(store, policy, n=200, output=str(out), random_share=0.2, seed=1, by="test")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert doc["picked"] == len(rows) == 200 and (doc["random"], doc["uncertainty"]) == (40, 160)
    assert doc["pool"] == len(set(sampled["ids"])) - 16  # deduplicated, without the decided and the erased
    ids = [r["item_id"] for r in rows]
    assert len(set(ids)) == 200 and not set(ids) & (set(decided) | {erased})
    assert all(r["text"] == sampled["text"][r["item_id"]] for r in rows)
    assert all(r["labels"] is None and r["decided_at"] is None and r["reviewer"] is None for r in rows)
    kinds = {k: [r["item_id"] for r in rows if r["source"] == s] for k, s in (("u", UNCERTAINTY), ("r", RANDOM))}
    assert kinds["u"] == doc["picks"]["uncertainty"] and kinds["r"] == doc["picks"]["random"]

    def margin(group: list[str]) -> float:
        return float(np.mean([abs(sampled["score"][i] - threshold) for i in group]))

    def error_rate(group: list[str]) -> float:
        return float(np.mean([(sampled["score"][i] >= threshold) != sampled["gold"][i] for i in group]))

    pool = set(sampled["ids"]) - set(decided) - {erased}
    left = pool - set(ids)
    assert max(margin([i]) for i in kinds["u"]) <= min(margin([i]) for i in left)  # the nearest the threshold
    assert margin(kinds["u"]) < margin(kinds["r"])
    rates = {"uncertainty": error_rate(kinds["u"]), "random": error_rate(kinds["r"])}
    print("error rate of the picks against gold labels:", rates)
    assert rates["uncertainty"] > rates["random"]

    with pytest.raises(LabelFileError, match="missing field labels"):  # unfilled rows are refused, named
        import_events(store, "sms_spam", ["spam"], str(out), by="test")
    _fill(out, sampled["gold"])
    result = import_events(store, "sms_spam", ["spam"], str(out), by="test")
    assert result.new == 200 and result.rejected == 0

    again = export_review_queue(store, policy, n=50, output=str(tmp_path / "next.jsonl"), seed=2, by="test")
    assert not set(again["picks"]["uncertainty"] + again["picks"]["random"]) & set(ids)  # decided now
    with pytest.raises(ReviewQueueError, match="exists"):
        export_review_queue(store, policy, n=5, output=str(out), by="test")
    with pytest.raises(ReviewQueueError, match=".jsonl or .csv"):
        export_review_queue(store, policy, n=5, output=str(tmp_path / "q.xlsx"), by="test")


def test_a_csv_queue_imports_once_filled(champion, sampled, tmp_path):
    out = tmp_path / "queue.csv"
    doc = export_review_queue(champion["store"], champion["policy"], n=30, output=str(out), seed=3, by="test")
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == doc["picked"] == 30 and all(r["labels"] == "" for r in rows)
    assert {r["text"] for r in rows} <= set(sampled["text"].values())  # multi-line and quoted texts survive
    for r in rows:
        r |= {"labels": json.dumps({"spam": bool(sampled["gold"][r["item_id"]])}), "decided_at": "2024-05-01T10:00:00Z",
              "reviewer": "rev-9"}  # fmt: skip
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert import_events(champion["store"], "sms_spam", ["spam"], str(out), by="test").new == 30
