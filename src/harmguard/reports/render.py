"""Reports a reviewer reads: self-contained HTML pages with inline plots, and Markdown summaries.

The pages show data texts (flipped decisions, offending rows, group and functionality names from datasets), so
every template escapes every value (``autoescape=True``: the templates are ``*.html.j2``, which jinja's
``select_autoescape(["html"])`` would not match), and every page carries a Content-Security-Policy that allows no
script at all, images only as inline ``data:`` URIs (the plots) and only the shared stylesheet (by its hash): a
value that escaped escaping still could not run in the approver's browser or in MLflow's artifact view.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import re
from typing import Any

import jinja2

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("harmguard.reports", "templates"),
    autoescape=True,  # every template is HTML; data texts must never reach a page unescaped
)
STYLE_TEMPLATE = "_style.html.j2"
_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]()#|!{}])")


@functools.cache
def content_security_policy() -> str:
    """The pages' Content-Security-Policy: no script, no fetches, plots as ``data:`` images, the one stylesheet."""
    source, _, _ = TEMPLATES.loader.get_source(TEMPLATES, STYLE_TEMPLATE)  # type: ignore[union-attr]
    styles = [base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() for css in _STYLE.findall(source)]
    style_src = " ".join(f"'sha256-{h}'" for h in styles) or "'none'"
    return (
        f"default-src 'none'; script-src 'none'; img-src data:; style-src {style_src}; "
        "base-uri 'none'; form-action 'none'; object-src 'none'"
    )


TEMPLATES.globals["csp"] = content_security_policy


def escape_markdown(value: Any) -> str:
    """A value as Markdown text that renders as itself: HTML special characters as entities, Markdown's escaped.

    The Markdown summary goes to the KFP UI and MLflow, which render it (raw HTML included): a group name or gate
    reason from data must not become a tag, a link or a table cell.
    """
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text).replace("\n", " ")


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
