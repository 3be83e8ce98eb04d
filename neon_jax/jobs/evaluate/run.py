"""Running an evaluation: its zoos, its agents, and every unfinished cell through `neon_jax.runner`."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from neon_jax import learn, programs, pruning, sharding
from neon_jax.agent import registry
from neon_jax.env import EnvConfig
from neon_jax.jobs.evaluate import zoos as zoo_sources
from neon_jax.jobs.evaluate.agents import LoadedAgent, check_unseen, load_agent
from neon_jax.jobs.evaluate.config import AGENT_METHODS, Cell, EvalConfig
from neon_jax.jobs.evaluate.plan import (
    candidates_search,
    make_folds,
    parse_candidates_setting,
    parse_setting,
    plan_cells,
)
from neon_jax.jobs.evaluate.report import write_report
from neon_jax.jobs.evaluate.store import (
    append_cell,
    append_rows,
    drop_orphan_rows,
    file_digest,
    network_records,
    prepare_output,
    read_cells,
    write_cells,
    write_settings,
)
from neon_jax.pool import EnvPool
from neon_jax.presets import Preset, get_preset
from neon_jax.search import NO_SEARCH, parse_search_spec


class _InputDigests:
    """cell -> digest of the files it runs on: its dataset's zoo (zoo.json, networks.npz) and, for neon and
    neon_best, its agent's files; None for a zoo not built yet."""

    def __init__(self, cfg: EvalConfig, out: Path, preset: Preset):
        self.cfg, self.out, self.preset = cfg, out, preset
        self.zoos: dict = {}
        self.agents: dict = {}

    def forget_zoos(self, names) -> None:
        for name in names:
            self.zoos.pop(name, None)

    def __call__(self, cell: Cell) -> str | None:
        if cell.dataset not in self.zoos:
            path = zoo_sources.locate_zoos([cell.dataset], self.cfg.zoo_root, self.out)[cell.dataset]
            self.zoos[cell.dataset] = None if path is None else file_digest([path / "zoo.json",
                                                                            path / "networks.npz"])
        zoo = self.zoos[cell.dataset]
        spec = _agent_spec(cell)
        if zoo is None or spec is None:
            return zoo
        if spec not in self.agents:
            stem = registry.checkpoint_stem(spec, self.preset)
            files = [stem.with_suffix(".npz"), stem.with_suffix(".json")]
            self.agents[spec] = file_digest(files) if all(f.exists() for f in files) else "missing"
        return f"{zoo}+{self.agents[spec]}"


def _run_cell(cell: Cell, view: EnvPool, preset: Preset, cfg: EvalConfig, agent: LoadedAgent | None) -> list[dict]:
    """One cell's `runner.RunResult.rows`: neon (one episode) or neon_best (the best of its candidates) with its
    agent, the random agent, or a baseline (fine-tuned)."""
    if cell.method in AGENT_METHODS:
        candidates = parse_candidates_setting(cell.setting)[1] if cell.method == "neon_best" else None
        search = parse_search_spec(candidates_search(cell.setting)) if cell.method == "neon_best" else NO_SEARCH
        return learn.run_agent(agent.agent, agent.actor, view, preset, EnvConfig(passes=cell.passes, cut=agent.cut),
                               seed=cell.seed, greedy=cell.greedy, batch_size=cfg.batch_size,
                               candidates=candidates, search=search if search.active else None).rows
    if cell.method == "random":
        return pruning.run_baseline("random", view, preset, passes=cell.passes, cut=cell.setting or "reinit",
                                      seed=cell.seed, batch_size=cfg.batch_size).rows
    return pruning.run_baseline(cell.method, view, preset, setting=parse_setting(cfg, cell.method, cell.setting),
                                  passes=cell.passes if cell.passes is not None else 4, seed=cell.seed,
                                  batch_size=cfg.batch_size, finetune=True, amc_config=cfg.amc_config()).rows


def _agent_spec(cell: Cell) -> str | None:
    """The agent spec of a neon / neon_best cell (None for the other methods)."""
    if cell.method == "neon":
        return cell.setting
    return parse_candidates_setting(cell.setting)[0] if cell.method == "neon_best" else None


