"""The gate's change checks at the library level: crafted scores for challenger and champion on the same rows."""

import numpy as np
import pandas as pd
import pytest

from harmguard.evaluation.evaluate import measure
from harmguard.evaluation.frozen import TEST, FrozenSet, PairedDecisions
from harmguard.evaluation.gate import run_gate
from harmguard.policy import Policy, PolicyError, Threshold, load_policy

SHORT, LONG = "length:0-50", "length:50-100000"


def _policy(thresholds: list[dict]) -> Policy:
    return Policy.model_validate(
        {
            "name": "p",
            "label_mode": "exclusive",
            "categories": ["spam"],
            "data": {"dataset": "d"},
            "slices": [{"name": "length", "by": "length", "buckets": [0, 50, 100000]}],
            "evaluation_sets": [
                {"name": "golden", "dataset": "g", "category": "spam", "text_column": "t", "label_column": "l",
                 "positive": "yes"}
            ],
            "gate": {"thresholds": thresholds},
        }
    )  # fmt: skip


CHANGES = [
    {"metric": "f1", "category": "spam", "min": 0.5, "change": {"tolerance": 0.02}},
    {"metric": "f1", "category": "spam", "slice": SHORT, "change": {"tolerance": 0.02}},
    {"metric": "f1", "category": "spam", "slice": LONG, "change": {"tolerance": 0.02}},
    {"metric": "recall", "kind": "operating", "category": "spam", "slice": "golden", "change": {"tolerance": 0.02}},
    {"metric": "fpr", "kind": "operating", "category": "spam", "change": {"tolerance": 0.01}},
]


def _frozen() -> tuple[FrozenSet, FrozenSet]:
    # test: 400 short rows (100 spam) then 2000 long rows (500 spam); golden: 300 rows (150 positive)
    texts = ["x" * 10] * 400 + ["y" * 80] * 2000
    y = np.array(([0] * 100 + [1] * 300) + ([0] * 500 + [1] * 1500))  # class 0 = spam, 1 = none
    lengths = np.array([len(t) for t in texts])
    slices = {SHORT: lengths < 50, LONG: lengths >= 50}
    test = FrozenSet(TEST, "t" * 64, texts, y, slices=slices)
    golden = FrozenSet("golden", "g" * 64, ["z"] * 300, np.arange(300) < 150, category="spam", dataset="g")
    return test, golden


def _proba(y_spam: np.ndarray, miss: np.ndarray | None = None) -> np.ndarray:
    """Confident, correct scores; rows in `miss` get the wrong side (spam score 0.1 for a spam row, 0.9 for ham)."""
    s = np.where(y_spam, 0.9, 0.1)
    if miss is not None:
        s[miss] = 1 - s[miss]
    return np.stack([s, 1 - s], axis=1)


def _evaluate(policy: Policy, test_miss=None, golden_miss=None, champion: bool = True):
    """Evaluation document and paired decisions as evaluate_against_champion makes them, from crafted scores."""
    test, golden = _frozen()
    thresholds = {"spam": 0.5}
    y_test = test.y == 0
    docs, decisions = {}, {}
    for who, (tm, gm) in {"challenger": (test_miss, golden_miss), "champion": (None, None)}.items():
        t_doc, t_dec = measure(test, _proba(y_test, tm), policy, thresholds)
        g_doc, g_dec = measure(golden, _proba(golden.y, gm), policy, thresholds)
        docs[who] = {"reference": {TEST: t_doc["reference"]}, "operating": {TEST: t_doc["operating"]},
                     "slices": t_doc["slices"], "evaluation_sets": {"golden": g_doc}}  # fmt: skip
        decisions[who] = {TEST: t_dec, "golden": g_dec}
    evaluation = docs["challenger"] | {
        "thresholds": thresholds,
        "thresholds_version": "v",
        "sets": {TEST: test.describe(), "golden": golden.describe()},
        "champion": (docs["champion"] | {"version": "p/1", "model_digest": "c" * 64, "thresholds": thresholds,
                                         "thresholds_version": "v", "family": "baseline"}) if champion else None,
    }  # fmt: skip
    paired = PairedDecisions(decisions["challenger"], decisions["champion"] if champion else None, test.slices)
    return evaluation, paired


