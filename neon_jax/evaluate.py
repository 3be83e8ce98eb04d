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

Methods: ``neon`` (a trained agent per tau, and per fold for ``unseen``), ``random`` (uniform actions in the
same environment, fine-tuned after every step: the 2020 random agent) and the baselines of
`neon_jax.baselines` (imported only when asked for). Compile once per shape: every cell's networks are a view
of one pool padded to the shapes of all the evaluation's zoos.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from neon_jax import paper_results
from neon_jax.choices import PROTOCOLS

BUILTIN_METHODS = ("neon", "random")
ACC_TOLERANCE = 1e-6  # points: |change| at or below this counts as "held" (identical accuracies give exactly 0)
OUTPUT_FILES = ("settings.json", "networks.csv", "cells.jsonl", "report.md", "summary.json",
                "compression_vs_accuracy.png", "pareto_tau.png")

NETWORK_FIELDS = (
    "cell", "protocol", "fold", "dataset", "network", "split", "method", "setting", "tau", "passes", "seed",
    "greedy", "agent", "agent_tau", "agent_trained_on_dataset", "depth", "widths_before", "widths_after",
    "params_before", "params_after", "compression", "test_acc_before", "test_acc_after", "acc_change_points",
    "layer_width_ratio", "counting", "seconds",
)


# ----------------------------------------------------------------------------------------------------------
# Datasets and folds.


