"""Reports show data texts: every value is escaped, every page forbids script, the Markdown summary stays text."""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import re
from html.parser import HTMLParser

import pandas as pd
import pytest

from harmguard.data.snapshot import build_snapshot
from harmguard.data.validation import validate_snapshot
from harmguard.policy import Policy
from harmguard.reports.render import content_security_policy, escape_markdown, render_validation_html
from harmguard.reports.review_page import render_review_html, render_review_markdown

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
HOSTILE = (SCRIPT, IMG)


class _Page(HTMLParser):
    """What a browser would build from a page: its tags, event-handler attributes, script and CSP meta tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def _assert_inert(page: str, *, texts_shown: int) -> None:
    """No hostile text reaches the page raw; each is shown escaped; the browser would find no script to run."""
    for raw in HOSTILE:
        assert raw not in page, raw
        assert page.count(html_lib.escape(raw)) >= texts_shown, raw  # shown, as text
    parsed = _Page()
    parsed.feed(page)
    tags = [t for t, _ in parsed.tags]
    assert "script" not in tags and tags.count("img") == page.count("<img ")  # only the plots' own images
    assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on")]  # no event handlers
    imgs = [attrs["src"] for t, attrs in parsed.tags if t == "img"]
    assert all(src and src.startswith("data:image/png;base64,") for src in imgs), imgs
    # The CSP: first in <head> after the charset, no script at all, images only as data: URIs, the one stylesheet.
    metas = [attrs for t, attrs in parsed.tags if t == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"]
    assert len(metas) == 1 and tags[:4] == ["html", "head", "meta", "meta"]
    csp = {d.split()[0]: d.split()[1:] for d in (metas[0]["content"] or "").split("; ")}
    assert csp["default-src"] == ["'none'"] and csp["script-src"] == ["'none'"] and csp["img-src"] == ["data:"]
    # the page's one <style> block is what the policy's hash allows (a browser would otherwise drop the styling)
    digests = [f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in parsed.styles]
    assert digests and csp["style-src"] == digests


def _hostile_evaluation() -> tuple[dict, dict]:
    """An evaluation and blessing whose every data-derived string (texts, names, reasons) is hostile."""
    op = {"threshold": 0.5, "precision": 0.8, "recall": 0.7, "f1": 0.75, "fpr": 0.01, "pr_auc": 0.8,
          "tp": 7, "fp": 2, "fn": 3, "tn": 88}  # fmt: skip
    group = {"rows": 10, "positives": 4, "negatives": 6, "subgroup_auc": 0.9, "bpsn_auc": 0.8, "bnsp_auc": 0.7,
             "fpr": 0.1, "in_spread": True}  # fmt: skip
    summary = {
        "min_subgroup_auc": {"value": 0.9, "group": IMG}, "min_bpsn_auc": {"value": 0.8, "group": SCRIPT},
        "min_bnsp_auc": {"value": 0.7, "group": IMG}, "fpr_spread": {"value": 0.1, "max_group": SCRIPT,
        "min_group": IMG, "interval": [0.0, 0.2]}, "bias_score": {"value": 0.1},
    }  # fmt: skip
    evaluation = {
        "thresholds_version": "t" * 64,
        "categories": ["hate"],
        "reference": {"test": {"weighted_f1": 0.9, "macro_f1": 0.8, "accuracy": 0.9, "rows": 100,
                               "per_class": {SCRIPT: {"precision": 0.9, "recall": 0.9, "f1": 0.9, "fpr": 0.1,
                                                      "pr_auc": 0.9, "roc_auc": 0.9, "support": 10}}}},
        "operating": {"test": {"rows": 100, "flagged_rate": 0.1, "per_category": {"hate": op}}},
        "slices": {IMG: {"rows": 5, "reference": {"weighted_f1": 0.5, "macro_f1": 0.5},
                         "operating": {"per_category": {"hate": op}}}},
        "fairness": {SCRIPT: {"category": "hate", "positive": IMG, "identity": SCRIPT, "rows": 10, "positives": 4,
                              "overall_auc": 0.9, "min_negatives": 5, "groups": {SCRIPT: group, IMG: group},
                              "summary": summary}},
        "functional": {IMG: {"category": "hate", "positive": SCRIPT, "overall": {"operating": 0.9, "reference": 0.8},
                             "functionalities": {SCRIPT: {"rows": 3, "expected": "positive",
                                                          "accuracy": {"operating": 0.9, "reference": 0.9},
                                                          "interval": {"operating": [0.8, 1.0]}}}}},
        "champion": {"version": "p/1", "model_digest": "c" * 64, "family": "baseline", "thresholds_version": "d" * 64,
                     "reference": {"test": {"weighted_f1": 0.8, "macro_f1": 0.7}},
                     "operating": {"test": {"per_category": {"hate": op}}}},
        "flips": {"counts": {IMG: {"flipped": 2, "rows": 9, "newly_flagged": 1, "no_longer_flagged": 1}},
                  "text_chars": 200, "redacted": False,
                  "examples": [{"set": SCRIPT, "text": f"hello {SCRIPT} bye", "truth": IMG,
                                "challenger": {"hate": 0.9}, "challenger_flags": ["hate"],
                                "champion": {"hate": 0.1}, "champion_flags": []},
                               {"set": "test", "text": f"a {IMG} b", "truth": SCRIPT, "challenger": {"hate": 0.2},
                                "challenger_flags": [], "champion": {"hate": 0.8}, "champion_flags": ["hate"]}]},
    }  # fmt: skip
    blessing = {
        "blessed": False,
        "checks": [{"type": "value", "metric": "accuracy", "kind": "operating", "category": "hate", "slice": IMG,
                    "value": 0.1, "interval": [0.0, 0.2], "where": SCRIPT, "min": 0.5, "max": None, "passed": False,
                    "reason": f"{IMG} accuracy 0.1 < 0.5 ({SCRIPT})", "key": "operating/x/accuracy"}],
        "notes": [SCRIPT],
        "report": "runs/r1/report.html",
    }  # fmt: skip
    return evaluation, blessing


def test_review_page_shows_hostile_texts_escaped_under_a_no_script_policy():
    evaluation, blessing = _hostile_evaluation()
    context = {"policy": IMG, "run_id": SCRIPT, "model_digest": "a" * 64, "data_version": "b" * 64,
               "family": "baseline"}  # fmt: skip
    page = render_review_html(evaluation, blessing, context=context)
    _assert_inert(page, texts_shown=3)
    assert f"hello {html_lib.escape(SCRIPT)} bye" in page  # the flipped text itself, escaped in place


def test_validation_page_shows_hostile_rows_escaped_under_a_no_script_policy():
    """A real Great Expectations run whose offending rows (a long text, an unknown label) are hostile."""
    policy = Policy.model_validate(
        {"name": "toy", "label_mode": "exclusive", "categories": ["bad"],
         "data": {"uri": "x.csv", "label_map": {"1": "bad", "0": "none"}},
         "validation": {"min_rows": 50, "min_split_rows": 5, "max_text_length": 500}}
    )  # fmt: skip
    n = 300
    raw = pd.DataFrame({"text": [f"distinct message {i} with words {i * 7}" for i in range(n)],
                        "label": [str(i % 3 == 0 and 1 or 0) for i in range(n)]})  # fmt: skip
    raw.loc[5, "text"] = SCRIPT + " " + "x" * 900  # too long: shown cut, the payload first
    raw.loc[6, "text"] = IMG + " " + "y" * 900
    raw.loc[7, "label"] = IMG  # an unknown label value reaches validation and its report
    result = validate_snapshot(build_snapshot(raw, policy), policy)
    assert not result.success
    page = render_validation_html(result.to_dict(), policy=SCRIPT, data_version="d" * 64)
    _assert_inert(page, texts_shown=2)


def test_markdown_summary_keeps_hostile_names_as_text():
    evaluation, blessing = _hostile_evaluation()
    worst = {
        "max_evasion_rate": {"value": 0.2, "perturbation": IMG},
        "max_flip_rate": {"value": 0.3, "perturbation": SCRIPT},
    }
    evaluation["evasion"] = {"summary": {"hate": worst}}
    markdown = render_review_markdown(evaluation, blessing)
    for raw in HOSTILE:
        assert raw not in markdown
    assert not re.search(r"<\s*(script|img)", markdown, re.IGNORECASE)
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in markdown  # a Markdown viewer shows it as typed
    assert "[click](javascript:alert(1))" not in escape_markdown("[click](javascript:alert(1))")


@pytest.mark.parametrize("raw", ["a|b", "`x`", "[l](u)", "**b**", "line\nbreak", "<b>&", "# h", "![i](x)"])
def test_escape_markdown_leaves_no_syntax(raw):
    out = escape_markdown(raw)
    assert "\n" not in out and "<" not in out and ">" not in out
    assert not re.search(r"(?<!\\)[`*_\[\]()|#!]", out), out  # every Markdown character is backslash-escaped


def test_csp_hashes_the_shipped_stylesheet():
    policy = content_security_policy()
    assert "'unsafe-inline'" not in policy and "script-src 'none'" in policy and "'sha256-" in policy


def test_every_page_template_carries_the_csp():
    """A new page template without the policy would render data texts under no script restriction at all."""
    from harmguard.reports.render import TEMPLATES

    pages = [n for n in TEMPLATES.list_templates() if n.endswith(".html.j2") and not n.startswith("_")]
    assert {"review.html.j2", "validation.html.j2"} <= set(pages)
    for name in pages:
        source = TEMPLATES.loader.get_source(TEMPLATES, name)[0]
        head = source.split("</head>", 1)[0]
        assert '<meta http-equiv="Content-Security-Policy" content="{{ csp() }}">' in head, name
        assert "<script" not in source.lower() and "|safe" not in source.replace(" ", ""), name