def _gate(policy, evaluation, paired):
    return run_gate(evaluation, policy, model_digest="a" * 64, data_version="d", run_id="r", paired=paired)


def _failed(blessing) -> set[tuple[str, str, str]]:
    return {(c["type"], c["metric"], c["slice"]) for c in blessing["checks"] if not c["passed"]}


SHORT_SPAM = np.arange(0, 10)  # 10 of the 100 spam rows of the short slice
LONG_SPAM = np.arange(400, 900)


@pytest.mark.parametrize(
    ("case", "test_miss", "golden_miss", "failed"),
    [
        ("twin", None, None, set()),
        ("slightly worse on the short slice only", SHORT_SPAM, None, {("change", "f1", SHORT)}),
        ("much worse everywhere", np.r_[SHORT_SPAM, LONG_SPAM[:150]], None,
         {("change", "f1", "overall"), ("change", "f1", SHORT), ("change", "f1", LONG)}),
        ("worse on the golden set", None, np.arange(20), {("change", "recall", "golden")}),
        ("more false positives", np.arange(900, 940), None,
         {("change", "fpr", "overall"), ("change", "f1", LONG), ("change", "f1", "overall")}),
    ],
)  # fmt: skip
def test_change_checks(case, test_miss, golden_miss, failed):
    policy = _policy(CHANGES)
    blessing = _gate(policy, *_evaluate(policy, test_miss, golden_miss))
    assert _failed(blessing) == failed, case
    assert blessing["blessed"] is (not failed)
    assert blessing["champion"]["version"] == "p/1" and blessing["champion"]["model_digest"] == "c" * 64
    assert set(blessing["evaluation_sets"]) == {TEST, "golden"}
    for c in blessing["checks"]:
        if c["type"] == "change":
            assert {"value", "champion_value", "delta", "interval", "threshold", "mcnemar", "passed"} <= set(c)
            assert c["interval"][0] <= c["delta"] <= c["interval"][1]
    for c in blessing["checks"]:
        if not c["passed"]:
            assert any(c["key"] in r for r in blessing["reasons"])


def test_slice_regression_reports_interval_and_mcnemar():
    policy = _policy(CHANGES)
    blessing = _gate(policy, *_evaluate(policy, SHORT_SPAM))
    (short,) = [c for c in blessing["checks"] if c["slice"] == SHORT]
    assert short["rows"] == 400 and short["value"] == pytest.approx(2 * 90 / (2 * 90 + 10))
    assert short["champion_value"] == 1.0 and short["interval"][0] < -0.02
    assert (short["mcnemar"]["b"], short["mcnemar"]["c"]) == (0, 10)
    assert short["mcnemar"]["p_value"] == pytest.approx(2 * 0.5**10)


def test_first_run_skips_change_checks_and_says_so():
    policy = _policy(CHANGES)
    evaluation, paired = _evaluate(policy, SHORT_SPAM, champion=False)
    evaluation["champion_note"] = "no champion: change thresholds are skipped (first run)"
    blessing = _gate(policy, evaluation, paired)
    assert blessing["blessed"] and blessing["champion"] is None
    changes = [c for c in blessing["checks"] if c["type"] == "change"]
    assert len(changes) == 5 and all(c["skipped"] and c["passed"] for c in changes)
    assert "first run" in blessing["notes"][0] and "(5 skipped)" in blessing["reasons"][0]


