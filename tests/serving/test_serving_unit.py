"""Serving pieces without Ray: the shared decision function, typed config, batch scoring with a shadow."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from harmguard.digests import thresholds_version
from harmguard.models.decide import ThresholdsError, check_thresholds, decide, decide_scores
from harmguard.models.loading import Loaded, ModelDigestMismatch, ModelSpec, verify_model_dir
from harmguard.serving.config import Batching, Limits, UserConfig
from harmguard.serving.model import score_requests


class FixedModel:
    """A stand-in classifier: the score of a text is its length / 10 (capped at 1)."""

    family = "fixed"
    label_mode = "multilabel"
    classes = ["hate", "offensive"]
    categories = ["hate", "offensive"]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        s = np.array([min(len(t) / 10, 1.0) for t in texts])
        return np.stack([s, 1 - s], axis=1)


def _spec(version: str, thresholds: dict[str, float]) -> ModelSpec:
    return ModelSpec(
        version=version, model_uri="/nowhere", model_digest="0" * 64, thresholds=thresholds,
        thresholds_version=thresholds_version(thresholds),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "hate", "offensive"),
    [("", False, True), ("abcde", True, True), ("abcdefghij", True, False), ("abcd", False, True)],
)
def test_decide_is_score_at_least_threshold(text, hate, offensive):
    out = decide(FixedModel(), {"hate": 0.5, "offensive": 0.5}, [text])
    assert out.results()[0]["decisions"] == {"hate": hate, "offensive": offensive}
    assert out.results()[0]["flagged"] == (hate or offensive)


def test_decide_empty_and_threshold_errors():
    assert decide(FixedModel(), {"hate": 0.5, "offensive": 0.5}, []).results() == []
    with pytest.raises(ThresholdsError, match="missing"):
        check_thresholds(["hate", "offensive"], {"hate": 0.5})
    with pytest.raises(ThresholdsError, match=r"\[0, 1\]"):
        check_thresholds(["hate"], {"hate": 1.5})
    out = decide_scores(["a"], np.array([[0.2], [0.7]]), {"a": 0.7})
    assert out.decisions[:, 0].tolist() == [False, True] and out.flagged.tolist() == [False, True]


def test_config_validation():
    with pytest.raises(ValidationError, match="thresholds hash"):
        ModelSpec(version="p/1", model_uri="/m", model_digest="0" * 64, thresholds={"a": 0.5}, thresholds_version="x")
    with pytest.raises(ValidationError, match="max_ongoing_requests"):
        Batching(max_batch_size=32, max_ongoing_requests=5)
    assert Limits().max_texts_per_request == 256 and Limits().max_chars_per_text == 10_000
    assert Limits().max_body_bytes == 2 * 1024 * 1024
    cfg = UserConfig.model_validate({**_spec("p/1", {"hate": 0.5}).model_dump(), "policy": "p"})
    assert cfg.dump()["thresholds_version"] == thresholds_version({"hate": 0.5})


def test_score_requests_splits_batches_and_counts_shadow_disagreement():
    th = {"hate": 0.5, "offensive": 0.5}
    champion = Loaded(_spec("p/1", th), FixedModel())
    shadow = Loaded(_spec("p/2", {"hate": 0.75, "offensive": 0.5}), FixedModel())
    out = score_requests(champion, shadow, [["abcdefg", "a"], ["abcdefghij"]])
    assert [len(o["results"]) for o in out] == [2, 1] and all(o["batch_texts"] == 3 for o in out)
    assert out[0]["results"] == decide(FixedModel(), th, ["abcdefg", "a"]).results()  # the shadow changes nothing
    assert out[0]["shadow"]["disagreements"] == {"hate": 1, "offensive": 0}  # 0.7: hate at 0.5, not at 0.75
    assert out[1]["shadow"]["disagreements"] == {"hate": 0, "offensive": 0}


def test_verify_model_dir_refuses_other_digest(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(ModelDigestMismatch):
        verify_model_dir(str(tmp_path), "0" * 64)
