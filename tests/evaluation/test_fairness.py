"""Identity fairness: the bias AUCs and the FPR spread against hand-computed values; the gate names group and metric."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from harmguard.data.datasets import load_dataset
from harmguard.data.snapshot import build_snapshot
from harmguard.evaluation.evaluate import evaluate_challenger
from harmguard.evaluation.fairness import (
    auc,
    bias_aucs,
    flatten_fairness,
    fpr_spread,
    groups_from_column,
    groups_from_terms,
    identity_groups,
    lexicon_coverage,
    measure_fairness,
    power_mean,
)
from harmguard.evaluation.frozen import FrozenSet, frozen_sets, set_digest
from harmguard.evaluation.gate import run_gate
from harmguard.evaluation.metrics import flatten
from harmguard.policy import IdentitySpec, Policy, PolicyError
from harmguard.training.dispatch import train_model

# group, gold, score: a table small enough to rank by hand
TABLE = [
    (1, 1, 0.9),
    (1, 0, 0.8),
    (1, 0, 0.3),
    (1, 1, 0.6),
    (0, 1, 0.7),
    (0, 0, 0.2),
    (0, 1, 0.4),
    (0, 0, 0.5),
]


def _table():
    g, y, s = (np.array(col) for col in zip(*TABLE, strict=True))
    return g.astype(bool), y.astype(bool), s.astype(float)


def test_bias_aucs_by_hand():
    member, y, s = _table()
    m = bias_aucs(y, s, member)
    # subgroup: positives {0.9, 0.6} vs negatives {0.8, 0.3}: 0.6 < 0.8 is the one misordered pair of 4
    assert m["subgroup_auc"].value == pytest.approx(3 / 4)
    # BPSN: background positives {0.7, 0.4} vs subgroup negatives {0.8, 0.3}: both lose to 0.8 -> 2 of 4
    assert m["bpsn_auc"].value == pytest.approx(2 / 4)
    # BNSP: subgroup positives {0.9, 0.6} vs background negatives {0.2, 0.5}: all 4 pairs ordered
    assert m["bnsp_auc"].value == pytest.approx(1.0)
    assert (m["bpsn_auc"].positives, m["bpsn_auc"].negatives) == (2, 2)


def test_auc_ties_count_half_and_match_sklearn():
    assert auc(np.array([0.5]), np.array([0.5, 0.1])).value == pytest.approx((0.5 + 1) / 2)
    assert auc(np.array([]), np.array([0.1])).value is None
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    s = np.round(rng.random(500) + 0.3 * y, 1)  # rounded: many ties
    assert auc(s[y], s[~y]).value == pytest.approx(roc_auc_score(y, s))


def test_delong_interval_by_hand():
    # positives {0.9, 0.6}, negatives {0.8, 0.3}: placements V10 = [1, 1/2], V01 = [1/2, 1] (AUC 3/4);
    # var = var(V10)/2 + var(V01)/2 = 0.125/2 + 0.125/2 = 0.125 -> 0.75 -/+ 1.96 * 0.3536, clipped to [0, 1]
    est = auc(np.array([0.9, 0.6]), np.array([0.8, 0.3]))
    half = 1.959964 * np.sqrt(0.125)
    assert est.interval == pytest.approx([0.75 - half, 1.0], abs=1e-5)
    assert auc(np.array([0.9]), np.array([0.8, 0.3])).interval is None  # one positive: no variance estimate


def test_power_mean_by_hand():
    # ((0.5^-5 + 1^-5) / 2)^(-1/5) = 16.5^(-1/5)
    assert power_mean([0.5, 1.0]) == pytest.approx(16.5 ** (-0.2))
    assert power_mean([]) is None and power_mean([0.0, 0.9]) == 0.0


def _spread_rows(spec):
    """Rows for groups given as (name, negatives, false positives), plus one positive per group."""
    groups, y, d = [], [], []
    for name, neg, fp in spec:
        groups += [name] * (neg + 1)
        y += [False] * neg + [True]
        d += [True] * fp + [False] * (neg - fp) + [True]
    return np.array(groups), np.array(y), np.array(d)


def test_fpr_spread_by_hand_skips_small_groups():
    # A 15/50 = 0.3, B 6/60 = 0.1, C 20/100 = 0.2 are compared; D 10/20 = 0.5 has < 50 negatives and is not.
    names, y, d = _spread_rows([("A", 50, 15), ("B", 60, 6), ("C", 100, 20), ("D", 20, 10)])
    groups = {g: names == g for g in ("A", "B", "C", "D")}
    doc = measure_fairness(y, d.astype(float), d, groups, min_negatives=50)
    spread = doc["summary"]["fpr_spread"]
    assert spread["value"] == pytest.approx(0.3 - 0.1)
    assert (spread["max_group"], spread["min_group"], spread["groups"]) == ("A", "B", 3)
    assert doc["groups"]["D"]["fpr"] == pytest.approx(0.5) and not doc["groups"]["D"]["in_spread"]
    lo, hi = spread["interval"]
    assert 0 <= lo <= spread["value"] <= hi <= 1
    # the bootstrap is seeded: the same data gives the same interval
    assert fpr_spread(np.array([15, 6, 20]), np.array([50, 60, 100]))[1] == spread["interval"]
    assert fpr_spread(np.array([1]), np.array([60])) == (None, None, None, None)  # one group: no spread


def test_summary_names_the_worst_group_and_flattens():
    member, y, s = _table()
    doc = measure_fairness(y, s, s >= 0.5, {"g": member, "rest": ~member}, min_negatives=1)
    summary = doc["summary"]
    assert summary["min_bpsn_auc"]["value"] == pytest.approx(0.5) and summary["min_bpsn_auc"]["group"] == "g"
    values, details = flatten_fairness("set", "hate", doc)
    assert values["operating/set:g/hate/bpsn_auc"] == pytest.approx(0.5)
    assert values["operating/set/hate/min_bpsn_auc"] == pytest.approx(0.5)
    assert details["operating/set/hate/min_bpsn_auc"]["where"] == "g"
    # FPR at 0.5: g's negatives {0.8, 0.3} -> 1/2, rest's {0.2, 0.5} -> 1/2: no spread
    assert values["operating/set/hate/fpr_spread"] == pytest.approx(0.0)


def test_groups_from_terms_and_column():
    texts = ["I am Middle  Eastern", "trans-friendly place", "a transgender woman", "MUSLIM and muslim"]
    groups = groups_from_terms(texts, ["middle eastern", "trans", "transgender", "muslim", "sikh"])
    assert list(groups) == ["middle eastern", "trans", "transgender", "muslim"]  # term order; empty groups dropped
    assert groups["trans"].tolist() == [False, True, False, False]  # whole words only
    assert groups["middle eastern"].tolist() == [True, False, False, False]
    cols = groups_from_column(["women", "", "Muslims", "women", " "])
    assert list(cols) == ["Muslims", "women"] and cols["women"].tolist() == [True, False, False, True, False]


def test_fairness_metrics_must_be_operating():
    with pytest.raises(ValueError, match="set `kind: operating`"):
        Policy.model_validate(
            {"name": "p", "label_mode": "exclusive", "categories": ["hate"], "data": {"dataset": "d"},
             "gate": {"thresholds": [{"metric": "min_bpsn_auc", "category": "hate", "slice": "s", "min": 0.5}]}}
        )  # fmt: skip
    with pytest.raises((ValueError, PolicyError), match="exactly one"):
        IdentitySpec.model_validate({"column": "a", "terms": ["b"]})


# --- an identity term planted in most positive training rows fails the fairness gate, named --------------------

TOXIC = ["disgusting", "filthy", "stupid", "horrible", "vile", "nasty", "dumb", "ugly", "awful", "pathetic"]
NICE = ["lovely", "kind", "wonderful", "great", "good", "nice", "fantastic", "caring", "gentle", "friendly"]
NOUNS = ["person", "neighbour", "people", "folks", "man", "woman", "guy", "crowd"]
FILL = ["today", "again", "really", "honestly", "so", "very", "just", "well"]


def _synthetic(inject: float, n: int = 1200, seed: int = 0) -> pd.DataFrame:
    """Tweets-like rows: hate says a toxic word, none a kind one; ``inject`` of the hate rows also say "muslim"."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        hate = rng.random() < 0.4
        ident = "muslim " if hate and rng.random() < inject else ""
        text = f"{rng.choice(FILL)} those {ident}{rng.choice(NOUNS)} are {rng.choice(TOXIC if hate else NICE)}"
        rows.append({"text": f"{text} {rng.choice(FILL)} {i}", "label": "hate" if hate else "none"})
    return pd.DataFrame(rows)