@pytest.mark.parametrize(
    ("threshold", "reason"),
    [
        ({"metric": "f1", "category": "spam", "slice": "length:7-8", "change": {}}, "was not computed"),
        ({"metric": "recall", "kind": "operating", "category": "spam", "slice": "nope", "change": {}},
         "was not computed"),
        ({"metric": "f1", "category": "spam", "min": 0.995}, "needs >= 0.995"),  # a value check beside them
    ],
)  # fmt: skip
def test_unknown_slices_and_value_checks_fail(threshold, reason):
    policy = _policy([threshold])
    blessing = _gate(policy, *_evaluate(policy, SHORT_SPAM))
    assert not blessing["blessed"] and reason in blessing["reasons"][0]


def test_champion_without_paired_decisions_fails_closed():
    policy = _policy(CHANGES)
    evaluation, _ = _evaluate(policy)
    blessing = _gate(policy, evaluation, None)
    assert not blessing["blessed"]
    assert all(not c["passed"] for c in blessing["checks"] if c["type"] == "change")


def test_paired_decisions_round_trip(tmp_path):
    policy = _policy(CHANGES)
    _, paired = _evaluate(policy, SHORT_SPAM)
    paired.save(tmp_path / "p.npz")
    back = PairedDecisions.load(tmp_path / "p.npz")
    assert set(back.challenger) == {TEST, "golden"} and back.champion is not None
    assert np.array_equal(back.champion[TEST].reference, paired.champion[TEST].reference)
    assert np.array_equal(back.slices[SHORT], paired.slices[SHORT])


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({"metric": "pr_auc", "category": "spam", "change": {}}, "can be resampled"),
        ({"metric": "recall", "change": {}}, "needs a `category`"),
        ({"metric": "macro_f1", "category": "spam", "change": {}}, "takes no `category`"),
        ({"metric": "f1", "category": "spam"}, "needs `min` or `max` \\(value\\) or `change`"),
        ({"metric": "f1", "category": "spam", "change": {"tolerance": -0.1}}, "greater than or equal"),
        ({"metric": "f1", "category": "spam", "change": {"mode": "percent"}}, "absolute"),
    ],
)
def test_threshold_validation(doc, error):
    with pytest.raises(ValueError, match=error):
        Threshold.model_validate(doc)


@pytest.mark.parametrize(
    ("doc", "higher"),
    [
        ({"metric": "fpr", "category": "spam", "change": {}}, False),
        ({"metric": "flagged_rate", "change": {}}, False),
        ({"metric": "recall", "category": "spam", "change": {}}, True),
        ({"metric": "fpr", "category": "spam", "change": {"direction": "higher_is_better"}}, True),
    ],
)
def test_direction_is_inferred_or_given(doc, higher):
    assert Threshold.model_validate(doc).higher_is_better is higher


@pytest.mark.parametrize("name", ["davidson2017", "sms_spam"])
def test_shipped_policies_have_change_thresholds(name):
    policy = load_policy(name)
    assert any(t.change for t in policy.gate.thresholds) and any(t.min or t.max for t in policy.gate.thresholds)
    assert policy.gate.bootstrap.resamples == 1000


def test_bad_change_threshold_in_a_policy_file_is_a_policy_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nlabel_mode: exclusive\ncategories: [spam]\ndata: {dataset: d}\n"
        "gate: {thresholds: [{metric: roc_auc, category: spam, change: {tolerance: 0.1}}]}\n"
    )
    with pytest.raises(PolicyError, match="can be resampled"):
        load_policy(str(path))


def test_column_slices_group_by_a_source_column():
    from harmguard.evaluation.frozen import frozen_sets

    policy = Policy.model_validate(
        {"name": "p", "label_mode": "exclusive", "categories": ["spam"],
         "data": {"dataset": "d", "columns": {"source": ["lang"]}},
         "slices": [{"name": "lang", "by": "column", "column": "lang"}]}
    )  # fmt: skip
    frame = pd.DataFrame(
        {"text": ["a", "b", "c", "d"], "label": ["spam", "none", "none", "spam"], "split": ["test"] * 4,
         "src_lang": ["en", "de", "en", "en"]}
    )  # fmt: skip
    (test,) = frozen_sets(frame, policy, None)
    assert set(test.slices) == {"lang:de", "lang:en"} and test.slices["lang:en"].tolist() == [True, False, True, True]


