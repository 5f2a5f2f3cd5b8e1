"""The reviewer report: one HTML page (and a Markdown summary) to decide a challenger from.

The page puts the decision first (gate verdict, failing checks, headline numbers), then every gate check with value,
interval, threshold and result, champion vs. challenger per category and slice, both models' PR curves, the
identity-fairness, functional-test and evasion tables, and up to 20 texts whose decision differs between the two
models (cut to ``report.text_chars`` characters, or ``[redacted]`` with ``report.redact_texts``). The detailed
metric tables of the evaluation follow. The gate step renders it (``render_review_html``) into
``runs/<run-id>/report.html`` (named by the blessing's ``report``) and the KFP ``HTML``/``Markdown`` artifacts.
"""

from __future__ import annotations

from typing import Any

from harmguard.evaluation.evasion import SLICE
from harmguard.evaluation.fairness import GROUP_METRICS
from harmguard.reports.render import TEMPLATES, figure_png, new_figure, plot_confusion
from harmguard.reports.render import escape_markdown as md

# --- headline numbers --------------------------------------------------------------------------------------------


def headline(evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """The numbers a reviewer reads first: functional accuracy, lowest BPSN AUC, FPR spread, worst evasion rate."""
    if not evaluation:
        return {}
    out: dict[str, Any] = {"functional": {}, "fairness": {}, "evasion": {}}
    for name, doc in (evaluation.get("functional") or {}).items():
        balanced = ((evaluation.get("evaluation_sets") or {}).get(name) or {}).get("operating", {})
        out["functional"][name] = doc["overall"] | {"balanced": balanced.get("balanced_accuracy")}
    for name, doc in (evaluation.get("fairness") or {}).items():
        s = doc["summary"]
        out["fairness"][name] = {
            "lowest_bpsn_auc": s["min_bpsn_auc"]["value"],
            "lowest_bpsn_group": s["min_bpsn_auc"]["group"],
            "lowest_subgroup_auc": s["min_subgroup_auc"]["value"],
            "lowest_subgroup_group": s["min_subgroup_auc"]["group"],
            "lowest_bnsp_auc": s["min_bnsp_auc"]["value"],
            "lowest_bnsp_group": s["min_bnsp_auc"]["group"],
            "fpr_spread": s["fpr_spread"]["value"],
            "fpr_spread_groups": [s["fpr_spread"]["max_group"], s["fpr_spread"]["min_group"]],
        }
    for cat, s in ((evaluation.get("evasion") or {}).get("summary") or {}).items():
        out["evasion"][cat] = {
            "worst_evasion_rate": s["max_evasion_rate"]["value"],
            "perturbation": s["max_evasion_rate"]["perturbation"],
            "worst_flip_rate": s["max_flip_rate"]["value"],
            "flip_perturbation": s["max_flip_rate"]["perturbation"],
        }
    return out


# --- plots -------------------------------------------------------------------------------------------------------


def plot_pr_pair(evaluation: dict[str, Any]) -> str | None:
    """PR curves per category on the test split: the challenger solid, the champion dashed, operating points dotted."""
    champion = evaluation.get("champion") or {}
    curves = {c: v.get("pr") for c, v in (evaluation.get("curves") or {}).items()}
    if not any(curves.values()):
        return None
    fig, ax = new_figure(6, 4.5)
    colours = ["C0", "C1", "C2", "C3", "C4", "C5"]
    for k, (c, pr) in enumerate(curves.items()):
        colour = colours[k % len(colours)]
        if pr:
            auc = evaluation["operating"]["test"]["per_category"][c].get("pr_auc")
            label = f"{c} challenger" + (f" (PR-AUC {auc:.3f})" if auc is not None else "")
            ax.plot(pr["recall"], pr["precision"], color=colour, label=label)
            op = evaluation["operating"]["test"]["per_category"][c]
            ax.scatter([op["recall"]], [op["precision"]], color=colour, marker="o", zorder=3)
        theirs = ((champion.get("curves") or {}).get(c) or {}).get("pr")
        if theirs:
            auc = champion["operating"]["test"]["per_category"][c].get("pr_auc")
            label = f"{c} champion {champion.get('version', '')}" + (f" (PR-AUC {auc:.3f})" if auc is not None else "")
            ax.plot(theirs["recall"], theirs["precision"], color=colour, linestyle="--", label=label)
            op = champion["operating"]["test"]["per_category"][c]
            ax.scatter([op["recall"]], [op["precision"]], color=colour, marker="s", facecolors="none", zorder=3)
    title = "Precision-recall (test): challenger" + (" vs champion" if champion else "")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return figure_png(fig)


# --- page --------------------------------------------------------------------------------------------------------


def _bounds(blessing: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Gate bounds by flat key, so tables can mark the values a check reads."""
    return {c["key"]: c for c in (blessing or {}).get("checks", []) if c.get("type", "value") == "value"}


def _comparison_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """Champion vs challenger per slice and category (operating point): recall, precision, FPR, F1."""
    champion = evaluation.get("champion") or {}
    rows = []

    def add(slice_name: str, rows_n: int, mine: dict[str, Any] | None, theirs: dict[str, Any] | None) -> None:
        for c, m in ((mine or {}).get("per_category") or {}).items():
            t = ((theirs or {}).get("per_category") or {}).get(c)
            rows.append({"slice": slice_name, "rows": rows_n, "category": c, "challenger": m, "champion": t})

    add("overall", evaluation["operating"]["test"]["rows"], evaluation["operating"]["test"],
        (champion.get("operating") or {}).get("test"))  # fmt: skip
    if evaluation.get("recent"):
        recent = evaluation["recent"]
        add("recent", recent["rows"], recent["operating"], (champion.get("recent") or {}).get("operating"))
    for name, sl in (evaluation.get("slices") or {}).items():
        add(name, sl["rows"], sl.get("operating"), ((champion.get("slices") or {}).get(name) or {}).get("operating"))
    for name, es in (evaluation.get("evaluation_sets") or {}).items():
        theirs = ((champion.get("evaluation_sets") or {}).get(name) or {}).get("operating")
        add(name, es["rows"], {"per_category": {es["category"]: es["operating"]}},
            {"per_category": {es["category"]: theirs}} if theirs else None)  # fmt: skip
    return rows


def _recent_weeks(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """The recent set week by week and per category, with the champion's figures on the same rows beside."""
    recent = evaluation.get("recent") or {}
    theirs = {w["week"]: w for w in ((evaluation.get("champion") or {}).get("recent") or {}).get("weeks", [])}
    rows = []
    for week in recent.get("weeks", []):
        for cat, m in week["categories"].items():
            champion = (theirs.get(week["week"]) or {}).get("categories", {}).get(cat)
            rows.append({"week": week["week"], "rows": week["rows"], "category": cat, **m, "champion": champion})
    return rows


def _past(check: dict[str, Any] | None, value: float | None) -> bool:
    """Whether a value lies past a value check's bound (a group or perturbation the check's summary covers)."""
    if check is None or value is None:
        return False
    return (check.get("min") is not None and value < check["min"]) or (
        check.get("max") is not None and value > check["max"]
    )


def _fairness_tables(evaluation: dict[str, Any], bounds: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per fairness set: its summary and one row per group, worst BPSN AUC first, with the champion's row beside."""
    champion = (evaluation.get("champion") or {}).get("fairness") or {}
    tables = []
    for name, doc in (evaluation.get("fairness") or {}).items():
        cat = doc["category"]
        theirs = (champion.get(name) or {}).get("groups") or {}
        uncovered = set((doc.get("coverage") or {}).get("uncovered") or {})  # groups the identity lexicon misses
        rows = []
        for group, r in doc["groups"].items():
            past = {
                m: _past(bounds.get(f"operating/{name}/{cat}/min_{m}"), r[m])
                or _past(bounds.get(f"operating/{name}:{group}/{cat}/{m}"), r[m])
                for m in GROUP_METRICS
            }
            past["fpr"] = _past(bounds.get(f"operating/{name}:{group}/{cat}/fpr"), r["fpr"])
            rows.append({"group": group, **r, "champion": theirs.get(group), "past": past,
                         "covered": group not in uncovered})  # fmt: skip
        rows.sort(key=lambda r: (r["bpsn_auc"] is None, r["bpsn_auc"] or 0.0, r["group"]))
        summary_theirs = (champion.get(name) or {}).get("summary")
        tables.append({"name": name, "doc": doc, "rows": rows, "champion_summary": summary_theirs})
    return tables


def _functional_tables(evaluation: dict[str, Any], bounds: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per functional suite: one row per functionality with both accuracies, the champion's, and its floor."""
    champion = (evaluation.get("champion") or {}).get("functional") or {}
    tables = []
    for name, doc in (evaluation.get("functional") or {}).items():
        theirs = (champion.get(name) or {}).get("functionalities") or {}
        rows = []
        for func, r in doc["functionalities"].items():
            check = bounds.get(f"operating/{name}:{func}/accuracy") or bounds.get(f"reference/{name}:{func}/accuracy")
            rows.append({"name": func, **r, "champion": theirs.get(func), "check": check})
        champion_overall = (champion.get(name) or {}).get("overall")
        tables.append({"name": name, "doc": doc, "rows": rows, "champion_overall": champion_overall})
    return tables


def _evasion_rows(evaluation: dict[str, Any], bounds: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per perturbation and category, with the champion's rates beside."""
    doc = evaluation.get("evasion")
    if not doc:
        return []
    theirs = (((evaluation.get("champion") or {}).get("evasion")) or {}).get("perturbations") or {}
    rows = []
    for name, p in doc["perturbations"].items():
        for cat, m in p["per_category"].items():
            champion = ((theirs.get(name) or {}).get("per_category") or {}).get(cat)
            worst = bounds.get(f"operating/{SLICE}/{cat}/max_evasion_rate")
            own = bounds.get(f"operating/{SLICE}:{name}/{cat}/evasion_rate")
            past = _past(worst, m["evasion_rate"]) or _past(own, m["evasion_rate"])
            rows.append({"perturbation": name, "example": p["example"], "changed_rows": p["changed_rows"],
                         "category": cat, **m, "champion": champion, "past": past})  # fmt: skip
    return rows


def render_review_html(evaluation: dict[str, Any], blessing: dict[str, Any] | None, *, context: dict[str, Any]) -> str:
    """The reviewer page (self-contained HTML, plots inline)."""
    return TEMPLATES.get_template("review.html.j2").render(
        e=evaluation,
        b=blessing,
        ctx=context,
        ch=evaluation.get("champion"),
        head=headline(evaluation),
        head_champion=headline(evaluation.get("champion")),
        bounds=_bounds(blessing),
        comparison=_comparison_rows(evaluation),
        fairness=_fairness_tables(evaluation, _bounds(blessing)),
        functional=_functional_tables(evaluation, _bounds(blessing)),
        evasion=_evasion_rows(evaluation, _bounds(blessing)),
        recent_weeks=_recent_weeks(evaluation),
        pr_plot=plot_pr_pair(evaluation),
        cm_plot=plot_confusion(evaluation),
    )


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _review_markdown_lines(evaluation: dict[str, Any], blessing: dict[str, Any] | None) -> list[str]:
    """Markdown lines of the robustness headline and the flipped-decision counts (for the KFP summary)."""
    head, theirs = headline(evaluation), headline(evaluation.get("champion"))
    champion = evaluation.get("champion")
    lines: list[str] = []
    if not head or not any(head.values()):
        return lines
    who = f" (champion {md(champion['version'])} in brackets)" if champion else ""
    lines += ["", f"### Fairness, functional tests, evasion{who}", ""]

    def pair(path: tuple[str, ...], digits: int = 3) -> str:
        def get(h: dict[str, Any]) -> Any:
            for p in path:
                h = (h or {}).get(p)  # type: ignore[assignment]
            return h

        mine = _fmt(get(head), digits)
        return f"{mine} ({_fmt(get(theirs), digits)})" if champion else mine

    for name in head.get("functional", {}):
        lines.append(
            f"- {md(name)} accuracy (operating): **{pair(('functional', name, 'operating'))}**, balanced "
            f"{pair(('functional', name, 'balanced'))}"
        )
    for name, f in head.get("fairness", {}).items():
        lines.append(
            f"- {md(name)}: lowest BPSN AUC **{pair(('fairness', name, 'lowest_bpsn_auc'))}** "
            f"({md(f['lowest_bpsn_group'])}), lowest subgroup AUC {pair(('fairness', name, 'lowest_subgroup_auc'))} "
            f"({md(f['lowest_subgroup_group'])}), FPR spread **{pair(('fairness', name, 'fpr_spread'))}** "
            f"({' vs '.join(md(g) for g in f['fpr_spread_groups'])})"
        )
    for cat, ev in head.get("evasion", {}).items():
        lines.append(
            f"- {md(cat)} evasion: worst evasion rate **{pair(('evasion', cat, 'worst_evasion_rate'))}** "
            f"({md(ev['perturbation'])}), worst flip rate {pair(('evasion', cat, 'worst_flip_rate'))} "
            f"({md(ev['flip_perturbation'])})"
        )
    for row in _recent_weeks(evaluation):
        lines.append(
            f"- recent {md(row['week'])} ({row['rows']} decisions, {md(row['category'])} rate {_fmt(row['rate'])}): "
            f"F1 **{_fmt(row['f1'])}**, recall {_fmt(row['recall'])}, FPR {_fmt(row['fpr'])}"
            + (f" (champion F1 {_fmt(row['champion']['f1'])})" if row["champion"] else "")
        )
    flips = evaluation.get("flips")
    if flips:
        counts = ", ".join(f"{md(n)} {c['flipped']}/{c['rows']}" for n, c in flips["counts"].items())
        lines.append(f"- decisions that differ from the champion: {counts}")
    return lines


def render_review_markdown(evaluation: dict[str, Any], blessing: dict[str, Any] | None) -> str:
    """A short Markdown summary (KFP Markdown artifact, terminal); every name and reason is escaped (``md``)."""
    ref = evaluation["reference"]["test"]
    op = evaluation["operating"]["test"]
    champion = evaluation.get("champion")
    lines = [
        "## Evaluation (test split)",
        "",
        f"Reference (argmax): weighted F1 **{ref['weighted_f1']:.3f}**, macro F1 **{ref['macro_f1']:.3f}**"
        + (
            f" (champion {md(champion['version'])}: {champion['reference']['test']['weighted_f1']:.3f}, "
            f"{champion['reference']['test']['macro_f1']:.3f})"
            if champion
            else ""
        ),
        "",
        "| category | threshold | precision | recall | F1 | FPR | PR-AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, m in op["per_category"].items():
        auc = m.get("pr_auc")
        lines.append(
            f"| {md(c)} | {m['threshold']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} "
            f"| {m['fpr']:.4f} | {auc:.3f} |"
            if auc is not None
            else f"| {md(c)} | {m['threshold']:.3f} | | | | | |"
        )
    lines += _review_markdown_lines(evaluation, blessing)
    if blessing is not None:
        lines += ["", f"**Gate: {'BLESSED' if blessing['blessed'] else 'REJECTED'}**", ""]
        failed = [c for c in blessing["checks"] if not c["passed"]]
        lines += [f"- ❌ {md(c['reason'])}" for c in failed]
        passed = sum(1 for c in blessing["checks"] if c["passed"] and not c.get("skipped"))
        skipped = sum(1 for c in blessing["checks"] if c.get("skipped"))
        lines += [f"- ✅ {passed} checks passed" + (f", ⏭️ {skipped} skipped" if skipped else "")]
        lines += [f"\n_{md(n)}_" for n in blessing.get("notes", [])]
        if blessing.get("report"):
            lines += ["", f"Full reviewer report: `{blessing['report']}` (under HARMGUARD_HOME)"]
    return "\n".join(lines) + "\n"
