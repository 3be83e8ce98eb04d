"""neon-jax: prune dense classifiers with NEON's trained agent, build zoos of base networks, train and evaluate agents
against the paper's baselines, and export pruned networks to PyTorch / ONNX."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from neon_jax.choices import (
    ARCHITECTURES,
    CUTS,
    DEFAULT_CANDIDATES,
    PROTOCOLS,
    REWARD_TRANSFORMS,
    REWARDS,
    SELECTIONS,
    SUITES,
    ZOO_SPLITS,
)
from neon_jax.presets import PRESETS, get_preset

_STARTED = time.perf_counter()  # near the process's start (JAX is imported later): what a user waits includes it


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="folder(s) of *.csv / *.csv.gz datasets (default: $NEON_JAX_DATA_DIR; "
                             "scikit-learn's iris, wine, breast_cancer, digits need none)")


def cmd_datasets(args) -> int:
    from neon_jax import data

    infos = data.list_datasets(args.data_dir)
    rows = [(i.name, i.task, i.rows, i.features, i.classes or "-", i.source) for i in infos]
    print(format_table(["name", "task", "rows", "features", "classes", "source"], rows))
    return 0


def cmd_zoo(args) -> int:
    from neon_jax import zoo as zoo_lib

    preset = get_preset(args.preset)
    names = [n for n in args.dataset.split(",") if n]
    out = Path(args.out)
    if args.epochs is not None and args.epochs < 0:
        raise CLIError(f"--epochs must be >= 0, got {args.epochs}")
    if args.n < 1:
        raise CLIError(f"--n must be >= 1, got {args.n}")
    if args.heldout is None:  # the paper's share (6 of 30), as many as fit beside at least one training network
        args.heldout = min(round(args.n / 5), args.n - 1)
        if args.n != 30:
            print(f"holding out {args.heldout} of {args.n} networks (the paper's 6 of 30; --heldout to choose)")
    elif not 0 <= args.heldout < args.n:
        raise CLIError(f"--heldout (n_heldout) must be in 0..{args.n - 1} for --n {args.n}, got {args.heldout}")
    for name in names:
        if (out / name / "zoo.json").exists() and not args.overwrite:
            raise CLIError(f"{out / name} already holds a zoo; pass --overwrite to replace it")
    for name in names:
        prepared = zoo_lib.prepare_data(name, preset, seed=args.seed, data_dir=args.data_dir)
        epochs = preset.train_epochs if args.epochs is None else args.epochs
        start = time.perf_counter()
        with tqdm(total=epochs, desc=f"{name}: {args.n} networks", unit="epoch", disable=args.quiet) as bar:
            def progress(done, total):  # total: the epochs of every width bucket
                bar.total = total
                bar.update(done - bar.n)

            zoo = zoo_lib.build_zoo(prepared, preset, n=args.n, n_heldout=args.heldout, seed=args.seed,
                                    epochs=epochs, progress=progress)
        path = zoo_lib.save_zoo(zoo, out, overwrite=args.overwrite)
        s = prepared.splits
        majority = max((s.y_test == c).mean() for c in range(prepared.n_classes))
        rows = []
        for i in range(len(zoo)):
            d = zoo.describe(i)
            rows.append((i, "held-out" if d["heldout"] else "train", "-".join(map(str, d["widths"])),
                         d["params"], f"{d['train_accuracy']:.3f}", f"{d['test_accuracy']:.3f}"))
        if not args.quiet:
            print(format_table(["net", "split", "widths", "params", "train acc", "test acc"], rows))
        print(f"{name}: {len(zoo)} networks in {time.perf_counter() - start:.1f}s, test accuracy "
              f"mean {zoo.test_accuracy.mean(dtype='float64'):.3f} (majority class {majority:.3f}) -> {path}")
    return 0


ROLLOUT_POLICIES = ("random", "pretrained", "PATH", "keep:F", "while:F:D")


def _rollout_policy(spec: str):
    """Checks a --policy before any work: "random", "pretrained", a rule or an agent file."""
    from neon_jax import policies

    if spec in ("random", "pretrained"):
        return spec
    if policies.is_rule(spec):
        policies.parse_rule(spec)
        return spec
    if Path(spec).with_suffix(".json").exists() or Path(spec).is_dir():
        return spec
    raise CLIError(f"unknown policy {spec!r}; choose one of: {', '.join(ROLLOUT_POLICIES)} (PATH: an agent file "
                   f"of `neon-jax train-agent`)")


def cmd_rollout(args) -> int:
    """Prunes every network of one or more zoos with one policy (`neon_jax.runner`) and reports widths,
    parameters and test accuracy before and after."""
    import jax

    from neon_jax import env as env_lib
    from neon_jax import learn, policies, pruning, runner
    from neon_jax import zoo as zoo_lib
    from neon_jax.agent import registry
    from neon_jax.pool import EnvPool
    from neon_jax.rollout import policy_program

    policy = _rollout_policy(args.policy)
    tau = env_lib.validate_tau(args.tau)
    out = Path(args.json)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} already exists; pass --overwrite to replace it")
    names = _csv_names(args.dataset)
    if not names or len(set(names)) != len(names):
        raise CLIError(f"--dataset needs distinct dataset names, got {args.dataset!r}")
    root = Path(args.zoo)
    pairs = []
    for name in names:
        folder = root / name
        if not (folder / "zoo.json").is_file():
            raise CLIError(f"no zoo for {name!r}: {folder} holds no zoo.json "
                           f"(build one with `neon-jax zoo --dataset {name} --out {root}`)")
        z = zoo_lib.load_zoo(folder)
        if z.dataset != name:
            raise CLIError(f"{folder} holds a zoo of {z.dataset!r}, not of {name!r}")
        # the same rows and splits the zoo was trained on (checked against the zoo's digest below)
        prepared = zoo_lib.prepare_data(name, z.preset, seed=int(z.meta["data_seed"]), data_dir=args.data_dir)
        pairs.append((z, prepared))
    if args.preset is not None:
        preset = get_preset(args.preset)
    else:
        zoo_presets = sorted({z.preset.name for z, _ in pairs})
        if len(zoo_presets) > 1:
            raise CLIError(f"the zoos were built with different presets ({', '.join(zoo_presets)}); pass --preset")
        preset = pairs[0][0].preset
    if sum(len(z.indices(args.which)) for z, _ in pairs) == 0:
        raise CLIError(f"the zoos hold no {args.which!r} networks")
    pool = EnvPool.from_zoos(pairs, args.which, tau, preset)
    config = env_lib.EnvConfig(passes=args.passes, cut=args.cut)
    print(f"rollout: {len(pool)} networks ({', '.join(names)}), policy {policy}, {args.passes} pass(es), "
          f"batches of {min(args.batch, len(pool))}", file=sys.stderr, flush=True)
    if policy == "random":
        result = pruning.run_baseline("random", pool, preset, passes=args.passes, cut=args.cut, seed=args.seed,
                                        batch_size=args.batch, progress=not args.quiet)
    elif policies.is_rule(policy):
        rule = policies.parse_rule(policy)
        result = runner.run(lambda dims: (policy_program(env_lib.NeonEnv(config, dims, preset), policies.rule_policy),
                                          rule), pool, seed=args.seed, batch_size=args.batch, progress=not args.quiet)
    else:
        agent, actor, _, description, _ = registry.load_agent(policy, preset, tau)
        print(f"agent: {description}", file=sys.stderr)
        result = learn.run_agent(agent, actor, pool, preset, config, seed=args.seed, batch_size=args.batch,
                                 progress=not args.quiet)
    zoos = {z.dataset: z for z, _ in pairs}
    rows = [dict(r, split="held-out" if zoos[r["dataset"]].heldout[r["network"]] else "train") for r in result.rows]
    table = [(r["dataset"], r["network"], r["split"], f"{r['widths_before']} -> {r['widths_after']}",
              f"{r['params_before']} -> {r['params_after']}", f"x{r['compression']:.2f}",
              f"{r['test_acc_before']:.3f} -> {r['test_acc_after']:.3f}", f"{r['return']:.0f}") for r in rows]
    print(format_table(["dataset", "net", "split", "widths", "params", "compr.", "test acc", "return"], table))
    totals = runner.summarise(rows)
    print(f"{len(rows)} networks: compression mean x{totals['compression_mean']:.2f}, median "
          f"x{totals['compression_median']:.2f}; test accuracy change mean {totals['acc_change_mean']:+.2f} points; "
          f"compiled in {result.compile_seconds:.1f}s, ran in {result.run_seconds:.2f}s")
    print(f"{result.compiles} program(s), one per width bucket: " + ", ".join(
        f"w {g['w_max']} x {g['max_hidden']} layers: {g['networks']} networks" for g in result.groups))
    device = jax.devices()[0]
    doc = {
        "command": "rollout",
        "settings": {"datasets": names, "zoo": str(root), "data_dir": args.data_dir, "which": args.which,
                     "policy": policy, "passes": args.passes, "tau": tau, "seed": args.seed, "preset": preset.name,
                     "cut": args.cut, "batch": args.batch},
        "device": {"platform": device.platform, "kind": device.device_kind, "jax": jax.__version__},
        "compile_seconds": result.compile_seconds, "run_seconds": result.run_seconds, "programs": result.groups,
        "totals": totals, "networks": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def _csv_names(text):
    return [n for n in (text or "").split(",") if n]


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    if not rows:
        return
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def cmd_train_agent(args) -> int:
    import dataclasses

    from neon_jax import agent as agent_lib
    from neon_jax import learn, runner
    from neon_jax import zoo as zoo_lib
    from neon_jax.env import EnvConfig, validate_tau
    from neon_jax.pool import EnvPool

    tau = validate_tau(args.tau)
    train_names = _csv_names(args.datasets) or None
    paths = zoo_lib.find_zoos(args.zoo, train_names)
    unseen_paths = zoo_lib.find_zoos(args.zoo, _csv_names(args.unseen)) if args.unseen else []
    unseen_names = {p.name for p in unseen_paths}
    if train_names is None:
        paths = [p for p in paths if p.name not in unseen_names]
    overlap = unseen_names & {p.name for p in paths}
    if overlap:
        raise CLIError(f"datasets both trained on and unseen: {', '.join(sorted(overlap))}")
    loaded = [zoo_lib.load_zoo_with_data(p, args.data_dir) for p in paths]
    unseen = [zoo_lib.load_zoo_with_data(p, args.data_dir) for p in unseen_paths]
    preset = loaded[0][0].preset
    if args.preset and args.preset != preset.name:
        raise CLIError(f"the zoos were built with preset {preset.name!r}, not {args.preset!r}")
    env_config = EnvConfig(passes=args.passes, cut=args.cut, reward=args.reward).with_legacy(args.legacy)
    agent_config = agent_lib.AgentConfig(architecture=args.architecture, batch_size=args.batch,
                                         reward_transform=args.reward_transform,
                                         normalise_advantages=args.normalise_advantages,
                                         entropy_coef=args.entropy_coef,
                                         observe_progress=args.observe_progress, gamma=args.gamma,
                                         update_epochs=args.update_epochs,
                                         clip_epsilon=args.clip_epsilon).with_legacy(args.legacy)
    everything = loaded + unseen
    common = EnvPool.from_zoos(everything, "all", tau, preset).dims  # one padded shape for train and eval
    pool = EnvPool.from_zoos(loaded, "train", tau, preset, dims=common)
    episodes = args.episodes or learn.default_episodes(len(pool))
    print(f"training on {len(pool)} networks of {len(loaded)} datasets ({', '.join(pool.datasets)}); "
          f"{episodes} episodes, warm-up {agent_lib.warmup_episodes(len(pool))}, batch {args.batch}, "
          f"tau={tau:g}, passes={args.passes}, preset {preset.name}")
    out = Path(args.out)
    agent, state = learn.train_agent(pool, preset, env_config, agent_config, out, episodes=episodes, seed=args.seed,
                                     progress=not args.quiet, overwrite=args.overwrite,
                                     checkpoint_every=args.checkpoint_every,
                                     max_seconds=args.max_minutes * 60 if args.max_minutes else None,
                                     buckets=args.buckets)
    print(f"trained {int(state.episodes)} episodes -> {out / 'checkpoint.npz'}")
    if args.no_eval:
        return 0
    evaluations = [("heldout", EnvPool.from_zoos(loaded, "heldout", tau, preset, dims=common))]
    if unseen:
        evaluations.append(("unseen", EnvPool.from_zoos(unseen, args.unseen_networks, tau, preset, dims=common)))
    summary = {}
    all_rows = []
    for label, eval_pool in evaluations:
        for policy in ("agent", "random"):
            rows = learn.run_agent(agent, state.actor, eval_pool, preset, env_config, seed=args.seed,
                                   random_actions=policy == "random", progress=not args.quiet).rows
            for r in rows:
                r.update(protocol=label, policy=policy)
            all_rows += rows
            summary[f"{label}/{policy}"] = runner.summarise(rows)
    _write_csv(out / "evaluation.csv", all_rows)
    (out / "evaluation.json").write_text(json.dumps({"settings": {"tau": tau, "passes": args.passes,
                                                                  "env": dataclasses.asdict(env_config)},
                                                     "summary": summary}, indent=1))
    table = [(k, v["networks"], f"{v['compression_mean']:.2f}", f"{v['compression_median']:.2f}",
              f"{v['acc_change_mean']:+.2f}", f"{v['acc_fell']}/{v['acc_held']}/{v['acc_rose']}")
             for k, v in summary.items()]
    print(format_table(["set/policy", "nets", "compression mean", "median", "acc change (pts)",
                        "fell/held/rose"], table))
    return 0


def _speedup(ratio: float) -> str:
    """A measured before / after time ratio in words: "x2.10 faster", "x1.06 slower", "no faster"."""
    if round(ratio, 2) == 1.0:
        return "no faster"
    return f"x{ratio:.2f} faster" if ratio > 1 else f"x{1 / ratio:.2f} slower"


def cmd_prune(args) -> int:
    from neon_jax import pruner

    if args.json and Path(args.json).exists() and not args.overwrite:
        raise CLIError(f"{args.json} exists; pass --overwrite to replace it")
    if args.out and (Path(args.out) / "report.json").exists() and not args.overwrite:
        raise CLIError(f"{args.out} already holds a prune result; pass --overwrite to replace it")
    formats = _export_formats(args.export, args.out, "pruned", args.overwrite, saved_by_out=True) if args.export else []
    from neon_jax.progress import Stages

    stages = None if args.quiet else Stages()
    try:
        dataset, test, validation = _prune_rows(args)
        result = pruner.prune(dataset, data_dir=args.data_dir, network=args.network, tau=args.tau,
                              passes=args.passes, agent=args.agent, preset=args.preset, seed=args.seed,
                              greedy=args.greedy, cut=args.cut, candidates=args.candidates, select=args.select,
                              test=test, validation=validation, check_inputs=not args.no_input_check,
                              trust_pickle=args.trust_pickle, small_data=args.small_data, progress=stages)
    except BaseException:
        if stages is not None:  # no spinner redrawn over the error line
            stages.abort()
        raise
    if stages is not None:
        stages.done()
    r = result.report
    seconds = r["seconds"]
    print(format_table(
        ["dataset", "widths before -> after", "params", "compression", "test acc before -> after", "seconds"],
        [(r["dataset"], f"{r['widths_before']} -> {r['widths_after']}", f"{r['params_before']} -> {r['params_after']}",
          f"x{r['compression']:.2f}", f"{r['test_acc_before']:.4f} -> {r['test_acc_after']:.4f} "
          f"({r['acc_change_points']:+.2f} pts)", f"{seconds['total']:.1f}")]))
    chosen = r["chosen"]
    if chosen["episode"] < 0:
        which = "the original (no pruned candidate within tau)"
    else:
        kind = "greedy" if chosen["greedy"] else "sampled"
        which = f"episode {chosen['episode']} ({kind}), after step {chosen['step']}"
    print(f"chosen: {which}; {r['candidates']} candidates, {r['within_tau']} within tau = {r['tau']:g} points on "
          f"the validation split (chosen: validation {chosen['val_acc_change_points']:+.2f}, test "
          f"{chosen['test_acc_change_points']:+.2f} points); select {r['select']}")
    print(f"seconds: loading {seconds['load']:.1f} + base network {seconds['base_network']:.1f} + compile "
          f"{seconds['compile']:.1f} + prune {seconds['run']:.1f} + report {seconds['report']:.1f} = "
          f"{seconds['total']:.1f} (report.json's \"seconds\"); waited {time.perf_counter() - _STARTED:.1f} "
          f"since the command started (imports included)")
    print(f"measured latency (NumPy eval, batch 256): {r['latency_b256_numpy_ms_before']:.3f} ms -> "
          f"{r['latency_b256_numpy_ms_after']:.3f} ms ({_speedup(r['speedup_b256_numpy'])})")
    if args.out:
        path = pruner.save_result(result, args.out, overwrite=args.overwrite)
        sk = ", pruned.skops (your scikit-learn model, pruned)" if pruner.scikit.is_sklearn_model(
            getattr(result.model, "estimator", None)) else ""
        print(f"saved the original and pruned networks (.npz + .json){sk}, report.json, preprocessing.json (what "
              f"the inputs are), candidates.csv and front.png to {path}; other formats: --export "
              f"torch,onnx,safetensors,sklearn")
        if "npz" in formats:  # --out already wrote pruned.npz / pruned.json, the npz export's files
            formats = [f for f in formats if f != "npz"]
            print(f"exported npz: {Path(args.out) / 'pruned.npz'}, {Path(args.out) / 'pruned.json'} (written above)")
    others = [f for f in formats if f != "sklearn"]
    if others:
        _export_and_verify(result.pruned, args.out, others, "pruned", args.overwrite)
        if "onnx" in others and result.raw_onnx() is not None:
            _export_raw_onnx(result, Path(args.out) / "pruned_raw.onnx", args.overwrite)
    if "sklearn" in formats:  # the pruned model as the user's estimator, or on raw rows: not the bare network
        _export_sklearn(result, Path(args.out) / "pruned.skops")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(r, indent=1))
        print(f"report -> {args.json}")
    return 0


def _prune_rows(args):
    """(dataset, test, validation) for `pruner.prune`: with --preprocess none, the files' rows as given."""
    if args.preprocess == "neon":
        if args.test or args.validation:
            raise CLIError("--test and --validation are your own rows, used as given: add --preprocess none")
        return args.dataset, None, None
    from neon_jax.user_data import read_rows

    return (read_rows(args.dataset), read_rows(args.test) if args.test else None,
            read_rows(args.validation) if args.validation else None)


