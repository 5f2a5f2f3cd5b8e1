"""The drift report: one self-contained HTML page (histogram overlays, daily volume and flag rate) beside the verdict.

The page holds no text from traffic (the record has none); it goes through the reports package's autoescaped
templates and no-script Content-Security-Policy like every other page.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harmguard.monitoring.drift import HIST_BINS
from harmguard.reports.render import TEMPLATES, figure_png, new_figure


def plot_histograms(verdict: dict[str, Any]) -> list[str]:
    """Per category: the traffic's score histogram over the reference's, with the threshold."""
    drift = verdict.get("drift") or {}
    out = []
    edges = np.linspace(0, 1, HIST_BINS + 1)
    for category, doc in sorted(drift.get("categories", {}).items()):
        fig, ax = new_figure(4.5, 3)
        for name, style in (("reference", {"alpha": 0.5}), ("traffic", {"alpha": 0.5})):
            ax.stairs(doc["histogram"][name], edges, fill=True, label=name, **style)
        ax.axvline(doc["threshold"], color="black", linestyle="--", linewidth=1, label="threshold")
        ax.set(xlabel="score", ylabel="share of texts", title=f"{category}: PSI {doc['psi']:.3f}, KS {doc['ks']:.3f}")
        ax.legend(fontsize=8)
        out.append(figure_png(fig))
    return out


def plot_daily(verdict: dict[str, Any]) -> str | None:
    """Records per day (bars) and the flag rate per day (line)."""
    days = verdict.get("daily") or []
    if not days:
        return None
    fig, ax = new_figure(6, 3)
    x = np.arange(len(days))
    ax.bar(x, [d["records"] for d in days], color="#9ab", label="records")
    ax.set_xticks(x, [d["day"][5:] for d in days], rotation=45, fontsize=7)
    ax.set(ylabel="records", title="Volume and flag rate per day (UTC)")
    rate = ax.twinx()
    rate.plot(x, [d["flag_rate"] for d in days], color="#b3261e", marker="o", label="flag rate")
    rate.set_ylabel("flag rate")
    return figure_png(fig)


def render_monitor_html(verdict: dict[str, Any]) -> str:
    """The drift report of one verdict."""
    plots = {"histograms": plot_histograms(verdict), "daily": plot_daily(verdict)}
    return TEMPLATES.get_template("monitor.html.j2").render(v=verdict, plots=plots)
