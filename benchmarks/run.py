"""One entry point for the speed benchmarks: neon_jax and the PyTorch reference on identical work, in one run.

    PYTHONPATH=. python benchmarks/run.py --quick            # a few minutes on 2 CPU cores
    PYTHONPATH=. python benchmarks/run.py --full             # the full grid (meant for a GPU)
    PYTHONPATH=. python benchmarks/run.py --quick --only env_steps,agent_update

Benchmarks (each: JAX compile seconds apart from run seconds, PyTorch seconds, ratio = torch / jax):

* ``population``: base-network training of P random networks (bench_population_training: same architectures,
  initial weights, data, epochs, batch; parity asserted before timing): one vmap over the population, and
  (``--slots``) the depth-sorted chunks that ``trainer.train`` uses by default on one CPU device;
* ``env_steps``: one environment step of B environments (zoo networks of a real dataset, cpu preset, reset
  states, random actions): ``jit(vmap(NeonEnv.step))``, ``vmap_in_chunks`` of it and ``NeonEnv.step_batch``
  (``--slots``: packed fine-tunes, the library's batched step) vs the PyTorch reference environment stepping the
  same networks with the same actions one by one (rebuild, fine-tune, evaluate, NumPy/SciPy state);
* ``episode``: whole four-pass episodes of B networks through the library's roll-out (`rollout.make_rollout`,
  random policy; one vmap(step) per step and, with ``--slots``, packed fine-tunes) vs
  `torch_reference.env_step.run_episode` replaying the same actions one network after the other;
* ``agent_update``: the library's update (`agent.make_update`, what `agent.make_train_iteration` runs) on B
  episodes of T observations vs the original's PyTorch update (one episode at a time, BatchNorm2d at batch 1),
  and vs one PyTorch update on the batch mean (identical maths);
* ``batch_scaling``: env steps per second vs B (PyTorch is linear in B: its per-step time from ``env_steps``);
* ``device_scaling``: population training (and, in full mode, env steps) with the batch sharded over 1, 2, ...
  devices (`neon_jax.sharding`); on a CPU the devices are simulated (``--xla_force_host_platform_device_count``)
  and share the same cores.

Writes ``benchmarks/results/suite_<mode>_<device>.json``; `benchmarks/summarize.py` prints the README table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import common  # noqa: E402
from benchmarks.bench_population_training import suite_population  # noqa: E402
from benchmarks.common import take  # noqa: E402
from neon_jax import env as env_lib  # noqa: E402
from neon_jax import fit, nets  # noqa: E402
from neon_jax import pool as pool_lib  # noqa: E402
from neon_jax import zoo as zoo_lib  # noqa: E402
from neon_jax.presets import get_preset  # noqa: E402

RESULTS_DIR = HERE / "results"
BENCHMARKS = ("population", "env_steps", "episode", "agent_update", "batch_scaling", "device_scaling")

MODES = {
    "quick": dict(pop=[32], pop_epochs=5, pop_repeats=3, env_batch=32, env_repeats=3, torch_passes=2,
                  episode_batch=8, update_batch=8, scaling=[1, 8, 32], devices=[1, 2], device_env_steps=False),
    "full": dict(pop=[1, 8, 32, 128, 512], pop_epochs=5, pop_repeats=5, env_batch=32, env_repeats=5,
                 torch_passes=3, episode_batch=32, update_batch=32, scaling=[1, 4, 16, 32, 64, 256, 1024],
                 devices=None, device_env_steps=True),
    # `benchmarks/device_check.py`: the paper preset on one GPU within minutes, and its CPU dry run
    "device": dict(pop=[32, 128], pop_epochs=5, pop_repeats=3, env_batch=32, env_repeats=3, torch_passes=2,
                   episode_batch=8, update_batch=32, scaling=[32, 128, 256, 512, 1024], devices=[1],
                   device_env_steps=False),
    # the paper preset on 2 CPU cores (fine-tunes of up to 100 epochs at widths to 1000): env steps and 4-pass
    # episodes of a few networks, padded against the width buckets, beside PyTorch
    "paper_cpu": dict(pop=[8], pop_epochs=1, pop_repeats=2, env_batch=4, env_repeats=2, torch_passes=1,
                      episode_batch=2, update_batch=8, scaling=[2, 4], devices=[1], device_env_steps=False,
                      zoo_networks=8),
    "dry": dict(pop=[4], pop_epochs=1, pop_repeats=1, env_batch=4, env_repeats=1, torch_passes=1, episode_batch=2,
                update_batch=2, scaling=[2, 4], devices=[1], device_env_steps=False, zoo_networks=8),
}


def torch_device() -> str:
    """The PyTorch side runs where the original did: on the GPU when there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def log(*a):
    print(*a, flush=True)


def load() -> dict:
    return {"load_average_1min": os.getloadavg()[0]}


