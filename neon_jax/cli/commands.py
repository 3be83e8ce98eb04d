"""The commands: each parses nothing itself, calls the library and prints (`args.build_parser` wires them)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from neon_jax.cli.common import _STARTED, CLIError, _csv_names, _speedup, format_table
from neon_jax.cli.exports import _export_and_verify, _export_formats, _export_raw_onnx, _export_sklearn
from neon_jax.presets import get_preset


def _writes() -> bool:
    """Whether this process writes files and prints results: process 0 of a multi-process run (always in one)."""
    from neon_jax import sharding

    return sharding.is_writer()


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
    # every dataset is loaded (and refused: unknown, regression, ...) before any network trains
    prepared_all = {name: zoo_lib.prepare_data(name, preset, seed=args.seed, data_dir=args.data_dir)
                    for name in names}
    for name in names:
        prepared = prepared_all.pop(name)
        epochs = preset.train_epochs if args.epochs is None else args.epochs
        start = time.perf_counter()
        with tqdm(total=epochs, desc=f"{name}: {args.n} networks", unit="epoch", disable=args.quiet) as bar:
            def progress(done, total):  # total: the epochs of every width bucket
                bar.total = total
                bar.update(done - bar.n)

            zoo = zoo_lib.build_zoo(prepared, preset, n=args.n, n_heldout=args.heldout, seed=args.seed,
                                    epochs=epochs, progress=progress, devices=args.devices)
        if not _writes():  # several processes: process 0 writes and reports
            continue
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


def cmd_rollout(args) -> int:
    """Prunes every network of one or more zoos with one policy (`neon_jax.jobs.rollout`) and reports widths,
    parameters and test accuracy before and after."""
    from neon_jax import jobs

    policy = jobs.check_policy(args.policy)
    out = Path(args.json)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} already exists; pass --overwrite to replace it")
    names = _csv_names(args.dataset)
    if not names or len(set(names)) != len(names):
        raise CLIError(f"--dataset needs distinct dataset names, got {args.dataset!r}")
    done = jobs.rollout(args.zoo, names, policy=policy, passes=args.passes, tau=args.tau, cut=args.cut,
                        which=args.which, preset=args.preset, seed=args.seed, batch_size=args.batch,
                        data_dir=args.data_dir, progress=not args.quiet,
                        say=lambda line: print(line, file=sys.stderr, flush=True))
    rows, totals, result = done.rows, done.totals, done.run
    table = [(r["dataset"], r["network"], r["split"], f"{r['widths_before']} -> {r['widths_after']}",
              f"{r['params_before']} -> {r['params_after']}", f"x{r['compression']:.2f}",
              f"{r['test_acc_before']:.3f} -> {r['test_acc_after']:.3f}", f"{r['return']:.0f}") for r in rows]
    print(format_table(["dataset", "net", "split", "widths", "params", "compr.", "test acc", "return"], table))
    print(f"{len(rows)} networks: compression mean x{totals['compression_mean']:.2f}, median "
          f"x{totals['compression_median']:.2f}; test accuracy change mean {totals['acc_change_mean']:+.2f} points; "
          f"compiled in {result.compile_seconds:.1f}s, ran in {result.run_seconds:.2f}s")
    print(f"{result.compiles} program(s), one per width bucket: " + ", ".join(
        f"w {g['w_max']} x {g['max_hidden']} layers: {g['networks']} networks" for g in result.groups))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(done.document(), indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def cmd_train_agent(args) -> int:
    """Trains an agent (`neon_jax.jobs.train_agent`) and prints its evaluation against the random agent."""
    from neon_jax import jobs
    from neon_jax.agent import config as agent_flags
    from neon_jax.env import EnvConfig

    env_config = EnvConfig(passes=args.passes, cut=args.cut, reward=args.reward).with_legacy(args.legacy)
    agent_config = agent_flags.from_flags(args, legacy=args.legacy)
    done = jobs.train_agent(args.zoo, args.out, env_config=env_config, agent_config=agent_config, tau=args.tau,
                            datasets=_csv_names(args.datasets) or None, unseen=_csv_names(args.unseen) or None,
                            unseen_networks=args.unseen_networks, preset=args.preset, episodes=args.episodes,
                            seed=args.seed, data_dir=args.data_dir, evaluate=not args.no_eval,
                            progress=not args.quiet, overwrite=args.overwrite,
                            checkpoint_every=args.checkpoint_every,
                            max_seconds=args.max_minutes * 60 if args.max_minutes else None, buckets=args.buckets,
                            say=print, devices=args.devices)
    if done.summary and _writes():
        table = [(k, v["networks"], f"{v['compression_mean']:.2f}", f"{v['compression_median']:.2f}",
                  f"{v['acc_change_mean']:+.2f}", f"{v['acc_fell']}/{v['acc_held']}/{v['acc_rose']}")
                 for k, v in done.summary.items()]
        print(format_table(["set/policy", "nets", "compression mean", "median", "acc change (pts)",
                            "fell/held/rose"], table))
    return 0


def cmd_prune(args) -> int:
    from neon_jax.interop import scikit
    from neon_jax.jobs.prune import prune, save_result

    if args.json and Path(args.json).exists() and not args.overwrite:
        raise CLIError(f"{args.json} exists; pass --overwrite to replace it")
    if args.out and (Path(args.out) / "report.json").exists() and not args.overwrite:
        raise CLIError(f"{args.out} already holds a prune result; pass --overwrite to replace it")
    formats = _export_formats(args.export, args.out, "pruned", args.overwrite, saved_by_out=True) if args.export else []
    from neon_jax.progress import Stages

    stages = None if args.quiet else Stages()
    try:
        dataset, test, validation = _prune_rows(args)
        from neon_jax.search import parse_refine

        try:
            rounds, population = parse_refine(args.refine)
        except ValueError as err:
            raise CLIError(str(err)) from None
        result = prune(dataset, data_dir=args.data_dir, network=args.network, tau=args.tau,
                              passes=args.passes, agent=args.agent, preset=args.preset, seed=args.seed,
                              greedy=args.greedy, cut=args.cut, candidates=args.candidates, select=args.select,
                              test=test, validation=validation, check_inputs=not args.no_input_check,
                              trust_pickle=args.trust_pickle, small_data=args.small_data, progress=stages,
                              devices=args.devices, refine=rounds, refine_population=population,
                              final_finetune=args.final_finetune, refine_epochs=args.refine_epochs,
                              refine_margin=args.refine_margin)
    except BaseException:
        if stages is not None:  # no spinner redrawn over the error line
            stages.abort()
        raise
    if stages is not None:
        stages.done()
    if not _writes():
        return 0
    r = result.report
    seconds = r["seconds"]
    print(format_table(
        ["dataset", "widths before -> after", "params", "compression", "test acc before -> after", "seconds"],
        [(r["dataset"], f"{r['widths_before']} -> {r['widths_after']}", f"{r['params_before']} -> {r['params_after']}",
          f"x{r['compression']:.2f}", f"{r['test_acc_before']:.4f} -> {r['test_acc_after']:.4f} "
          f"({r['acc_change_points']:+.2f} pts)", f"{seconds['total']:.1f}")]))
    chosen = r["chosen"]
    if r.get("search", {}).get("chosen_by_search"):
        which = (f"the refine search, round {chosen['episode'] - r['episodes']}, proposal {chosen['step']}")
    elif chosen["episode"] < 0:
        which = "the original (no pruned candidate within tau)"
    else:
        kind = "greedy" if chosen["greedy"] else "sampled"
        which = f"episode {chosen['episode']} ({kind}), after step {chosen['step']}"
    print(f"chosen: {which}; {r['candidates']} candidates, {r['within_tau']} within tau = {r['tau']:g} points on "
          f"the validation split (chosen: validation {chosen['val_acc_change_points']:+.2f}, test "
          f"{chosen['test_acc_change_points']:+.2f} points); select {r['select']}")
    if "final_finetune" in r:
        f = r["final_finetune"]
        print(f"final fine-tune ({f['epochs']} epochs, {'kept' if f['kept'] else 'not kept: validation fell'}): "
              f"validation {f['val_acc_before']:.4f} -> {f['val_acc_after']:.4f}, test {f['test_acc_before']:.4f} "
              f"-> {f['test_acc_after']:.4f}")
    print(f"seconds: loading {seconds['load']:.1f} + base network {seconds['base_network']:.1f} + compile "
          f"{seconds['compile']:.1f} + prune {seconds['run']:.1f} + report {seconds['report']:.1f} = "
          f"{seconds['total']:.1f} (report.json's \"seconds\"); waited {time.perf_counter() - _STARTED:.1f} "
          f"since the command started (imports included)")
    from neon_jax.compile_log import summary_line

    print(f"compiled: {summary_line(r['compiled'])} (report.json's \"compiled\" lists every program)")
    print(f"measured latency (NumPy eval, batch 256): {r['latency_b256_numpy_ms_before']:.3f} ms -> "
          f"{r['latency_b256_numpy_ms_after']:.3f} ms ({_speedup(r['speedup_b256_numpy'])})")
    if args.out:
        path = save_result(result, args.out, overwrite=args.overwrite)
        sk = ", pruned.skops (your scikit-learn model, pruned)" if scikit.is_sklearn_model(
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
    """(dataset, test, validation) for `neon_jax.prune`: with --preprocess none, the files' rows as given."""
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
    from neon_jax.jobs import evaluate as ev

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
                        searches=_csv_names(args.search), amc=_amc_overrides(args.amc))
    start = time.perf_counter()
    summary = ev.run_evaluation(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet,
                                log=None if args.quiet else print, devices=args.devices)
    if not _writes():
        return 0
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
