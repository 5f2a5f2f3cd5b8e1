"""Long texts read window by window: abuse after a harmless opening is neither cut off nor diluted."""

from __future__ import annotations

import numpy as np

from harmguard.models.base import text_windows, windowed_proba
from harmguard.models.baseline import train_baseline
from harmguard.perturbations import PREFIX_WORDS, long_prefix, perturb_texts
from harmguard.policy import Policy


def test_windows_cover_the_text_and_respect_the_cap():
    words = [f"w{i}" for i in range(100)]
    text = " ".join(words)
    assert text_windows("short text", 16) == ["short text"] and text_windows(text, 0) == [text]
    windows = text_windows(text, 16, 8)
    assert windows[0].split()[0] == "w0" and windows[-1].split()[-1] == "w99"  # the end is always read
    assert all(len(w.split()) == 16 for w in windows) and len(windows) == 12
    assert {x for w in windows for x in w.split()} == set(words)
    capped = text_windows(text, 16, 8, cap=4)
    assert len(capped) == 4 and capped[0] == windows[0] and capped[-1] == windows[-1]


def test_each_class_takes_its_highest_window_and_none_what_is_left():
    def score(pieces: list[str]) -> np.ndarray:  # hate = share of "bad" words in the piece, offensive = "rude"
        rows = []
        for p in pieces:
            words = p.split()
            hate, rude = words.count("bad") / len(words), words.count("rude") / len(words)
            rows.append([hate, rude, 1 - hate - rude])
        return np.array(rows)

    long = " ".join(["fine"] * 40 + ["bad"] * 8 + ["fine"] * 40 + ["rude"] * 4)
    out = windowed_proba(score, [long, "fine bad"], size=8, stride=4, cap=64, none_index=2)
    assert out[0, 0] == 1.0 and out[0, 1] == 0.5 and out[0, 2] == 0.0  # max per category; none: what is left
    assert np.allclose(out[1], [0.5, 0.0, 0.5])  # one window: its own probabilities
    assert np.allclose(score([long])[0, :2], [8 / 92, 4 / 92])  # read whole, both are diluted


def test_the_baseline_flags_abuse_after_a_harmless_opening_only_by_window():
    policy = Policy.model_validate(
        {"name": "p", "label_mode": "exclusive", "categories": ["hate"], "data": {"dataset": "d"},
         "baseline": {"min_df": 1, "window_words": 16, "max_windows": 64}}
    )  # fmt: skip
    hateful = [f"you {w} people are vermin and should leave" for w in ("stupid", "filthy", "awful", "vile")]
    opening = long_prefix("", np.random.default_rng(0)).split()  # everyday words, known to the model as benign
    benign = [" ".join(opening[i : i + 8]) for i in range(0, 32, 8)]
    model = train_baseline((hateful + benign) * 10, np.array(([0] * 4 + [1] * 4) * 10), policy)
    texts, changed = perturb_texts(hateful, "long_prefix", seed=7)
    assert changed.all() and all(len(t.split()) > PREFIX_WORDS for t in texts)
    windowed = model.predict_proba(texts)[:, 0]
    model.spec = model.spec.model_copy(update={"window_words": 0})
    whole = model.predict_proba(texts)[:, 0]
    assert (windowed > 0.5).all() and (whole < 0.5).all(), (windowed, whole)
    assert long_prefix("x", np.random.default_rng(0)).split()[-1] == "x"
