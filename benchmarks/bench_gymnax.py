"""Environment steps per second of ``gymnax.make("NeonPrune-v0")`` under vmap, auto-reset included, beside the
PyTorch reference environment stepping the same networks.

    PYTHONPATH=. python benchmarks/bench_gymnax.py --batches 1,8,64,256,1024 --steps 8

* JAX: ``jit(scan(vmap(env.step)))`` of `--steps` steps of B environments from their reset states, random
  actions, gymnax's auto-reset (every ended episode draws a new network from the pool); best of `--repeats`,
  compiled ahead of time (reported apart); ``gymnax_reset``: the same scan over gymnax's own `Environment.step`
  (a reset for every environment at every step, then selected), timed in turn with it
  (``speedup_vs_gymnax_reset``): `NeonPrune.step` resets a vmapped batch once, only when any of it ended.
* PyTorch: `torch_reference.env_step` stepping each network of the pool once from its reset state (the same
  random actions), one environment after another; its steps per second do not depend on B.

Writes ``benchmarks/results/gymnax_env_steps_<device>.json`` (refuses to overwrite without ``--overwrite``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import gymnax
import jax
import numpy as np
from gymnax.environments import environment

import neon_jax.gymnax as ng
from benchmarks.common import (
    RESULTS_DIR,
    choose_torch_threads,
    compile_aot,
    device_info,
    device_slug,
    load_average,
    log,
    neon_jax_provenance,
    timeit,
    torch_device,
    torch_sync,
    versions,
    write_json,
)
from neon_jax import zoo as zoo_lib


def _variants(env):
    """The two steps timed: ours (the auto-reset runs only when an episode ended) and gymnax's own (a reset for
    every environment at every step, then selected)."""
    return (("auto_reset", env.step),
            ("gymnax_reset", lambda k, s, a, p: environment.Environment.step(env, k, s, a, p)))


def jax_rows(env, params, batches, steps: int, repeats: int, seed: int) -> list[dict]:
    """Steps per second at each batch size of the two `_variants`, timed in turn within each repeat (so a load
    that drifts weighs on all three alike), best of `repeats`."""
    rows = []
    for b in batches:
        keys = jax.random.split(jax.random.PRNGKey(seed), b)
        obs, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
        row, compiled = {"batch_size": b, "steps": steps}, {}
        for name, fn in _variants(env):
            def run(state, key, fn=fn):
                def body(state, key):
                    k_a, k_s = jax.random.split(key)
                    action = jax.random.randint(k_a, (b,), 0, env.num_actions)
                    out = jax.vmap(fn, in_axes=(0, 0, 0, None))(jax.random.split(k_s, b), state, action, params)
                    return out[1], out[2]
                return jax.lax.scan(body, state, jax.random.split(key, steps))

            compiled[name], row[f"{name}_compile_s"] = compile_aot(jax.jit(run), state, jax.random.PRNGKey(seed + 1))
        times = {name: [] for name in compiled}
        for _ in range(repeats):
            for name, program in compiled.items():
                best, _, (_, rewards) = timeit(lambda: program(state, jax.random.PRNGKey(seed + 1)), 1)  # noqa: B023
                assert np.isfinite(np.asarray(rewards)).all()
                times[name].append(best)
        for name, ts in times.items():
            row |= {f"{name}_run_s": min(ts), f"{name}_run_s_all_repeats": ts,
                    f"{name}_env_steps_per_s": b * steps / min(ts)}
        row["speedup_vs_gymnax_reset"] = row["gymnax_reset_run_s"] / row["auto_reset_run_s"]
        log(f"B={b:5d}: {row['auto_reset_env_steps_per_s']:8.1f} env-steps/s with auto-reset, "
            f"{row['gymnax_reset_env_steps_per_s']:8.1f} with gymnax's (a reset every step); compile "
            f"{row['auto_reset_compile_s']:.0f} s")
        rows.append(row | load_average())
    return rows


def torch_row(pairs, pool, preset, passes: int, tau: float, seed: int, torch_threads) -> dict:
    """PyTorch's seconds per step: every network of the pool stepped once from its reset state, best of 2."""
    from benchmarks.torch_reference.env_step import torch_env_from_jax

    host = jax.device_get(pool.batch(np.arange(len(pool))))
    splits = {name: prepared.splits for _, prepared in pairs for name in [prepared.dataset.name]}
    take = lambda tree, i: jax.tree_util.tree_map(lambda a: a[i], tree)  # noqa: E731
    actions = np.random.default_rng(seed).integers(0, 5, len(pool))

    def env_of(i):
        return torch_env_from_jax(take(host.variables, i), take(host.arch, i), pool.dims, preset,
                                  splits[pool.names[i][0]], passes, tau, seed + i, torch_device())

    probe = env_of(0)
    threads, probe_s = choose_torch_threads(torch_threads, lambda: (probe.reset(), probe.step(3)))
    per_env = np.full((2, len(pool)), np.inf)
    for r in range(2):
        for i in range(len(pool)):
            env = env_of(i)
            env.reset()
            t0 = time.perf_counter()
            env.step(int(actions[i]))
            torch_sync()
            per_env[r, i] = time.perf_counter() - t0
    best = per_env.min(0)
    log(f"PyTorch: {1 / best.mean():.1f} env-steps/s ({threads} thread(s), one environment at a time)")
    return {"torch_s_per_env_step": float(best.mean()), "torch_env_steps_per_s": float(1 / best.mean()),
            "torch_s_per_env": best.tolist(), "actions": actions.tolist(), "torch_threads": threads,
            "torch_threads_probe_s": probe_s}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8,64,256,1024", help="comma-separated batch sizes B")
    parser.add_argument("--steps", type=int, default=8, help="steps per timed scan")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--zoo", default=None, help="zoo folder (default: the shipped default pool)")
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--tau", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", default="auto")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--out", default=None,
                        help="JSON path (default: benchmarks/results/gymnax_env_steps_<device>.json)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else RESULTS_DIR / f"gymnax_env_steps_{device_slug()}.json"
    if out.exists() and not args.overwrite:
        raise SystemExit(f"{out} exists; pass --overwrite or choose --out")
    env, params = gymnax.make(ng.ENV_ID, zoo=args.zoo, passes=args.passes, tau=args.tau)
    pairs = ng.default_pool() if args.zoo is None else [
        zoo_lib.load_zoo_with_data(p) for p in zoo_lib.find_zoos(args.zoo)]
    from neon_jax.pool import EnvPool

    pool = EnvPool.from_zoos(pairs, "all", args.tau, env.core.preset)
    rows = jax_rows(env, params, [int(b) for b in args.batches.split(",")], args.steps, args.repeats, args.seed)
    torch = None if args.skip_torch else torch_row(pairs, pool, env.core.preset, args.passes, args.tau, args.seed,
                                                   args.torch_threads)
    if torch:
        for row in rows:
            row["ratio_vs_torch"] = row["auto_reset_env_steps_per_s"] / torch["torch_env_steps_per_s"]
    doc = {"benchmark": "gymnax_env_steps", "settings": {
               "pool": "default (iris, wine, breast_cancer; 4 cpu-preset networks each)" if args.zoo is None
               else args.zoo, "networks": len(pool), "preset": env.core.preset.name, "passes": args.passes,
               "tau": args.tau, "padded_dims": dataclasses.asdict(pool.dims),
               "actions": "uniform random", "reset": "gymnax auto-reset: a new network drawn from the pool"},
           "jax": rows, "torch": torch, "versions": versions(), "device": device_info(torch_device()),
           "neon_jax": neon_jax_provenance()}
    write_json(out, doc)
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
