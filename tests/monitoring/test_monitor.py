"""Drift monitoring on real model scores: the same distribution passes, a shifted one crosses named bounds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from harmguard.data.snapshot import split_frame
from harmguard.exit_codes import ExitCode
from harmguard.labels.store import import_events
from harmguard.models.base import category_scores
from harmguard.monitoring.drift import ks_statistic, psi, rate_ratio, wilson
from harmguard.monitoring.monitor import latest_verdict, run_monitor
from harmguard.monitoring.reference import read_reference, reference_key
from harmguard.policy import load_policy
from tests.monitoring.helpers import recorder_for, serve_texts

DAY = timedelta(days=1)


def _day(n: int) -> datetime:
    """Midnight UTC ``n`` days ago."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - n * DAY


def test_effect_sizes_on_known_samples():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=20_000), rng.normal(size=20_000)
    assert psi(a, b) < 0.01 and ks_statistic(a, b) < 0.03
    shifted = rng.normal(loc=1.0, size=20_000)
    assert psi(a, shifted) > 0.5 and 0.35 < ks_statistic(a, shifted) < 0.42  # KS of N(0,1) vs N(1,1) is 0.383
    ratio, low, high = rate_ratio(100, 1000, 100, 1000, 0.95)
    assert ratio == pytest.approx(1.0) and low < 1 < high
    ratio, low, high = rate_ratio(300, 1000, 100, 1000, 0.95)
    assert ratio == pytest.approx(3.0, rel=0.01) and low > 2
    assert rate_ratio(0, 1000, 0, 50, 0.95)[0] < 0.1  # zero counts stay finite
    lo, hi = wilson(45, 50, 0.95)
    assert lo < 0.9 < hi and 0.75 < lo and hi < 0.97


def test_the_stored_reference_is_the_models_validation_scores(champion):
    ref = read_reference(champion["store"], "sms_spam", champion["digest"])
    val = split_frame(champion["snapshot"], "validation")
    expected = category_scores(champion["model"], champion["model"].predict_proba(val["text"].tolist()))
    assert ref is not None and len(ref) == len(val) and ref.thresholds == champion["thresholds"]
    assert np.allclose(ref.scores, expected, atol=1e-6)
    assert ref.truth[:, 0].tolist() == (val["label"] == "spam").astype(int).tolist()
    assert ref.lengths.tolist() == [len(t) for t in val["text"]]
    assert "text" not in champion["store"].read_bytes(reference_key("sms_spam", champion["digest"])).decode()[:2000]


def test_no_drift_on_the_same_distribution_and_named_drift_on_shifted_ones(champion, davidson_texts):
    store, policy = champion["store"], champion["policy"]
    snap = champion["snapshot"]
    recorder = recorder_for(store)
    # day 3: the test split, the distribution of the validation split the reference holds
    serve_texts(recorder, champion, split_frame(snap, "test")["text"].tolist(), at=_day(3) + timedelta(hours=1))
    # day 2: a spam wave, unseen train rows half spam (the validation split holds 13%)
    unseen = split_frame(snap, "train").iloc[1500:]
    spam = unseen[unseen["label"] == "spam"]["text"].tolist()
    wave = spam + unseen[unseen["label"] == "none"]["text"].tolist()[: len(spam)]
    serve_texts(recorder, champion, wave, at=_day(2) + timedelta(hours=1))
    # day 1: other content altogether, tweets scored by the spam model
    serve_texts(recorder, champion, davidson_texts, at=_day(1) + timedelta(hours=1))
    recorder.flush()

    same = run_monitor(store, policy, _day(3), _day(2))
    assert same["status"] == "ok" and same["exit_code"] == ExitCode.OK and same["crossed"] == []
    assert {c["check"] for c in same["checks"]} == {"psi", "ks", "flag_rate_ratio", "length_ks"}
    assert same["records"] == len(split_frame(snap, "test")) and same["versions"] == {"sms_spam/1": same["records"]}

    shifted = run_monitor(store, policy, _day(2), _day(1))
    assert shifted["status"] == "drift" and shifted["exit_code"] == ExitCode.REJECTED
    assert {"flag_rate_ratio:spam", "psi:spam", "ks:spam"} <= set(shifted["crossed"]), shifted["crossed"]
    ratio = shifted["drift"]["categories"]["spam"]["flag_rate"]
    assert ratio["low"] > policy.monitoring.flag_rate_ratio  # the whole interval lies past the bound

    tweets = run_monitor(store, policy, _day(1), _day(0))
    assert tweets["status"] == "drift" and "length_ks" in tweets["crossed"], tweets["crossed"]
    print("checks that fire on the spam wave:", shifted["crossed"], "on tweets:", tweets["crossed"])

    assert latest_verdict(store, "sms_spam")["window"] == tweets["window"]
    stored = json.loads(store.read_bytes(tweets["verdict"].removeprefix(str(store.root) + "/")))
    assert stored["crossed"] == tweets["crossed"]
    html = (store.root / tweets["report"].removeprefix(str(store.root) + "/")).read_text()
    assert "Content-Security-Policy" in html and "<script" not in html and "length_ks" in html
    assert html.count("data:image/png;base64,") == 2  # the spam histogram overlay and the daily plot

    whole = run_monitor(store, policy, _day(3), _day(0), write=False)
    assert [d["records"] for d in whole["daily"]] == [same["records"], shifted["records"], tweets["records"]]


