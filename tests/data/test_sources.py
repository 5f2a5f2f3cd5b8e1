"""Policies with several sources: datasets plus imported decisions, the labels cut, human decisions winning, `recent`.

Small synthetic sources (a CSV per dataset) and events imported through the library into a local home.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harmguard.data.snapshot import RECENT, assemble_snapshot, compute_data_version, encode_labels
from harmguard.data.sources import LabelsCutError, load_sources
from harmguard.data.validation import validate_snapshot
from harmguard.labels.store import erase_item, import_events
from harmguard.policy import load_policy

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def _texts(prefix: str, n: int) -> list[str]:
    return [f"{prefix} {WORDS[i % len(WORDS)]} {WORDS[(i // len(WORDS)) % len(WORDS)]} number {i}" for i in range(n)]


def _policy(tmp_path: Path, *, mode: str = "exclusive", recent_days: int = 14, **labels) -> Path:
    pd.DataFrame({"body": _texts("forum", 400), "tag": ["bad" if i % 5 == 0 else "ok" for i in range(400)]}).to_csv(
        tmp_path / "a.csv", index=False
    )
    pd.DataFrame({"text": _texts("chat", 200), "y": ["1" if i % 4 == 0 else "0" for i in range(200)]}).to_csv(
        tmp_path / "b.csv", index=False
    )
    categories = ["hate"] if mode == "exclusive" else ["hate", "spam"]
    if mode == "exclusive":
        sources = [
            {"name": "forum", "uri": str(tmp_path / "a.csv"), "columns": {"text": "body", "label": "tag"},
             "label_map": {"bad": "hate", "ok": "none"}},
            {"name": "chat", "uri": str(tmp_path / "b.csv"), "columns": {"text": "text", "label": "y"},
             "label_map": {"1": "hate", "0": "none"}},
        ]  # fmt: skip
    else:
        frame = pd.read_csv(tmp_path / "a.csv").assign(h=lambda d: (d["tag"] == "bad").astype(int), s=0)
        frame.to_csv(tmp_path / "m.csv", index=False)
        sources = [{"name": "forum", "uri": str(tmp_path / "m.csv"), "columns": {"text": "body", "label": None,
                    "labels": {"hate": "h", "spam": "s"}}}]  # fmt: skip
    doc = {
        "name": "mixed",
        "label_mode": mode,
        "categories": categories,
        "data": {"sources": sources, "labels": {"recent_days": recent_days, **labels}},
        "validation": {"min_rows": 10, "min_split_rows": 5},
    }
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _events(path: Path, rows: list[tuple]) -> str:
    """rows: (event_id, item_id, text, labels, day of October 2026, overturns)."""
    lines = [
        {"event_id": e, "item_id": i, "text": t, "labels": lab, "source": "appeal" if o else "moderator",
         "decided_at": f"2026-10-{d:02d}T12:00:00Z", "reviewer": "mod-1", "overturns": o}
        for e, i, t, lab, d, o in rows
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return str(path)


def _weekly_events(n_per_day: int, days: range, rate: float, prefix: str = "item") -> list[tuple]:
    rows = []
    for d in days:
        for k in range(n_per_day):
            item = f"{prefix}-{d}-{k}"
            rows.append((f"e-{item}", item, f"decided text {item}", {"hate": k < rate * n_per_day}, d, None))
    return rows


def _snapshot(policy_path: Path, settings, store, **cut):
    policy = load_policy(str(policy_path))
    parts, labels_cut = load_sources(policy, settings, store, **cut)
    frame, lineage = assemble_snapshot(parts, policy, cut=labels_cut)
    return policy, frame, lineage, labels_cut


def test_human_decisions_win_are_counted_and_the_newest_form_recent(tmp_path, settings, store):
    path = _policy(tmp_path)
    forum = _texts("forum", 400)
    rows = [
        ("e1", "x1", forum[1], {"hate": True}, 1, None),  # the dataset says ok: a person says hate, and wins
        ("e2", "x2", "  " + forum[2].upper() + " ", {"hate": False}, 2, None),  # same text once normalized; agrees
        ("e3", "x3", "a new post", {"hate": True}, 3, None),
        ("e4", "x3", "a new post", {"hate": False}, 25, "e3"),  # an appeal overturns e3: the latest counts
        ("e5", "x5", "recent one", {"hate": True}, 28, None),
    ]
    import_events(store, "mixed", ["hate"], _events(tmp_path / "w1.jsonl", rows), by="mod")
    policy, frame, lineage, cut = _snapshot(path, settings, store)
    assert cut.watermark == 1 and cut.until == "2026-10-28T12:00:00.000000Z"
    human = frame[frame["origin"] == "labels"].set_index("row_id")
    assert human.loc["labels:x1", "label"] == "hate" and human.loc["labels:x3", "label"] == "none"
    assert forum[1] not in set(frame.loc[frame["origin"] == "forum", "text"])  # the dataset row is gone
    assert lineage["overridden"] == 2 and lineage["conflicts"] == 1  # x1 disagreed with the forum; x2 agreed
    assert frame.loc[frame["row_id"] == "labels:x1", "conflict"].item() == 1
    # recent: decided in the 14 days before the cutoff (Oct 14 - 28), whatever their text hash says
    assert set(frame.loc[frame["split"] == RECENT, "row_id"]) == {"labels:x3", "labels:x5"}
    assert {s["name"]: (s["rows"], s["kept"]) for s in lineage["sources"]} == {
        "forum": (400, 398), "chat": (200, 200), "labels": (4, 4)
    }  # fmt: skip
    assert all(len(s["digest"]) == 64 for s in lineage["sources"])
    assert frame["row_id"].is_unique and set(frame["origin"]) == {"forum", "chat", "labels"}


def test_the_cut_pins_the_data_version_and_late_events_do_not_move_it(tmp_path, settings, store):
    path = _policy(tmp_path)
    import_events(store, "mixed", ["hate"], _events(tmp_path / "w1.jsonl", _weekly_events(3, range(1, 8), 0.3)), by="m")
    import_events(
        store, "mixed", ["hate"], _events(tmp_path / "w2.jsonl", _weekly_events(3, range(8, 15), 0.3)), by="m"
    )
    _, first, _, cut = _snapshot(path, settings, store, labels_watermark=1)
    assert cut.watermark == 1 and cut.until == "2026-10-07T12:00:00.000000Z"
    # a late event decided inside the first week arrives with a third import; the pinned cut does not see it
    late = [("late", "late-item", "late text", {"hate": True}, 3, None)]
    import_events(store, "mixed", ["hate"], _events(tmp_path / "w3.jsonl", late), by="m")
    _, again, _, _ = _snapshot(path, settings, store, labels_watermark=1, labels_until=cut.until)
    assert compute_data_version(again) == compute_data_version(first)
    _, now, _, now_cut = _snapshot(path, settings, store)
    assert now_cut.watermark == 3 and "late text" in set(now["text"])
    _, until, _, _ = _snapshot(path, settings, store, labels_until="2026-10-07T23:00:00+00:00")
    assert "late text" in set(until["text"]) and until["decided_at"].max() <= "2026-10-07T23"
    with pytest.raises(LabelsCutError, match="past"):
        _snapshot(path, settings, store, labels_watermark=9)
    with pytest.raises(LabelsCutError, match="RFC 3339"):
        _snapshot(path, settings, store, labels_until="last tuesday")


def test_an_erased_item_is_in_no_later_snapshot(tmp_path, settings, store):
    path = _policy(tmp_path)
    rows = [("e1", "doxx", "a post with a home address", {"hate": True}, 1, None), *_weekly_events(2, range(1, 5), 0.5)]
    import_events(store, "mixed", ["hate"], _events(tmp_path / "w1.jsonl", rows), by="m")
    _, before, _, _ = _snapshot(path, settings, store)
    assert "a post with a home address" in set(before["text"])
    erase_item(store, "mixed", "doxx", reason="takedown request", by="legal")
    _, after, _, _ = _snapshot(path, settings, store, labels_watermark=1)  # even pinned to the old watermark
    assert "a post with a home address" not in set(after["text"])


def test_exclusive_policy_counts_decisions_it_cannot_use(tmp_path, settings, store):
    text = (
        "name: ex\nlabel_mode: exclusive\ncategories: [hate, spam]\ndata:\n  sources: [{uri: %s, columns: {text: body,\
 label: tag}, label_map: {bad: hate, ok: none}}]\n  labels: {}\n"
    )
    _policy(tmp_path)
    path = tmp_path / "ex.yaml"
    path.write_text(text % (tmp_path / "a.csv"))
    rows = [
        ("e1", "i1", "only hate labelled", {"hate": True}, 1, None),  # spam unknown: not guessed
        ("e2", "i2", "both marked", {"hate": True, "spam": True}, 1, None),  # two categories in an exclusive policy
        ("e3", "i3", "clean", {"hate": False, "spam": False}, 1, None),
    ]
    import_events(store, "ex", ["hate", "spam"], _events(tmp_path / "w.jsonl", rows), by="m")
    _, frame, _, cut = _snapshot(path, settings, store)
    assert (cut.stats["incomplete"], cut.stats["ambiguous"], cut.stats["rows"]) == (1, 1, 1)
    assert frame.loc[frame["origin"] == "labels", "label"].tolist() == ["none"]


def test_multilabel_masks_what_a_decision_does_not_label(tmp_path, settings, store):
    path = _policy(tmp_path, mode="multilabel")
    rows = [
        ("e1", "i1", "hate only", {"hate": True}, 1, None),
        ("e2", "i2", "both", {"hate": False, "spam": True}, 1, None),
    ]
    import_events(store, "mixed", ["hate", "spam"], _events(tmp_path / "w.jsonl", rows), by="m")
    policy, frame, lineage, _ = _snapshot(path, settings, store)
    partial = frame[frame["row_id"] == "labels:i1"]
    assert partial["split"].item() == "train" and lineage["masked_rows"] == 1  # never in a frozen set
    y = encode_labels(frame, policy)
    assert y[partial.index[0]].tolist() == [1, -1]  # spam unknown: masked, not guessed 0
    assert y[frame.index[frame["row_id"] == "labels:i2"][0]].tolist() == [0, 1]
    assert (y[frame["origin"] == "forum"] >= 0).all()


def test_data_replaces_the_datasets_and_the_labels_still_join(tmp_path, settings, store):
    path = _policy(tmp_path)
    import_events(store, "mixed", ["hate"], _events(tmp_path / "w.jsonl", _weekly_events(2, range(1, 3), 0.5)), by="m")
    policy = load_policy(str(path))
    other = tmp_path / "other.csv"
    pd.DataFrame({"body": _texts("other", 50), "tag": ["ok"] * 45 + ["bad"] * 5}).to_csv(other, index=False)
    parts, cut = load_sources(policy, settings, store, data_uri=str(other))
    frame, lineage = assemble_snapshot(parts, policy, cut=cut)
    assert set(frame["origin"]) == {"data", "labels"} and (frame["origin"] == "data").sum() == 50
    assert [s["name"] for s in lineage["sources"]] == ["data", "labels"]


def test_validation_bounds_conflicts_and_the_new_labels_rate(tmp_path, settings, store):
    # four weeks of decisions at a 20% hate rate, then a week where the feed marks everything hate: a broken feed
    path = _policy(tmp_path, recent_days=0, label_rate_weeks=3, label_rate_tolerance=0.15)
    good = _weekly_events(5, range(1, 22), 0.2)
    broken = [(f"b{d}-{k}", f"b{d}-{k}", f"broken {d} {k}", {"hate": True}, d, None) for d in range(22, 29)
              for k in range(5)]  # fmt: skip
    import_events(store, "mixed", ["hate"], _events(tmp_path / "w.jsonl", good + broken), by="m")
    policy, frame, _, _ = _snapshot(path, settings, store)
    checks = {c.name: c for c in validate_snapshot(frame, policy).checks}
    assert not checks["label_rate_hate"].success and checks["label_rate_hate"].observed == pytest.approx(1.0)
    assert "the 3 weeks before: 20.0%" in checks["label_rate_hate"].intent
    assert checks["conflict_rate"].success and checks["split_values"].success
    # sources disagreeing on many texts
    forum = _texts("forum", 400)
    flips = [(f"f{i}", f"f{i}", forum[i], {"hate": i % 5 != 0}, 1, None) for i in range(60)]
    import_events(store, "mixed", ["hate"], _events(tmp_path / "f.jsonl", flips), by="m")
    policy, frame, lineage, _ = _snapshot(path, settings, store)
    checks = {c.name: c for c in validate_snapshot(frame, policy).checks}
    assert lineage["conflicts"] == 60 and not checks["conflict_rate"].success
    assert checks["conflict_rate"].examples and checks["conflict_rate"].examples[0]["row_id"].startswith("labels:f")


def test_run_refuses_a_cut_it_cannot_take_before_any_step(hg_env):
    from harmguard.exit_codes import ExitCode
    from tests.conftest import run_cli

    past = run_cli(["run", "--policy", "hate_speech", "--labels-watermark", "5"], hg_env)
    assert past.returncode == ExitCode.INVALID_INPUT and "past hate_speech's current watermark 0" in past.stderr
    bad = run_cli(["run", "--policy", "hate_speech", "--labels-until", "yesterday"], hg_env)
    assert bad.returncode == ExitCode.INVALID_INPUT and "RFC 3339" in bad.stderr
    none = run_cli(["run", "--policy", "sms_spam", "--labels-until", "2026-10-01T00:00:00Z"], hg_env)
    assert none.returncode == ExitCode.INVALID_INPUT and "takes no imported labels" in none.stderr
    assert not (Path(hg_env["HARMGUARD_HOME"]) / "runs").exists()  # refused before any step


def test_several_datasets_without_labels_join_and_dedupe_across_sources(tmp_path, settings, store):
    path = _policy(tmp_path)
    doc = yaml.safe_load(path.read_text())
    del doc["data"]["labels"]
    doc["data"]["dedupe"] = True
    doc["data"]["sources"][1]["uri"] = str(tmp_path / "a.csv")  # the same rows again, read as a second source
    doc["data"]["sources"][1]["columns"] = {"text": "body", "label": "tag"}
    doc["data"]["sources"][1]["label_map"] = {"bad": "none", "ok": "none"}  # ...which disagrees on the bad ones
    path.write_text(yaml.safe_dump(doc))
    policy, frame, lineage, cut = _snapshot(path, settings, store)
    assert cut is None and len(frame) == 400 and set(frame["origin"]) == {"forum"}  # one copy of each text
    assert lineage["conflicts"] == 80 and lineage["overridden"] == 0  # every 5th row: "bad" vs "none"
    assert RECENT not in set(frame["split"]) and "weight" not in frame.columns
