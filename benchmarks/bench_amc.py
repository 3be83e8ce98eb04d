"""What AMC's search costs per network: one network at a time (the original's schedule, one program per
network) against the searches of many networks in one vmapped program, and parallel episodes.

The held-out networks of the given zoos, at their preset's padded shapes, at preserve ratio 0.2. Each mode runs
twice in one process: the first call compiles (the persistent cache is off), the second is timed warm. Modes:

* ``one_at_a_time``: `amc.prune` jitted for one network, called once per network (E = 1, the original's order);
* ``mapped``: the same searches (same keys, same numbers) one after the other inside one program (`lax.map`),
  what `neon_jax.pruning` runs on a CPU (``AMCConfig.batching="auto"``);
* ``vmapped``: the same searches as one vmapped program over all networks (the default on accelerators);
* ``vmapped_parallel_E``: E episodes per round with one actor (E * L updates per round, as E = 1 would do in
  the same number of episodes) — a different schedule, so its search quality is reported beside it.

The PyTorch reference (`torch_reference/amc.py`) runs the original's loop on the same networks (compacted to their
real widths, the same calibration rows and validation split): one episode at a time, a NumPy least-squares refit
per pruned Linear per episode, a PyTorch DDPG update per transition. The original needed 0.24-1.21 h of search
for one network (§11, 10 iterations of the search, hardware not recorded).

    PYTHONPATH=. python benchmarks/bench_amc.py --zoo-root runs/zoo_cpu --datasets diabetes,phoneme \
        --out benchmarks/results/amc_search_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from neon_jax import amc, nets  # noqa: E402
from neon_jax import zoo as zoo_lib  # noqa: E402
from neon_jax.pool import EnvPool  # noqa: E402


def timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo-root", default="runs/zoo_cpu")
    ap.add_argument("--datasets", default="diabetes,phoneme")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--parallel", default="10", help="comma-separated E values for the parallel-episode mode")
    ap.add_argument("--preserve", type=float, default=0.2)
    ap.add_argument("--torch-networks", type=int, default=None, help="networks for the PyTorch reference (default all)")
    ap.add_argument("--out", default="benchmarks/results/amc_search_cpu.json")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)

    loaded = [zoo_lib.load_zoo_with_data(Path(args.zoo_root) / d, args.data_dir) for d in args.datasets.split(",")]
    preset = loaded[0][0].preset
    pool = EnvPool.from_zoos(loaded, "heldout", 5.0, preset)
    dims, n = pool.dims, len(pool)
    params = pool.batch(list(range(n)))
    model = nets.make_model(dims, preset)
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    print(f"{n} networks, dims {dims}, {args.episodes} episodes", flush=True)

    def prune_fn(cfg):
        return lambda k, p: amc.prune(k, model, p.variables, p.arch, dims, p.finetune, p.val, args.preserve, cfg)

    results = {}
    base = amc.AMCConfig(episodes=args.episodes)

    single = jax.jit(prune_fn(base))
    first = jax.tree_util.tree_map(lambda x: x[0], params)
    _, compile_s = timed(single, keys[0], first)
    per, outs = [], []
    for b in range(n):
        p = jax.tree_util.tree_map(lambda x, b=b: x[b], params)
        out, s = timed(single, keys[b], p)
        per.append(s)
        outs.append(out[2])
    rewards_1 = np.array([float(o.best_reward) for o in outs])
    results["one_at_a_time"] = {"first_call_seconds": compile_s, "seconds_total": float(np.sum(per)),
                                "seconds_per_network": float(np.mean(per)), "best_reward_mean": float(rewards_1.mean())}
    print("one at a time", results["one_at_a_time"], flush=True)

    mapped = jax.jit(lambda ks, ps: jax.lax.map(lambda a: prune_fn(base)(*a), (ks, ps)))
    _, first_s = timed(mapped, keys, params)
    (_, _, res), s = timed(mapped, keys, params)
    results["mapped"] = {"first_call_seconds": first_s, "seconds_total": s, "seconds_per_network": s / n,
                         "speedup_vs_one_at_a_time": float(np.sum(per)) / s,
                         "best_reward_mean": float(np.asarray(res.best_reward).mean()),
                         "max_abs_reward_difference_vs_one_at_a_time":
                             float(np.abs(np.asarray(res.best_reward) - rewards_1).max())}
    print("mapped", results["mapped"], flush=True)

    modes = [("vmapped", base)] + [(f"vmapped_parallel_{e}", amc.AMCConfig(episodes=args.episodes, parallel_episodes=e))
                                   for e in map(int, args.parallel.split(","))]
    for name, cfg in modes:
        fn = jax.jit(jax.vmap(prune_fn(cfg)))
        _, first_s = timed(fn, keys, params)
        (_, arch, res), s = timed(fn, keys, params)
        rewards = np.asarray(res.best_reward)
        row = {"first_call_seconds": first_s, "seconds_total": s, "seconds_per_network": s / n,
               "speedup_vs_one_at_a_time": float(np.sum(per)) / s, "best_reward_mean": float(rewards.mean()),
               "best_flops_ratio_mean": float(np.asarray(res.best_flops_ratio).mean()),
               "best_val_acc_mean": float(np.asarray(res.best_val_acc).mean())}
        if name == "vmapped":
            row["max_abs_reward_difference_vs_one_at_a_time"] = float(np.abs(rewards - rewards_1).max())
        results[name] = row
        print(name, row, flush=True)

    import torch

    from benchmarks.torch_reference.amc import search as torch_search
    from neon_jax.interop import to_torch_sequential

    torch.set_num_threads(os.cpu_count() or 1)
    host = jax.device_get(params)
    t_times, t_rewards = [], []
    for b in range(n if args.torch_networks is None else min(n, args.torch_networks)):
        p = jax.tree_util.tree_map(lambda x, b=b: x[b], host)
        d = int(p.arch.n_features)
        seq = to_torch_sequential(nets.compact(p.variables, p.arch, dims))
        rows = np.random.default_rng(b).permutation(int(p.finetune.n))[:base.calibration_rows]
        x_cal = np.asarray(p.finetune.x)[rows, :d]
        x_val, y_val = np.asarray(p.val.x)[:int(p.val.n), :d], np.asarray(p.val.y)[:int(p.val.n)]
        t0 = time.perf_counter()
        out = torch_search(seq, x_cal, x_val, y_val, preserve=args.preserve, episodes=args.episodes, seed=b)
        t_times.append(time.perf_counter() - t0)
        t_rewards.append(out["best_reward"])
        print(f"torch network {b}: {t_times[-1]:.1f} s, best reward {out['best_reward']:.4f}", flush=True)
    results["torch_one_at_a_time"] = {"networks": len(t_times), "seconds_per_network": float(np.mean(t_times)),
                                      "best_reward_mean": float(np.mean(t_rewards))}
    for name in ("one_at_a_time", "mapped", "vmapped", *[m for m, _ in modes[1:]]):
        results[name]["speedup_vs_torch_per_network"] = float(np.mean(t_times)) / results[name]["seconds_per_network"]
    print("torch", results["torch_one_at_a_time"], flush=True)

    doc = {"benchmark": "amc_search", "datasets": args.datasets.split(","), "networks": n, "dims": vars(dims),
           "episodes": args.episodes, "preserve_ratio": args.preserve, "results": results,
           "original_search_hours_per_network": {"small": 0.24, "medium": 0.80, "large": 1.21,
                                                 "note": "neon_spec.md §11: AMC 10 iterations, hardware not recorded"},
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
                       "backend": jax.default_backend()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