def _resolve(cfg: EvalConfig, out: Path) -> tuple[EvalConfig, dict]:
    """The config with its zoo root and preset filled in, and dataset -> zoo folder (None: to build).

    Without a zoo root the zoos live under ``out/zoos``, which then stands as the zoo root.
    """
    located = zoo_sources.locate_zoos(cfg.datasets, cfg.zoo_root, out)
    zoo_root = str(zoo_sources.built_root(out)) if cfg.zoo_root is None else cfg.zoo_root
    resolved = dataclasses.replace(cfg, zoo_root=zoo_root, preset=zoo_sources.resolve_preset(cfg.preset, located))
    return resolved, located


def _folds(cfg: EvalConfig) -> list[list[str]] | None:
    """The unseen folds (`make_folds`), checked against `cfg.folds`; None for the heldout protocol."""
    if cfg.protocol != "unseen":
        return None
    folds = make_folds(cfg.datasets, cfg.fold_size, cfg.fold_seed)
    bad = [f for f in cfg.folds or () if not 0 <= f < len(folds)]
    if bad:
        raise ValueError(f"fold(s) {bad} do not exist: {len(folds)} folds of {cfg.fold_size}")
    return folds


def _load_needed(cfg: EvalConfig, located: dict, needed: list[str], prepared: dict, out: Path, preset: Preset,
                 progress: bool, say) -> dict:
    """Builds the missing zoos of `needed` (under ``out/zoos``) and loads every zoo of `needed`, in that order."""
    paths = {}
    for name in needed:
        if located[name] is None:
            say(f"evaluate: building a zoo of {cfg.zoo_networks} networks for {name} "
                f"-> {zoo_sources.built_root(out) / name}")
            paths[name] = zoo_sources.build_zoo(prepared[name], preset, out, cfg.zoo_networks, cfg.zoo_heldout,
                                                progress=progress)
        else:
            paths[name] = located[name]
    sharding.barrier("evaluate: zoos saved")  # process 0 wrote the zoos the others load
    return zoo_sources.load_zoos(paths, cfg.data_dir, {n: p for n, p in prepared.items() if n in paths})


def run_evaluation(cfg: EvalConfig, out_dir, *, overwrite: bool = False, progress: bool = True,
                   log=print, devices: int | None = None) -> dict:
    """Runs every unfinished cell of the grid, appending to ``out_dir/networks.csv``, then writes the report.

    Zoos come from `cfg.zoo_root`; the missing ones are built under ``out_dir/zoos`` (and loaded from there by
    later runs). Every cell's networks are a view of one pool padded to the shapes of all the zoos with
    unfinished cells, so each program compiles once per shape. `cfg` is not modified: ``settings.json`` records
    a copy with the zoo root and preset filled in.

    Args:
      cfg: the grid.
      out_dir: the results folder (`prepare_output`): re-running skips finished cells.
      overwrite: replace an evaluation of another identity in `out_dir`.
      progress: progress bars (zoo building, cells).
      log: called with one-line messages (None: quiet).
      devices: devices every method's batches (and the zoos it builds) are split over (`sharding.job_mesh`:
        default every device); the rows are the same on any count. ``settings.json`` (its ``run``), each cell
        of ``cells.jsonl`` and the summary record how many devices and processes ran. Under `jax.distributed`
        every process runs the grid and process 0 alone writes the folder.

    Returns:
      The summary (`summarise_evaluation`), also written to ``summary.json``.
    """
    with sharding.use_mesh(sharding.job_mesh(devices)) as mesh:
        return _evaluate(cfg, out_dir, overwrite, progress, log if sharding.is_writer() else None, mesh)


