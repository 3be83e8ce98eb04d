"""Statistics of ``networks.csv``: method groups, their aggregates, and the numbers of ``summary.json``.

A *group* is one (method, setting, tau, passes, greedy); every (network, seed) row of it is one observation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from neon_jax import paper_results, pruning
from neon_jax.jobs.evaluate.config import AGENT_METHODS
from neon_jax.jobs.evaluate.plan import candidates_search, format_setting, parse_candidates_setting

ACC_TOLERANCE = 1e-6  # points: |change| at or below this counts as "held" (identical accuracies give exactly 0)
GROUP_KEYS = ("method", "setting", "tau", "passes", "greedy")
SWEEP_METHODS = ("magnitude",)  # methods whose settings are also pooled into one "sweep" group (the paper's "Prn")


def _present(v) -> bool:
    return v is not None and v != "" and not (isinstance(v, float) and math.isnan(v))


def group_label(method, setting, tau, passes, greedy, agent_names: dict | None = None) -> str:
    """A short name for a method group, e.g. "neon p4 tau5", "lap 3", "random p4".

    Args:
      method, setting, tau, passes, greedy: the group (empty or NaN tau / passes are left out).
      agent_names: neon setting -> short agent name, to tell several agents apart.

    Returns:
      The label.
    """
    parts = [method]
    if method == "neon_best":
        spec, k = parse_candidates_setting(setting)
        if agent_names and spec in agent_names:
            parts[0] = f"neon_best[{agent_names[spec]}]"
        parts.append(f"k{k}")
        if candidates_search(setting) != "none":
            parts.append(f"search {candidates_search(setting)}")
    elif method == "neon":
        if agent_names and setting in agent_names:
            parts[0] = f"neon[{agent_names[setting]}]"
    elif setting not in ("", None) and not (method == "random" and setting == "reinit"):
        parts.append(str(setting))
    if _present(passes):
        parts.append(f"p{int(passes)}")
    if _present(tau):
        parts.append(f"tau{float(tau):g}")
    if greedy and int(greedy):
        parts.append("greedy")
    return " ".join(parts)


def _stats(values) -> dict:
    """mean, median, std (ddof 1, as pandas and the paper's tables), max, min; NaN std for one value."""
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "median": float(np.median(v)),
            "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan"), "max": float(v.max()), "min": float(v.min())}


def aggregate(df: pd.DataFrame) -> dict:
    """Aggregates of one method group's rows (every network x seed is one observation).

    Args:
      df: the group's ``networks.csv`` rows.

    Returns:
      {networks, datasets, seeds, over_networks: {compression: stats, acc_change: stats}, over_datasets: {the
      same, of the per-dataset means}, acc_fell, acc_held, acc_rose (counts over rows, `ACC_TOLERANCE`),
      compression_of_total_params, beyond_tau (rows whose test accuracy fell by more than their tau; None
      for methods without one)}; stats = {mean, median, std, max, min}.
    """
    per_ds = df.groupby("dataset")[["compression", "acc_change_points"]].mean()
    d = df["acc_change_points"].to_numpy(float)
    tau = pd.to_numeric(df["tau"], errors="coerce").to_numpy(float)
    return {
        "networks": int(len(df)), "datasets": int(df["dataset"].nunique()), "seeds": int(df["seed"].nunique()),
        "over_networks": {"compression": _stats(df["compression"]), "acc_change": _stats(d)},
        "over_datasets": {"compression": _stats(per_ds["compression"]),
                          "acc_change": _stats(per_ds["acc_change_points"])},
        "acc_fell": int((d < -ACC_TOLERANCE).sum()), "acc_held": int((np.abs(d) <= ACC_TOLERANCE).sum()),
        "acc_rose": int((d > ACC_TOLERANCE).sum()),
        "compression_of_total_params": float(df["params_before"].sum() / max(df["params_after"].sum(), 1)),
        "beyond_tau": None if np.isnan(tau).all() else int((d < -tau - ACC_TOLERANCE).sum()),
    }


def per_dataset_means(df: pd.DataFrame) -> dict:
    """Per-dataset means of a group's rows.

    Returns:
      dataset -> {compression, acc_change_points, networks} (means over networks and seeds).
    """
    g = df.groupby("dataset")
    return {d: {"compression": float(s["compression"].mean()), "acc_change_points": float(s["acc_change_points"].mean()),
                "networks": int(len(s))} for d, s in g}