def timeit(fn, repeats: int):
    """(best seconds, all seconds, last output) of `repeats` calls; outputs are blocked on."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times), times, out


def compile_aot(jitted, *args):
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------------------------
# The work: a zoo of trained networks on a real dataset


class Work:
    """The zoo networks, their data and the JAX environment every environment benchmark shares."""

    def __init__(self, args):
        self.preset = get_preset(args.preset)
        path = Path(args.zoo) if args.zoo else None
        if path is not None and (path / "zoo.json").exists():
            self.zoo, self.prepared = zoo_lib.load_zoo_with_data(path, data_dir=args.data_dir)
            self.zoo_source = str(path)
        else:

            self.zoo, self.prepared = common.cached_zoo(args.dataset, self.preset, getattr(args, "zoo_networks", 30), 0,
                                                 args.data_dir)
            self.zoo_source = "benchmarks/.cache"
        if self.zoo.preset != self.preset:
            raise SystemExit(f"the zoo at {path} is of preset {self.zoo.preset.name}, not {self.preset.name}")
        self.pool = pool_lib.EnvPool.from_zoos([(self.zoo, self.prepared)], "all", args.tau, self.preset)
        self.params, self.dims, self.names = self.pool.batch(np.arange(len(self.pool))), self.pool.dims, self.pool.names
        self.host_params = jax.device_get(self.params)
        self.n = len(self.names)
        self.tau = args.tau
        self.passes = args.passes
        self.env = env_lib.NeonEnv(env_lib.EnvConfig(passes=args.passes), self.dims, self.preset)
        self.reset = jax.jit(jax.vmap(self.env.reset))
        self.vstep = jax.jit(jax.vmap(self.env.step))

    def batch(self, b):
        idx = np.arange(b) % self.n
        return idx, take(self.params, idx)

    def bucket_groups(self, idx):
        """The networks `idx` split by width bucket, each group at its own shape (`nets.shape_groups` with no
        merging, batch 1): [(positions in idx, dims, EnvParams at dims)]."""

        sub = self.pool.subset(idx)
        return [(members, dims, sub.subset(members).repadded(dims).batch(np.arange(len(members))))
                for members, dims in nets.shape_groups(sub.archs, sub.dims, 1)]

    def torch_env(self, i, seed):
        from benchmarks.torch_reference.env_step import torch_env_from_jax

        return torch_env_from_jax(take(self.host_params.variables, i), take(self.host_params.arch, i), self.dims,
                                  self.preset, self.prepared.splits, self.passes, self.tau, seed, torch_device())

    def describe(self) -> dict:
        s = self.prepared.splits
        return {"dataset": self.prepared.dataset.name, "zoo": self.zoo_source, "zoo_networks": self.n,
                "rows": {"finetune": len(s.finetune_idx), "val": len(s.val_idx), "train": len(s.train_idx)},
                "features": self.prepared.n_features, "classes": self.prepared.n_classes,
                "preset": self.preset.name, "passes": self.passes, "tau": self.tau, "cut": "reinit",
                "finetune_epochs_max": self.preset.finetune_epochs, "finetune_batch": self.preset.finetune_batch,
                "patience": self.preset.patience, "activation_sample": self.preset.activation_sample,
                "feature_map": [self.preset.feature_rows, self.preset.feature_width],
                "padded_dims": dataclasses.asdict(self.dims),
                "zoo_widths": [self.zoo.describe(i)["widths"] for i in range(self.n)]}


def choose_torch_threads(setting, probe_fn) -> tuple[int, dict | None]:
    """A number, or "auto": the faster of 1 thread and all cores on `probe_fn` (best of 2, interleaved)."""
    import torch

    if setting != "auto":
        torch.set_num_threads(int(setting))
        return int(setting), None
    best = {}
    for _ in range(2):
        for n in sorted({1, common.core_count()}):
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            probe_fn()
            best[n] = min(best.get(n, np.inf), time.perf_counter() - t0)
    n = min(best, key=best.get)
    torch.set_num_threads(n)
    return n, {str(k): v for k, v in best.items()}


# ----------------------------------------------------------------------------------------------------------------
# Benchmarks


def step_actions(seed: int, b: int) -> np.ndarray:
    """The first `b` of one fixed random action sequence: every batch size steps a prefix of the same work."""
    return np.random.default_rng(seed).integers(0, env_lib.NUM_ACTIONS, 4096)[:b].astype(np.int32)


def jax_env_steps(work: Work, b: int, repeats: int, seed: int, chunk: int | None = None,
                  slots: int | None = None) -> dict:
    """Compile and time one batched step of `b` environments from their reset states: ``jit(vmap(step))``;
    with `chunk`, also ``vmap_in_chunks(step, chunk)``; with `slots`, also ``NeonEnv.step_batch(slots=...)``
    (packed fine-tunes, depth-sorted finishes: the library's batched step)."""
    idx, params = work.batch(b)
    _, states = work.reset(jax.random.split(jax.random.PRNGKey(seed), b), params)
    actions = jnp.asarray(step_actions(seed, b), jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), b)
    compiled, compile_s = compile_aot(work.vstep, keys, states, actions, params)
    best, times, out = timeit(lambda: compiled(keys, states, actions, params), repeats)
    epochs = np.asarray(out[5]["finetune_epochs"])
    chunked = {}
    if chunk and b > chunk:  # the same step, vmapped over chunks of `chunk` environments one chunk after the other
        from neon_jax.sharding import vmap_in_chunks

        step_c = jax.jit(vmap_in_chunks(work.env.step, chunk))
        compiled_c, compile_c = compile_aot(step_c, keys, states, actions, params)
        best_c, times_c, out_c = timeit(lambda: compiled_c(keys, states, actions, params), repeats)
        assert np.allclose(np.asarray(out_c[2]), np.asarray(out[2]), rtol=1e-4), "chunked step changed the rewards"
        chunked = {"chunk": chunk, "jax_chunked_compile_s": compile_c, "jax_chunked_run_s": best_c,
                   "jax_chunked_run_s_all_repeats": times_c}
    packed = {}
    if slots:
        step_b = jax.jit(env_lib.NeonEnv(work.env.config, work.dims, work.preset, slots=slots).step_batch)
        compiled_b, compile_b = compile_aot(step_b, keys, states, actions, params)
        best_b, times_b, out_b = timeit(lambda: compiled_b(keys, states, actions, params), repeats)
        info_b = out_b[5]
        packed = {
            "slots": slots, "jax_step_batch_compile_s": compile_b, "jax_step_batch_run_s": best_b,
            "jax_step_batch_run_s_all_repeats": times_b,
            "jax_step_batch_finetune_epochs_sum": int(np.asarray(info_b["finetune_epochs"]).sum()),
            "step_batch_vs_vmap": {
                "same_widths": bool(np.array_equal(np.asarray(info_b["width_after"]), np.asarray(out[5]["width_after"]))),
                "same_epochs": bool(np.array_equal(np.asarray(info_b["finetune_epochs"]), epochs)),
                "reward_max_abs_diff": float(np.abs(np.asarray(out_b[2]) - np.asarray(out[2])).max()),
                "val_acc_max_abs_diff": float(np.abs(np.asarray(info_b["acc"]) - np.asarray(out[5]["acc"])).max()),
                "note": "float rounding of differently batched matmuls, amplified by Adam, can move an accuracy "
                        "by a validation row; vmap(step) vs one environment at a time differs the same way"},
        }
    bucketed = {}
    if slots:  # the same steps, every width bucket at its own shape (the runner's programs)
        groups, run_s, compile_g, same = [], 0.0, 0.0, True
        for members, dims, params_g in work.bucket_groups(idx):
            env_g = env_lib.NeonEnv(work.env.config, dims, work.preset, slots=slots)
            _, states_g = jax.jit(jax.vmap(env_g.reset))(jax.random.split(jax.random.PRNGKey(seed), b)[members],
                                                         params_g)
            args_g = (keys[members], states_g, actions[members], params_g)
            compiled_g, c = compile_aot(jax.jit(env_g.step_batch), *args_g)
            best_g, _, out_g = timeit(lambda: compiled_g(*args_g), repeats)  # noqa: B023 (called at once)
            run_s, compile_g = run_s + best_g, compile_g + c
            same &= bool(np.array_equal(np.asarray(out_g[5]["width_after"]), np.asarray(out[5]["width_after"])[members]))
            groups.append({"w_max": dims.w_max, "max_hidden": dims.max_hidden, "networks": len(members),
                           "run_s": best_g, "compile_s": c})
        bucketed = {"jax_buckets_run_s": run_s, "jax_buckets_compile_s": compile_g, "bucket_groups": groups,
                    "buckets_same_widths_as_vmap": same}
    return chunked | packed | bucketed | {
            "batch_size": b, "jax_compile_s": compile_s, "jax_run_s": best, "jax_run_s_all_repeats": times,
            "env_steps_per_s": b / best, "actions": np.asarray(actions).tolist(), "idx": idx.tolist(),
            "jax_finetune_epochs_mean": float(epochs.mean()), "jax_loop_epochs": int(epochs.max()),
            "widths_after": np.asarray(out[5]["width_after"]).tolist(),
            "params_after": np.asarray(out[5]["params_after"]).tolist()}