def _evaluate(cfg: EvalConfig, out_dir, overwrite: bool, progress: bool, log, mesh) -> dict:
    """`run_evaluation` on `mesh` (the enclosing `sharding.use_mesh` block's)."""
    say = log or (lambda *_: None)
    progress = progress and sharding.is_writer()
    out = Path(out_dir)
    cfg, located = _resolve(cfg, out)
    preset = get_preset(cfg.preset)
    zoo_sources.check_zoos(located, cfg, out)
    folds = _folds(cfg)
    prepared = zoo_sources.prepare_missing(located, preset, cfg.data_dir, cfg.zoo_root)
    cells = plan_cells(cfg, folds)
    writer = sharding.is_writer()  # several processes: each reads the folder, process 0 alone writes it
    if writer:
        out = prepare_output(cfg, out, overwrite=overwrite)
    sharding.barrier("evaluate: folder ready")
    done = read_cells(out)
    digests = _InputDigests(cfg, out, preset)
    stale = [c.key for c in cells if c.key in done and done[c.key].get("inputs") != digests(c)]
    sharding.barrier("evaluate: folder read")
    if stale:
        say(f"evaluate: {len(stale)} finished cells ran on other zoo or agent files than these; running them again")
        for key in stale:
            del done[key]
        if writer:
            write_cells(out, done)
    if writer:
        drop_orphan_rows(out, done)
    todo = [c for c in cells if c.key not in done]
    run = sharding.run_record(mesh)
    if writer:
        write_settings(out, cfg, folds, len(cells), run)
    say(f"evaluate: {len(cells)} cells ({len(cells) - len(todo)} already done) on {run['devices']} "
        f"{run['platform']} device{'s' if run['devices'] > 1 else ''} -> {out}")
    if todo:
        _run_cells(cfg, todo, folds, located, prepared, out, preset, progress, say, digests)
    summary = write_report(out) if writer else None
    sharding.barrier("evaluate: report written")
    return summary if writer else json.loads((out / "summary.json").read_text())


def _run_cells(cfg: EvalConfig, todo: list[Cell], folds, located: dict, prepared: dict, out: Path, preset: Preset,
               progress: bool, say, digests) -> None:
    """Runs `todo` in order, recording each cell as soon as it finishes (with `digests` of its inputs)."""
    agents = {spec: load_agent(spec, preset) for spec in dict.fromkeys(_agent_spec(c) for c in todo)
              if spec is not None}
    if cfg.protocol == "unseen":  # fail before any work on an agent that cannot be used
        for c in todo:
            if c.method in AGENT_METHODS:
                check_unseen(agents[_agent_spec(c)], c, folds)
    needed = sorted({c.dataset for c in todo})
    loaded = _load_needed(cfg, located, needed, prepared, out, preset, progress, say)
    digests.forget_zoos(needed)  # the zoos built just now
    which = "heldout" if cfg.protocol == "heldout" else "all"
    pool = EnvPool.from_zoos([loaded[n] for n in needed], which, cfg.taus[0] if cfg.taus else 5.0, preset)
    zoos = {n: loaded[n][0] for n in needed}
    by_dataset = {}
    for i, (d, _) in enumerate(pool.names):
        by_dataset.setdefault(d, []).append(i)
    views = {d: pool.subset(idx) for d, idx in by_dataset.items()}
    bar = tqdm(todo, desc="evaluate", unit="cell", disable=not progress)
    for cell in bar:
        # a safe point: no compiled program is in use; clears them when over the bounds (`programs.LIMITS`)
        programs.checkpoint(say)
        bar.set_postfix_str(f"{cell.method} {cell.setting[-24:]} p{cell.passes or '-'} "
                            f"tau{'' if cell.tau is None else f'{cell.tau:g}'} s{cell.seed} {cell.dataset} "
                            f"[programs: {programs.status()}]")
        view = views[cell.dataset]
        if cell.tau is not None:
            view = dataclasses.replace(view, tau=cell.tau)
        agent = agents.get(_agent_spec(cell))
        t0 = time.perf_counter()
        rows = _run_cell(cell, view, preset, cfg, agent)
        seconds = time.perf_counter() - t0
        records = network_records(cell, rows, cfg.protocol, zoos, agent)
        if not sharding.is_writer():
            continue
        append_rows(out, records)
        state = programs.stats()
        append_cell(out, cell, len(records), seconds, digests(cell),
                    {**{k: state[k] for k in ("memory_maps", "compiled", "compiled_since_clear", "clears")},
                     **sharding.run_record(sharding.active_mesh())})
    bar.close()