def make_folds(names, size: int = 6, seed: int = 0) -> list[list[str]]:
    """Unseen-dataset folds: the sorted names, permuted by ``np.random.default_rng(seed)``, cut into
    consecutive chunks of `size` (the last may be smaller), as the original's runner (§1.5) but seeded.

    With the 23 cpu zoos (22 NEON datasets and ionosphere) and seed 0, fold 0 is the one the shipped agent
    was trained without (/work/runs/fold.txt).
    """
    names = sorted(set(names))
    if size < 1:
        raise ValueError(f"fold size must be >= 1, got {size}")
    order = np.random.default_rng(seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    return [shuffled[i:i + size] for i in range(0, len(shuffled), size)]


def suite_datasets(suite: str, zoo_root) -> list[str]:
    """Named dataset suites present under `zoo_root`: "neon" = the paper's 28 datasets that have a zoo;
    "all" = every zoo."""
    from neon_jax import zoo as zoo_lib

    found = [p.name for p in zoo_lib.find_zoos(zoo_root)]
    if suite == "all":
        return found
    if suite == "neon":
        names = [n for n in found if n in paper_results.DATASETS]
        if not names:
            raise FileNotFoundError(f"no zoo of the paper's datasets under {zoo_root}")
        return names
    raise ValueError(f"unknown suite {suite!r}; choose 'neon' or 'all'")


# ----------------------------------------------------------------------------------------------------------
# Configuration and cells.


@dataclasses.dataclass
class EvalConfig:
    """One evaluation grid.

    Attributes:
      datasets: dataset names (each needs a zoo ``zoo_root/<name>/``). For ``unseen`` the folds are made over
        these names.
      zoo_root: folder of zoos.
      data_dir: folder(s) of the CSV datasets (default: the path recorded in each zoo).
      protocol: "heldout" or "unseen".
      methods: "neon", "random" and/or baseline names.
      taus: tolerances for neon (points).
      passes: passes per episode (neon, random and the baselines that take passes).
      seeds: evaluation seeds (sampled actions, fine-tuning order, baseline randomness).
      greedy: also evaluate neon with argmax actions (the original samples, §1.4).
      agents: "<tau>" or "<tau>@<fold>" -> agent path ("pretrained" = the shipped agent); missing taus use
        the shipped agent trained nearest that tau ("pretrained:<tau>"), and the report flags a training tau
        that differs from the evaluated tau.
      preset: preset name (default: the zoos').
      fold_size / fold_seed: unseen folds; folds: which folds to evaluate (default all).
      settings: method -> list of settings (default: `baselines.default_settings(method)`).
      random_cut: the cut of the random agent ("reinit": the paper's environment).
      batch_size: networks per compiled batch.
    """

    datasets: list
    zoo_root: str
    data_dir: str | None = None
    protocol: str = "heldout"
    methods: list = dataclasses.field(default_factory=lambda: ["neon", "random"])
    taus: list = dataclasses.field(default_factory=lambda: [5.0])
    passes: list = dataclasses.field(default_factory=lambda: [4])
    seeds: list = dataclasses.field(default_factory=lambda: [0])
    greedy: bool = False
    agents: dict = dataclasses.field(default_factory=dict)
    preset: str | None = None
    fold_size: int = 6
    fold_seed: int = 0
    folds: list | None = None
    settings: dict = dataclasses.field(default_factory=dict)
    random_cut: str = "reinit"
    batch_size: int = 32

    def identity(self) -> dict:
        """The settings a results folder is tied to (changing them needs another folder or --overwrite);
        the grid's extent (methods, taus, passes, seeds, datasets, agents) may grow between runs."""
        doc = {"protocol": self.protocol, "zoo_root": str(Path(self.zoo_root).resolve()), "preset": self.preset,
               "random_cut": self.random_cut, "batch_size": self.batch_size}
        if self.protocol == "unseen":
            doc.update(fold_size=self.fold_size, fold_seed=self.fold_seed, folds_over=sorted(self.datasets))
        return doc


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work: one method setting on the networks of one dataset."""

    method: str
    setting: str
    tau: float | None
    passes: int | None
    seed: int
    greedy: bool
    dataset: str
    fold: int | None

    @property
    def key(self) -> str:
        tau = "" if self.tau is None else f"{self.tau:g}"
        passes = "" if self.passes is None else str(self.passes)
        fold = "" if self.fold is None else str(self.fold)
        return (f"{self.method}|{self.setting}|tau={tau}|passes={passes}|seed={self.seed}|"
                f"greedy={int(self.greedy)}|fold={fold}|{self.dataset}")


def _fmt_setting(setting) -> str:
    if setting is None:
        return ""
    if isinstance(setting, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(setting.items()))
    if isinstance(setting, float):
        return f"{setting:g}"
    return str(setting)


def _baselines():
    try:
        from neon_jax import baselines
    except ImportError as err:  # pragma: no cover - only before baselines.py exists
        raise ValueError(f"baseline methods need neon_jax.baselines, which cannot be imported: {err}") from None
    return baselines


def known_methods() -> list[str]:
    """neon, random and whatever `neon_jax.baselines.BASELINES` offers (if it imports)."""
    names = list(BUILTIN_METHODS)
    try:
        from neon_jax import baselines
        names += [m for m in baselines.BASELINES if m not in names]
    except ImportError:
        pass
    return names


def _baseline_uses_passes(method: str) -> bool:
    """Whether a baseline's result depends on `passes` (the random agents do; one-shot pruners do not)."""
    b = _baselines()
    uses = getattr(b, "USES_PASSES", None)
    if uses is not None:
        return method in uses
    return method.startswith("random")


def agent_key(tau: float, fold: int | None) -> str:
    return f"{tau:g}" if fold is None else f"{tau:g}@{fold}"


def resolve_agent_spec(agents: dict, tau: float, fold: int | None) -> str:
    """The agent path for (tau, fold): "<tau>@<fold>", then "<tau>", then the shipped agent."""
    for key in ([agent_key(tau, fold)] if fold is not None else []) + [agent_key(tau, None)]:
        if key in agents:
            return str(agents[key])
    return f"pretrained:{tau:g}"  # the shipped agent trained nearest this tau


def plan_cells(cfg: EvalConfig, folds: list[list[str]] | None) -> list[Cell]:
    """Every cell of the grid, in run order (method, setting, tau, passes, seed, greedy, then datasets)."""
    if cfg.protocol == "heldout":
        targets = [(d, None) for d in cfg.datasets]
    else:
        chosen = range(len(folds)) if cfg.folds is None else cfg.folds
        targets = [(d, f) for f in chosen for d in folds[f]]
    cells = []
    for method in cfg.methods:
        if method == "neon":
            for tau in cfg.taus:
                for passes in cfg.passes:
                    for seed in cfg.seeds:
                        for greedy in ([False, True] if cfg.greedy else [False]):
                            for d, f in targets:
                                spec = resolve_agent_spec(cfg.agents, float(tau), f)
                                cells.append(Cell("neon", spec, float(tau), int(passes), int(seed), greedy, d, f))
            continue
        if method == "random":
            settings, passes_list = [cfg.random_cut], cfg.passes
        else:
            b = _baselines()
            settings = cfg.settings.get(method) or list(b.default_settings(method)) or [None]
            passes_list = cfg.passes if _baseline_uses_passes(method) else [None]
        for setting in settings:
            for passes in passes_list:
                for seed in cfg.seeds:
                    for d, f in targets:
                        cells.append(Cell(method, _fmt_setting(setting), None,
                                          None if passes is None else int(passes), int(seed), False, d, f))
    return cells


# ----------------------------------------------------------------------------------------------------------
# Running.


def _parse_setting(method: str, text: str, cfg: EvalConfig):
    """The setting object to pass to the baseline: the configured one whose string form is `text`."""
    if not text:
        return None
    b = _baselines()
    for s in (cfg.settings.get(method) or list(b.default_settings(method))):
        if _fmt_setting(s) == text:
            return s
    return text


class _Agents:
    """Loads each agent once; knows its training tau, cut and datasets."""

    def __init__(self, preset):
        self.preset = preset
        self._cache = {}

    def get(self, spec: str):
        if spec not in self._cache:
            from neon_jax import pruner

            path, tau_wanted = spec, None
            if spec.startswith("pretrained"):
                path, _, wanted = spec.partition(":")
                tau_wanted = float(wanted) if wanted else None
            else:
                p = Path(spec)
                if p.is_dir():
                    p = p / "checkpoint"
                if p.suffix in (".npz", ".json"):
                    p = p.with_suffix("")
                path = str(p)
            agent, actor, _, _, meta = pruner.load_agent(path, self.preset, tau_wanted)
            settings = meta.get("settings", {})
            env = meta.get("env", settings.get("env", {}))
            tau = meta.get("tau", settings.get("tau"))
            self._cache[spec] = {
                "agent": agent, "actor": actor, "tau": None if tau is None else float(tau),
                "cut": env.get("cut", "reinit"), "datasets": meta.get("datasets", settings.get("datasets")),
                "episodes": meta.get("episodes"), "path": path,
            }
        return self._cache[spec]


def _subset(pool, idx):
    """A view of `pool` with only the entries `idx` (same data arrays and shapes: no recompilation)."""
    import jax

    idx = np.asarray(idx)
    take = lambda a: a[idx]  # noqa: E731
    return dataclasses.replace(pool, names=[pool.names[i] for i in idx],
                               variables=jax.tree_util.tree_map(take, pool.variables),
                               archs=jax.tree_util.tree_map(take, pool.archs), dataset_of=pool.dataset_of[idx],
                               base_test_accuracy=pool.base_test_accuracy[idx])


def _layer_ratio(before: str, after: str) -> str:
    wb = [int(w) for w in str(before).split("-") if w != ""]
    wa = [int(w) for w in str(after).split("-") if w != ""]
    return "-".join(f"{b / max(a, 1):.4g}" for b, a in zip(wb, wa))


def _records(cell: Cell, rows: list[dict], protocol: str, zoos: dict, agent_info: dict | None,
             cell_key: str) -> list[dict]:
    out = []
    for r in rows:
        zoo = zoos[r["dataset"]]
        i = int(r["network"])
        wb, wa = str(r["widths_before"]), str(r["widths_after"])
        rec = {
            "cell": cell_key, "protocol": protocol, "fold": "" if cell.fold is None else cell.fold,
            "dataset": r["dataset"], "network": i, "split": "heldout" if zoo.heldout[i] else "train",
            "method": cell.method, "setting": cell.setting, "tau": "" if cell.tau is None else cell.tau,
            "passes": "" if cell.passes is None else cell.passes, "seed": cell.seed, "greedy": int(cell.greedy),
            "agent": "", "agent_tau": "", "agent_trained_on_dataset": "",
            "depth": len([w for w in wb.split("-") if w]), "widths_before": wb, "widths_after": wa,
            "params_before": int(r["params_before"]), "params_after": int(r["params_after"]),
            "compression": float(r["compression"]), "test_acc_before": float(r["test_acc_before"]),
            "test_acc_after": float(r["test_acc_after"]), "acc_change_points": float(r["acc_change_points"]),
            "layer_width_ratio": _layer_ratio(wb, wa), "counting": r.get("counting", "structured"),
            "seconds": float(r.get("seconds", float("nan"))),
        }
        if agent_info is not None:
            rec["agent"] = agent_info["path"]
            rec["agent_tau"] = "" if agent_info["tau"] is None else agent_info["tau"]
            ds = agent_info["datasets"]
            rec["agent_trained_on_dataset"] = "" if ds is None else int(r["dataset"] in ds)
        out.append(rec)
    return out


def _load_done(out: Path) -> dict:
    done = {}
    path = out / "cells.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                doc = json.loads(line)
                done[doc["key"]] = doc
    return done


def _clean_orphans(out: Path, done: dict) -> None:
    """Drops rows of cells that were appended but never recorded as done (an interrupted run)."""
    path = out / "networks.csv"
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if r["cell"] in done]
    if len(keep) != len(rows):
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, NETWORK_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(keep)
        tmp.replace(path)