def torch_env_steps(work: Work, idx, actions, passes: int, seed: int) -> dict:
    """The same steps, one environment after the other; per environment the best of `passes` (reset off the
    clock before every pass)."""
    per_env = np.full((passes, len(idx)), np.inf)
    epochs, widths, n_params = [], [], []
    for r in range(passes):
        for k, (i, a) in enumerate(zip(idx, actions)):
            env = work.torch_env(int(i), seed + k)
            env.reset()
            t0 = time.perf_counter()
            _, _, _, info = env.step(int(a))
            torch_sync()
            per_env[r, k] = time.perf_counter() - t0
            if r == 0:
                epochs.append(info["finetune_epochs"])
                widths.append(info["width_after"])
                n_params.append(info["params_after"])
    best = per_env.min(0)
    return {"torch_run_s": float(best.sum()), "torch_run_s_all_passes": per_env.sum(1).tolist(),
            "torch_s_per_env": best.tolist(),
            "torch_s_per_env_step": float(best.mean()),
            "torch_s_per_cut_step": float(best[np.asarray(actions) != 0].mean()) if np.any(np.asarray(actions)) else None,
            "torch_s_per_keep_step": float(best[np.asarray(actions) == 0].mean()) if np.any(np.asarray(actions) == 0) else None,
            "torch_finetune_epochs_mean": float(np.mean(epochs)), "widths_after": widths, "params_after": n_params}