def _parse_agents(specs) -> dict:
    """["5=PATH", "5@0=PATH", "PATH"] -> {"5": PATH, "5@0": PATH}; a bare PATH applies to every tau ("*")."""
    agents = {}
    for spec in specs or []:
        key, sep, path = spec.partition("=")
        if not sep:
            key, path = "*", spec
        else:
            tau, _, fold = key.partition("@")
            try:
                key = f"{float(tau):g}" + (f"@{int(fold)}" if fold else "")
            except ValueError:
                raise CLIError(f"--agent {spec!r}: expected TAU=PATH or TAU@FOLD=PATH (e.g. 5=runs/agent_tau5)") \
                    from None
        agents[key] = path
    return agents


def cmd_evaluate(args) -> int:
    """Runs (or resumes) an evaluation grid into --out, building the zoos it lacks, and prints the aggregates."""
    from neon_jax import evaluate as ev

    if args.report_only:
        summary = ev.write_report(args.out)
        print(f"report -> {Path(args.out) / 'report.md'} ({summary['networks']} rows)")
        return 0
    if bool(args.datasets) == bool(args.suite):
        raise CLIError("pass exactly one of --datasets a,b,... and --suite neon|all")
    if args.suite and not args.zoo_root:
        raise CLIError("--suite lists the zoos under --zoo-root; pass --zoo-root, or --datasets a,b,...")
    datasets = _csv_names(args.datasets) if args.datasets else ev.suite_datasets(args.suite, args.zoo_root)
    try:
        taus = [float(t) for t in _csv_names(args.tau)]
        passes = [int(p) for p in _csv_names(args.passes)]
        seeds = [int(s) for s in _csv_names(args.seeds)]
        folds = [int(f) for f in _csv_names(args.folds)] if args.folds else None
        candidates = [int(k) for k in _csv_names(args.candidates)]
    except ValueError as err:
        raise CLIError(f"--tau / --passes / --seeds / --folds / --candidates take comma-separated numbers: {err}") \
            from None
    agents = _parse_agents(args.agent)
    if "*" in agents:
        every = agents.pop("*")
        agents.update({f"{t:g}": every for t in taus if f"{t:g}" not in agents})
    settings = {}
    for spec in args.settings or []:
        method, sep, values = spec.partition("=")
        if not sep:
            raise CLIError(f"--settings {spec!r}: expected METHOD=S1,S2 (e.g. lap=1,3,10)")
        settings[method] = [_number_or_text(v) for v in _csv_names(values)]
    cfg = ev.EvalConfig(datasets=datasets, zoo_root=args.zoo_root, data_dir=args.data_dir, protocol=args.protocol,
                        methods=_csv_names(args.methods), taus=taus, passes=passes, seeds=seeds, greedy=args.greedy,
                        agents=agents, preset=args.preset, fold_size=args.fold_size, fold_seed=args.fold_seed,
                        folds=folds, settings=settings, random_cut=args.random_cut, batch_size=args.batch,
                        zoo_networks=args.zoo_networks, zoo_heldout=args.zoo_heldout, candidates=candidates,
                        amc=_amc_overrides(args.amc))
    start = time.perf_counter()
    summary = ev.run_evaluation(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet,
                                log=None if args.quiet else print)
    table = []
    for g in summary["groups"]:
        c, a = g["over_networks"]["compression"], g["over_networks"]["acc_change"]
        table.append((g["label"], g["networks"], f"{c['mean']:.2f}", f"{c['median']:.2f}", f"{a['mean']:+.2f}",
                      f"{g['acc_fell']}/{g['acc_held']}/{g['acc_rose']}", "; ".join(g["flags"])))
    print(format_table(["method", "nets", "compression mean", "median", "acc change (pts)", "fell/held/rose",
                        "notes"], table))
    print(f"{time.perf_counter() - start:.1f}s; report -> {Path(args.out) / 'report.md'}")
    return 0