def test_too_few_records_give_no_verdict_and_no_traffic_says_so(champion):
    store, policy = champion["store"], champion["policy"]
    recorder = recorder_for(store)
    serve_texts(recorder, champion, split_frame(champion["snapshot"], "test")["text"].tolist()[:100], at=_day(1))
    recorder.flush()
    few = run_monitor(store, policy, _day(1), _day(0), write=False)
    assert few["status"] == "insufficient_data" and few["exit_code"] == 0 and few["records"] == 100
    empty = run_monitor(store, policy, _day(9), _day(8), write=False)
    assert empty["status"] == "no_traffic" and empty["exit_code"] == 0


def test_a_version_without_a_reference_gets_one_built_and_an_unknown_version_fails_closed(champion):
    store, policy = champion["store"], champion["policy"]
    store.path(reference_key("sms_spam", champion["digest"])).unlink()  # registered before references existed
    recorder = recorder_for(store)
    texts = split_frame(champion["snapshot"], "test")["text"].tolist()
    serve_texts(recorder, champion, texts, at=_day(1))
    recorder.record(policy="sms_spam", version="sms_spam/99", thresholds_version="x" * 64, texts=["a"] * 600,
                    scores=np.zeros((600, 1)), decisions=np.zeros((600, 1), bool), categories=["spam"],
                    at=_day(2))  # fmt: skip
    recorder.flush()
    built = run_monitor(store, policy, _day(1), _day(0), write=False)
    assert built["status"] == "ok" and read_reference(store, "sms_spam", champion["digest"]) is not None
    unknown = run_monitor(store, policy, _day(2), _day(1), write=False)
    assert unknown["status"] == "no_reference" and unknown["exit_code"] == ExitCode.REJECTED
    assert "sms_spam/99" in unknown["reasons"][0]


def _events(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_precision_of_flagged_decisions_from_imported_labels(champion, tmp_path):
    store = champion["store"]
    policy = load_policy("sms_spam").model_copy(
        update={"monitoring": load_policy("sms_spam").monitoring.model_copy(update={"min_labelled": 20})}
    )
    test = split_frame(champion["snapshot"], "test")
    recorder = recorder_for(store)
    ids = [f"sms-{r}" for r in test["row_id"]]
    scores = serve_texts(recorder, champion, test["text"].tolist(), ids=ids, batch=len(test), at=_day(1))
    recorder.flush()
    flagged = scores[:, 0] >= champion["thresholds"]["spam"]
    gold = [
        {"event_id": f"e-{i}", "item_id": i, "text": t, "labels": {"spam": lab == "spam"}, "source": "moderator",
         "decided_at": "2024-01-01T00:00:00Z", "reviewer": "r1", "overturns": None}
        for i, t, lab, f in zip(ids, test["text"], test["label"], flagged, strict=True) if f
    ]  # fmt: skip
    import_events(store, "sms_spam", ["spam"], _events(tmp_path / "gold.jsonl", gold), by="test")
    honest = run_monitor(store, policy, _day(1), _day(0), write=False)
    precision = honest["drift"]["categories"]["spam"]["precision"]
    assert precision["judged"] and precision["labelled_flagged"] == int(flagged.sum())
    assert "precision_drop:spam" not in honest["crossed"]

    # reviewers overturn every flag: the precision falls far below the validation's
    overturned = [e | {"event_id": f"o-{e['item_id']}", "labels": {"spam": False}, "decided_at": "2024-01-02T00:00:00Z",
                       "overturns": e["event_id"]} for e in gold]  # fmt: skip
    import_events(store, "sms_spam", ["spam"], _events(tmp_path / "appeals.jsonl", overturned), by="test")
    wrong = run_monitor(store, policy, _day(1), _day(0), write=False)
    assert (
        "precision_drop:spam" in wrong["crossed"] and wrong["drift"]["categories"]["spam"]["precision"]["traffic"] == 0
    )