def prepare_output(cfg: EvalConfig, out_dir, overwrite: bool = False) -> Path:
    """Creates the output folder or checks that an existing one holds an evaluation of the same identity
    (`EvalConfig.identity`); `overwrite` deletes a previous evaluation's files first."""
    out = Path(out_dir)
    settings_path = out / "settings.json"
    if settings_path.exists():
        previous = json.loads(settings_path.read_text()).get("identity")
        if previous != cfg.identity() and not overwrite:
            diff = {k: (previous.get(k) if previous else None, v) for k, v in cfg.identity().items()
                    if not previous or previous.get(k) != v}
            raise FileExistsError(f"{out} holds an evaluation with different settings ({diff}); pass --overwrite "
                                  f"to replace it or choose another --out")
        if overwrite and previous != cfg.identity():
            for name in OUTPUT_FILES:
                (out / name).unlink(missing_ok=True)
    elif overwrite and out.exists():
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_evaluation(cfg: EvalConfig, out_dir, *, overwrite: bool = False, progress: bool = True,
                   log=print) -> dict:
    """Runs every unfinished cell of the grid, appending to ``out_dir/networks.csv``, then writes the report.

    Returns the summary dict (also written to ``summary.json``).
    """
    from tqdm.auto import tqdm

    from neon_jax import learn, zoo as zoo_lib
    from neon_jax.env import EnvConfig, validate_tau
    from neon_jax.pool import EnvPool
    from neon_jax.presets import get_preset

    say = log or (lambda *_: None)
    if cfg.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {cfg.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if not cfg.datasets or len(set(cfg.datasets)) != len(cfg.datasets):
        raise ValueError(f"the evaluation needs distinct dataset names, got {cfg.datasets}")
    known = known_methods()
    unknown = [m for m in cfg.methods if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    cfg.taus = [validate_tau(t) for t in cfg.taus]
    paths = zoo_lib.find_zoos(cfg.zoo_root, list(cfg.datasets))  # clear error for a missing zoo
    folds = make_folds(cfg.datasets, cfg.fold_size, cfg.fold_seed) if cfg.protocol == "unseen" else None
    if folds is not None and cfg.folds is not None:
        bad = [f for f in cfg.folds if not 0 <= f < len(folds)]
        if bad:
            raise ValueError(f"fold(s) {bad} do not exist: {len(folds)} folds of {cfg.fold_size}")
    if cfg.preset is None:
        with open(Path(paths[0]) / "zoo.json") as fh:
            cfg.preset = json.load(fh)["preset"]["name"]
    preset = get_preset(cfg.preset)
    cells = plan_cells(cfg, folds)
    out = prepare_output(cfg, out_dir, overwrite=overwrite)
    done = _load_done(out)
    _clean_orphans(out, done)
    todo = [c for c in cells if c.key not in done]
    settings_doc = {"identity": cfg.identity(), "config": dataclasses.asdict(cfg), "folds": folds,
                    "cells_planned": len(cells)}
    (out / "settings.json").write_text(json.dumps(settings_doc, indent=1, default=str))
    say(f"evaluate: {len(cells)} cells ({len(cells) - len(todo)} already done) -> {out}")

    if todo:
        needed = sorted({c.dataset for c in todo})
        loaded = {}
        for p in paths:
            if p.name in needed:
                z, prepared = zoo_lib.load_zoo_with_data(p, cfg.data_dir)
                if z.preset.name != preset.name:
                    raise ValueError(f"the zoo of {p.name!r} was built with preset {z.preset.name!r}, not "
                                     f"{preset.name!r}")
                loaded[p.name] = (z, prepared)
        which = "heldout" if cfg.protocol == "heldout" else "all"
        pairs = [loaded[n] for n in needed]
        pool = EnvPool.from_zoos(pairs, which, cfg.taus[0] if cfg.taus else 5.0, preset)
        zoos = {n: loaded[n][0] for n in needed}
        by_dataset = {}
        for i, (d, _) in enumerate(pool.names):
            by_dataset.setdefault(d, []).append(i)
        views = {d: _subset(pool, idx) for d, idx in by_dataset.items()}
        agents = _Agents(preset)
        if "neon" in cfg.methods:  # fail before any work on an agent that cannot be used
            for c in todo:
                if c.method == "neon":
                    _check_agent(agents.get(c.setting), c, folds, cfg.protocol)
        bar = tqdm(todo, desc="evaluate", unit="cell", disable=not progress)
        for cell in bar:
            bar.set_postfix_str(f"{cell.method} {cell.setting[-24:]} p{cell.passes or '-'} "
                                f"tau{'' if cell.tau is None else f'{cell.tau:g}'} s{cell.seed} {cell.dataset}")
            view = views[cell.dataset]
            if cell.tau is not None:
                view = dataclasses.replace(view, tau=cell.tau)
            t0 = time.perf_counter()
            agent_info = None
            if cell.method == "neon":
                agent_info = agents.get(cell.setting)
                rows = learn.run_agent(agent_info["agent"], agent_info["actor"], view, preset,
                                       EnvConfig(passes=cell.passes, cut=agent_info["cut"]), seed=cell.seed,
                                       greedy=cell.greedy, batch_size=cfg.batch_size).rows
            elif cell.method == "random":
                rows = _baselines().run_baseline("random", view, preset, passes=cell.passes,
                                                 cut=cell.setting or "reinit", seed=cell.seed,
                                                 batch_size=cfg.batch_size).rows
            else:
                rows = _baselines().run_baseline(cell.method, view, preset,
                                                 setting=_parse_setting(cell.method, cell.setting, cfg),
                                                 passes=cell.passes if cell.passes is not None else 4,
                                                 seed=cell.seed, batch_size=cfg.batch_size, finetune=True).rows
            seconds = time.perf_counter() - t0
            records = _records(cell, rows, cfg.protocol, zoos, agent_info, cell.key)
            _append_rows(out / "networks.csv", records)
            with open(out / "cells.jsonl", "a") as fh:
                fh.write(json.dumps({"key": cell.key, **dataclasses.asdict(cell), "networks": len(records),
                                     "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        bar.close()
    return write_report(out)


def _check_agent(info: dict, cell: Cell, folds, protocol: str) -> None:
    if protocol != "unseen":
        return
    fold_sets = set(folds[cell.fold])
    if info["datasets"] is None:
        raise ValueError(f"agent {info['path']} records no training datasets, so it cannot be checked against "
                         f"unseen fold {cell.fold} ({', '.join(sorted(fold_sets))})")
    seen = fold_sets & set(info["datasets"])
    if seen:
        raise ValueError(
            f"agent {info['path']} (tau {cell.tau:g}) was trained on {', '.join(sorted(seen))}, which are in unseen "
            f"fold {cell.fold}; train one without them (`neon-jax train-agent --unseen {','.join(folds[cell.fold])}`)"
            f" and pass --agent {agent_key(cell.tau, cell.fold)}=PATH")


def _append_rows(path: Path, records: list[dict]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, NETWORK_FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(records)
        fh.flush()


# ----------------------------------------------------------------------------------------------------------
# Metrics.


def read_networks(out_dir):
    """``networks.csv`` as a pandas DataFrame (typed)."""
    import pandas as pd

    df = pd.read_csv(Path(out_dir) / "networks.csv", dtype={"setting": str, "agent": str, "counting": str,
                                                            "widths_before": str, "widths_after": str,
                                                            "layer_width_ratio": str})
    for col in ("setting", "agent", "counting", "layer_width_ratio"):
        df[col] = df[col].fillna("")
    return df


GROUP_KEYS = ("method", "setting", "tau", "passes", "greedy")


def group_label(method, setting, tau, passes, greedy, agent_names: dict | None = None) -> str:
    """A short name for a method group, e.g. "neon p4 tau5", "lap k=3", "random p4"."""
    parts = [method]
    if method == "neon":
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


def _present(v) -> bool:
    return v is not None and v != "" and not (isinstance(v, float) and math.isnan(v))


def _stats(values) -> dict:
    """mean, median, std (ddof 1, as pandas and the paper's tables), max, min; NaN std for one value."""
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "median": float(np.median(v)),
            "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan"), "max": float(v.max()), "min": float(v.min())}


def aggregate(df) -> dict:
    """Aggregates of one method group's rows (every network x seed is one observation).

    Returns {networks, datasets, seeds, over_networks: {compression: stats, acc_change: stats},
    over_datasets: {same, of the per-dataset means}, acc_fell, acc_held, acc_rose (counts over rows),
    compression_of_total_params}.
    """
    per_ds = df.groupby("dataset")[["compression", "acc_change_points"]].mean()
    d = df["acc_change_points"].to_numpy(float)
    return {
        "networks": int(len(df)), "datasets": int(df["dataset"].nunique()), "seeds": int(df["seed"].nunique()),
        "over_networks": {"compression": _stats(df["compression"]), "acc_change": _stats(d)},
        "over_datasets": {"compression": _stats(per_ds["compression"]), "acc_change": _stats(per_ds["acc_change_points"])},
        "acc_fell": int((d < -ACC_TOLERANCE).sum()), "acc_held": int((np.abs(d) <= ACC_TOLERANCE).sum()),
        "acc_rose": int((d > ACC_TOLERANCE).sum()),
        "compression_of_total_params": float(df["params_before"].sum() / max(df["params_after"].sum(), 1)),
    }


def per_dataset_means(df) -> dict:
    """dataset -> {compression, acc_change_points, networks} (means over networks and seeds)."""
    g = df.groupby("dataset")
    return {d: {"compression": float(s["compression"].mean()), "acc_change_points": float(s["acc_change_points"].mean()),
                "networks": int(len(s))} for d, s in g}


def layer_width_reduction(df) -> dict:
    """depth -> mean original/new width at each hidden position (§10.4), over the group's networks."""
    out = {}
    for depth, s in df.groupby("depth"):
        ratios = np.array([[float(x) for x in str(r).split("-")] for r in s["layer_width_ratio"] if str(r)])
        if len(ratios):
            out[int(depth)] = [float(x) for x in ratios.mean(0)]
    return out


def _groups(df):
    keys = df[list(GROUP_KEYS)].copy()
    keys["tau"] = keys["tau"].astype(float)
    keys["passes"] = keys["passes"].astype(float)
    df = df.assign(_tau=keys["tau"], _passes=keys["passes"])
    groups = []
    for key, sub in df.groupby(["method", "setting", "_tau", "_passes", "greedy"], dropna=False, sort=False):
        method, setting, tau, passes, greedy = key
        groups.append(({"method": method, "setting": setting, "tau": None if math.isnan(tau) else float(tau),
                        "passes": None if math.isnan(passes) else int(passes), "greedy": bool(int(greedy))}, sub))
    order = {m: i for i, m in enumerate(["neon", "random"])}
    groups.sort(key=lambda g: (order.get(g[0]["method"], 2), g[0]["method"], _setting_order(g[0]["setting"]),
                               g[0]["passes"] or 0, g[0]["tau"] or 0, g[0]["greedy"]))
    return groups


def _setting_order(setting):
    """Numeric settings in numeric order (lap 1, 3, 10), others after them by name."""
    try:
        return (0, float(setting), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(setting))


# ----------------------------------------------------------------------------------------------------------
# Report.


def _md(header, rows) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _f(x, digits=2, sign=False):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def summarise_evaluation(df, settings: dict | None = None, cells: dict | None = None) -> dict:
    """Every number of the report, as a dict (what ``summary.json`` holds)."""
    agent_names = _agent_names(df)
    groups = []
    for g, sub in _groups(df):
        label = group_label(g["method"], g["setting"], g["tau"], g["passes"], g["greedy"], agent_names)
        agent_taus = sorted({float(t) for t in sub["agent_tau"].dropna() if str(t) != ""})
        flags = []
        if g["method"] == "neon" and agent_taus and g["tau"] is not None and any(t != g["tau"] for t in agent_taus):
            flags.append(f"agent trained at tau {', '.join(f'{t:g}' for t in agent_taus)}")
        if g["method"] == "neon" and settings and settings.get("identity", {}).get("protocol") == "heldout":
            seen = sorted(set(sub.loc[sub["agent_trained_on_dataset"].astype(str).isin(["1", "1.0"]), "dataset"]))
            if seen:
                flags.append(f"agent trained on {len(seen)} of these datasets' training networks")
        counting = sorted(set(sub["counting"]) - {""})
        trained_on = {}
        if g["method"] == "neon":  # held-out networks of datasets the agent trained on vs datasets it never saw
            seen = sub["agent_trained_on_dataset"].astype(str).isin(["1", "1.0"])
            for name, part in (("trained_on", sub[seen]), ("never_seen", sub[~seen])):
                if len(part):
                    trained_on[name] = {"datasets": int(part["dataset"].nunique()), "networks": int(len(part)),
                                        "compression_mean": float(part["compression"].mean()),
                                        "acc_change_mean": float(part["acc_change_points"].mean())}
        paper = paper_results.paper_config(g["method"], g["passes"] or 0, g["tau"], g["setting"])
        groups.append({**g, "label": label, "paper_config": paper, "flags": flags, "counting": counting,
                       "by_agent_datasets": trained_on,
                       **aggregate(sub), "per_dataset": per_dataset_means(sub),
                       "layer_width_reduction": layer_width_reduction(sub)})
    for method in sorted({g["method"] for g in groups}):
        swept = [g for g in groups if g["method"] == method and g["setting"] not in ("", None)]
        if method in SWEEP_METHODS and len(swept) > 1:  # the paper's "Pruning" row pools its sweep (§9)
            sub = df[df["method"] == method]
            g = {"method": method, "setting": "sweep", "tau": None, "passes": None, "greedy": False}
            groups.append({**g, "label": f"{method} sweep ({len(swept)} settings)",
                           "paper_config": paper_results.paper_config(method, 0, None, "sweep"), "flags": [],
                           "counting": sorted(set(sub["counting"]) - {""}), **aggregate(sub),
                           "per_dataset": per_dataset_means(sub), "layer_width_reduction": layer_width_reduction(sub)})
    defaults = _default_settings()
    by_method = {}
    for g in groups:
        by_method.setdefault(g["method"], set()).add(g["setting"])
    for g in groups:  # the groups of the per-dataset tables and the scatter plot (sweeps stay in the aggregates)
        g["headline"] = bool(g["method"] in ("neon", "random", "random_no_ft") or g["paper_config"]
                             or len(by_method[g["method"]]) == 1 or g["setting"] == defaults.get(g["method"]))
    wall, per_cell = {}, {}
    for c in (cells or {}).values():
        wall[c["method"]] = wall.get(c["method"], 0.0) + float(c["seconds"])
        per_cell.setdefault(c["method"], []).append(float(c["seconds"]))
    agents = {}
    for spec, sub in df[df["method"] == "neon"].groupby("setting"):
        seen = sorted(set(sub.loc[sub["agent_trained_on_dataset"].astype(str).isin(["1", "1.0"]), "dataset"]))
        agents[spec] = {"path": sorted(set(sub["agent"].astype(str))), "trained_at_tau": sorted(
            {float(t) for t in sub["agent_tau"].dropna() if str(t) != ""}), "trained_on_evaluated_datasets": seen}
    return {"settings": settings or {}, "networks": int(len(df)), "datasets": sorted(df["dataset"].unique()),
            "agents": agents,
            "groups": groups, "wall_seconds_per_method": wall,
            "cells_per_method": {m: len(v) for m, v in per_cell.items()},
            "median_cell_seconds_per_method": {m: float(np.median(v)) for m, v in per_cell.items()}}


SWEEP_METHODS = ("magnitude",)


def _default_settings() -> dict:
    """method -> the baseline's default setting as it appears in networks.csv ({} without baselines)."""
    try:
        from neon_jax import baselines
    except ImportError:
        return {}
    return {m: _fmt_setting(v) for m, v in getattr(baselines, "DEFAULT_SETTING", {}).items() if v is not None}


def _agent_names(df) -> dict:
    """neon setting (agent spec) -> short name, only when several agents appear."""
    specs = sorted(set(df.loc[df["method"] == "neon", "setting"]))
    if len(specs) <= 1:
        return {}
    return {s: (Path(s).parent.name if Path(s).name == "checkpoint" else Path(s).name) for s in specs}


def write_report(out_dir) -> dict:
    """Writes ``report.md``, ``summary.json`` and the plots from ``networks.csv``; returns the summary."""
    out = Path(out_dir)
    if not (out / "networks.csv").exists():
        raise FileNotFoundError(f"{out} holds no networks.csv (nothing evaluated yet)")
    df = read_networks(out)
    settings = json.loads((out / "settings.json").read_text()) if (out / "settings.json").exists() else {}
    cells = _load_done(out)
    summary = summarise_evaluation(df, settings, cells)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    plots = write_plots(df, summary, out)
    (out / "report.md").write_text(render_report(summary, plots))
    return summary


def render_report(summary: dict, plots: list[str] | None = None) -> str:
    s = summary
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
    lines += ["## Aggregate over networks", "",
              "Mean / median / std / max / min over every (network, seed); fell / held / rose = networks whose test "
              "accuracy fell / did not change / rose. Paper = the 2020 single-dataset agents' column (neon_spec.md "
              "§10.1; see the note at the end).", ""]
    header = ["method", "nets", "compr. mean", "median", "std", "max", "min", "dAcc mean", "median", "std", "max",
              "min", "fell/held/rose", "paper compr. mean", "paper dAcc mean", "notes"]
    rows = []
    for g in s["groups"]:
        c, a = g["over_networks"]["compression"], g["over_networks"]["acc_change"]
        p = paper_results.AGGREGATE.get(g["paper_config"]) if g["paper_config"] else None
        notes = "; ".join(g["flags"] + ([f"{', '.join(g['counting'])} count"] if g["counting"] and
                                        g["counting"] != ["structured"] else []))
        rows.append([g["label"], g["networks"], _f(c["mean"]), _f(c["median"]), _f(c["std"]), _f(c["max"]),
                     _f(c["min"]), _f(a["mean"], sign=True), _f(a["median"], sign=True), _f(a["std"]),
                     _f(a["max"], sign=True), _f(a["min"], sign=True),
                     f"{g['acc_fell']}/{g['acc_held']}/{g['acc_rose']}",
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
    lines += ["## Aggregate over datasets", "", "Statistics of the per-dataset means.", ""]
    rows = []
    for g in s["groups"]:
        c, a = g["over_datasets"]["compression"], g["over_datasets"]["acc_change"]
        rows.append([g["label"], g["datasets"], _f(c["mean"]), _f(c["median"]), _f(c["std"]), _f(c["max"]),
                     _f(c["min"]), _f(a["mean"], sign=True), _f(a["median"], sign=True), _f(a["std"]),
                     _f(a["max"], sign=True), _f(a["min"], sign=True)])
    lines += [_md(["method", "datasets", "compr. mean", "median", "std", "max", "min", "dAcc mean", "median", "std",
                   "max", "min"], rows), ""]
    for metric, title, paper_table, sign in (
            ("compression", "Compression per dataset (mean)", paper_results.PER_DATASET_COMPRESSION, False),
            ("acc_change_points", "Accuracy change per dataset (mean, points)", paper_results.PER_DATASET_ACC_CHANGE,
             True)):
        lines += [f"## {title}", "", "Ours, and in *italics* the paper's column for the same configuration where one "
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
        lines += [_md(header, rows), ""]
    lines += ["## Width reduction per hidden layer", "",
              "Mean original / pruned width at each hidden position, by network depth (as neon_spec.md §10.4).", ""]
    rows = []
    for g in s["groups"]:
        lw = g["layer_width_reduction"]
        rows.append([g["label"]] + [", ".join(f"{x:.2f}" for x in lw.get(d, lw.get(str(d), []))) or "–"
                                    for d in range(1, 7)])
    lines += [_md(["method"] + [f"{d} hidden" for d in range(1, 7)], rows), ""]
    if s.get("wall_seconds_per_method"):
        lines += ["## Wall time", "", "Per method: the sum of its cells' wall time (compiles included: one per "
                  "program shape, paid by the first cell) and the median cell (about the run time alone).", ""]
        cells_n, med = s.get("cells_per_method", {}), s.get("median_cell_seconds_per_method", {})
        lines += [_md(["method", "cells", "seconds", "median cell seconds"],
                      [[m, cells_n.get(m, "–"), f"{v:.1f}", _f(med.get(m), 1)]
                       for m, v in s["wall_seconds_per_method"].items()]), ""]
    for p in plots or []:
        lines += [f"![{p}]({p})", ""]
    lines += ["## About the paper's numbers", "",
              "The published columns are the authors' committed 2020 results (neon_spec.md §10.0–10.2): "
              "**single-dataset agents** (trained on 24 networks of the same dataset), the paper's scales "
              "(widths 100–1000), the 2020 code (no warm-up, unnormalised state), LAP without fine-tuning, and "
              "'Prn' a sweep of magnitude-pruning percentages. Ours are agents trained across datasets at the "
              "preset's scales, so the columns are context, not a regression target.", ""]
    return "\n".join(lines)


def write_plots(df, summary: dict, out: Path) -> list[str]:
    """compression_vs_accuracy.png (every network of the headline groups) and pareto_tau.png (group means:
    neon over tau, baselines over their settings, our Pareto front, the paper's points). Returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in summary["groups"] if g["setting"] != "sweep"]
    subs = {(g["method"], g["setting"], g["tau"], g["passes"], g["greedy"]): sub for g, sub in _groups(df)}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    written = []
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, g in enumerate([g for g in groups if g.get("headline", True)]):
        sub = subs[(g["method"], g["setting"], g["tau"], g["passes"], g["greedy"])]
        ax.scatter(sub["compression"], sub["acc_change_points"], s=10, alpha=0.5, color=colours[i % len(colours)],
                   label=g["label"])
    ax.set_xscale("log")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("compression (original / pruned parameters, log scale)")
    ax.set_ylabel("test accuracy change (points)")
    ax.set_title("every pruned network")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "compression_vs_accuracy.png", dpi=110)
    plt.close(fig)
    written.append("compression_vs_accuracy.png")

    fig, ax = plt.subplots(figsize=(7.5, 5))
    points, series = [], {}
    for g in groups:
        x, y = g["over_networks"]["compression"]["mean"], g["over_networks"]["acc_change"]["mean"]
        points.append((x, y))
        if g["method"] == "neon":  # a line over tau
            key = (f"neon p{g['passes']}{' greedy' if g['greedy'] else ''}", g["setting"])
            series.setdefault(key, []).append((x, y, f"τ={g['tau']:g}"))
        else:  # a line over the baseline's settings
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
    fig.savefig(out / "pareto_tau.png", dpi=110)
    plt.close(fig)
    written.append("pareto_tau.png")
    return written


def pareto_front(points) -> list[tuple[float, float]]:
    """The points (compression, accuracy change) that no other point beats on both, by compression."""
    pts = sorted(set((float(x), float(y)) for x, y in points), key=lambda p: (-p[0], -p[1]))
    front, best_y = [], -math.inf
    for x, y in pts:
        if y > best_y:
            front.append((x, y))
            best_y = y
    return sorted(front)