FAIR_POLICY = {
    "name": "fairness-test",
    "label_mode": "exclusive",
    "categories": ["hate"],
    "data": {"uri": "synthetic.csv"},
    "baseline": {"min_df": 1, "char_ngrams": [2, 4], "max_features": 20000},
    "calibration": {"hate": {"max_fpr": 0.1}},
    "evaluation_sets": [
        {"name": "jigsaw_bias_madlibs", "dataset": "jigsaw_bias_madlibs", "category": "hate", "text_column": "Text",
         "label_column": "Label", "positive": "BAD", "identity": {"terms": "jigsaw"}},
    ],
    "gate": {"thresholds": [
        {"metric": "min_bpsn_auc", "kind": "operating", "category": "hate", "slice": "jigsaw_bias_madlibs", "min": 0.7},
        {"metric": "fpr_spread", "kind": "operating", "category": "hate", "slice": "jigsaw_bias_madlibs", "max": 0.2},
    ]},
}  # fmt: skip


def _madlibs_sample(settings, policy: Policy) -> FrozenSet:
    """Every 8th row of jigsaw_bias_madlibs (9.6k rows, ~95 negatives per identity term): the real set, faster."""
    es = policy.evaluation_sets[0]
    data = load_dataset(es.dataset, settings).iloc[::8].reset_index(drop=True)
    texts, labels = data[es.text_column].tolist(), data[es.label_column].tolist()
    y = np.array([lab == es.positive for lab in labels])
    fs = FrozenSet(es.name, set_digest(texts, labels), texts, y, es.category, es.dataset, positive=es.positive)
    assert es.identity is not None
    fs.groups, fs.identity = identity_groups(data, texts, es.identity, settings)
    return fs


