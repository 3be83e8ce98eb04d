"""Re-run one dataset of a committed evaluation with the current code and compare it row by row.

A refactoring must not move a number. This takes a results folder of `neon-jax evaluate` (its settings.json and
networks.csv[.gz]), rebuilds the dataset's zoo if it is not at hand (zoos are deterministic: same preset, seed and
data give the same networks, which is checked against the recorded widths and test accuracies), pads the pool to
the shapes of ALL the evaluation's datasets (as the evaluation did: random draws depend on the padded shapes),
re-runs every (method, setting, tau) cell of that dataset through the library (NEON through `learn.run_agent`,
the baselines through `pruning.run_baseline`) and reports, per cell, how many networks match exactly (widths,
parameters) and the largest accuracy difference.

    PYTHONPATH=. python benchmarks/reproduce_evaluation.py --results benchmarks/results/eval_cpu_heldout_v2 \\
        --dataset diabetes --data-dir ../shared/data/neon --out benchmarks/results/reproduce_eval_v2_diabetes.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from neon_jax import learn, nets, pruning
from neon_jax import zoo as zoo_lib
from neon_jax.agent import registry
from neon_jax.env import EnvConfig
from neon_jax.jobs.evaluate.plan import parse_candidates_setting
from neon_jax.pool import EnvPool
from neon_jax.presets import get_preset


def committed_rows(results: Path) -> pd.DataFrame:
    path = results / "networks.csv"
    path = path if path.exists() else results / "networks.csv.gz"
    return pd.read_csv(path, dtype={"setting": str, "widths_before": str, "widths_after": str}).fillna({"setting": ""})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", required=True, help="a results folder of `neon-jax evaluate`")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--zoo-root", default="runs/zoo_reproduce", help="where the dataset's zoo is (or is built)")
    ap.add_argument("--out", required=True, help="JSON report (refuses to overwrite)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"{out} exists; delete it or choose another --out")
    results = Path(args.results)
    settings = json.loads((results / "settings.json").read_text())
    config = settings["config"]
    preset = get_preset(settings["identity"]["preset"])
    df = committed_rows(results)
    df = df[df["dataset"] == args.dataset]
    if df.empty:
        raise SystemExit(f"{results} has no rows of {args.dataset!r}")

    zoo_dir = Path(args.zoo_root) / args.dataset
    if not (zoo_dir / "zoo.json").exists():
        subprocess.run([sys.executable, "-m", "neon_jax.cli", "zoo", "--dataset", args.dataset, "--preset", preset.name,
                        "--out", str(args.zoo_root), "--quiet"] + (["--data-dir", args.data_dir] if args.data_dir else []),
                       check=True)
    zoo, prepared = zoo_lib.load_zoo_with_data(zoo_dir, args.data_dir)
    # the evaluation padded every network to the features / classes of all its datasets
    shapes = [zoo_lib.prepare_data(name, preset, seed=0, data_dir=args.data_dir) for name in config["datasets"]]
    dims = nets.NetDims(d_max=max(p.n_features for p in shapes), k_max=max(p.n_classes for p in shapes),
                        max_hidden=preset.max_hidden, w_max=preset.w_max)
    which = "heldout" if settings["identity"]["protocol"] == "heldout" else "all"
    pool = EnvPool.from_zoos([(zoo, prepared)], which, 5.0, preset, dims=dims)
    first = df.drop_duplicates("network").set_index("network")
    same_zoo = all(
        first.loc[net, "widths_before"] == "-".join(map(str, zoo.describe(net)["widths"]))
        and abs(first.loc[net, "test_acc_before"] - zoo.test_accuracy[net]) < 1e-6 for _, net in pool.names)

    cells = []
    for (method, setting, tau, passes, seed), sub in df.groupby(["method", "setting", "tau", "passes", "seed"],
                                                              dropna=False):
        t0 = time.perf_counter()
        view = dataclasses.replace(pool, tau=float(tau)) if method in ("neon", "neon_best") else pool
        if method in ("neon", "neon_best"):  # neon_best: "<agent spec> k=<K>", the best of K sampled episodes
            spec, k = parse_candidates_setting(setting) if method == "neon_best" else (setting, None)
            loaded = registry.load_agent(spec, preset)
            result = learn.run_agent(loaded.agent, loaded.actor, view, preset,
                                     EnvConfig(passes=int(passes), cut=loaded.cut), seed=int(seed),
                                     batch_size=int(config["batch_size"]), candidates=k)
        elif method == "random":
            result = pruning.run_baseline("random", view, preset, passes=int(passes), cut=setting or "reinit",
                                            seed=int(seed), batch_size=int(config["batch_size"]))
        else:
            value = float(setting) if method != "lap" else int(float(setting))
            result = pruning.run_baseline(method, view, preset, setting=value, seed=int(seed),
                                            passes=int(passes) if passes == passes else 4,
                                            batch_size=int(config["batch_size"]))
        got = {r["network"]: r for r in result.rows}
        ref = sub.set_index("network")
        exact = sum(got[n]["widths_after"] == ref.loc[n, "widths_after"] and
                    got[n]["params_after"] == int(ref.loc[n, "params_after"]) for n in ref.index)
        diff = max(abs(got[n]["test_acc_after"] - float(ref.loc[n, "test_acc_after"])) for n in ref.index)
        cells.append({"method": method, "setting": setting, "tau": None if tau != tau else float(tau),
                      "passes": None if passes != passes else int(passes), "seed": int(seed),
                      "networks": int(len(ref)), "same_widths_and_params": int(exact),
                      "test_acc_after_max_abs_diff": float(diff),
                      "compression_mean": {"committed": float(ref["compression"].mean()),
                                           "now": float(np.mean([got[n]["compression"] for n in ref.index]))},
                      "acc_change_mean": {"committed": float(ref["acc_change_points"].mean()),
                                          "now": float(np.mean([got[n]["acc_change_points"] for n in ref.index]))},
                      "seconds": time.perf_counter() - t0})
        c = cells[-1]
        print(f"{method:>10} {setting:>14} tau {c['tau']} : {exact}/{len(ref)} identical, max |d test acc| {diff:.2e}",
              flush=True)
    doc = {"results": str(results), "dataset": args.dataset, "same_zoo_as_committed": bool(same_zoo),
           "padded_dims": dataclasses.asdict(dims), "cells": cells,
           "all_identical": bool(same_zoo and all(c["same_widths_and_params"] == c["networks"] and
                                                  c["test_acc_after_max_abs_diff"] < 1e-6 for c in cells)),
           "machine": {"platform": platform.platform(), "jax": jax.__version__,
                       "devices": [str(d) for d in jax.devices()]}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"all identical: {doc['all_identical']} -> {out}")
    return 0 if doc["all_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
