"""Reports a reviewer reads: self-contained HTML pages with inline plots, and Markdown summaries."""

from __future__ import annotations

import base64
import io
from typing import Any

import jinja2

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("harmguard", "templates"), autoescape=jinja2.select_autoescape(["html"])
)


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(w: float = 5, h: float = 4) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # no display in pipeline steps
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(w, h))


def plot_pr_curves(evaluation: dict[str, Any]) -> str | None:
    """Precision-recall curve per category (test split), with each operating point marked."""
    curves = {c: v["pr"] for c, v in evaluation["curves"].items() if v.get("pr")}
    if not curves:
        return None
    fig, ax = _figure()
    for c, pr in curves.items():
        auc = evaluation["reference"]["test"]["per_class"][c].get("pr_auc")
        ax.plot(pr["recall"], pr["precision"], label=f"{c} (PR-AUC {auc:.3f})" if auc is not None else c)
        op = evaluation["operating"]["test"]["per_category"][c]
        ax.scatter([op["recall"]], [op["precision"]], marker="o", zorder=3)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (test)")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_confusion(evaluation: dict[str, Any]) -> str | None:
    """Confusion matrix of argmax decisions (test split)."""
    cm = evaluation["reference"]["test"].get("confusion_matrix")
    if not cm:
        return None
    import numpy as np

    m = np.array(cm["matrix"])
    fig, ax = _figure(4.5, 4)
    ax.imshow(m, cmap="Blues")
    labels = cm["labels"]
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test, argmax)")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black")
    return _png(fig)


def plot_split_labels(counts: dict[str, dict[str, int]]) -> str | None:
    """Stacked bars of labels per split."""
    if not counts:
        return None
    splits = sorted(counts)
    labels = sorted({label for c in counts.values() for label in c})
    fig, ax = _figure(5, 3)
    bottom = [0] * len(splits)
    for label in labels:
        vals = [counts[s].get(label, 0) for s in splits]
        ax.bar(splits, vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set(ylabel="rows", title="Labels per split")
    ax.legend(fontsize=8)
    return _png(fig)


def render_validation_html(result: dict[str, Any], *, policy: str, data_version: str) -> str:
    """The validation report."""
    return _ENV.get_template("validation.html.j2").render(
        r=result, policy=policy, data_version=data_version, plot=plot_split_labels(result["counts"])
    )


def render_evaluation_html(evaluation: dict[str, Any], blessing: dict[str, Any] | None, *, context: dict[str, Any]):
    """The evaluation report: both kinds of metrics, slices, evaluation sets, gate checks, plots."""
    return _ENV.get_template("evaluation.html.j2").render(
        e=evaluation,
        b=blessing,
        ctx=context,
        pr_plot=plot_pr_curves(evaluation),
        cm_plot=plot_confusion(evaluation),
    )


def render_evaluation_markdown(evaluation: dict[str, Any], blessing: dict[str, Any] | None) -> str:
    """A short Markdown summary (KFP Markdown artifact, terminal)."""
    ref = evaluation["reference"]["test"]
    op = evaluation["operating"]["test"]
    lines = [
        "## Evaluation (test split)",
        "",
        f"Reference (argmax): weighted F1 **{ref['weighted_f1']:.3f}**, macro F1 **{ref['macro_f1']:.3f}**",
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
    if blessing is not None:
        lines += ["", f"**Gate: {'BLESSED' if blessing['blessed'] else 'REJECTED'}**", ""]
        lines += [
            f"- {'⏭️' if c.get('skipped') else '✅' if c['passed'] else '❌'} {c['reason']}" for c in blessing["checks"]
        ]
        lines += [f"\n_{n}_" for n in blessing.get("notes", [])]
    return "\n".join(lines) + "\n"
