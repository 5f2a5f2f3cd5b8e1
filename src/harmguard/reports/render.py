"""Reports a reviewer reads: self-contained HTML pages with inline plots, and Markdown summaries."""

from __future__ import annotations

import base64
import io
from typing import Any

import jinja2

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("harmguard.reports", "templates"), autoescape=jinja2.select_autoescape(["html"])
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