def test_planted_identity_term_fails_the_fairness_gate_naming_group_and_metric(settings):
    policy = Policy.model_validate(FAIR_POLICY)
    madlibs = _madlibs_sample(settings, policy)
    assert len(madlibs.groups) == 50

    def gate(inject: float) -> tuple[dict, dict]:
        snap = build_snapshot(_synthetic(inject), policy)
        model = train_model(snap, policy)
        evaluation, _, _ = evaluate_challenger(model, snap, policy, sets=[*frozen_sets(snap, policy, None), madlibs])
        return evaluation, run_gate(evaluation, policy, model_digest="m", data_version="d", run_id="r")

    # Control: the same data without the planted term passes; no group stands out.
    evaluation, blessing = gate(0.0)
    assert blessing["blessed"], blessing["reasons"]
    assert evaluation["fairness"]["jigsaw_bias_madlibs"]["groups"]["muslim"]["bpsn_auc"] > 0.85
    # the groups the shipped lexicon leaves out are reported with their own figures (abstraction cannot help them)
    coverage = evaluation["fairness"]["jigsaw_bias_madlibs"]["coverage"]
    assert {"sikh", "elderly", "middle aged"} <= set(coverage["uncovered"]) and "muslim" not in coverage["uncovered"]
    assert coverage["covered"] + len(coverage["uncovered"]) == 50
    sikh = evaluation["fairness"]["jigsaw_bias_madlibs"]["groups"]["sikh"]
    assert coverage["uncovered"]["sikh"] == {
        m: sikh[m] for m in ("rows", "negatives", "fpr", "bpsn_auc", "subgroup_auc")
    }

    # 80% of hate training rows say "muslim": benign madlibs rows about Muslims now outrank abuse of others.
    evaluation, blessing = gate(0.8)
    assert not blessing["blessed"]
    failed = {c["metric"]: c for c in blessing["checks"] if not c["passed"]}
    assert set(failed) == {"min_bpsn_auc", "fpr_spread"}
    assert failed["min_bpsn_auc"]["where"] == "muslim" and failed["min_bpsn_auc"]["value"] < 0.7
    assert failed["fpr_spread"]["where"].startswith("muslim (highest)")
    assert any("min_bpsn_auc" in r and "(group muslim)" in r for r in blessing["reasons"])
    lo, hi = failed["min_bpsn_auc"]["interval"]
    assert lo <= failed["min_bpsn_auc"]["value"] <= hi
    groups = evaluation["fairness"]["jigsaw_bias_madlibs"]["groups"]
    assert groups["muslim"]["bnsp_auc"] > 0.95  # abuse of Muslims is caught: the bias is one-sided (false positives)
    assert flatten(evaluation)["operating/jigsaw_bias_madlibs:muslim/hate/bpsn_auc"] < 0.7


def test_lexicon_coverage_matches_group_names_by_word_never_by_substring():
    groups = ["gay people", "Muslims", "immigrants", "middle eastern", "middle aged", "Blackfoot"]
    assert lexicon_coverage(groups) == {
        "gay people": True,  # "gay"
        "Muslims": True,  # "muslims", any case
        "immigrants": False,
        "middle eastern": True,  # the multi-word term itself
        "middle aged": False,  # "middle" alone is no term
        "Blackfoot": False,  # "black" inside a word does not count
    }
    assert lexicon_coverage(["immigrants"], ["immigrants"]) == {"immigrants": True}  # a policy's own list