def layer_width_reduction(df: pd.DataFrame) -> dict:
    """Width reduction per hidden layer (§10.4) over a group's networks.

    Returns:
      depth -> mean original / new width at each hidden position.
    """
    out = {}
    for depth, s in df.groupby("depth"):
        ratios = np.array([[float(x) for x in str(r).split("-")] for r in s["layer_width_ratio"] if str(r)])
        if len(ratios):
            out[int(depth)] = [float(x) for x in ratios.mean(0)]
    return out


def _setting_order(setting):
    """Numeric settings in numeric order (lap 1, 3, 10), others after them by name."""
    try:
        return (0, float(setting), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(setting))


def method_groups(df: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """Splits the rows into method groups.

    Returns:
      (group, rows) pairs, group = {method, setting, tau, passes, greedy} (tau / passes None where unset);
      neon first, then random, then the other methods by name, each by setting, passes, tau, greedy.
    """
    keys = df[list(GROUP_KEYS)].copy()
    keys["tau"] = keys["tau"].astype(float)
    keys["passes"] = keys["passes"].astype(float)
    df = df.assign(_tau=keys["tau"], _passes=keys["passes"])
    groups = []
    for key, sub in df.groupby(["method", "setting", "_tau", "_passes", "greedy"], dropna=False, sort=False):
        method, setting, tau, passes, greedy = key
        groups.append(({"method": method, "setting": setting, "tau": None if math.isnan(tau) else float(tau),
                        "passes": None if math.isnan(passes) else int(passes), "greedy": bool(int(greedy))}, sub))
    order = {m: i for i, m in enumerate(["neon", "neon_best", "random"])}
    groups.sort(key=lambda g: (order.get(g[0]["method"], 2), g[0]["method"], _setting_order(g[0]["setting"]),
                               g[0]["passes"] or 0, g[0]["tau"] or 0, g[0]["greedy"]))
    return groups


def _agent_names(df: pd.DataFrame) -> dict:
    """neon setting (agent spec) -> short name, only when several agents appear."""
    specs = sorted(set(df.loc[df["method"] == "neon", "setting"]) |
                   {parse_candidates_setting(s)[0] for s in df.loc[df["method"] == "neon_best", "setting"]})
    if len(specs) <= 1:
        return {}
    return {s: (Path(s).parent.name if Path(s).name == "checkpoint" else Path(s).name) for s in specs}


def _trained_on(sub: pd.DataFrame):
    """Which rows' datasets the row's agent trained on (a bool Series)."""
    return sub["agent_trained_on_dataset"].astype(str).isin(["1", "1.0"])


def _neon_flags(group: dict, sub: pd.DataFrame, settings: dict | None) -> list[str]:
    """Notes on a neon group: an agent trained at another tau, or on these datasets (heldout protocol)."""
    flags = []
    agent_taus = sorted({float(t) for t in sub["agent_tau"].dropna() if str(t) != ""})
    if agent_taus and group["tau"] is not None and any(t != group["tau"] for t in agent_taus):
        flags.append(f"agent trained at tau {', '.join(f'{t:g}' for t in agent_taus)}")
    if settings and settings.get("identity", {}).get("protocol") == "heldout":
        seen = sorted(set(sub.loc[_trained_on(sub), "dataset"]))
        if seen:
            flags.append(f"agent trained on {len(seen)} of these datasets' training networks")
    return flags


def _by_agent_datasets(sub: pd.DataFrame) -> dict:
    """A neon group's networks of datasets its agent trained on vs datasets it never saw."""
    seen = _trained_on(sub)
    out = {}
    for name, part in (("trained_on", sub[seen]), ("never_seen", sub[~seen])):
        if len(part):
            out[name] = {"datasets": int(part["dataset"].nunique()), "networks": int(len(part)),
                         "compression_mean": float(part["compression"].mean()),
                         "acc_change_mean": float(part["acc_change_points"].mean())}
    return out


def _group_summary(group: dict, sub: pd.DataFrame, settings: dict | None, agent_names: dict) -> dict:
    neon = group["method"] in AGENT_METHODS
    label = group_label(group["method"], group["setting"], group["tau"], group["passes"], group["greedy"],
                        agent_names)
    return {**group, "label": label,
            "paper_config": paper_results.paper_config(group["method"], group["passes"] or 0, group["tau"],
                                                       group["setting"]),
            "flags": _neon_flags(group, sub, settings) if neon else [],
            "counting": sorted(set(sub["counting"]) - {""}),
            "by_agent_datasets": _by_agent_datasets(sub) if neon else {},
            **aggregate(sub), "per_dataset": per_dataset_means(sub), "layer_width_reduction": layer_width_reduction(sub)}


def _sweep_groups(df: pd.DataFrame, groups: list[dict]) -> list[dict]:
    """One pooled group per `SWEEP_METHODS` method evaluated at several settings (the paper's "Pruning" row, §9)."""
    out = []
    for method in sorted({g["method"] for g in groups}):
        swept = [g for g in groups if g["method"] == method and g["setting"] not in ("", None)]
        if method in SWEEP_METHODS and len(swept) > 1:
            sub = df[df["method"] == method]
            g = {"method": method, "setting": "sweep", "tau": None, "passes": None, "greedy": False}
            out.append({**g, "label": f"{method} sweep ({len(swept)} settings)",
                        "paper_config": paper_results.paper_config(method, 0, None, "sweep"), "flags": [],
                        "counting": sorted(set(sub["counting"]) - {""}), **aggregate(sub),
                        "per_dataset": per_dataset_means(sub), "layer_width_reduction": layer_width_reduction(sub)})
    return out


def _mark_headlines(groups: list[dict]) -> None:
    """Sets "headline": the groups of the per-dataset tables and the scatter plot (sweeps stay in the aggregates):
    neon and the random agents, paper configurations, single-setting methods and the baselines' defaults."""
    defaults = {m: format_setting(v) for m, v in pruning.DEFAULT_SETTING.items() if v is not None}
    by_method = {}
    for g in groups:
        by_method.setdefault(g["method"], set()).add(g["setting"])
    for g in groups:
        g["headline"] = bool(g["method"] in (*AGENT_METHODS, "random", "random_no_ft") or g["paper_config"]
                             or len(by_method[g["method"]]) == 1 or g["setting"] == defaults.get(g["method"]))


def _agents_summary(df: pd.DataFrame) -> dict:
    """neon setting -> {path, trained_at_tau, trained_on_evaluated_datasets}."""
    agents = {}
    neon = df[df["method"].isin(AGENT_METHODS)]
    specs = [s if m == "neon" else parse_candidates_setting(s)[0] for m, s in zip(neon["method"], neon["setting"])]
    for spec, sub in neon.groupby(pd.Series(specs, index=neon.index, dtype=object)):
        seen = sorted(set(sub.loc[_trained_on(sub), "dataset"]))
        agents[spec] = {"path": sorted(set(sub["agent"].astype(str))), "trained_at_tau": sorted(
            {float(t) for t in sub["agent_tau"].dropna() if str(t) != ""}), "trained_on_evaluated_datasets": seen}
    return agents


def summarise_evaluation(df: pd.DataFrame, settings: dict | None = None, cells: dict | None = None) -> dict:
    """Every number of the report, as a dict (what ``summary.json`` holds).

    Args:
      df: ``networks.csv`` (`read_networks`).
      settings: ``settings.json`` (its identity sets the protocol the flags refer to).
      cells: ``cells.jsonl`` records (`read_cells`), for the wall time per method.

    Returns:
      {settings, run (the devices and processes of the latest run), networks, datasets, agents,
      groups (see `aggregate`, plus label, paper_config, flags, counting,
      by_agent_datasets, per_dataset, layer_width_reduction, headline), wall_seconds_per_method,
      cells_per_method, median_cell_seconds_per_method}.
    """
    agent_names = _agent_names(df)
    groups = [_group_summary(g, sub, settings, agent_names) for g, sub in method_groups(df)]
    groups += _sweep_groups(df, groups)
    _mark_headlines(groups)
    wall, per_cell = {}, {}
    for c in (cells or {}).values():
        wall[c["method"]] = wall.get(c["method"], 0.0) + float(c["seconds"])
        per_cell.setdefault(c["method"], []).append(float(c["seconds"]))
    return {"settings": settings or {}, "run": (settings or {}).get("run", {}), "networks": int(len(df)),
            "datasets": sorted(df["dataset"].unique()), "agents": _agents_summary(df),
            "groups": groups, "wall_seconds_per_method": wall,
            "cells_per_method": {m: len(v) for m, v in per_cell.items()},
            "median_cell_seconds_per_method": {m: float(np.median(v)) for m, v in per_cell.items()}}


def pareto_front(points) -> list[tuple[float, float]]:
    """The points that no other point beats on both compression and accuracy change.

    Args:
      points: (compression, accuracy change) pairs.

    Returns:
      The front, sorted by compression.
    """
    pts = sorted({(float(x), float(y)) for x, y in points}, key=lambda p: (-p[0], -p[1]))
    front, best_y = [], -math.inf
    for x, y in pts:
        if y > best_y:
            front.append((x, y))
            best_y = y
    return sorted(front)