def bench_env_steps(args, mode, work: Work) -> dict:
    b = mode["env_batch"]
    log(f"[env_steps] B={b}: JAX compile + run")
    r = jax_env_steps(work, b, mode["env_repeats"], args.seed, chunk=args.chunk, slots=args.slots) | load()
    probe_env = work.torch_env(0, 0)

    def probe():
        probe_env.reset()
        probe_env.step(3)

    threads, probe_s = choose_torch_threads(args.torch_threads, probe)
    log(f"[env_steps] torch ({threads} thread(s)) stepping {b} environments one by one")
    t = torch_env_steps(work, r["idx"], r["actions"], mode["torch_passes"], args.seed)
    same = t["widths_after"] == r["widths_after"]
    r.update({k: v for k, v in t.items() if k not in ("widths_after", "params_after")})
    r["same_widths_and_params"] = bool(same and t["params_after"] == r["params_after"])
    r.pop("widths_after"), r.pop("params_after")
    r["torch_threads"], r["torch_threads_probe_s"] = threads, probe_s
    r["ratio"] = r["torch_run_s"] / r["jax_run_s"]
    if "jax_chunked_run_s" in r:
        r["ratio_chunked"] = r["torch_run_s"] / r["jax_chunked_run_s"]
        log(f"  chunks of {r['chunk']}: jax {r['jax_chunked_run_s']:.3f}s  ratio {r['ratio_chunked']:.2f}")
    if "jax_step_batch_run_s" in r:
        r["ratio_step_batch"] = r["torch_run_s"] / r["jax_step_batch_run_s"]
        log(f"  step_batch (slots {r['slots']}): jax {r['jax_step_batch_run_s']:.3f}s (compile "
            f"{r['jax_step_batch_compile_s']:.1f}s)  ratio {r['ratio_step_batch']:.2f}")
    if "jax_buckets_run_s" in r:
        r["ratio_buckets"] = r["torch_run_s"] / r["jax_buckets_run_s"]
        log(f"  step_batch per width bucket ({len(r['bucket_groups'])} groups): jax {r['jax_buckets_run_s']:.3f}s "
            f"(compile {r['jax_buckets_compile_s']:.1f}s)  ratio {r['ratio_buckets']:.2f}")
    r["note"] = ("jit(vmap(step)): the batched fine-tune loop runs until every environment has stopped "
                 "(jax_loop_epochs), PyTorch runs each environment's own epochs (torch_finetune_epochs_mean); "
                 "step_batch runs each environment's own epochs too (jax_step_batch_finetune_epochs_sum), "
                 "in `slots` fine-tunes at a time")
    log(f"  jax {r['jax_run_s']:.3f}s (compile {r['jax_compile_s']:.1f}s, loop epochs {r['jax_loop_epochs']})  "
        f"torch {r['torch_run_s']:.3f}s (mean epochs {r['torch_finetune_epochs_mean']:.1f})  ratio {r['ratio']:.2f}")
    return {"settings": work.describe(), "results": [r]}


