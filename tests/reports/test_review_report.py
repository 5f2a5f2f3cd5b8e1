"""The reviewer report: challenger vs champion on real evaluation sets, flipped texts (cut or redacted), all tables."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from harmguard.data.snapshot import build_snapshot, split_frame
from harmguard.digests import model_digest
from harmguard.evaluation.evaluate import evaluate_against_champion
from harmguard.evaluation.frozen import Champion, PairedDecisions
from harmguard.evaluation.gate import run_gate
from harmguard.policy import Policy
from harmguard.reports.review_page import render_review_html, render_review_markdown
from harmguard.training.dispatch import train_model
from tests.conftest import run_cli
from tests.evaluation.test_fairness import _synthetic

POLICY = {
    "name": "review-test",
    "label_mode": "exclusive",
    "categories": ["hate"],
    "data": {"uri": "synthetic.csv"},
    "baseline": {"min_df": 1, "char_ngrams": [2, 4], "max_features": 20000},
    "calibration": {"hate": {"max_fpr": 0.1}},
    "evaluation_sets": [
        {"name": "hatecheck", "dataset": "hatecheck", "category": "hate", "text_column": "test_case",
         "label_column": "label_gold", "positive": "hateful", "identity": {"column": "target_ident"},
         "functionality_column": "functionality"},
    ],
    "evasion": {"perturbations": ["leetspeak", "homoglyph"]},
    "report": {"text_chars": 40, "flipped_examples": 5},
    "gate": {"thresholds": [
        {"metric": "min_bpsn_auc", "kind": "operating", "category": "hate", "slice": "hatecheck", "min": 0.5},
        {"metric": "fpr_spread", "kind": "operating", "category": "hate", "slice": "hatecheck", "max": 1.0},
        {"metric": "accuracy", "kind": "operating", "slice": "hatecheck:slur_h", "min": 0.99},
        {"metric": "max_evasion_rate", "kind": "operating", "category": "hate", "slice": "evasion", "max": 1.0},
        {"metric": "recall", "kind": "operating", "category": "hate", "change": {"tolerance": 0.05}},
    ]},
}  # fmt: skip


def _review(settings, store, tmp_path, monkeypatch, report: dict) -> dict:
    """Challenger (a planted identity term) against a champion (clean data), through evaluate_against_champion."""
    policy = Policy.model_validate(POLICY | {"report": POLICY["report"] | report})
    snap = build_snapshot(_synthetic(0.0, n=1000), policy)
    planted = build_snapshot(_synthetic(0.8, n=1000, seed=1), policy)
    # the challenger learns from planted rows; both are judged on the clean snapshot's validation and test rows
    mixed = pd.concat([planted[planted["split"] == "train"], snap[snap["split"] != "train"]], ignore_index=True)
    champion_model, model = train_model(snap, policy), train_model(mixed, policy)
    for name, m in (("champion", champion_model), ("challenger", model)):
        m.save(tmp_path / name)
    champion = Champion("review-test/1", model_digest(tmp_path / "champion"), {"hate": 0.5}, "baseline", champion_model)
    monkeypatch.setattr(
        "harmguard.evaluation.evaluate.load_champion", lambda *_: (champion, "compared with champion 1")
    )
    digest = model_digest(tmp_path / "challenger")

    def evaluate() -> tuple[dict, PairedDecisions]:
        return evaluate_against_champion(model, digest, snap, policy, settings, store)

    evaluation, paired = evaluate()
    blessing = run_gate(evaluation, policy, model_digest=digest, data_version="d", run_id="r1", paired=paired)
    context = {"policy": policy.name, "run_id": "r1", "model_digest": digest, "data_version": "d" * 64,
               "family": "baseline"}  # fmt: skip
    return {
        "evaluation": evaluation,
        "blessing": blessing,
        "html": render_review_html(evaluation, blessing, context=context),
        "markdown": render_review_markdown(evaluation, blessing),
        "test_texts": split_frame(snap, "test")["text"].tolist(),
        "evaluate": evaluate,
    }


def test_review_page_has_every_table_and_cut_flipped_texts(settings, store, tmp_path, monkeypatch):
    r = _review(settings, store, tmp_path, monkeypatch, {})
    evaluation, blessing, html, markdown, test_texts = (r[k] for k in ("evaluation", "blessing", "html", "markdown",
                                                                        "test_texts"))  # fmt: skip
    # the evaluation carries the three new sections for both models, and the flips between them
    for section in ("fairness", "functional", "evasion"):
        assert evaluation[section] and evaluation["champion"][section]
    assert set(evaluation["champion"]["curves"]) == {"hate"}
    flips = evaluation["flips"]
    assert set(flips["counts"]) == {"test", "hatecheck"} and sum(c["flipped"] for c in flips["counts"].values()) > 0
    assert 0 < len(flips["examples"]) <= 5 and all(len(x["text"]) <= 40 for x in flips["examples"])
    assert {x["set"] for x in flips["examples"]} == {"test", "hatecheck"}  # taken in turn from each set
    # the gate: intervals on every fairness, functional and evasion check; the slur_h floor fails, named
    checks = {c["metric"]: c for c in blessing["checks"]}
    for metric in ("min_bpsn_auc", "fpr_spread", "accuracy", "max_evasion_rate"):
        lo, hi = checks[metric]["interval"]
        assert lo <= checks[metric]["value"] <= hi, metric
    assert checks["min_bpsn_auc"]["where"] in evaluation["fairness"]["hatecheck"]["groups"]
    assert not blessing["blessed"] and any("hatecheck:slur_h/accuracy" in r for r in blessing["reasons"])
    assert checks["recall"]["type"] == "change" and checks["recall"]["interval"] is not None
    assert blessing["report"] == "runs/r1/report.html"
    # one page: decision, gate checks, comparison, both PR curves, the three tables, flipped texts
    for heading in ("Decision", "Gate checks", "Challenger vs champion per category and slice",
                    "Identity fairness: hatecheck", "Functional tests: hatecheck", "Evasion (test split",
                    "Decisions that differ between challenger and champion"):  # fmt: skip
        assert heading in html, heading
    assert 'alt="PR curves of challenger and champion"' in html and "review-test/1" in html
    for group in ("Muslims", "women", "gay people"):
        assert f"<td>{group}</td>" in html
    # the one hatecheck group the shipped identity lexicon does not name is marked, and counted in the summary
    assert '<td>immigrants <span class="muted">(not in the identity lexicon)</span></td>' in html
    assert "1 of 7 groups are not in the identity lexicon (harmguard)" in html
    assert "<td>slur_h</td>" in html and "<td>leetspeak</td>" in html
    assert flips["examples"][0]["text"].replace("&", "&amp;").replace("'", "&#39;") in html
    assert not any(t in html for t in test_texts if len(t) > 40)  # long texts appear only cut
    assert "lowest BPSN AUC" in markdown and "worst evasion rate" in markdown and "REJECTED" in markdown
    assert "decisions that differ from the champion" in markdown
    # a rerun scores nothing new: both models, every set and every perturbation come from the score cache
    again, _ = r["evaluate"]()
    # challenger: validation, test, hatecheck, 2 perturbations; champion: test, hatecheck, 2 perturbations
    assert again["score_cache"] == {"hits": 5 + 4, "misses": 0, "rejected": 0}
    assert again["fairness"] == json.loads(json.dumps(evaluation["fairness"]))  # same numbers, and plain JSON


def test_redacted_report_shows_no_text(settings, store, tmp_path, monkeypatch):
    r = _review(settings, store, tmp_path, monkeypatch, {"redact_texts": True})
    evaluation, html, test_texts = r["evaluation"], r["html"], r["test_texts"]
    assert evaluation["flips"]["examples"] and all(x["text"] == "[redacted]" for x in evaluation["flips"]["examples"])
    assert "[redacted]" in html and "are redacted" in html
    body = re.sub(r"<code>[^<]*</code>", "", html)  # perturbation examples are a made-up sentence
    assert not any(t in body for t in test_texts)


@pytest.mark.slow
def test_davidson2017_run_writes_the_reviewer_report_and_passes_its_shipped_floors(hg_env):
    proc = run_cli(["run", "--policy", "davidson2017", "--json"], hg_env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    assert s["blessed"], s["reasons"]  # the shipped fairness, functional and evasion floors pass the baseline
    metrics = {c["metric"] for c in s["checks"]}
    assert {"min_bpsn_auc", "fpr_spread", "accuracy", "max_evasion_rate"} <= metrics
    html = Path(s["report"]).read_text()
    assert "Identity fairness: jigsaw_bias_madlibs" in html and "Functional tests: hatecheck" in html
