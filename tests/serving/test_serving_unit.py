"""Serving pieces without Ray: the shared decision function, typed config, batch scoring with a shadow."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from harmguard.digests import thresholds_version
from harmguard.models.decide import ThresholdsError, check_thresholds, decide, decide_scores
from harmguard.models.loading import Loaded, ModelDigestMismatch, ModelSpec, verify_model_dir
from harmguard.serving.config import INGRESS_MAX_ONGOING, Batching, Limits, ServeArgs, UserConfig
from harmguard.serving.model import score_isolated, score_requests


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


class EncodingModel(FixedModel):
    """FixedModel that encodes each text first, as a tokenizer does: a lone surrogate makes it raise."""

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        for t in texts:
            t.encode("utf-8")
        return super().predict_proba(texts)


def test_a_request_the_model_cannot_read_fails_alone_not_its_batch():
    th = {"hate": 0.5, "offensive": 0.5}
    champion = Loaded(_spec("p/1", th), EncodingModel())
    batch = [["abcdefg", "a"], ["ok", "\ud800"], ["abcdefghij"]]
    with pytest.raises(UnicodeEncodeError):
        score_requests(champion, None, batch)  # one model call: the bad text fails every request in it
    out = score_isolated(champion, None, batch)
    assert out[1] == {"error": "UnicodeEncodeError"}  # the type only: the message would quote the text
    assert out[0]["results"] == decide(FixedModel(), th, ["abcdefg", "a"]).results() and out[0]["isolated"]
    assert out[2]["results"] == decide(FixedModel(), th, ["abcdefghij"]).results() and out[2]["isolated"]
    assert score_isolated(champion, None, [["fine"]])[0].get("isolated") is None  # a batch that scores: one call


def test_queue_caps_default_to_the_ongoing_limits_and_reach_both_deployments():
    """Serve's default is no queue limit (-1): both deployments must get a finite one."""
    from harmguard.serving.app import build_app

    assert Batching().queue_cap == Batching().max_ongoing_requests
    assert Batching(max_queued_requests=3).queue_cap == 3
    with pytest.raises(ValidationError):
        Batching(max_queued_requests=0)
    for args, model_cap, ingress_cap in (
        (ServeArgs(), Batching().max_ongoing_requests, INGRESS_MAX_ONGOING),
        (ServeArgs(batching=Batching(max_queued_requests=7), ingress_max_queued_requests=9), 7, 9),
    ):
        ingress = build_app(args)._bound_deployment  # Ray's Application has no public accessor for its deployment
        model = ingress.init_args[0]._bound_deployment
        assert (model.name, model.max_queued_requests) == ("Classifier", model_cap)
        assert (ingress.name, ingress.max_queued_requests) == ("ClassifierIngress", ingress_cap)


def test_windows_per_request_are_capped_at_texts_times_max_windows():
    """256 texts of 10,000 characters (the request limits) score at most 256 * max_windows windows, not one per
    window the texts would have uncapped (a text of 10,000 characters has about 1,500 words here)."""
    from harmguard.models.baseline import train_baseline
    from harmguard.policy import Policy

    limits = Limits()
    policy = Policy.model_validate(
        {"name": "p", "label_mode": "exclusive", "categories": ["hate"], "data": {"dataset": "d"},
         "baseline": {"min_df": 1, "window_words": 16, "max_windows": 16, "max_features": 2000}}
    )  # fmt: skip
    train = [f"you people are vermin {i}" for i in range(20)] + [f"see you at lunch {i}" for i in range(20)]
    model = train_baseline(train, np.array([0] * 20 + [1] * 20), policy)
    scored: list[int] = []
    inner = model._proba  # the model's own scoring of texts (windows, here), counted and left as it is

    def counting(texts: list[str]) -> np.ndarray:
        scored.append(len(texts))
        return inner(texts)

    model._proba = counting  # type: ignore[method-assign]
    words = "vermin lunch people see you at are the".split()
    text = " ".join(words[i % len(words)] + str(i % 97) for i in range(limits.max_chars_per_text))
    text = text[: limits.max_chars_per_text]
    texts = [text] * limits.max_texts_per_request
    uncapped = len(text.split()) // (16 // 2)  # windows every half window without the cap
    spec = _spec("p/1", {"hate": 0.5})
    out = score_requests(Loaded(spec, model), None, [texts])
    bound = limits.max_texts_per_request * policy.baseline.max_windows
    assert len(out[0]["results"]) == len(texts)
    print(f"windows scored: {sum(scored)} (bound {bound}, uncapped about {uncapped * len(texts)})")
    assert sum(scored) <= bound, (sum(scored), bound)
    assert sum(scored) > len(texts) and uncapped > 4 * policy.baseline.max_windows  # windows were used, and capped