def bench_episode(args, mode, work: Work) -> dict:
    """Whole four-pass episodes of B networks through the library's roll-out (`rollout.make_rollout` with the
    random policy), once as one ``vmap(step)`` per step (``slots=None``) and once packed (``--slots``, the
    default on one CPU device); PyTorch replays the same actions, one network after the other."""
    from benchmarks.torch_reference.env_step import run_episode
    from neon_jax.policies import random_policy
    from neon_jax.rollout import make_rollout

    b = mode["episode_batch"]
    t_max = work.env.max_steps
    idx, params = work.batch(b)
    keys = jax.random.split(jax.random.PRNGKey(args.seed + 3), b)

    def time_rollout(slots):
        env = env_lib.NeonEnv(work.env.config, work.dims, work.preset, slots=slots)
        rollout = jax.jit(lambda k, p: make_rollout(env, random_policy)(k, p, None))
        compiled, compile_s = compile_aot(rollout, keys, params)
        best, times, (final, t) = timeit(lambda: compiled(keys, params), max(1, mode["env_repeats"] - 1))
        return compiled, compile_s, best, times, jax.device_get((final, t.action, t.reward, t.valid,
                                                                 t.info["finetune_epochs"]))

    log(f"[episode] B={b}, {t_max} scan steps: JAX compile + run (the library's roll-out, slots=None)")
    _, compile_s, best, times, (state, actions, rewards, valid, epochs) = time_rollout(None)
    log(f"  jax {best:.2f}s")
    packed = {}
    if args.slots:  # the same episodes (same keys, so the same actions) stepped with packed fine-tunes
        _, compile_b, best_b, times_b, (state_b, actions_b, rewards_b, _, _) = time_rollout(args.slots)
        packed = {"slots": args.slots, "jax_step_batch_compile_s": compile_b, "jax_step_batch_run_s": best_b,
                  "jax_step_batch_run_s_all_repeats": times_b,
                  "step_batch_same_actions_as_vmap": bool(np.array_equal(actions_b, actions)),
                  "step_batch_same_final_widths_as_vmap": bool(np.array_equal(state_b.arch.widths, state.arch.widths)),
                  "step_batch_return_max_abs_diff": float(np.abs(rewards_b.sum(1) - rewards.sum(1)).max())}
        log(f"  step_batch (slots {args.slots}): jax {best_b:.2f}s (compile {compile_b:.1f}s)")
        # the same episodes, every width bucket at its own shape and depth (the runner's programs)
        groups, run_g, compile_g, same_actions, same_widths = [], 0.0, 0.0, True, True
        for members, dims, params_g in work.bucket_groups(idx):
            env_g = env_lib.NeonEnv(work.env.config, dims, work.preset, slots=args.slots)
            rollout_g = jax.jit(lambda k, p, e=env_g: make_rollout(e, random_policy)(k, p, None))
            compiled_g, c = compile_aot(rollout_g, keys[members], params_g)
            best_g, _, (final_g, t_g) = timeit(lambda: compiled_g(keys[members], params_g),  # noqa: B023
                                                max(1, mode["env_repeats"] - 1))
            run_g, compile_g = run_g + best_g, compile_g + c
            for j, m in enumerate(members):
                v = np.asarray(t_g.valid[j])
                same_actions &= np.array_equal(np.asarray(t_g.action[j])[v], actions[m][valid[m]])
                d = int(final_g.arch.depth[j])
                same_widths &= np.array_equal(np.asarray(final_g.arch.widths[j])[:d], state.arch.widths[m][:d])
            groups.append({"w_max": dims.w_max, "max_hidden": dims.max_hidden, "networks": len(members),
                           "scan_steps": env_g.max_steps, "run_s": best_g, "compile_s": c})
        packed |= {"jax_buckets_run_s": run_g, "jax_buckets_compile_s": compile_g, "bucket_groups": groups,
                   "buckets_same_actions_as_vmap": bool(same_actions),
                   "buckets_same_final_widths_as_vmap": bool(same_widths)}
        log(f"  per width bucket ({len(groups)} groups): jax {run_g:.2f}s (compile {compile_g:.1f}s)")
    log(f"  torch: {b} episodes one by one, replaying the roll-out's actions")
    t0 = time.perf_counter()
    torch_eps, torch_times = [], []
    for k, i in enumerate(idx):
        e = work.torch_env(int(i), args.seed + k)
        t1 = time.perf_counter()
        torch_eps.append(run_episode(e, actions[k][valid[k]]))
        torch_sync()
        torch_times.append(time.perf_counter() - t1)
    torch_s = float(np.sum(torch_times))
    jax_widths = [np.asarray(state.arch.widths[k][: int(state.arch.depth[k])]).tolist() for k in range(b)]
    r = {"batch_size": b, "scan_steps": t_max, "jax_compile_s": compile_s, "jax_run_s": best,
         "jax_run_s_all_repeats": times, "torch_run_s": torch_s, "torch_s_per_episode": torch_times,
         "ratio": torch_s / best, "steps_per_episode": [int(v.sum()) for v in valid],
         "jax_finetune_epochs_total": int(epochs.sum()),
         "torch_finetune_epochs_total": int(sum(sum(e["finetune_epochs"]) for e in torch_eps)),
         "same_final_widths": jax_widths == [e["widths"] for e in torch_eps],
         "jax_val_acc_change_mean": float(np.mean(state.acc - state.acc0)),
         "torch_val_acc_change_mean": float(np.mean([e["acc"] - e["acc0"] for e in torch_eps])),
         "torch_wall_s_incl_setup": time.perf_counter() - t0} | packed | load()
    if packed:
        r["ratio_step_batch"] = torch_s / packed["jax_step_batch_run_s"]
        r["ratio_buckets"] = torch_s / packed["jax_buckets_run_s"]
    log(f"  torch {torch_s:.2f}s  ratio {r['ratio']:.2f}" +
        (f" (step_batch {r['ratio_step_batch']:.2f})" if packed else "") + f"  same widths {r['same_final_widths']}")
    return {"settings": work.describe() | {"actions": "uniform random (the library's random policy), replayed by "
                                                      "PyTorch", "program": "neon_jax.rollout.make_rollout"},
            "results": [r]}


