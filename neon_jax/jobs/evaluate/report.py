"""``report.md``: the evaluation's tables in Markdown, our numbers next to the paper's (neon_spec.md §10)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from neon_jax import paper_results
from neon_jax.jobs.evaluate.plots import write_plots
from neon_jax.jobs.evaluate.store import read_cells, read_networks
from neon_jax.jobs.evaluate.summary import summarise_evaluation


def write_report(out_dir) -> dict:
    """Writes ``report.md``, ``summary.json`` and the plots of a results folder from its ``networks.csv``.

    Args:
      out_dir: the results folder.

    Returns:
      The summary (`summarise_evaluation`).
    """
    out = Path(out_dir)
    if not (out / "networks.csv").exists():
        raise FileNotFoundError(f"{out} holds no networks.csv (nothing evaluated yet)")
    df = read_networks(out)
    settings = json.loads((out / "settings.json").read_text()) if (out / "settings.json").exists() else {}
    summary = summarise_evaluation(df, settings, read_cells(out))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    plots = write_plots(df, summary, out)
    (out / "report.md").write_text(render_report(summary, plots))
    return summary


def _md(header, rows) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _f(x, digits=2, sign=False):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _stat_cells(stats: dict, sign: bool = False) -> list[str]:
    """mean, median, std, max, min of one `summary.aggregate` statistic, formatted."""
    return [_f(stats["mean"], sign=sign), _f(stats["median"], sign=sign), _f(stats["std"]),
            _f(stats["max"], sign=sign), _f(stats["min"], sign=sign)]


def _introduction(s: dict) -> list[str]:
    ident = s["settings"].get("identity", {})
    protocol = ident.get("protocol", "?")
    lines = [f"# NEON evaluation ({protocol} protocol)", ""]
    if protocol == "heldout":
        lines.append("Every method prunes the held-out networks of each dataset's zoo (the agent never trained on "
                     "them). Compression = original / pruned parameters; accuracy change = pruned - original test "
                     "accuracy, in points.")
    else:
        lines.append("Datasets are cut into seeded folds; the agent of fold f never saw any network of fold f's "
                     "datasets and prunes all their networks. Compression = original / pruned parameters; accuracy "
                     "change in points on the test split.")
    folds = s["settings"].get("folds")
    if folds:
        lines += ["", f"Folds (seed {ident.get('fold_seed')}, size {ident.get('fold_size')}):", ""]
        lines += [f"- fold {i}: {', '.join(f)}" for i, f in enumerate(folds)]
    lines += ["", f"{s['networks']} pruned networks (network x seed x method) over {len(s['datasets'])} datasets; "
              f"preset `{ident.get('preset')}`, zoos `{ident.get('zoo_root')}`.", ""]
    for spec, a in s.get("agents", {}).items():
        where = ("the agent shipped in neon_jax/assets/ for the preset, trained nearest this tau"
                 if spec.startswith("pretrained")
                 else ", ".join(a["path"]))
        lines.append(f"- neon agent `{spec}` ({where}): trained at tau "
                     f"{', '.join(f'{t:g}' for t in a['trained_at_tau']) or '?'}; its training networks include "
                     f"{', '.join(a['trained_on_evaluated_datasets']) or 'none'} of the evaluated datasets.")
    if s.get("agents"):
        lines.append("")
    return lines


def _aggregate_over_networks(s: dict) -> list[str]:
    lines = ["## Aggregate over networks", "",
             "Mean / median / std / max / min over every (network, seed); fell / held / rose = networks whose test "
             "accuracy fell / did not change / rose; lost > tau = networks whose test accuracy fell by more than "
             "the tolerance the method was given. Paper = the 2020 single-dataset agents' column (neon_spec.md "
             "§10.1; see the note at the end).", ""]
    header = ["method", "nets", "compr. mean", "median", "std", "max", "min", "dAcc mean", "median", "std", "max",
              "min", "fell/held/rose", "lost > tau", "paper compr. mean", "paper dAcc mean", "notes"]
    rows = []
    for g in s["groups"]:
        c, a = g["over_networks"]["compression"], g["over_networks"]["acc_change"]
        p = paper_results.AGGREGATE.get(g["paper_config"]) if g["paper_config"] else None
        notes = "; ".join(g["flags"] + ([f"{', '.join(g['counting'])} count"] if g["counting"] and
                                        g["counting"] != ["structured"] else []))
        rows.append([g["label"], g["networks"], *_stat_cells(c), *_stat_cells(a, sign=True),
                     f"{g['acc_fell']}/{g['acc_held']}/{g['acc_rose']}",
                     "–" if g.get("beyond_tau") is None else g["beyond_tau"],
                     f"{p['ratio_mean']:.2f} ({g['paper_config']})" if p else "–",
                     f"{p['dacc_mean']:+.2f}" if p else "–", notes])
    lines += [_md(header, rows), ""]
    split = [g for g in s["groups"] if len(g.get("by_agent_datasets", {})) == 2]
    if split:
        lines += ["### NEON on datasets its agent trained on vs datasets it never saw", "",
                  "Both are networks the agent never saw; the second are also datasets it never saw.", ""]
        rows = []
        for g in split:
            for name, v in g["by_agent_datasets"].items():
                rows.append([g["label"], name.replace("_", " "), v["datasets"], v["networks"],
                             _f(v["compression_mean"]), _f(v["acc_change_mean"], sign=True)])
        lines += [_md(["method", "datasets", "n datasets", "networks", "compr. mean", "dAcc mean"], rows), ""]
    return lines


def _aggregate_over_datasets(s: dict) -> list[str]:
    lines = ["## Aggregate over datasets", "", "Statistics of the per-dataset means.", ""]
    rows = []
    for g in s["groups"]:
        c, a = g["over_datasets"]["compression"], g["over_datasets"]["acc_change"]
        rows.append([g["label"], g["datasets"], *_stat_cells(c), *_stat_cells(a, sign=True)])
    lines += [_md(["method", "datasets", "compr. mean", "median", "std", "max", "min", "dAcc mean", "median", "std",
                   "max", "min"], rows), ""]
    return lines


def _per_dataset(s: dict, metric: str, title: str, paper_table: dict, sign: bool) -> list[str]:
    lines = [f"## {title}", "", "Ours, and in *italics* the paper's column for the same configuration where one "
             "exists (2020 single-dataset agents, held-out networks). Baselines' other settings are in the "
             "aggregate tables and summary.json.", ""]
    header, cols = ["dataset"], []
    for g in [g for g in s["groups"] if g.get("headline", True)]:
        header.append(g["label"])
        cols.append((g, None))
        if g["paper_config"]:
            header.append(f"*paper {g['paper_config']}*")
            cols.append((g, g["paper_config"]))
    rows = []
    for d in s["datasets"]:
        row = [d]
        for g, paper in cols:
            if paper is None:
                v = g["per_dataset"].get(d, {}).get(metric)
                row.append(_f(v, sign=sign) if v is not None else "–")
            else:
                v = paper_table.get(d, {}).get(paper)
                row.append(f"*{_f(v, sign=sign)}*" if v is not None else "–")
        rows.append(row)
    return lines + [_md(header, rows), ""]


def _width_reduction(s: dict) -> list[str]:
    lines = ["## Width reduction per hidden layer", "",
             "Mean original / pruned width at each hidden position, by network depth (as neon_spec.md §10.4).", ""]
    rows = []
    for g in s["groups"]:
        lw = g["layer_width_reduction"]
        rows.append([g["label"]] + [", ".join(f"{x:.2f}" for x in lw.get(d, lw.get(str(d), []))) or "–"
                                    for d in range(1, 7)])
    return lines + [_md(["method"] + [f"{d} hidden" for d in range(1, 7)], rows), ""]


def _wall_time(s: dict) -> list[str]:
    if not s.get("wall_seconds_per_method"):
        return []
    lines = ["## Wall time", "", "Per method: the sum of its cells' wall time (compiles included: one per "
             "program shape, paid by the first cell) and the median cell (about the run time alone).", ""]
    cells_n, med = s.get("cells_per_method", {}), s.get("median_cell_seconds_per_method", {})
    return lines + [_md(["method", "cells", "seconds", "median cell seconds"],
                        [[m, cells_n.get(m, "–"), f"{v:.1f}", _f(med.get(m), 1)]
                         for m, v in s["wall_seconds_per_method"].items()]), ""]


PAPER_NOTE = ("The published columns are the authors' committed 2020 results (neon_spec.md §10.0–10.2): "
              "**single-dataset agents** (trained on 24 networks of the same dataset), the paper's scales "
              "(widths 100–1000), the 2020 code (no warm-up, unnormalised state), LAP without fine-tuning, and "
              "'Prn' a sweep of magnitude-pruning percentages. Ours are agents trained across datasets at the "
              "preset's scales, so the columns are context, not a regression target. The repository holds no "
              "AMC or ADMM results (§10.4), so those rows have no published column; the original reported AMC's "
              "accuracy as max(pruned, unpruned) (§12 C3), ours reports the pruned network's.")


def render_report(summary: dict, plots: list[str] | None = None) -> str:
    """The Markdown of ``report.md``.

    Args:
      summary: `summarise_evaluation`'s dict.
      plots: image files beside the report, embedded in this order.

    Returns:
      The report: introduction, aggregates over networks and over datasets, per-dataset compression and
      accuracy change, width reduction per layer, wall time, the plots, and a note on the paper's numbers.
    """
    s = summary
    lines = _introduction(s) + _aggregate_over_networks(s) + _aggregate_over_datasets(s)
    lines += _per_dataset(s, "compression", "Compression per dataset (mean)", paper_results.PER_DATASET_COMPRESSION,
                          False)
    lines += _per_dataset(s, "acc_change_points", "Accuracy change per dataset (mean, points)",
                          paper_results.PER_DATASET_ACC_CHANGE, True)
    lines += _width_reduction(s) + _wall_time(s)
    for p in plots or []:
        lines += [f"![{p}]({p})", ""]
    lines += ["## About the paper's numbers", "", PAPER_NOTE, ""]
    return "\n".join(lines)