def test_batching_defaults_follow_the_model_family_unless_set():
    from harmguard.serving.config import FAMILY_BATCHING

    assert Batching().for_family("baseline") == FAMILY_BATCHING["baseline"]
    assert Batching().for_family("transformer") == FAMILY_BATCHING["transformer"]
    assert Batching().for_family("unknown-family").max_batch_size > 0
    set_here = Batching(max_batch_size=3, batch_wait_timeout_s=0.0)
    assert set_here.for_family("transformer").max_batch_size == 3
    assert set_here.for_family("baseline").batch_wait_timeout_s == 0.0
    with pytest.raises(ValidationError, match="could never fill"):  # a family default larger than the replica takes
        Batching(max_ongoing_requests=4)


def _ingress():
    """The ingress class itself, without Serve: only its parsing is exercised."""
    from harmguard.serving.app import ClassifierIngress

    cls = ClassifierIngress.func_or_class

    class Parser:  # the ingress's parsing methods on a plain object (an ingress instance needs Serve around it)
        _parse, _parse_slowly, _check = cls._parse, cls._parse_slowly, cls._check
        _limits = Limits(max_texts_per_request=3, max_chars_per_text=20)

    return Parser()


@pytest.mark.parametrize(
    "body",
    [
        b'{"texts": ["a", "b"]}',
        b'{"texts": ["a"], "ids": ["x"]}',
        b'{"texts": ["a\\ud800b"]}',  # a lone surrogate: pydantic's parser refuses it, the careful path explains
        b'{"texts": ["\\ud83d\\ude00"]}',  # a real pair
        b'{"texts": []}',
        b'{"texts": [1]}',
        b'{"texts": ["a"], "extra": 1}',
        b'{"texts": ["a", "b", "c", "d"]}',
        b'{"texts": ["' + b"x" * 21 + b'"]}',
        b'{"texts": ["a"], "ids": ["x", "y"]}',
        b'{"texts": ["a"], "texts": ["b"]}',
        b'{"texts": [NaN]}',
        b"\xff\xfe",
        b"not json",
        b"[" * 5000,
    ],
)
def test_the_one_pass_parse_answers_as_the_careful_parse(body):
    """The fast path (pydantic-core over the bytes) accepts nothing the careful path refuses, and refuses the same."""
    ingress = _ingress()
    fast, slow = ingress._parse(body), ingress._parse_slowly(body)
    if isinstance(slow, tuple):
        assert fast == slow
    else:
        assert not isinstance(fast, tuple), f"the fast path accepted what the careful path refuses: {body[:40]!r}"
        assert (fast.status_code, fast.body) == (slow.status_code, slow.body)


def test_the_model_replica_encodes_each_answer_once_as_the_response_body():
    import json

    from harmguard.serving.app import _wire

    th = {"hate": 0.5, "offensive": 0.5}
    answers = score_isolated(Loaded(_spec("p/1", th), FixedModel()), None, [["abcdefg", "a"], ["abcdefghij"]])
    wired = [_wire(a) for a in answers]
    for answer, wire in zip(answers, wired, strict=True):
        assert "results" not in wire  # dicts never cross the handle; the arrays and the bytes do
        assert json.loads(wire["body"]) == {
            "results": answer["results"],
            "model_version": "p/1",
            "thresholds_version": thresholds_version(th),
        }
        assert wire["scores"].shape == (len(answer["results"]), 2) and wire["categories"] == ["hate", "offensive"]
    assert _wire({"error": "UnicodeEncodeError"}) == {"error": "UnicodeEncodeError"}
    nan = {"results": [{"scores": {"hate": float("nan")}}], "model_version": "p/1", "thresholds_version": "t"}
    assert _wire(nan) == {"error": "ValueError"}  # never a body that is not JSON; this request alone fails