def bench_agent_update(args, mode, work_preset) -> dict:

    from benchmarks.torch_reference.agent import TorchA2C, observations_from_arrays
    from neon_jax import agent as agent_lib

    preset = get_preset(work_preset)
    b = mode["update_batch"]
    t_len = args.passes * preset.max_hidden
    R, F = preset.feature_rows, preset.feature_width
    agent = agent_lib.Agent(agent_lib.AgentConfig(batch_size=b), preset)
    state = agent.init(jax.random.PRNGKey(args.seed))
    rng = np.random.default_rng(args.seed)
    shapes = {"net_topology": (R, 8), "net_activations": (8, R, F), "net_weights": (8, R, F),
              "layer_topology": (8,), "layer_activations": (8, F), "layer_weights": (8, F)}
    obs_np = {k: rng.normal(size=(b, t_len) + s).astype(np.float32) for k, s in shapes.items()}
    actions = rng.integers(0, 5, (b, t_len)).astype(np.int32)
    rewards = rng.normal(size=(b, t_len)).astype(np.float32) * 100
    from neon_jax.features import Observation
    from neon_jax.rollout import Transition

    transitions = Transition(obs=Observation(**{k: jnp.asarray(v) for k, v in obs_np.items()}),
                             action=jnp.asarray(actions), reward=jnp.asarray(rewards),
                             valid=jnp.ones((b, t_len), bool), info={})
    update = jax.jit(agent_lib.make_update(agent))  # the library's update, as make_train_iteration runs it

    log(f"[agent_update] B={b} episodes x T={t_len}: JAX compile + run")
    compiled, compile_s = compile_aot(update, state, transitions)
    best, times, _ = timeit(lambda: compiled(state, transitions), mode["env_repeats"])
    a2c = TorchA2C(R, F, seed=args.seed, device=torch_device())
    episodes = [(observations_from_arrays(obs_np, k, torch_device()), actions[k].tolist(), rewards[k])
                for k in range(b)]
    threads, probe_s = choose_torch_threads(args.torch_threads, lambda: a2c.update_episode(*episodes[0]))
    per_episode, batched = [], []
    for _ in range(max(2, mode["torch_passes"])):
        t0 = time.perf_counter()
        for e in episodes:
            a2c.update_episode(*e)
        torch_sync()
        per_episode.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        a2c.update_batch(episodes)
        torch_sync()
        batched.append(time.perf_counter() - t0)
    r = {"batch_size": b, "steps_per_episode": t_len, "agent_params": agent.num_params(state),
         "torch_agent_params": list(a2c.num_params()), "jax_compile_s": compile_s, "jax_run_s": best,
         "jax_run_s_all_repeats": times, "torch_run_s": min(per_episode), "torch_run_s_all_passes": per_episode,
         "torch_batched_update_s": min(batched), "ratio": min(per_episode) / best,
         "ratio_vs_torch_batched": min(batched) / best, "torch_threads": threads,
         "torch_threads_probe_s": probe_s} | load()
    log(f"  jax {best:.3f}s (compile {compile_s:.1f}s)  torch per-episode {min(per_episode):.3f}s, batched "
        f"{min(batched):.3f}s  ratio {r['ratio']:.2f} / {r['ratio_vs_torch_batched']:.2f}")
    return {"settings": {"preset": preset.name, "agent": "neon six-branch actor + critic", "batch": b,
                         "steps": t_len, "feature_map": [R, F], "lr": 1e-3, "gamma": 0.99,
                         "torch": ("ratio: the original's schedule (one update per episode, B updates); "
                                   "ratio_vs_torch_batched: one update on the mean of the B episodes, the same "
                                   "maths as neon_jax")},
            "results": [r]}


def bench_batch_scaling(args, mode, work: Work, env_result: dict | None) -> dict:
    """Env steps per second vs B. PyTorch steps one by one: for B up to the env_steps batch its time is the sum of
    its measured times of the same first B environments and actions; beyond, that sum scaled linearly."""
    rows = []
    per_env = None
    if env_result:
        per_env = np.asarray(env_result["results"][0]["torch_s_per_env"])
    for b in mode["scaling"]:
        if env_result and b == env_result["results"][0]["batch_size"]:
            r = {k: v for k, v in env_result["results"][0].items() if k in (
                "batch_size", "jax_compile_s", "jax_run_s", "env_steps_per_s", "jax_loop_epochs",
                "jax_finetune_epochs_mean", "load_average_1min")}
        else:
            log(f"[batch_scaling] B={b}")
            r = jax_env_steps(work, b, mode["env_repeats"], args.seed) | load()
            for k in ("actions", "idx", "widths_after", "params_after"):
                r.pop(k)
        if per_env is not None:
            torch_s = float(per_env[:b].sum()) if b <= len(per_env) else float(per_env.sum()) * b / len(per_env)
            r["torch_run_s"] = torch_s
            r["torch_extrapolated"] = b > len(per_env)
            r["ratio"] = torch_s / r["jax_run_s"]
        rows.append(r)
        log(f"  B={b}: {r['env_steps_per_s']:.1f} env-steps/s" + (f", ratio {r['ratio']:.2f}" if "ratio" in r else ""))
    return {"settings": {"torch": ("PyTorch's measured seconds of the same first B environments and actions "
                                   "(env_steps benchmark); beyond its batch, scaled linearly (torch_extrapolated)"),
                         "actions": "prefixes of one fixed random action sequence"}, "results": rows}


