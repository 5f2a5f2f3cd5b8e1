"""Evasion perturbations (deterministic rewrites) and their flip and evasion rates against hand-computed values."""

import numpy as np
import pytest

from harmguard.evaluation.evasion import demo, flatten_evasion, measure_evasion, summarize_evasion
from harmguard.perturbations import PREFIX_WORDS, perturb_texts
from harmguard.policy import Policy
from harmguard.vocabulary import PERTURBATIONS


def test_each_perturbation_rewrites_words_as_evaders_do():
    text = ["you idiot"]
    rate = {"word_rate": 1.0}
    assert perturb_texts(text, "leetspeak", **rate)[0] == ["y0u 1d107"]
    assert perturb_texts(text, "space_insert", **rate)[0] == ["y o u i d i o t"]
    homoglyph = perturb_texts(text, "homoglyph", **rate)[0][0]
    assert homoglyph != "you idiot" and homoglyph.isascii() is False and len(homoglyph) == len("you idiot")
    swapped = perturb_texts(["idiot"], "char_swap", **rate)[0][0]
    assert swapped != "idiot" and sorted(swapped) == sorted("idiot") and swapped[0] == "i"
    punct = perturb_texts(["idiot"], "punct_insert", **rate)[0][0]
    assert len(punct) == 6 and punct[0] == "i" and "".join(c for c in punct if c not in ".*-_") == "idiot"


WORD_LEVEL = [p for p in PERTURBATIONS if p != "long_prefix"]


def test_placeholders_and_short_words_are_left_alone():
    text = "RT @user: so stupid!! http://t.co/abc &amp; #tag ok"
    for name in WORD_LEVEL:
        out, changed = perturb_texts([text, "ok no"], name, word_rate=1.0)
        assert changed.tolist() == [True, False]  # "ok no": no word of 3+ letters
        for kept in ("@user:", "http://t.co/abc", "&amp;", "#tag", "RT", " ok"):
            assert kept in out[0], (name, out[0])
        assert "stupid" not in out[0] and "!! " in out[0]  # the word changes, its punctuation stays


def test_perturbations_are_deterministic_and_rewrite_at_least_one_word():
    texts = [f"these people are terrible number {i}" for i in range(50)]
    for name in PERTURBATIONS:  # long_prefix too: every text gets its opening
        a, changed = perturb_texts(texts, name, word_rate=0.1, seed=3)
        assert a == perturb_texts(texts, name, word_rate=0.1, seed=3)[0]  # same seed, same texts
        assert changed.all()  # at least one word per text, even at a low rate
    assert perturb_texts(texts, "leetspeak", seed=1)[0] != perturb_texts(texts, "leetspeak", seed=2)[0]
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb_texts(texts, "rot13")
    assert demo("leetspeak").startswith("Y0u p30pl3")


def test_long_prefix_puts_a_harmless_opening_before_the_whole_text():
    texts = ["you people are vermin", "ok no"]
    out, changed = perturb_texts(texts, "long_prefix", seed=4)
    assert changed.all() and out == perturb_texts(texts, "long_prefix", seed=4)[0]
    for original, long in zip(texts, out, strict=True):
        words = long.split()
        assert long.endswith(" " + original) and len(words) == PREFIX_WORDS + len(original.split())
    assert "harmless words" in demo("long_prefix")


def test_flip_and_evasion_rates_by_hand():
    truth = np.array([[1, 0], [1, 0], [1, 1], [0, 1], [0, 0], [1, 0]], dtype=bool)
    clean = np.array([[1, 0], [1, 0], [1, 1], [0, 1], [0, 0], [0, 0]], dtype=bool)
    pert = np.array([[0, 0], [1, 0], [0, 1], [0, 0], [1, 0], [1, 0]], dtype=bool)
    m = measure_evasion(truth, clean, pert, ["hate", "offensive"])
    # hate: decisions change on rows 0, 2, 4, 5 -> 4/6; true positives rows 0, 1, 2 (row 5 was missed clean),
    # rows 0 and 2 are no longer flagged -> 2/3
    assert m["hate"]["flip_rate"] == pytest.approx(4 / 6) and m["hate"]["flips"] == 4
    assert m["hate"]["true_positives"] == 3 and m["hate"]["evasion_rate"] == pytest.approx(2 / 3)
    # offensive: rows 2 and 3 are true positives, row 3 is evaded; one flip of six rows
    assert m["offensive"]["evasion_rate"] == pytest.approx(1 / 2)
    assert m["offensive"]["flip_rate"] == pytest.approx(1 / 6)
    lo, hi = m["hate"]["evasion_rate_interval"]
    assert lo < 2 / 3 < hi


def test_summary_names_the_worst_perturbation_and_flattens():
    def rates(evasion):
        return {"per_category": {"hate": {"flip_rate": 0.1, "flip_rate_interval": [0, 0.2], "evasion_rate": evasion,
                                          "evasion_rate_interval": [evasion - 0.1, evasion + 0.1]}}}  # fmt: skip

    per = {"leetspeak": rates(0.4), "homoglyph": rates(0.6), "char_swap": rates(0.2)}
    summary = summarize_evasion(per, ["hate"])
    assert summary["hate"]["max_evasion_rate"] == {"value": 0.6, "perturbation": "homoglyph", "interval": [0.5, 0.7]}
    values, details = flatten_evasion({"perturbations": per, "summary": summary})
    assert values["operating/evasion/hate/max_evasion_rate"] == 0.6
    assert values["operating/evasion:leetspeak/hate/evasion_rate"] == 0.4
    assert details["operating/evasion/hate/max_evasion_rate"]["where"] == "homoglyph"


def test_policy_evasion_settings_are_validated():
    base = {"name": "p", "label_mode": "exclusive", "categories": ["hate"], "data": {"dataset": "d"}}
    assert Policy.model_validate(base | {"evasion": {}}).evasion.perturbations == list(PERTURBATIONS)
    with pytest.raises(ValueError):
        Policy.model_validate(base | {"evasion": {"perturbations": ["rot13"]}})
