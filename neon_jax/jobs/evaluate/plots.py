"""The evaluation's plots: every pruned network, and the method means with the Pareto front over tau.

Figures are drawn with `matplotlib.figure.Figure` directly (no pyplot), so writing them neither needs a display
nor changes the backend of the process.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from neon_jax import paper_results
from neon_jax.jobs.evaluate.summary import method_groups, pareto_front

SCATTER_PLOT = "compression_vs_accuracy.png"
PARETO_PLOT = "pareto_tau.png"


def _group_key(g: dict) -> tuple:
    return g["method"], g["setting"], g["tau"], g["passes"], g["greedy"]


def _scatter_plot(df: pd.DataFrame, groups: list[dict], path: Path) -> None:
    """Compression against accuracy change of every network of the headline groups."""
    subs = {_group_key(g): sub for g, sub in method_groups(df)}
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    for i, g in enumerate([g for g in groups if g.get("headline", True)]):
        sub = subs[_group_key(g)]
        ax.scatter(sub["compression"], sub["acc_change_points"], s=10, alpha=0.5, color=colours[i % len(colours)],
                   label=g["label"])
    ax.set_xscale("log")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("compression (original / pruned parameters, log scale)")
    ax.set_ylabel("test accuracy change (points)")
    ax.set_title("every pruned network")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _pareto_plot(groups: list[dict], path: Path) -> None:
    """Group means: neon as a line over tau, each baseline as a line over its settings, our Pareto front and the
    paper's points."""
    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    points, series = [], {}
    for g in groups:
        x, y = g["over_networks"]["compression"]["mean"], g["over_networks"]["acc_change"]["mean"]
        points.append((x, y))
        if g["method"] == "neon":
            key = (f"neon p{g['passes']}{' greedy' if g['greedy'] else ''}", g["setting"])
            series.setdefault(key, []).append((x, y, f"τ={g['tau']:g}"))
        else:
            key = (g["method"] + (f" p{g['passes']}" if g["passes"] else ""), "")
            series.setdefault(key, []).append((x, y, g["setting"] if g["setting"] not in ("", "reinit") else ""))
    several_agents = len({k[1] for k in series if k[0].startswith("neon")}) > 1
    for (name, setting), pts in series.items():
        pts.sort()
        label = name + (f" [{Path(setting).name}]" if several_agents and setting else "")
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if name.startswith("neon") else "s:",
                        ms=5, label=label)
        for x, y, text in pts:
            if text:
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6,
                            color=line.get_color())
    front = pareto_front(points)
    if len(front) > 1:
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="black", lw=0.8, label="Pareto front (ours)")
    for cfg, v in paper_results.AGGREGATE.items():
        ax.scatter([v["ratio_mean"]], [v["dacc_mean"]], marker="x", color="grey", s=25)
        ax.annotate(cfg, (v["ratio_mean"], v["dacc_mean"]), fontsize=6, color="grey", textcoords="offset points",
                    xytext=(3, -8))
    ax.set_xscale("log")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("mean compression (log scale)")
    ax.set_ylabel("mean test accuracy change (points)")
    ax.set_title("method means; grey x = paper (2020 single-dataset agents)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_plots(df: pd.DataFrame, summary: dict, out: Path) -> list[str]:
    """Writes the two plots of a results folder.

    Args:
      df: ``networks.csv`` (`read_networks`).
      summary: `summarise_evaluation`'s dict (the groups; pooled sweeps are left out).
      out: the results folder.

    Returns:
      The file names: `SCATTER_PLOT` (every network of the headline groups) and `PARETO_PLOT` (group means).
    """
    groups = [g for g in summary["groups"] if g["setting"] != "sweep"]
    _scatter_plot(df, groups, Path(out) / SCATTER_PLOT)
    _pareto_plot(groups, Path(out) / PARETO_PLOT)
    return [SCATTER_PLOT, PARETO_PLOT]
