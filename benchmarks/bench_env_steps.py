"""Benchmark: NEON environment steps per second vs batch size (one jitted, vmapped `NeonEnv.step`).

A zoo of trained base networks of one real dataset (default: 30 networks on ``diabetes``, preset ``cpu``;
built once and cached under ``benchmarks/.cache/``) is turned into a batch of B environments (networks repeat
when B exceeds the zoo), every environment is reset, and ONE batched step — random actions, one per
environment — is timed:

* the step is ``jax.jit(jax.vmap(env.step))``, compiled ahead of time (``lower(...).compile()``, reported
  apart); the timed call is the compiled executable with ``jax.block_until_ready``, best of `--repeats` on the
  same inputs (a step is a pure function, so every repeat does the same work);
* a step with keep = 1 (action 0) costs no fine-tuning; a cut fine-tunes for up to ``preset.finetune_epochs``
  epochs with early stopping, and under vmap the fine-tune loop runs until EVERY environment of the batch has
  stopped (finished environments idle), so a batch costs about its slowest environment's epochs. The mean
  fine-tune epochs per environment-step and the loop's epochs (the batch maximum) are reported with each size.

Usage::

    PYTHONPATH=. python benchmarks/bench_env_steps.py                  # cpu preset, diabetes, B = 1..256
    PYTHONPATH=. python benchmarks/bench_env_steps.py --batch 1,4,16,64 --budget-s 300

Writes ``benchmarks/results/env_steps_<preset>_<device>.json`` (device, versions, settings, and per batch size
compile_s, seconds per batched step and environment-steps per second).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.bench_population_training import core_count, cpu_model, device_slug
from neon_jax import env as env_lib
from neon_jax import pool as pool_lib
from neon_jax import zoo as zoo_lib
from neon_jax.presets import get_preset

DEFAULT_DATA_DIR = "/work/shared/data/neon"
HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
CACHE_DIR = Path(os.environ.get("NEON_JAX_BENCH_CACHE", HERE / ".cache"))  # trained zoos, reused between runs


def versions() -> dict:
    import flax
    import jaxlib
    import optax

    return {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__}


def cached_zoo(dataset: str, preset, n: int, seed: int, data_dir: str):
    """(Zoo, PreparedData): loaded from benchmarks/.cache when its splits match the data, else built and saved."""
    prepared = zoo_lib.prepare_data(dataset, preset, seed=seed, data_dir=data_dir)
    folder = CACHE_DIR / f"zoo_{preset.name}_n{n}_seed{seed}"
    if (folder / prepared.dataset.name / "zoo.json").exists():
        zoo = zoo_lib.load_zoo(folder / prepared.dataset.name)
        try:
            zoo_lib.check_data_matches(zoo, prepared)
            if len(zoo) == n and zoo.preset == preset:
                print(f"zoo: {len(zoo)} networks from {folder / prepared.dataset.name}", flush=True)
                return zoo, prepared
        except ValueError:
            pass
    print(f"zoo: training {n} {preset.name} networks on {dataset} (cached in {folder}) ...", flush=True)
    start = time.perf_counter()
    zoo = zoo_lib.build_zoo(prepared, preset, n=n, n_heldout=min(6, n - 1), seed=seed)
    zoo_lib.save_zoo(zoo, folder, overwrite=True)
    print(f"zoo: built in {time.perf_counter() - start:.0f}s, test accuracy mean {zoo.test_accuracy.mean():.3f}",
          flush=True)
    return zoo, prepared


def take(tree, idx):
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


def bench_batch(b: int, *, env, vstep, params_all, states_all, n_nets: int, repeats: int, seed: int) -> dict:
    """Compiles and times one batched step of `b` environments; returns its JSON record."""
    load_start = os.getloadavg()[0]
    idx = np.arange(b) % n_nets
    params, states = take(params_all, idx), take(states_all, idx)
    rng = np.random.default_rng(seed + b)
    actions = jnp.asarray(rng.integers(0, env_lib.NUM_ACTIONS, b), jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(seed + b), b)

    start = time.perf_counter()
    compiled = vstep.lower(keys, states, actions, params).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(keys, states, actions, params))
        times.append(time.perf_counter() - start)
    step_s = min(times)
    info = out[5]
    epochs = np.asarray(info["finetune_epochs"])
    acts = np.asarray(actions)
    return {
        "batch_size": b,
        "compile_s": compile_s,
        "step_s": step_s,
        "step_s_all_repeats": times,
        "env_steps_per_s": b / step_s,
        "ms_per_env_step": 1e3 * step_s / b,
        "fraction_keep_one": float((acts == 0).mean()),
        "mean_finetune_epochs_per_env_step": float(epochs.mean()),
        "mean_finetune_epochs_per_cut": float(epochs[acts != 0].mean()) if (acts != 0).any() else 0.0,
        "loop_finetune_epochs": int(epochs.max()),
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="diabetes")
    ap.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    ap.add_argument("--preset", default="cpu", choices=["cpu", "paper", "tiny"])
    ap.add_argument("--zoo-size", type=int, default=30, help="networks in the (cached) zoo (paper: 30)")
    ap.add_argument("--batch", default="1,2,4,8,16,32,64,128,256", help="comma-separated batch sizes")
    ap.add_argument("--budget-s", type=float, default=600.0,
                    help="start no further batch size once this many seconds have passed")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per batch size (best is reported)")
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--tau", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output JSON path")
    args = ap.parse_args(argv)

    preset = get_preset(args.preset)
    sizes = [int(s) for s in args.batch.split(",") if s.strip()]
    began = time.perf_counter()
    zoo, prepared = cached_zoo(args.dataset, preset, args.zoo_size, args.seed, args.data_dir)
    params_all, dims, names = pool_lib.batch_from_zoos([(zoo, prepared)], "all", args.tau, preset)
    config = env_lib.EnvConfig(passes=args.passes)
    env = env_lib.NeonEnv(config, dims, preset)
    n_nets = len(names)

    start = time.perf_counter()
    reset = jax.jit(jax.vmap(env.reset))
    _, states_all = jax.block_until_ready(reset(jax.random.split(jax.random.PRNGKey(args.seed), n_nets), params_all))
    reset_s = time.perf_counter() - start
    vstep = jax.jit(jax.vmap(env.step))

    s = prepared.splits
    widths = [zoo.describe(i)["widths"] for i in range(len(zoo))]
    result = {
        "benchmark": "env_steps",
        "description": (
            "Environment steps per second of the NEON pruning environment (neon_jax.env.NeonEnv.step) vs batch "
            "size: ONE jitted vmapped step of B environments (zoo networks, repeated when B exceeds the zoo) "
            "from their reset states (every environment at hidden layer 0), uniform random actions. compile_s is "
            "the ahead-of-time compile of that batch size, step_s the best of `repeats` calls of the compiled "
            "step (block_until_ready), env_steps_per_s = B / step_s. keep = 1 steps cost no fine-tuning; the "
            "batched fine-tune loop runs until every environment has stopped (loop_finetune_epochs = batch "
            "maximum), so large batches pay for their slowest environment."),
        "device": {"jax_platform": jax.devices()[0].platform, "jax_device_kind": jax.devices()[0].device_kind,
                   "jax_device_count": jax.device_count(), "cpu_model": cpu_model(), "cpu_cores": core_count(),
                   "hostname_platform": platform.platform()},
        "versions": versions(),
        "settings": {
            "dataset": prepared.dataset.name, "dataset_source": prepared.dataset.source,
            "rows": prepared.dataset.n_rows, "features": prepared.n_features, "classes": prepared.n_classes,
            "split_rows": {"finetune": len(s.finetune_idx), "val": len(s.val_idx), "train": len(s.train_idx),
                           "test": len(s.test_idx)},
            "preset": preset.name, "zoo_networks": n_nets, "zoo_widths": widths,
            "zoo_test_accuracy_mean": float(zoo.test_accuracy.mean()),
            "padded_dims": {"d_max": dims.d_max, "k_max": dims.k_max, "max_hidden": dims.max_hidden,
                            "w_max": dims.w_max},
            "finetune_epochs_max": preset.finetune_epochs, "finetune_batch": preset.finetune_batch,
            "patience": preset.patience, "activation_sample": preset.activation_sample,
            "feature_map": [preset.feature_rows, preset.feature_width],
            "passes": config.passes, "cut": config.cut, "reward": config.reward, "tau": args.tau,
            "actions": "uniform random over the 5 keep fractions, one draw per environment and batch size",
            "states": "reset states (step 0: every environment cuts hidden layer 0)",
            "repeats": args.repeats, "seed": args.seed, "dtype": "float32",
            "batched_reset_s_incl_compile": reset_s,
        },
        "results": [],
    }
    out_path = Path(args.out) if args.out else RESULTS_DIR / f"env_steps_{preset.name}_{device_slug()}.json"
    print(f"{prepared.dataset.name}: {n_nets} networks, preset {preset.name}, device "
          f"{result['device']['jax_device_kind']} ({core_count()} cores)")
    print(f"{'B':>5} {'compile s':>9} {'step s':>9} {'env-steps/s':>11} {'ms/env-step':>11} "
          f"{'ft ep/step':>10} {'loop ep':>7} {'keep=1':>6}", flush=True)
    for b in sizes:
        if time.perf_counter() - began > args.budget_s:
            print(f"budget of {args.budget_s:.0f}s spent; skipping batch sizes from {b} on", file=sys.stderr)
            break
        r = bench_batch(b, env=env, vstep=vstep, params_all=params_all, states_all=states_all, n_nets=n_nets,
                        repeats=args.repeats, seed=args.seed)
        result["results"].append(r)
        print(f"{b:>5} {r['compile_s']:>9.1f} {r['step_s']:>9.3f} {r['env_steps_per_s']:>11.1f} "
              f"{r['ms_per_env_step']:>11.1f} {r['mean_finetune_epochs_per_env_step']:>10.2f} "
              f"{r['loop_finetune_epochs']:>7d} {r['fraction_keep_one']:>6.2f}", flush=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2) + "\n")  # partial results survive an interrupted run
    print(f"wrote {out_path}")
    return result


if __name__ == "__main__":
    main()
