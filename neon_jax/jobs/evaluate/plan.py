"""The grid as cells: dataset suites, unseen-dataset folds, settings, agents per tau, and the run order."""

from __future__ import annotations

import itertools

import numpy as np

from neon_jax import paper_results, pruning
from neon_jax import zoo as zoo_lib
from neon_jax.choices import SUITES
from neon_jax.jobs.evaluate.config import Cell, EvalConfig


def make_folds(names, size: int = 6, seed: int = 0) -> list[list[str]]:
    """Cuts dataset names into the unseen-dataset folds (§1.5), as the original's runner but seeded.

    With the 23 cpu zoos (22 NEON datasets and ionosphere) and seed 0, fold 0 is the one the shipped agent
    was trained without (its checkpoint records its training datasets).

    Args:
      names: dataset names (order and repeats do not matter).
      size: datasets per fold (the last fold may be smaller).
      seed: seeds ``np.random.default_rng``, which permutes the sorted names.

    Returns:
      The folds: consecutive chunks of `size` of the permuted names.
    """
    names = sorted(set(names))
    if size < 1:
        raise ValueError(f"fold size must be >= 1, got {size}")
    order = np.random.default_rng(seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    return [shuffled[i:i + size] for i in range(0, len(shuffled), size)]


def suite_datasets(suite: str, zoo_root) -> list[str]:
    """The datasets of a named suite that have a zoo under `zoo_root`.

    Args:
      suite: "neon" (the paper's 28 datasets) or "all" (every zoo).
      zoo_root: folder of zoos.

    Returns:
      Dataset names, in the order `neon_jax.zoo.find_zoos` lists them.
    """
    found = [p.name for p in zoo_lib.find_zoos(zoo_root)]
    if suite == "all":
        return found
    if suite == "neon":
        names = [n for n in found if n in paper_results.DATASETS]
        if not names:
            raise FileNotFoundError(f"no zoo of the paper's datasets under {zoo_root}")
        return names
    raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")


def format_setting(setting) -> str:
    """A baseline setting as cell keys and ``networks.csv`` spell it ("" for None, "0.8", "3", "a=1,b=2")."""
    if setting is None:
        return ""
    if isinstance(setting, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(setting.items()))
    if isinstance(setting, float):
        return f"{setting:g}"
    return str(setting)


def method_settings(cfg: EvalConfig, method: str) -> list:
    """A baseline's settings in this grid: the configured ones, else `pruning.default_settings(method)`."""
    return list(cfg.settings.get(method) or pruning.default_settings(method))


def parse_setting(cfg: EvalConfig, method: str, text: str):
    """The setting object behind a cell's setting string.

    Returns:
      The configured (or default) setting of `method` whose `format_setting` is `text`; None for ""; `text`
      itself if none matches.
    """
    if not text:
        return None
    for setting in method_settings(cfg, method):
        if format_setting(setting) == text:
            return setting
    return text


def candidates_setting(spec: str, k: int, search: str = "none") -> str:
    """A neon_best cell's setting: its agent spec, its number of sampled episodes and the search after them
    (`neon_jax.search.search_spec`; "none" is left out), "pretrained:5 k=8", "pretrained:5 k=8 search=2x16:final"."""
    setting = f"{spec} k={int(k)}"
    return setting if search == "none" else f"{setting} search={search}"


def parse_candidates_setting(setting: str) -> tuple[str, int]:
    """(agent spec, K) of a neon_best setting (`candidates_setting`)."""
    head = setting.partition(" search=")[0]
    spec, _, k = head.rpartition(" k=")
    return spec, int(k)


def candidates_search(setting: str) -> str:
    """The search of a neon_best setting (`candidates_setting`): its spec, or "none"."""
    return setting.partition(" search=")[2] or "none"


def agent_key(tau: float, fold: int | None) -> str:
    """The key of `EvalConfig.agents` for (tau, fold): "5" or "5@1"."""
    return f"{tau:g}" if fold is None else f"{tau:g}@{fold}"


def resolve_agent_spec(agents: dict, tau: float, fold: int | None) -> str:
    """The agent that evaluates (tau, fold).

    Args:
      agents: `EvalConfig.agents`.
      tau: the evaluated tolerance.
      fold: the unseen fold, or None.

    Returns:
      The path under "<tau>@<fold>", else under "<tau>", else "pretrained:<tau>" (the shipped agent trained
      nearest this tau).
    """
    for key in ([agent_key(tau, fold)] if fold is not None else []) + [agent_key(tau, None)]:
        if key in agents:
            return str(agents[key])
    return f"pretrained:{tau:g}"


def plan_cells(cfg: EvalConfig, folds: list[list[str]] | None) -> list[Cell]:
    """Every cell of the grid, in run order.

    Args:
      cfg: the grid.
      folds: the unseen folds (`make_folds`); None for the heldout protocol.

    Returns:
      Cells by method, setting (neon: tau), passes, seed, greedy, then dataset. Neon cells carry their
      agent spec as setting; the baselines that ignore passes (`pruning.USES_PASSES`) carry none.
    """
    if cfg.protocol == "heldout":
        targets = [(d, None) for d in cfg.datasets]
    else:
        chosen = range(len(folds)) if cfg.folds is None else cfg.folds
        targets = [(d, f) for f in chosen for d in folds[f]]
    cells = []
    for method in cfg.methods:
        if method == "neon":
            greedy = [False, True] if cfg.greedy else [False]
            for tau, passes, seed, g, (d, f) in itertools.product(cfg.taus, cfg.passes, cfg.seeds, greedy, targets):
                spec = resolve_agent_spec(cfg.agents, float(tau), f)
                cells.append(Cell("neon", spec, float(tau), int(passes), int(seed), g, d, f))
            continue
        if method == "neon_best":  # its candidates hold the greedy episode: no greedy variant
            for tau, k, search, passes, seed, (d, f) in itertools.product(cfg.taus, cfg.candidates, cfg.searches,
                                                                          cfg.passes, cfg.seeds, targets):
                spec = candidates_setting(resolve_agent_spec(cfg.agents, float(tau), f), k, search)
                cells.append(Cell("neon_best", spec, float(tau), int(passes), int(seed), False, d, f))
            continue
        if method == "random":
            settings, passes_list = [cfg.random_cut], cfg.passes
        else:
            settings = method_settings(cfg, method) or [None]
            passes_list = cfg.passes if method in pruning.USES_PASSES else [None]
        for setting, passes, seed, (d, f) in itertools.product(settings, passes_list, cfg.seeds, targets):
            cells.append(Cell(method, format_setting(setting), None, None if passes is None else int(passes),
                              int(seed), False, d, f))
    return cells
