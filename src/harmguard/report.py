"""Reports a reviewer reads: self-contained HTML pages with inline plots, and Markdown summaries."""

from __future__ import annotations

import base64
import io
from typing import Any

import jinja2

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("harmguard", "templates"), autoescape=jinja2.select_autoescape(["html"])
)


def figure_png(fig: Any) -> str:
    """A matplotlib figure as an inline ``data:`` PNG URI (closes the figure)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def new_figure(w: float = 5, h: float = 4) -> tuple[Any, Any]:
    """A figure and its axes on the non-interactive backend, ``w`` x ``h`` inches."""
    import matplotlib

    matplotlib.use("Agg")  # no display in pipeline steps
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(w, h))


def plot_confusion(evaluation: dict[str, Any]) -> str | None:
    """Confusion matrix of argmax decisions (test split)."""
    cm = evaluation["reference"]["test"].get("confusion_matrix")
    if not cm:
        return None
    import numpy as np

    m = np.array(cm["matrix"])
    fig, ax = new_figure(4.5, 4)
    ax.imshow(m, cmap="Blues")
    labels = cm["labels"]
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test, argmax)")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black")
    return figure_png(fig)


def plot_split_labels(counts: dict[str, dict[str, int]]) -> str | None:
    """Stacked bars of labels per split."""
    if not counts:
        return None
    splits = sorted(counts)
    labels = sorted({label for c in counts.values() for label in c})
    fig, ax = new_figure(5, 3)
    bottom = [0] * len(splits)
    for label in labels:
        vals = [counts[s].get(label, 0) for s in splits]
        ax.bar(splits, vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set(ylabel="rows", title="Labels per split")
    ax.legend(fontsize=8)
    return figure_png(fig)


def render_validation_html(result: dict[str, Any], *, policy: str, data_version: str) -> str:
    """The validation report."""
    return TEMPLATES.get_template("validation.html.j2").render(
        r=result, policy=policy, data_version=data_version, plot=plot_split_labels(result["counts"])
    )


def render_evaluation_html(evaluation: dict[str, Any], blessing: dict[str, Any] | None, *, context: dict[str, Any]):
    """The reviewer report (``harmguard.review``).

    Decision, gate checks, champion vs challenger, fairness, functional tests, evasion, flipped decisions, then every
    metric table.
    """
    from harmguard.review import render_review_html

    return render_review_html(evaluation, blessing, context=context)


def render_evaluation_markdown(evaluation: dict[str, Any], blessing: dict[str, Any] | None) -> str:
    """A short Markdown summary (KFP Markdown artifact, terminal)."""
    from harmguard.review import render_review_markdown

    ref = evaluation["reference"]["test"]
    op = evaluation["operating"]["test"]
    champion = evaluation.get("champion")
    lines = [
        "## Evaluation (test split)",
        "",
        f"Reference (argmax): weighted F1 **{ref['weighted_f1']:.3f}**, macro F1 **{ref['macro_f1']:.3f}**"
        + (
            f" (champion {champion['version']}: {champion['reference']['test']['weighted_f1']:.3f}, "
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
            f"| {c} | {m['threshold']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} "
            f"| {m['fpr']:.4f} | {auc:.3f} |"
            if auc is not None
            else f"| {c} | {m['threshold']:.3f} | | | | | |"
        )
    lines += render_review_markdown(evaluation, blessing)
    if blessing is not None:
        lines += ["", f"**Gate: {'BLESSED' if blessing['blessed'] else 'REJECTED'}**", ""]
        failed = [c for c in blessing["checks"] if not c["passed"]]
        lines += [f"- ❌ {c['reason']}" for c in failed]
        passed = sum(1 for c in blessing["checks"] if c["passed"] and not c.get("skipped"))
        skipped = sum(1 for c in blessing["checks"] if c.get("skipped"))
        lines += [f"- ✅ {passed} checks passed" + (f", ⏭️ {skipped} skipped" if skipped else "")]
        lines += [f"\n_{n}_" for n in blessing.get("notes", [])]
        if blessing.get("report"):
            lines += ["", f"Full reviewer report: `{blessing['report']}` (under HARMGUARD_HOME)"]
    return "\n".join(lines) + "\n"
