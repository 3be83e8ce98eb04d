"""Where the main job's time goes, and what K candidate episodes buy: issue 37, point 4.

On base networks of datasets the shipped agents never saw (their zoos built here, cpu preset), the main job's
pruning (`learn.run_agent(..., candidates=K)`: K sampled episodes and one greedy per network, the best candidate
within tau on validation) is run as the main job runs it (one network per call, ``--batch 1``) and as `evaluate`
runs it (all of a dataset's networks in one call), beside AMC (FLOPs kept 0.2, `pruning.program.run_baseline`) on
the same networks. Variants:

* ``K=k``: k sampled episodes plus the greedy one (the main job's default is 8);
* ``no_finetune``: K=8 with the environment's per-step fine-tune at zero epochs (what everything but the
  fine-tunes costs: the state features, the cuts, the accuracies, the agent);
* ``fixed_epochs``: K=8 with patience = max epochs (every fine-tune runs its full schedule; the cost of the
  early stop not existing);
* ``amc``: AMC 0.2's search and final fine-tune.

Each row: run seconds per network (compile apart, `runner.run`), compile seconds, mean / median compression,
mean test accuracy change, networks beyond tau on test, fine-tune epochs run per network (summed over the episodes'
steps). The load average is recorded: on a shared machine compare shares, not absolute seconds.

    PYTHONPATH=. python benchmarks/bench_main_job_cost.py --datasets diabetes,phoneme,ionosphere --networks 4 \
        --out benchmarks/results/main_job_cost_cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from neon_jax import data as data_lib  # noqa: E402
from neon_jax.agent.registry import load_agent  # noqa: E402
from neon_jax.env import EnvConfig  # noqa: E402
from neon_jax.learn import run_agent  # noqa: E402
from neon_jax.pool import EnvPool  # noqa: E402
from neon_jax.presets import get_preset  # noqa: E402
from neon_jax.pruning.program import run_baseline  # noqa: E402
from neon_jax.zoo import build_zoo, prepare_data  # noqa: E402


def summarise(rows: list[dict], tau: float, run_seconds: float, compile_seconds: float) -> dict:
    """The front and the cost of one variant's rows."""
    compression = np.array([r["compression"] for r in rows], float)
    change = np.array([r["acc_change_points"] for r in rows], float)
    epochs = np.array([r.get("finetune_epochs", 0) for r in rows], float)
    return {"networks": len(rows), "compression_mean": float(compression.mean()),
            "compression_median": float(np.median(compression)), "acc_change_mean": float(change.mean()),
            "acc_change_median": float(np.median(change)), "beyond_tau_test": int((change < -tau).sum()),
            "run_seconds": run_seconds, "run_seconds_per_network": run_seconds / len(rows),
            "compile_seconds": compile_seconds, "finetune_epochs_per_network": float(epochs.mean())}


def variants(ks: list[int]) -> list[tuple[str, int | None, dict]]:
    """(name, K or None for AMC, preset changes) of every variant."""
    out = [(f"K={k}", k, {}) for k in ks]
    if 8 in ks:
        out += [("no_finetune", 8, {"finetune_epochs": 0}), ("fixed_epochs", 8, {"patience": 10 ** 6})]
    return out + [("amc", None, {})]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="diabetes,phoneme,ionosphere")
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--networks", type=int, default=4, help="base networks per dataset")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--tau", type=float, default=5.0)
    ap.add_argument("--k", default="1,2,4,8,16", help="sampled episodes per network (plus one greedy)")
    ap.add_argument("--batch", default="1,all", help="networks per call: 1 (the main job) and/or all (evaluate)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/main_job_cost_cpu.json")
    args = ap.parse_args(argv)

    preset = get_preset(args.preset)
    ks = [int(k) for k in args.k.split(",")]
    loaded = load_agent("pretrained", preset, args.tau)
    env_config = EnvConfig(passes=4, cut=loaded.env.get("cut", "reinit"))
    result = {"benchmark": "main_job_cost", "preset": preset.name, "tau": args.tau, "agent": loaded.description,
              "agent_datasets": loaded.datasets, "cut": env_config.cut, "seed": args.seed,
              "jax": jax.__version__, "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg()[0],
              "datasets": {}, "results": []}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pools = []
    for name in args.datasets.split(","):
        t0 = time.perf_counter()
        prepared = prepare_data(data_lib.load_dataset(name, data_dir=args.data_dir), preset, seed=args.seed)
        zoo = build_zoo(prepared, preset, n=args.networks, n_heldout=0, seed=args.seed)
        pool = EnvPool.from_zoos([(zoo, prepared)], "all", args.tau, preset)
        pools.append((name, pool))
        result["datasets"][name] = {"rows": prepared.dataset.n_rows, "networks": args.networks,
                                    "zoo_seconds": time.perf_counter() - t0}
        print(f"{name}: zoo of {args.networks} in {time.perf_counter() - t0:.1f} s", flush=True)

    for batch in args.batch.split(","):
        for label, k, changes in variants(ks):
            rows, run_s, compile_s = [], 0.0, 0.0
            for _name, pool in pools:
                size = len(pool) if batch == "all" else int(batch)
                if k is None:
                    res = run_baseline("amc", pool, preset, setting=0.2, seed=args.seed, batch_size=size)
                else:
                    res = run_agent(loaded.agent, loaded.actor, pool, dataclasses.replace(preset, **changes),
                                    env_config, seed=args.seed, batch_size=size, candidates=k)
                rows += res.rows
                run_s += res.run_seconds
                compile_s += res.compile_seconds
            if label == variants(ks)[0][0] and batch == args.batch.split(",")[0]:
                result["widths"] = [r["widths_before"] for r in rows]
            entry = {"variant": label, "batch": batch, "k_sampled": k, "preset_changes": changes,
                     "load_average": os.getloadavg()[0], **summarise(rows, args.tau, run_s, compile_s)}
            result["results"].append(entry)
            print(f"batch {batch:>3} {label:>13}: x{entry['compression_mean']:.2f} (median "
                  f"x{entry['compression_median']:.2f}), {entry['acc_change_mean']:+.2f} pts, "
                  f"{entry['beyond_tau_test']} beyond tau, {entry['run_seconds_per_network']:.2f} s/net run, "
                  f"{compile_s:.0f} s compile, {entry['finetune_epochs_per_network']:.0f} epochs/net, "
                  f"load {entry['load_average']:.1f}", flush=True)
            out_path.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
