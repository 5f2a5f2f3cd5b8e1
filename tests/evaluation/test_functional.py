"""Functional tests: accuracy per functionality by hand; the shipped HateCheck floors reject clearly worse models."""

import numpy as np
import pytest

from harmguard.data.datasets import load_dataset
from harmguard.evaluation.functional import flatten_functional, measure_functional
from harmguard.evaluation.gate import run_gate
from harmguard.evaluation.significance import wilson_interval
from harmguard.policy import load_policy


def test_accuracy_per_functionality_by_hand():
    func = np.array(["slur_h", "slur_h", "slur_h", "slur_h", "counter_nh", "counter_nh"])
    y = np.array([1, 1, 1, 1, 0, 0], dtype=bool)
    op = np.array([1, 1, 0, 1, 0, 1], dtype=bool)
    ref = np.array([1, 0, 0, 0, 0, 0], dtype=bool)
    doc = measure_functional(func, y, {"operating": op, "reference": ref})
    slur, counter = doc["functionalities"]["slur_h"], doc["functionalities"]["counter_nh"]
    assert slur["accuracy"] == {"operating": 0.75, "reference": 0.25} and slur["expected"] == "positive"
    assert counter["accuracy"] == {"operating": 0.5, "reference": 1.0} and counter["expected"] == "negative"
    assert doc["overall"] == {"operating": pytest.approx(4 / 6), "reference": pytest.approx(3 / 6)}
    # Wilson 95% for 3 of 4: centre (0.75 + z^2/8) / (1 + z^2/4), the textbook [0.3006, 0.9544]
    assert slur["interval"]["operating"] == pytest.approx([0.3006, 0.9544], abs=1e-4)
    values, details = flatten_functional("hatecheck", doc)
    assert values["operating/hatecheck:slur_h/accuracy"] == 0.75
    assert values["reference/hatecheck:counter_nh/accuracy"] == 1.0
    assert details["operating/hatecheck:slur_h/accuracy"]["interval"] == slur["interval"]["operating"]
    # balanced: a functionality's accuracy beside the suite's accuracy on the other label (operating: TPR 3/4, TNR 1/2)
    assert slur["balanced_accuracy"]["operating"] == pytest.approx((0.75 + 0.5) / 2)
    assert counter["balanced_accuracy"]["operating"] == pytest.approx((0.5 + 0.75) / 2)
    assert counter["balanced_accuracy"]["reference"] == pytest.approx((1.0 + 0.25) / 2)
    assert values["reference/hatecheck:slur_h/balanced_accuracy"] == pytest.approx((0.25 + 1.0) / 2)
    mixed = measure_functional(
        np.array(["m"] * 4), np.array([1, 1, 0, 0], bool), {"operating": np.array([1, 0, 0, 0], bool)}
    )
    assert mixed["functionalities"]["m"]["balanced_accuracy"]["operating"] == pytest.approx((0.5 + 1.0) / 2)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) is None
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and 0.1 < hi < 0.2
    lo, hi = wilson_interval(20, 20)
    assert 0.8 < lo < 0.9 and hi == pytest.approx(1.0)


def _floors():
    """The shipped davidson2017 functional floors: {functionality: floor}."""
    policy = load_policy("davidson2017")
    return policy, {
        t.slice.split(":", 1)[1]: t.min
        for t in policy.gate.thresholds
        if t.metric == "balanced_accuracy" and t.slice.startswith("hatecheck:")
    }


def test_shipped_floors_name_real_functionalities_of_both_kinds_at_chance(settings):
    _, floors = _floors()
    cases = load_dataset("hatecheck", settings)
    known = set(cases["functionality"])
    assert set(floors) <= known and len(floors) >= 10
    assert any(f.endswith("_h") for f in floors) and any(f.endswith("_nh") for f in floors)
    assert set(floors.values()) == {0.5}  # source: chance, the score of flagging everything or nothing


def _gate(policy, cases, decisions):
    y = (cases["label_gold"] == "hateful").to_numpy()
    doc = measure_functional(cases["functionality"].to_numpy(), y, {"operating": decisions, "reference": decisions})
    evaluation = {
        "thresholds": {"hate": 0.5, "offensive": 0.5},
        "thresholds_version": "t",
        "reference": {"test": {"accuracy": 1, "weighted_f1": 1, "macro_f1": 1, "per_class": {}}},
        "operating": {"test": {"flagged_rate": 0, "macro_f1": 1, "per_category": {}}},
        "functional": {"hatecheck": {"category": "hate", **doc}},
    }
    blessing = run_gate(evaluation, policy, model_digest="m", data_version="d", run_id="r")
    failed = {
        c["slice"].split(":", 1)[1]
        for c in blessing["checks"]
        if c["metric"] == "balanced_accuracy" and ":" in c["slice"] and not c["passed"]
    }
    return doc, blessing, failed


@pytest.mark.parametrize("flag", [False, True], ids=["flags-nothing", "flags-everything"])
def test_a_constant_model_sits_exactly_at_chance_on_every_functionality(settings, flag):
    policy, _ = _floors()
    cases = load_dataset("hatecheck", settings)
    doc, _, _ = _gate(policy, cases, np.full(len(cases), flag))
    balanced = {f: row["balanced_accuracy"]["operating"] for f, row in doc["functionalities"].items()}
    assert len(balanced) == 29 and all(v == pytest.approx(0.5) for v in balanced.values())
    plain = [row["accuracy"]["operating"] for row in doc["functionalities"].values()]
    assert set(plain) == {0.0, 1.0}  # plain accuracy would call half the suite perfect


def test_shipped_floors_reject_a_model_worse_than_chance(settings):
    policy, floors = _floors()
    cases = load_dataset("hatecheck", settings)
    y = (cases["label_gold"] == "hateful").to_numpy()
    inverted = ~y
    inverted[::10] = y[::10]  # mostly wrong, not perfectly: every functionality under 0.5
    _, blessing, failed = _gate(policy, cases, inverted)
    assert not blessing["blessed"] and failed == set(floors)
    assert any(f"hatecheck:{sorted(failed)[0]}/balanced_accuracy = " in r for r in blessing["reasons"])