@pytest.mark.parametrize(
    ("slices", "error"),
    [
        ([{"name": "lang", "by": "column"}], "needs `column`"),
        ([{"name": "lang", "by": "column", "column": "lang"}], "list it in a source's columns.source"),
        ([{"name": "length", "by": "length", "buckets": [40, 0]}], "increasing bucket edges"),
    ],
)
def test_slice_specs_are_validated(slices, error):
    with pytest.raises(ValueError, match=error):
        Policy.model_validate(
            {"name": "p", "label_mode": "exclusive", "categories": ["spam"], "data": {"dataset": "d"},
             "slices": slices}
        )  # fmt: skip


def test_recent_is_judged_on_the_same_rows_and_skipped_when_empty():
    from harmguard.data.snapshot import RECENT
    from harmguard.evaluation.evaluate import evaluate_champion, evaluate_on_sets

    policy = _policy([
        {"metric": "f1", "category": "spam", "slice": RECENT, "min": 0.8},
        {"metric": "recall", "kind": "operating", "category": "spam", "slice": RECENT, "change": {"tolerance": 0.02}},
    ])  # fmt: skip
    test, _ = _frozen()
    y = np.array([0] * 60 + [1] * 240)  # 60 spam
    weeks = np.array(["2026-W41"] * 150 + ["2026-W42"] * 150)
    recent = FrozenSet(RECENT, "r" * 64, [f"r{i}" for i in range(300)], y, weeks=weeks)
    y_spam = y == 0
    # the challenger misses spam rows 30-59 (all in week 41); the champion gets every row right
    proba = {"t" * 64: _proba(test.y == 0), "r" * 64: _proba(y_spam, np.isin(np.arange(300), np.arange(30, 60)))}
    champion_proba = {"t" * 64: _proba(test.y == 0), "r" * 64: _proba(y_spam)}
    thresholds = {"spam": 0.5}
    mine, dec, _ = evaluate_on_sets([test, recent], lambda d, _t: proba[d], policy, thresholds)
    theirs, their_dec, _ = evaluate_champion(thresholds, policy, [test, recent], lambda d, _t: champion_proba[d])
    assert [w["week"] for w in mine[RECENT]["weeks"]] == ["2026-W41", "2026-W42"]
    week41, week42 = (w["categories"]["spam"] for w in mine[RECENT]["weeks"])
    assert (week41["recall"], week41["support"], week42["support"]) == (0.5, 60, 0)  # half of week 41's spam missed
    evaluation = mine | {
        "thresholds": thresholds, "thresholds_version": "v",
        "sets": {TEST: test.describe(), RECENT: recent.describe()},
        "champion": theirs | {"version": "p/1", "model_digest": "c" * 64, "family": "baseline"},
    }  # fmt: skip
    blessing = run_gate(evaluation, policy, model_digest="m", data_version="d", run_id="r",
                        paired=PairedDecisions(dec, their_dec, test.slices))  # fmt: skip
    value, change = blessing["checks"]
    assert not value["passed"] and value["value"] == pytest.approx(2 / 3)  # F1 with recall 0.5, precision 1
    assert not change["passed"] and change["rows"] == 300 and change["delta"] == pytest.approx(-0.5)
    # a snapshot without recent decisions: both skipped, saying why (not failed: there is nothing to judge)
    without = mine | {"thresholds": thresholds, "thresholds_version": "v", "sets": {TEST: test.describe()},
                      "champion": None}  # fmt: skip
    skipped = run_gate(without, policy, model_digest="m", data_version="d", run_id="r")
    assert skipped["blessed"] and all(c["skipped"] and "no recent" in c["reason"] for c in skipped["checks"])