def _amc_overrides(text: str | None) -> dict:
    """--amc KEY=VALUE,... as a dict (numbers as numbers, true / false as booleans)."""
    out = {}
    for item in _csv_names(text or ""):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise CLIError(f"--amc {item!r}: expected KEY=VALUE (e.g. episodes=100)")
        out[key] = {"true": True, "false": False}.get(value.lower(), _number_or_text(value))
    return out


def _number_or_text(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _export_formats(text, out, stem, overwrite, saved_by_out=False) -> list[str]:
    """Validates --export before any work is done: known formats, an --out folder, no file overwritten
    (`saved_by_out`: the npz export's files are the ones `prune --out` writes itself)."""
    from neon_jax import interop

    if not out:
        raise CLIError("--export needs --out (the folder the exported files go to)")
    formats = interop.parse_formats(text)
    try:
        interop.check_export_dependencies(formats)
    except ImportError as err:
        raise CLIError(str(err)) from None
    checked = [f for f in formats if not (saved_by_out and f == "npz")]
    existing = [str(p) for files in interop.export_paths(out, stem, checked).values() for p in files if p.exists()]
    if existing and not overwrite:
        raise CLIError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    return formats


def _export_and_verify(net, out, formats, stem, overwrite) -> None:
    """Writes the exports, reads each back and checks it against the network on 256 random inputs in [0, 1]
    (the range of min-max scaled data)."""
    import numpy as np

    from neon_jax import interop

    try:
        paths = interop.export_network(net, out, formats, stem=stem, overwrite=overwrite)
        x = np.random.default_rng(0).random((256, net.n_features), dtype=np.float32)
        checks = interop.verify_exports(net, paths, x)
    except ImportError as err:
        raise CLIError(str(err)) from None
    for fmt, files in paths.items():
        c = checks[fmt]
        print(f"exported {fmt}: {', '.join(str(p) for p in files)} (read back: max |logit diff| "
              f"{c['max_abs_diff_logits']:.1e}, same predictions: {c['same_predictions']})")


def _raw_rows(result, n: int = 256):
    """n random raw rows spanning the range the input scaling maps to [0, 1], and the network's inputs for them."""
    import numpy as np

    scaling = result.input_scaling()
    d = result.pruned.n_features
    offset, scale = (np.zeros(d, np.float32), np.ones(d, np.float32)) if scaling is None else scaling
    span = np.where(scale > 0, 1.0 / np.where(scale > 0, scale, 1.0), 1.0)
    raw = (offset + np.random.default_rng(0).random((n, d)) * span).astype(np.float32)
    return raw, (raw - offset) * scale


def _export_sklearn(result, path: Path) -> None:
    """pruned.skops for --export sklearn: `PruneResult.to_sklearn` (the user's estimator, pruned, which --out has
    written; else an MLPClassifier of the dataset's labels behind the input scaling), read back and checked."""
    import numpy as np

    from neon_jax.interop import scikit

    if isinstance(result.model, scikit.SklearnModel):
        print(f"exported sklearn: {path} (your scikit-learn model, pruned; written above)")
        return
    try:
        import skops.io as sio
        estimator = result.to_sklearn()
    except (ImportError, ValueError) as err:
        raise CLIError(f"--export sklearn: {err}") from None
    sio.dump(estimator, path)
    raw, x = _raw_rows(result)
    back = scikit.load_sklearn_file(path)
    diff = float(np.abs(back.predict_proba(raw.astype(np.float64)) - result.pruned.predict_proba(x)).max())
    if diff > 1e-4:
        raise CLIError(f"{path}: the scikit-learn model differs from the network by {diff:.3g}")
    kind = "a Pipeline (the input scaling, then the MLP)" if hasattr(back, "steps") else "an MLPClassifier"
    print(f"exported sklearn: {path}, {kind} on raw rows predicting {[str(c) for c in back.classes_[:6]]}"
          f"{'...' if len(back.classes_) > 6 else ''} (read back: max |probability diff| {diff:.1e})")


def _export_raw_onnx(result, path: Path, overwrite: bool) -> None:
    """pruned_raw.onnx: the pruned network with the input scaling baked in, checked on raw rows."""
    import numpy as np

    from neon_jax import interop

    if path.exists() and not overwrite:
        raise CLIError(f"{path} exists; pass --overwrite to replace it")
    path.write_bytes(result.raw_onnx().SerializeToString())
    raw, x = _raw_rows(result)
    out = interop.run_onnx(path, raw)
    roles = dict(getattr(result.model, "output_roles", ())) or {"probabilities": "probabilities", "logits": "logits"}
    named = {r: out[n] for n, r in roles.items()}
    probs = named["probabilities"] if "probabilities" in named else interop.softmax(named["logits"])
    diff = float(np.abs(probs - result.pruned.predict_proba(x)).max())
    if diff > 1e-4:
        raise CLIError(f"{path}: the raw-row ONNX model differs from the network by {diff:.3g}")
    print(f"exported onnx on raw rows (the input scaling baked in, the input model's outputs where it was ONNX): "
          f"{path} (read back: max |probability diff| {diff:.1e})")


def cmd_export(args) -> int:
    """Writes a network (a neon_jax network, a PyTorch .pt or a .safetensors export) as PyTorch / ONNX /
    safetensors / npz files, checked against the network."""
    from neon_jax import interop

    stem = args.name or Path(args.network).name.split(".")[0]
    formats = _export_formats(args.format, args.out, stem, args.overwrite)
    try:
        net = interop.load_network(args.network)
    except ImportError as err:
        raise CLIError(str(err)) from None
    print(f"{args.network}: hidden widths {net.hidden_widths}, {net.num_params()} parameters")
    _export_and_verify(net, args.out, formats, stem, args.overwrite)
    return 0


def format_table(header, rows) -> str:
    """A plain fixed-width text table."""
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_EXAMPLES = {
    "neon-jax": """examples:
  neon-jax prune --dataset breast_cancer --tau 5 --out runs/breast_cancer     # the main job, no download
  neon-jax datasets --data-dir ../shared/data                                  # what can be loaded
  neon-jax <command> --help                                                    # each command's options""",
    "datasets": """examples:
  neon-jax datasets                                  # scikit-learn's bundled sets
  neon-jax datasets --data-dir ../shared/data        # and every CSV there (task, rows, features, classes)""",
    "zoo": """examples:
  neon-jax zoo --dataset iris --n 4 --preset tiny --out runs/zoo           # 4 small networks, 1 held out
  neon-jax zoo --dataset no2,pm10 --data-dir ../shared/data --out runs/zoo_cpu  # the paper's 30 per dataset""",
    "rollout": """examples:
  neon-jax rollout --dataset iris --zoo runs/zoo --policy pretrained --tau 5 --json runs/pretrained.json
  neon-jax rollout --dataset iris --zoo runs/zoo --policy keep:0.5 --json runs/keep.json  # a fixed rule""",
    "train-agent": """examples:
  neon-jax train-agent --zoo runs/zoo_cpu --data-dir ../shared/data --unseen satimage --tau 5 --out runs/agent
  neon-jax prune --dataset iris --agent runs/agent --tau 5                 # then prune with it""",
    "prune": """examples:
  neon-jax prune --dataset breast_cancer --tau 5 --out runs/bc              # train a base network, prune it
  neon-jax prune --dataset data.csv --network model.pt --tau 1 --out runs/mine --export torch,onnx
  neon-jax prune --dataset iris --select last                              # the paper's single episode""",
    "export": """examples:
  neon-jax export --network runs/bc/pruned --format all --out runs/bc/export""",
    "evaluate": """examples:
  neon-jax evaluate --datasets iris,wine --methods neon,neon_best,structured --tau 5 --out runs/eval
  neon-jax evaluate --suite neon --zoo-root runs/zoo_cpu --data-dir ../shared/data/neon \\
      --methods neon,random,magnitude,structured,lap --tau 1,5,50 --passes 1,4 --out runs/eval_cpu""",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neon-jax", description=__doc__, epilog=_EXAMPLES["neon-jax"],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser

    def add_parser(name, **kwargs):  # every command's --help ends with its examples
        return add(name, epilog=_EXAMPLES[name], formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    sub.add_parser = add_parser

    p = sub.add_parser("datasets", help="list the datasets that can be loaded")
    _add_data_args(p)
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("zoo", help="train N random base networks per dataset and save them")
    p.add_argument("--dataset", required=True, help="dataset name(s), comma-separated, or a CSV path")
    _add_data_args(p)
    p.add_argument("--n", type=int, default=30, help="networks per dataset (paper: 30)")
    p.add_argument("--heldout", type=int, default=None,
                   help="networks held out from agent training (default: a fifth of --n, the paper's 6 of 30)")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="scale preset (default: cpu)")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's training epochs")
    p.add_argument("--seed", type=int, default=0, help="seed of the architectures, weights and held-out choice "
                                                       "(default: 0)")
    p.add_argument("--out", required=True, help="output folder; the zoo goes to OUT/<dataset>/")
    p.add_argument("--overwrite", action="store_true", help="replace an existing zoo")
    p.add_argument("--quiet", action="store_true", help="no progress bar; one line per zoo")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("rollout", help="prune every zoo network with one policy (batched roll-outs) and report")
    p.add_argument("--dataset", required=True,
                   help="dataset name(s), comma-separated; each zoo is read from ZOO/<name>/")
    _add_data_args(p)
    p.add_argument("--zoo", required=True, help="folder holding the zoos (the --out of `neon-jax zoo`)")
    p.add_argument("--policy", default="random",
                   help="random (uniform over the 5 keep fractions), pretrained (the shipped agent nearest "
                        "--tau), an agent PATH, keep:F (always keep F) or while:F:D (keep F while the validation "
                        "accuracy is at most D points down)")
    p.add_argument("--passes", type=int, default=4, help="visits of every hidden layer per episode (paper: 1 or 4)")
    p.add_argument("--cut", default="reinit", choices=CUTS, help="cut semantics (reinit: the paper's)")
    p.add_argument("--tau", default="5", help="tolerated accuracy drop in points, 0..100 (paper: 1, 5, 50)")
    p.add_argument("--which", default="all", choices=ZOO_SPLITS, help="networks of each zoo")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled actions (default: 0)")
    p.add_argument("--batch", type=int, default=32, help="networks per compiled batch")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="fine-tune schedule (default: the zoo's preset; widths must match the zoo's)")
    p.add_argument("--json", required=True, help="write the settings, per-network rows and totals here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_rollout)

    p = sub.add_parser("train-agent", help="train a NEON agent on the training networks of many zoos")
    p.add_argument("--zoo", required=True, help="folder of zoos (one subfolder per dataset)")
    p.add_argument("--datasets", default=None, help="comma-separated datasets to train on (default: every zoo "
                                                    "that is not --unseen)")
    p.add_argument("--unseen", default=None, help="comma-separated datasets held out entirely, evaluated at the end")
    _add_data_args(p)
    p.add_argument("--passes", type=int, default=4, help="passes over the layers per episode (paper: 1 or 4; "
                                                          "default: 4)")
    p.add_argument("--tau", type=float, default=5.0, help="tolerated accuracy drop, points (paper: 1, 5, 50)")
    p.add_argument("--episodes", type=int, default=None, help="default: the original's 10 N + min(2N, 500)")
    p.add_argument("--batch", type=int, default=8, help="episodes per update (1 = the original's schedule)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS), help="must match the zoos' preset")
    p.add_argument("--architecture", default="neon", choices=ARCHITECTURES,
                   help="actor-critic networks: neon (the paper's) or compact (default: neon)")
    p.add_argument("--cut", default="reinit", choices=CUTS,
                   help="what a cut keeps: reinit (the paper's: re-initialise and fine-tune) or keep_best")
    p.add_argument("--reward", default="neon", choices=REWARDS, help="reward (neon: the paper's cubic reward)")
    p.add_argument("--legacy", action="store_true",
                   help="reproduce the original's bugs (spec §12 A0, B1, B2, B6, B9: EnvConfig.LEGACY_FIELDS and "
                        "AgentConfig.LEGACY_FIELDS)")
    p.add_argument("--reward-transform", default="none", choices=REWARD_TRANSFORMS,
                   help="beyond the paper: learn from sign(r) log(1+|r|) of the cubic reward (symlog) or from "
                        "r / 64,000 (scaled: the paper's trade-off, O(1) critic targets)")
    p.add_argument("--normalise-advantages", action="store_true",
                   help="beyond the paper: standardise advantages over each batch")
    p.add_argument("--entropy-coef", type=float, default=0.0, help="beyond the paper: entropy bonus weight")
    p.add_argument("--observe-progress", action="store_true",
                   help="beyond the paper: show the agent the accuracy change so far against tau, tau, steps "
                        "taken and parameters left")
    p.add_argument("--gamma", type=float, default=0.99,
                   help="discount of the Monte-Carlo returns (the original: 0.99; 0 credits each cut with its own "
                        "reward only)")
    p.add_argument("--update-epochs", type=int, default=1,
                   help="beyond the paper: Adam steps per batch of episodes (the original: 1); more than one "
                        "uses PPO's clipped surrogate against the policy that acted")
    p.add_argument("--clip-epsilon", type=float, default=0.2, help="PPO's ratio clip (with --update-epochs > 1)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this wall time")
    p.add_argument("--buckets", action="store_true",
                   help="beyond the paper: every batch from one width bucket, run at that bucket's shape (zoos of "
                        "mixed widths pay for their own widths; default: the original's round-robin)")
    p.add_argument("--checkpoint-every", type=int, default=10,
                   help="iterations (batches of episodes) between checkpoints (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the agent's weights and actions (default: 0)")
    p.add_argument("--out", required=True,
                   help="run folder: log.csv, checkpoint, evaluation (resumes if present, with the same settings)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in --out, deleting its checkpoint and log, instead of resuming")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--unseen-networks", default="all", choices=("all", "heldout"),
                   help="networks of the unseen datasets to evaluate (paper: all 30)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.set_defaults(func=cmd_train_agent)

    p = sub.add_parser("prune", help="prune a network on a dataset with a trained agent (the main job)")
    p.add_argument("--dataset", required=True,
                   help="dataset name (see `neon-jax datasets`) or a CSV file (target in the last column); with "
                        "--preprocess none: your training rows, used as they are")
    _add_data_args(p)
    p.add_argument("--preprocess", default="neon", choices=("neon", "none"),
                   help="neon: neon_jax's preprocessing (min-max scaling, one-hot encoding, the preset's row cap, "
                        "its own 70/30 split); none: the CSV rows exactly as given, your split (--test, "
                        "--validation), no row cap")
    p.add_argument("--test", default=None,
                   help="with --preprocess none: a CSV of test rows that only report (default: none; the report "
                        "then gives the validation rows' accuracy and says so)")
    p.add_argument("--validation", default=None,
                   help="with --preprocess none: a CSV of rows that choose among the candidates (default: 20%% "
                        "of the training rows, split off with --seed)")
    p.add_argument("--no-input-check", action="store_true",
                   help="prune even when the network does no better than always guessing the most common class "
                        "on its training rows (a sign the rows are preprocessed otherwise than it was trained)")
    p.add_argument("--network", default=None,
                   help="the network to prune: a scikit-learn MLPClassifier or Pipeline ending in one (.skops; "
                        ".pkl/.joblib with --trust-pickle), a PyTorch file (.pt/.pth: torch.save of an "
                        "nn.Sequential of Linear/ReLU/Tanh/Sigmoid/BatchNorm1d/Dropout[/Softmax], or of "
                        "{'state_dict', 'layers'}), a .safetensors export, or a neon_jax network (.npz/.json); "
                        "default: train a random base network first")
    p.add_argument("--small-data", default="off", choices=("off", "auto", "on", "share"),
                   help="off: the choice keeps tau on the validation rows; auto: when one validation row is worth "
                        "more than tau/2 points (on: always), a candidate must stay within tau less one standard "
                        "error of the validation accuracy (measured: no fewer test losses beyond tau on small "
                        "sets, less compression; benchmarks/README.md); share: then half the training rows "
                        "choose, not 20%%")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a scikit-learn model from a pickle (.pkl/.joblib): a pickle runs any code it holds")
    p.add_argument("--tau", type=float, default=5.0, help="tolerated accuracy drop, points (default 5)")
    p.add_argument("--passes", type=int, default=4,
                   help="passes over the layers (default: 4, as the shipped agents were trained)")
    p.add_argument("--agent", default="pretrained",
                   help="pretrained (default: the shipped agent trained at the tau nearest --tau), random, or a "
                        "train-agent --out folder / checkpoint path")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help="scale of the base network trained when --network is not given, and of the agent's state "
                        "(default: cpu, widths 8..64, the shipped agents' scale)")
    p.add_argument("--greedy", action="store_true", help="one episode of argmax actions (the original samples)")
    p.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES,
                   help="sampled episodes rolled out together, plus one greedy episode; every network of every "
                        "episode is a candidate (default: %(default)s)")
    p.add_argument("--select", default="best", choices=SELECTIONS,
                   help="best: the candidate with the fewest parameters whose validation accuracy is within tau "
                        "(the original if none); last: the final network of one sampled episode (the paper's)")
    p.add_argument("--cut", default=None, choices=CUTS,
                   help="cut semantics (default: the one the agent was trained with)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the data split, the base network and the sampled episodes (default: 0)")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    p.add_argument("--out", default=None, help="save original + pruned network and report.json in this folder")
    p.add_argument("--export", default=None,
                   help="also write the pruned network to --out as FORMATS (comma-separated: torch, onnx, "
                        "safetensors, npz, sklearn, or all = the first four), each read back and checked; "
                        "sklearn: pruned.skops, your scikit-learn model pruned, or an MLPClassifier of the "
                        "dataset's labels behind its input scaling (a Pipeline on raw rows)")
    p.add_argument("--overwrite", action="store_true", help="replace files already in --out / --json")
    p.add_argument("--quiet", action="store_true", help="no progress messages; only the result table")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("export", help="write a network as PyTorch / ONNX / safetensors / npz files")
    p.add_argument("--network", required=True,
                   help="a neon_jax network (e.g. OUT/pruned of `neon-jax prune`), a PyTorch .pt or a .safetensors")
    p.add_argument("--format", default="torch,onnx",
                   help="comma-separated: torch (.pt, nn.Sequential), onnx (opset 17), safetensors (+ .arch.json), "
                        "npz (+ .json), or all (default: torch,onnx)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", default=None, help="file stem (default: the network file's stem)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("evaluate", help="evaluate NEON, the random agent and baselines on held-out networks or "
                                        "unseen datasets; resumable grid, report.md with the paper's numbers")
    p.add_argument("--datasets", default=None,
                   help="comma-separated datasets (a zoo is built under OUT/zoos/ for each that has none under "
                        "--zoo-root)")
    p.add_argument("--suite", default=None, choices=SUITES,
                   help="neon: the paper's datasets that have a zoo; all: every zoo under --zoo-root (needs it)")
    _add_data_args(p)
    p.add_argument("--zoo-root", default=None,
                   help="folder of zoos (one subfolder per dataset, `neon-jax zoo`); default: build them under "
                        "OUT/zoos/")
    p.add_argument("--zoo-networks", type=int, default=30,
                   help="networks per zoo the evaluation builds (paper: 30)")
    p.add_argument("--zoo-heldout", type=int, default=6,
                   help="held-out networks per zoo the evaluation builds (paper: 6)")
    p.add_argument("--methods", default="neon,random",
                   help="comma-separated: neon (one episode, the paper's), neon_best (the smallest of many candidates "
                        "within tau on the validation split), random and the baselines (magnitude, structured, lap, "
                        "random_no_ft, ...)")
    p.add_argument("--candidates", default=str(DEFAULT_CANDIDATES),
                   help="neon_best: comma-separated numbers K of sampled episodes per network (plus a greedy one)")
    p.add_argument("--protocol", default="heldout", choices=PROTOCOLS,
                   help="heldout: each zoo's held-out networks; unseen: all networks of datasets in seeded folds")
    p.add_argument("--tau", default="5", help="comma-separated tolerances for neon (paper: 1,5,50)")
    p.add_argument("--passes", default="4", help="comma-separated passes (paper: 1,4)")
    p.add_argument("--seeds", default="0", help="comma-separated evaluation seeds (actions are sampled)")
    p.add_argument("--greedy", action="store_true", help="also evaluate neon with argmax actions")
    p.add_argument("--agent", action="append", default=None, metavar="TAU[@FOLD]=PATH",
                   help="agent for a tau (and unseen fold): a train-agent --out folder, checkpoint or policy file; "
                        "repeat per tau; default: the shipped agent (flagged where its training tau differs)")
    p.add_argument("--settings", action="append", default=None, metavar="METHOD=S1,S2",
                   help="baseline settings (default: the baseline's own defaults)")
    p.add_argument("--amc", default=None, metavar="KEY=VALUE,...",
                   help="AMC search settings other than the original's (e.g. episodes=100,parallel_episodes=10)")
    p.add_argument("--folds", default=None, help="unseen protocol: which folds to evaluate (default: all)")
    p.add_argument("--fold-size", type=int, default=6, help="datasets per unseen fold (paper: 6)")
    p.add_argument("--fold-seed", type=int, default=0, help="seed of the unseen folds' dataset shuffle "
                                                            "(default: 0)")
    p.add_argument("--random-cut", default="reinit", choices=CUTS,
                   help="cut of the random agent (reinit: the paper's environment)")
    p.add_argument("--batch", type=int, default=32, help="networks per compiled batch")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="default: the preset of the zoos found, else cpu")
    p.add_argument("--out", required=True, help="results folder (re-running resumes; finished cells are skipped)")
    p.add_argument("--overwrite", action="store_true", help="replace an evaluation with other settings in --out")
    p.add_argument("--report-only", action="store_true", help="only rewrite report.md / summary.json / plots")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    def show(message, category, *_args, **_kwargs):  # our warnings as one plain line each, not a source listing
        print(f"neon-jax {args.command}: warning: {message}", file=sys.stderr)

    try:
        if args.command != "datasets":  # every other command compiles: a second run of the same shapes need not
            from neon_jax import compile_cache

            compile_cache.enable()
        from neon_jax.data import DatasetWarning

        with warnings.catch_warnings():
            warnings.simplefilter("default", DatasetWarning)
            warnings.showwarning = show
            return args.func(args)
    except (CLIError, ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"neon-jax {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