def device_worker(args) -> None:
    """Child process of `device_scaling`: times the sharded work on `args.device_worker` devices, prints JSON."""
    from neon_jax import sharding

    n = args.device_worker
    mesh = sharding.make_mesh(n)
    preset = get_preset(args.preset)
    prepared, _ = common.load_prepared(args.dataset, preset, args.data_dir, args.seed)
    s = prepared.splits
    dims = nets.NetDims.for_preset(preset, prepared.n_features, prepared.n_classes)
    model = nets.make_model(dims, preset)
    trainer = fit.make_trainer(model, preset.learning_rate)
    data = fit.stack_data([(s.x_train, s.y_train)], dims.d_max)
    out = {"devices": n, "device_kind": jax.devices()[0].device_kind, "results": []}
    for p in args.worker_pop:
        archs = jax.vmap(lambda k: nets.sample_arch(k, preset, dims, prepared.n_features, prepared.n_classes))(
            jax.random.split(jax.random.PRNGKey(args.seed), p))
        variables = nets.init_population(jax.random.PRNGKey(1), model, archs)
        opt = trainer.init_opt_state(variables)
        index = jnp.zeros(p, jnp.int32)
        sv, so, sa, si = sharding.shard_batch((variables, opt, archs, index), mesh)
        sd = sharding.replicate(data, mesh)
        key = sharding.replicate(jax.random.PRNGKey(2), mesh)
        t0 = time.perf_counter()
        compiled = trainer.train.lower(key, sv, so, sa, si, sd, epochs=args.worker_epochs,
                                       batch_size=preset.train_batch, chunk_size=None).compile()
        compile_s = time.perf_counter() - t0
        best, times, _ = timeit(lambda: compiled(key, sv, so, sa, si, sd), 3)
        out["results"].append({"benchmark": "population", "population": p, "jax_compile_s": compile_s,
                               "jax_run_s": best, "jax_run_s_all_repeats": times} | load())
    if args.worker_env_batch:
        work = Work(args)
        b = args.worker_env_batch
        idx, params = work.batch(b)
        _, states = work.reset(jax.random.split(jax.random.PRNGKey(args.seed), b), params)
        actions = jnp.asarray(step_actions(args.seed, b), jnp.int32)
        keys = jax.random.split(jax.random.PRNGKey(args.seed + 1), b)
        keys, states, actions, params = sharding.shard_batch((keys, states, actions, params), mesh)
        compiled, compile_s = compile_aot(work.vstep, keys, states, actions, params)
        best, times, _ = timeit(lambda: compiled(keys, states, actions, params), 3)
        out["results"].append({"benchmark": "env_steps", "batch_size": b, "jax_compile_s": compile_s,
                               "jax_run_s": best, "jax_run_s_all_repeats": times} | load())
    print("DEVICE-WORKER-JSON " + json.dumps(out), flush=True)


def bench_device_scaling(args, mode) -> dict:
    platform = jax.devices()[0].platform
    counts = mode["devices"]
    if counts is None:
        total = jax.device_count() if platform != "cpu" else common.core_count()
        counts = sorted({2 ** k for k in range(int(np.log2(max(total, 1))) + 1)} | {total})
    pops = [32, 128] if args.full else [32]
    rows = []
    for n in counts:
        log(f"[device_scaling] {n} device(s)")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--device-worker", str(n), "--preset", args.preset,
               "--dataset", args.dataset, "--data-dir", args.data_dir, "--worker-epochs", "5",
               "--worker-pop", ",".join(map(str, pops))]
        if mode["device_env_steps"]:
            cmd += ["--worker-env-batch", str(32 * n)] + (["--zoo", args.zoo] if args.zoo else [])
        env = dict(os.environ)
        if platform == "cpu":
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = [l for l in proc.stdout.splitlines() if l.startswith("DEVICE-WORKER-JSON ")]
        if proc.returncode or not line:
            rows.append({"devices": n, "error": proc.stderr[-2000:]})
            log(f"  failed: {proc.stderr[-500:]}")
            continue
        res = json.loads(line[0].split(" ", 1)[1])
        rows.append(res)
        for r in res["results"]:
            log(f"  {r['benchmark']}: {r['jax_run_s']:.3f}s")
    base = {}
    for row in rows:
        for r in row.get("results", []):
            key = (r["benchmark"], r.get("population", r.get("batch_size")))
            if row["devices"] == counts[0]:
                base[key] = r["jax_run_s"]
            r["speedup_vs_first"] = base.get(key, np.nan) / r["jax_run_s"] if key in base else None
    return {"settings": {"platform": platform, "device_counts": counts,
                         "note": ("CPU: devices are simulated with --xla_force_host_platform_device_count and "
                                  "share the machine's cores, so this shows the sharding overhead, not extra "
                                  "compute" if platform == "cpu" else "real devices"),
                         "work": "population training (5 epochs) with the population axis sharded; "
                                 + ("env steps of 32 environments per device (weak scaling)"
                                    if mode["device_env_steps"] else "")},
            "results": rows}


def derived_notes(result: dict) -> list[str]:
    """Plain-language reading of the numbers (machine sharing, the batched fine-tune's slowest member)."""
    notes = []
    b = result["benchmarks"]
    pop = b.get("population", {}).get("results", [])
    shares = [r["contention"]["jax_best_run_other_share"] for r in pop if r.get("contention")]
    if shares and max(x or 0 for x in shares) > 0.15:
        notes.append(f"Shared machine: other processes used {100 * max(shares):.0f}% of all CPU time while population "
                     "training was timed (load average in every record); JAX's two-thread programs lose more to "
                     "such sharing than single-thread PyTorch, so the ratios here understate a quiet machine's.")
    for r in b.get("env_steps", {}).get("results", []):
        slots = r["batch_size"] * r["jax_loop_epochs"]
        used = r["batch_size"] * r["jax_finetune_epochs_mean"]
        notes.append(
            f"env_steps B={r['batch_size']}: the batched fine-tune loop ran {r['jax_loop_epochs']} epochs (its "
            f"slowest member) while environments needed {r['jax_finetune_epochs_mean']:.2f} on average (PyTorch "
            f"{r['torch_finetune_epochs_mean']:.2f}): {slots / max(used, 1e-9):.2f}x the useful epochs are computed; "
            f"per computed environment-epoch JAX is x{r['ratio'] * slots / max(used, 1e-9):.2f} PyTorch's speed.")
        if "jax_step_batch_run_s" in r:
            notes.append(
                f"env_steps B={r['batch_size']}: NeonEnv.step_batch with {r['slots']} fine-tunes in flight computes "
                f"each environment's own epochs ({r['jax_step_batch_finetune_epochs_sum']} in all) at the depth of "
                f"the networks in flight: x{r['ratio_step_batch']:.2f} PyTorch "
                f"(x{r['jax_run_s'] / r['jax_step_batch_run_s']:.2f} over jit(vmap(step)) in the same run).")
    return notes


