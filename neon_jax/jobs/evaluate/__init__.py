"""Evaluation protocols, metrics, result tables and plots (neon_spec.md §1.4, §1.5, §10).

Two protocols:

* ``heldout`` — per dataset, every method prunes the 6 held-out networks of its zoo (the paper's tables, §10.2).
* ``unseen`` — the datasets are shuffled (seeded) and cut into folds of 6 (§1.5); the NEON agent of fold f was
  trained on the other folds' training networks and prunes ALL networks of fold f's datasets.

An evaluation is a grid of *cells* (method x setting x tau x passes x seed x greedy x dataset, plus the fold).
Each finished cell appends one row per network to ``networks.csv`` and a line to ``cells.jsonl``, so a re-run
of the same folder skips finished cells (and a wider grid adds only the new ones). ``write_report`` turns
``networks.csv`` into ``report.md`` (our numbers next to the paper's), ``summary.json`` and plots.

    cfg = EvalConfig(datasets=["no2", "pm10"], zoo_root="runs/zoo_cpu", methods=["neon", "random"], taus=[5])
    run_evaluation(cfg, "runs/eval")   # -> runs/eval/{settings.json, networks.csv, cells.jsonl, report.md, ...}

A dataset without a zoo under ``zoo_root`` (every dataset, without a ``zoo_root``) gets one built under
``runs/eval/zoos/<dataset>/`` (30 networks, 6 held out, by default), which later runs load instead of rebuilding.

Methods: ``neon`` (a trained agent per tau, and per fold for ``unseen``), ``random`` (uniform actions in the
same environment, fine-tuned after every step: the 2020 random agent) and the other baselines of
`neon_jax.pruning`. Compile once per shape: every cell's networks are a view of one pool padded to the shapes
of all the evaluation's zoos.

Modules: `config` (the grid, its cells), `plan` (folds, suites, settings, agents per tau, the cells in run
order), `zoos` (found or built), `agents` (loading, the unseen check), `store` (the results folder's files),
`run` (`run_evaluation`), `summary` (statistics and groups), `report` (``report.md``), `plots`.
"""

from neon_jax.jobs.evaluate.agents import LoadedAgent, check_unseen, load_agent
from neon_jax.jobs.evaluate.config import ZOO_HELDOUT, ZOO_NETWORKS, Cell, EvalConfig, known_methods
from neon_jax.jobs.evaluate.plan import (
    agent_key,
    format_setting,
    make_folds,
    method_settings,
    parse_setting,
    plan_cells,
    resolve_agent_spec,
    suite_datasets,
)
from neon_jax.jobs.evaluate.plots import PARETO_PLOT, SCATTER_PLOT, write_plots
from neon_jax.jobs.evaluate.report import render_report, write_report
from neon_jax.jobs.evaluate.run import run_evaluation
from neon_jax.jobs.evaluate.store import (
    NETWORK_FIELDS,
    OUTPUT_FILES,
    append_cell,
    append_rows,
    drop_orphan_rows,
    network_records,
    prepare_output,
    read_cells,
    read_networks,
    write_settings,
)
from neon_jax.jobs.evaluate.summary import (
    ACC_TOLERANCE,
    GROUP_KEYS,
    SWEEP_METHODS,
    aggregate,
    group_label,
    layer_width_reduction,
    method_groups,
    pareto_front,
    per_dataset_means,
    summarise_evaluation,
)
from neon_jax.jobs.evaluate.zoos import BUILT_ZOOS, built_root, locate_zoos

__all__ = [
    "ACC_TOLERANCE", "BUILT_ZOOS", "Cell", "EvalConfig", "GROUP_KEYS", "LoadedAgent", "NETWORK_FIELDS",
    "OUTPUT_FILES", "PARETO_PLOT", "SCATTER_PLOT", "SWEEP_METHODS", "ZOO_HELDOUT", "ZOO_NETWORKS", "agent_key",
    "aggregate", "append_cell", "append_rows", "built_root", "check_unseen", "drop_orphan_rows", "format_setting",
    "group_label", "known_methods", "layer_width_reduction", "load_agent", "locate_zoos", "make_folds",
    "method_groups", "method_settings", "network_records", "parse_setting", "pareto_front", "per_dataset_means",
    "plan_cells", "prepare_output", "read_cells", "read_networks", "render_report", "resolve_agent_spec",
    "run_evaluation", "suite_datasets", "summarise_evaluation", "write_plots", "write_report", "write_settings",
]