# ----------------------------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small grid: a few minutes on 2 CPU cores (default)")
    g.add_argument("--full", action="store_true", help="the full grid (B up to 1024, all devices): for a GPU")
    ap.add_argument("--mode", default=None, choices=sorted(MODES),
                    help="a named grid (overrides --quick / --full; device / dry: benchmarks/device_check.py)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    ap.add_argument("--preset", default="cpu", choices=["cpu", "tiny", "paper"])
    ap.add_argument("--dataset", default="diabetes")
    ap.add_argument("--data-dir", default="/work/shared/data/neon")
    ap.add_argument("--zoo", default="/work/runs/zoo_cpu/diabetes",
                    help="a saved zoo of the preset (default: the cpu zoo of diabetes; built and cached if absent)")
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--tau", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-threads", default="auto")
    ap.add_argument("--chunk", type=int, default=8,
                    help="env_steps also times the step vmapped over chunks of this many environments, one chunk "
                         "after the other (smaller working set on a CPU; 0 = off)")
    ap.add_argument("--slots", type=int, default=4,
                    help="also time the library's batched paths with this many networks in flight: "
                         "NeonEnv.step_batch(slots=...) for env_steps and episode, trainer.train(chunk_size=...) "
                         "for population (0 = off; 4 is the default on one CPU device)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--device-worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-pop", default="32", help=argparse.SUPPRESS)
    ap.add_argument("--worker-epochs", type=int, default=5, help=argparse.SUPPRESS)
    ap.add_argument("--worker-env-batch", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.worker_pop = [int(x) for x in str(args.worker_pop).split(",") if x]
    jax.config.update("jax_default_matmul_precision", "highest")
    if args.device_worker:
        return device_worker(args)

    import torch

    torch.set_float32_matmul_precision("highest")
    mode_name = args.mode or ("full" if args.full else "quick")
    mode = MODES[mode_name]
    args.zoo_networks = mode.get("zoo_networks", 30)
    only = BENCHMARKS if args.only is None else tuple(x.strip() for x in args.only.split(","))
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    out_path = Path(args.out) if args.out else RESULTS_DIR / f"suite_{mode_name}_{common.device_slug()}.json"
    result = {"suite": "neon_jax vs PyTorch reference", "mode": mode_name, "mode_settings": mode,
              "device": common.device_info(torch_device()), "versions": common.versions(),
              "neon_jax": common.neon_jax_provenance(), "precision": {"jax": "highest", "torch": "highest",
                                                                    "dtype": "float32"},
              "load_average_start": os.getloadavg(), "notes": list(args.note), "benchmarks": {}}
    if jax.devices()[0].platform == "cpu":
        result["notes"].append("No GPU/TPU was used: JAX on the CPU (XLA), PyTorch on the CPU.")
    began = time.perf_counter()
    if args.only is not None and out_path.exists():  # a partial run updates the suite file it names
        old = json.loads(out_path.read_text())
        if old.get("mode") == mode_name:
            result["benchmarks"] = old.get("benchmarks", {})
            result["notes"] = sorted(set(old.get("notes", [])) | set(result["notes"]))
            result["partial_updates"] = old.get("partial_updates", []) + [
                {"only": list(only), "load_average_start": result["load_average_start"]}]

    def save():
        result["derived_notes"] = derived_notes(result)
        result["seconds_total"] = time.perf_counter() - began
        result["load_average_end"] = os.getloadavg()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1, default=float) + "\n")

    work = None
    if {"env_steps", "episode", "batch_scaling"} & set(only):
        work = Work(args)
    for name in BENCHMARKS:
        if name not in only:
            continue
        t0 = time.perf_counter()
        if name == "population":
            res = suite_population(args, mode)
        elif name == "env_steps":
            res = bench_env_steps(args, mode, work)
        elif name == "episode":
            res = bench_episode(args, mode, work)
        elif name == "agent_update":
            res = bench_agent_update(args, mode, args.preset)
        elif name == "batch_scaling":
            res = bench_batch_scaling(args, mode, work, result["benchmarks"].get("env_steps"))
        else:
            res = bench_device_scaling(args, mode)
        res["seconds"] = time.perf_counter() - t0
        result["benchmarks"][name] = res
        save()
    log(f"wrote {out_path} ({time.perf_counter() - began:.0f}s)")
    return result


if __name__ == "__main__":
    main()
